"""One writer per store (issue #13): a second ``node run`` on a data_dir is refused.

Real processes: a node holds its data_dir's writer lock; a second node on the same data_dir
(other ports) exits 2 with one line naming the directory and the holder's PID; SIGKILL of
the first frees the lock (the kernel's doing) and a new node starts; the writer's worker
processes and a follower read the store beside the writer. The lock module's own cases
(same process, garbage in the file, release) run in process.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from blacklist.follower import StoreFollower
from node.gen.blacklist.v1 import admin_pb2, card_status_pb2_grpc, types_pb2
from node.gen.blacklist.v1.card_status_pb2 import CheckCardRequest
from node.store_lock import LOCK_NAME, StoreInUse, WriterLock, holder_pid
from tests.node_harness import (
    CHANNEL_OPTIONS,
    Metrics,
    NodeProcess,
    card_id,
    run_node_expecting_exit,
    write_config,
    write_node,
)

GZ = "440100"
S = types_pb2.CardStatusCode
CONNECTIONS = 24  # P(all on one of two processes) = 2**-23


def _second_config(tmp_path: Path, fields: dict[str, object]) -> Path:
    """The same node's config (same data_dir), on other free ports: the accident in #13."""
    other = {**fields, "listen": "127.0.0.1:0", "metrics_listen": "127.0.0.1:0"}
    return write_config(tmp_path / "second.toml", other)  # type: ignore[arg-type]


def _revoke(card: str) -> admin_pb2.RevokeRequest:
    return admin_pb2.RevokeRequest(
        revocations=[admin_pb2.Revocation(card_id=card, reason=types_pb2.LOSS)]
    )


def _refused_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    return lines[0]


def test_a_second_writer_is_refused_naming_the_directory_and_the_holder(
    tmp_path: Path,
) -> None:
    files = write_node(tmp_path / "gz", GZ)
    with NodeProcess(files.config) as first:
        code, err = run_node_expecting_exit(_second_config(tmp_path, dict(files.fields)))
        assert code == 2, err
        line = _refused_line(err)
        assert str(files.data_dir) in line and f"pid {first.pid}" in line, line
        assert (files.data_dir / LOCK_NAME).read_text().strip() == str(first.pid)
        # The refused process touched nothing: the first still serves and revokes.
        card = card_id(GZ)
        first.admin.Revoke(_revoke(card), timeout=10)
        reply = first.card_status.CheckCard(CheckCardRequest(card_id=card), timeout=10)
        assert reply.status == S.REVOKED


def test_after_sigkill_the_kernel_frees_the_lock_and_a_new_writer_starts(
    tmp_path: Path,
) -> None:
    files = write_node(tmp_path / "gz", GZ)
    first = NodeProcess(files.config).start()
    card = card_id(GZ)
    first.admin.Revoke(_revoke(card), timeout=10)
    killed = first.pid
    assert first.kill() == -9
    # The file still names the dead process; the lock, not the file, is what counts.
    assert (files.data_dir / LOCK_NAME).read_text().strip() == str(killed)
    with NodeProcess(_second_config(tmp_path, dict(files.fields))) as second:
        assert (files.data_dir / LOCK_NAME).read_text().strip() == str(second.pid)
        reply = second.card_status.CheckCard(CheckCardRequest(card_id=card), timeout=10)
        assert reply.status == S.REVOKED
    # A clean stop clears the PID: the file names no one.
    assert (files.data_dir / LOCK_NAME).read_text() == ""


def test_workers_and_a_follower_read_beside_the_writer(tmp_path: Path) -> None:
    files = write_node(tmp_path / "gz", GZ, extra={"workers": 2})
    with NodeProcess(files.config) as node:
        card = card_id(GZ)
        node.admin.Revoke(_revoke(card), timeout=10)
        info = node.scrape().samples.get("blacklist_worker_info", [])
        assert len(info) == 2, info
        worker_urls = [labels["metrics_url"] for labels, _ in info]
        options = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
        channels = [grpc.insecure_channel(node.grpc, options=options) for _ in range(CONNECTIONS)]
        try:
            for channel in channels:
                stub = card_status_pb2_grpc.CardStatusStub(channel)  # type: ignore[no-untyped-call]
                reply = stub.CheckCard(CheckCardRequest(card_id=card), timeout=10)
                assert reply.status == S.REVOKED
        finally:
            for channel in channels:
                channel.close()
        answered = 0.0
        for url in worker_urls:
            worker = Metrics.of(url)
            answered += sum(v for _, v in worker.samples.get("blacklist_checks_total", []))
        assert answered == CONNECTIONS  # every check on a worker, none on the writer
        # A follower in this (third) process opens the store read-only beside the writer.
        follower = StoreFollower(files.data_dir, map_size=1 << 30)
        try:
            follower.refresh()
            assert follower.heads()[GZ].version == 1
        finally:
            follower.close()
        # And a second writer is still refused while the workers serve.
        code, err = run_node_expecting_exit(_second_config(tmp_path, dict(files.fields)))
        assert code == 2 and f"pid {node.pid}" in _refused_line(err)


# ---------------------------------------------------------------------------- in process
def test_a_second_acquire_in_one_process_is_refused_and_release_frees_it(
    tmp_path: Path,
) -> None:
    lock = WriterLock.acquire(tmp_path / "data")  # creates the directory
    with pytest.raises(StoreInUse) as refused:
        WriterLock.acquire(tmp_path / "data")
    assert refused.value.pid == os.getpid()
    assert str(tmp_path / "data") in str(refused.value)
    lock.release()
    lock.release()  # idempotent
    assert not lock.held
    again = WriterLock.acquire(tmp_path / "data")
    assert again.held
    again.release()


@pytest.mark.parametrize(
    ("text", "pid"),
    [
        ("1234\n", 1234),
        ("1", 1),
        ("", None),
        ("0\n", None),
        ("-5", None),
        ("12ab", None),
        ("١٢", None),  # Unicode digits are not a PID
        ("9999999999", 9999999999),  # 10 digits: the longest read
        ("99999999999", None),  # 11 digits: not a PID this file would hold
    ],
)
def test_holder_pid(text: str, pid: int | None) -> None:
    assert holder_pid(text) == pid


def test_a_lock_file_without_a_pid_says_so(tmp_path: Path) -> None:
    lock = WriterLock.acquire(tmp_path)
    (tmp_path / LOCK_NAME).write_text("")  # as between another holder's flock and its write
    with pytest.raises(StoreInUse, match="pid not yet written"):
        WriterLock.acquire(tmp_path)
    lock.release()
