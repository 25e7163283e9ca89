"""Every transfer is bounded and resumable in both directions (issue #11 items 4 and 5), with
real node processes at a small configured limit: ``max_message_bytes`` = 64 KiB and 8 KiB
snapshot chunks, so that a feed of a few hundred KB crosses every split.

* pull: a child far more than one message behind catches up in several bounded GetUpdates
  answers (on main its channel kept gRPC's 4 MiB default against an 8 MiB answer);
* push: a city whose upstream lost its copy sends its retained deltas up in batches that
  each fit, or its snapshot in chunks (on main: one unbounded PushDeltas, and no snapshot
  over 15 MiB at all), and a fresh child of that upstream then takes the snapshot down in
  chunks; every case ends with the nodes converged;
* a tampered chunk going up, and a manifest announcing more than ``max_snapshot_bytes``,
  are refused (the latter before a single chunk is sent), with nothing applied.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from blacklist.authority import cards_from_ids
from blacklist.delta import FeedHead, sign_delta, sign_snapshot
from blacklist.entry import Reason
from blacklist.entryblock import CardColumns, EntryColumns
from blacklist.signing import Keyring, SigningKey
from blacklist.store import RevocationStore
from blacklist.sync.budget import GRPC_DEFAULT_LIMIT
from blacklist.sync.chunks import split_snapshot
from node.gen.blacklist.v1 import (
    admin_pb2,
    card_status_pb2,
    sync_pb2,
    sync_pb2_grpc,
    types_pb2,
)
from node.grpc.sync import manifest_message
from node.keyfiles import load_signing_key
from node.local.federation import free_port
from tests.node_harness import (
    Metrics,
    NodeFiles,
    NodeProcess,
    TomlValue,
    card_id,
    write_node,
)

LIMIT = 64 << 10
CHUNK = 8 << 10
MAX_SNAPSHOT = 1 << 20
SMALL: dict[str, TomlValue] = {
    "max_message_bytes": LIMIT,
    "snapshot_chunk_bytes": CHUNK,
    "max_snapshot_bytes": MAX_SNAPSHOT,
    "sync_interval": 0.3,
}
GZ, GD, SZ, FS = "440100", "440000", "440300", "440600"
DELTAS = 30  # of PER_DELTA new cards: ~8 KB each, ~240 KB in all (almost four limits)
PER_DELTA = 1000
S = types_pb2.CardStatusCode
TIMEOUT = 60.0


def wait_until(what: str, condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def sync_stub(node: NodeProcess) -> Any:
    return sync_pb2_grpc.SyncStub(node.channel)  # type: ignore[no-untyped-call]


def head(node: NodeProcess, publisher: str) -> tuple[int, bytes, int]:
    for feed in node.admin.Status(admin_pb2.StatusRequest(), timeout=10).feeds:
        if feed.publisher == publisher:
            return feed.version, feed.digest, feed.entries
    return 0, b"", 0


def revoke_many(node: NodeProcess, rng: random.Random, count: int = DELTAS) -> list[str]:
    """``count`` Revoke calls of PER_DELTA new cards (each request ~40 KB, under the limit)."""
    cards: list[str] = []
    for _ in range(count):
        batch = [card_id(GZ, rng.getrandbits(64)) for _ in range(PER_DELTA)]
        node.admin.Revoke(
            admin_pb2.RevokeRequest(
                revocations=[admin_pb2.Revocation(card_id=c, reason=types_pb2.LOSS) for c in batch]
            ),
            timeout=30,
        )
        cards.extend(batch)
    return cards


def revoked_at(node: NodeProcess, cards: Sequence[str]) -> bool:
    answer = node.card_status.BatchCheck(
        card_status_pb2.BatchCheckRequest(card_ids=list(cards)), timeout=30
    )
    return len(answer.cards) == len(cards) and all(c.status == S.REVOKED for c in answer.cards)


def converged(a: NodeProcess, b: NodeProcess, publisher: str = GZ) -> Callable[[], bool]:
    return lambda: head(a, publisher)[0] > 0 and head(a, publisher) == head(b, publisher)


class Nodes:
    """A province (GD) on a fixed port and its city (GZ, the authority), both at the small
    limit; more children of GD on demand. Closes everything it started."""

    def __init__(self, root: Path, city: dict[str, Any] | None = None) -> None:
        self.root = root
        self.port = free_port()
        gz_keys = root / "gz"
        self.gz_files = write_node(
            gz_keys, GZ, extra={"upstreams": [self.address], **SMALL, **(city or {})}
        )
        assert self.gz_files.keys is not None
        self.public = self.gz_files.keys.public
        self.gd_files = self._province()
        self.procs: list[NodeProcess] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _province(self) -> NodeFiles:
        return write_node(
            self.root / "gd",
            GD,
            role="province",
            signing=False,
            trusted=[self.public],
            extra={"listen": self.address, **SMALL},
        )

    def start(self, files: NodeFiles) -> NodeProcess:
        node = NodeProcess(files.config).start()
        self.procs.append(node)
        return node

    def child(self, region: str) -> NodeProcess:
        files = write_node(
            self.root / region,
            region,
            signing=False,
            trusted=[self.public],
            extra={"upstreams": [self.address], **SMALL},
        )
        return self.start(files)

    def close(self) -> None:
        for node in reversed(self.procs):
            node.close()


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    made = Nodes(tmp_path)
    yield made
    made.close()


def metric(node: NodeProcess, name: str, **labels: str) -> float:
    return node.scrape().get(name, **labels)


def test_child_far_behind_catches_up_by_pull_in_bounded_answers(nodes: Nodes) -> None:
    rng = random.Random(4)
    gd = nodes.start(nodes.gd_files)
    gz = nodes.start(nodes.gz_files)
    cards = revoke_many(gz, rng)
    wait_until("440000 to hold 440100's feed", converged(gd, gz))
    version, digest, entries = head(gd, GZ)
    assert entries == DELTAS * PER_DELTA

    # An answer never exceeds what the caller states, and says there is more.
    probe = sync_pb2.GetUpdatesRequest(node="probe", max_response_bytes=LIMIT)
    answer = sync_stub(gd).GetUpdates(probe, timeout=10)
    (update,) = [u for u in answer.updates if u.publisher == GZ]
    assert answer.ByteSize() <= LIMIT
    assert 1 <= len(update.deltas) < version == update.upstream_version
    assert answer.max_push_bytes == LIMIT
    # Unstated: gRPC's default 4 MiB (here the node's own 64 KiB is smaller); too small: refused.
    assert (
        sync_stub(gd).GetUpdates(sync_pb2.GetUpdatesRequest(node="probe"), timeout=10).ByteSize()
        <= LIMIT
    )
    with pytest.raises(grpc.RpcError) as refused:
        sync_stub(gd).GetUpdates(
            sync_pb2.GetUpdatesRequest(node="probe", max_response_bytes=LIMIT - 1), timeout=10
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "below the 65536-byte floor" in (refused.value.details() or "")

    # A new city joins ~4 limits behind: it catches up by pulling deltas, several answers.
    sz = nodes.child(SZ)
    wait_until("440300 to catch up", converged(sz, gd))
    assert head(sz, GZ) == (version, digest, entries)
    assert revoked_at(sz, rng.sample(cards, 500))
    assert metric(sz, "blacklist_sync_received_bytes_total") > 3 * LIMIT
    assert metric(sz, "blacklist_snapshot_transfers_total", direction="received", result="ok") == 0
    assert (
        metric(
            gd,
            "grpc_server_handled_total",
            grpc_method="GetUpdates",
            grpc_code="RESOURCE_EXHAUSTED",
        )
        == 0
    )
    assert "RESOURCE_EXHAUSTED" not in sz.stderr_text()


def relay_store(data_dir: Path, key: SigningKey, deltas: int, per_delta: int) -> list[str]:
    """A relay's data directory holding ``deltas`` signed deltas of ``per_delta`` new 440100
    cards each and no snapshot, made with the library before the node starts (as
    bench/test_catch_up.py does); a sample of the cards, as ids."""
    rng = np.random.default_rng(9)
    store = RevocationStore(data_dir, map_size=1 << 30, retain_deltas=10_000)
    middle = int(cards_from_ids([card_id(GZ, 0)]).middle[0])
    sample: list[str] = []
    try:
        for _ in range(deltas):
            serials = np.unique(rng.integers(0, 2**64, per_delta, dtype=np.uint64))
            n = len(serials)
            cards = CardColumns(
                np.full(n, int(GZ), np.uint32), np.full(n, middle, np.uint64), serials
            )
            entries = EntryColumns(
                cards,
                np.full(n, int(Reason.LOSS), np.uint8),
                np.full(n, int(time.time()), np.int64),
            )
            delta = sign_delta(key, store.head(GZ), entries, CardColumns.empty(), int(time.time()))
            store.apply_delta(delta, Keyring([key.trusted()]))
            sample.extend(card_id(GZ, int(s)) for s in serials[:: max(1, n // 100)])
    finally:
        store.close()
    return sample


def test_child_more_than_4_mib_behind_at_default_limits_catches_up(tmp_path: Path) -> None:
    """Issue #11 item 4 as reported: every node at the default limits, a relay holding
    ~5 MB of deltas (no snapshot: it relays), a fresh child. On main the relay filled one
    answer up to 8 MiB while the child's channel kept gRPC's 4 MiB default:
    RESOURCE_EXHAUSTED at every pull, and NOT_REVOKED for every card it missed."""
    gz_keys = write_node(tmp_path / "gz", GZ).keys
    assert gz_keys is not None
    gd_files = write_node(
        tmp_path / "gd", GD, role="province", signing=False, trusted=[gz_keys.public]
    )
    cards = relay_store(gd_files.data_dir, load_signing_key(gz_keys.private), 8, 100_000)
    with NodeProcess(gd_files.config) as gd:
        assert head(gd, GZ)[0] == 8
        sz_files = write_node(
            tmp_path / "sz", SZ, signing=False, trusted=[gz_keys.public],
            extra={"upstreams": [gd.grpc], "sync_interval": 0.3},
        )  # fmt: skip
        with NodeProcess(sz_files.config) as sz:
            wait_until("440300 to catch up", converged(sz, gd))
            assert revoked_at(sz, cards)
            received = metric(sz, "blacklist_sync_received_bytes_total")
            assert received > GRPC_DEFAULT_LIMIT, received
            assert "RESOURCE_EXHAUSTED" not in sz.stderr_text()


def lose_province_copy(nodes: Nodes, gd: NodeProcess) -> NodeProcess:
    """Stop the province, delete its data directory, start it again on the same port."""
    gd.stop()
    nodes.procs.remove(gd)
    shutil.rmtree(nodes.gd_files.data_dir)
    fresh = nodes.start(nodes.gd_files)
    assert head(fresh, GZ)[0] == 0
    return fresh


def test_deltas_pushed_up_over_the_limit_are_split(nodes: Nodes) -> None:
    """The province is down while its city publishes ~1.5 limits of deltas; when it is
    back, they go up (the pull's plan_push and the uplink queue, both) in requests that
    each fit its limit. (The feed's snapshot is larger than these deltas, so they go as
    deltas.)"""
    rng = random.Random(5)
    gd = nodes.start(nodes.gd_files)
    gz = nodes.start(nodes.gz_files)
    cards = revoke_many(gz, rng)
    wait_until("440000 to hold 440100's feed", converged(gd, gz))
    gd.stop()
    nodes.procs.remove(gd)
    late = revoke_many(gz, rng, count=12)
    gd = nodes.start(nodes.gd_files)
    wait_until("440000 to catch up with 440100", converged(gd, gz))
    assert head(gd, GZ)[2] == (DELTAS + 12) * PER_DELTA
    assert revoked_at(gd, rng.sample(cards, 200) + rng.sample(late, 300))
    pushes = metric(gd, "grpc_server_handled_total", grpc_method="PushDeltas", grpc_code="OK")
    assert pushes >= 2, pushes  # ~96 KB of deltas, at most 64 KiB a request
    assert metric(gd, "blacklist_snapshot_transfers_total", direction="received", result="ok") == 0
    assert metric(gd, "blacklist_sync_received_bytes_total") > LIMIT
    for node in (gd, gz):
        assert "RESOURCE_EXHAUSTED" not in node.stderr_text()


def test_a_feed_larger_than_the_limit_goes_up_as_a_chunked_snapshot(tmp_path: Path) -> None:
    """The city keeps no deltas beyond its latest snapshot (retain_deltas = 2), so an
    upstream that lost its copy can only be brought back by the snapshot: ~220 KB, over three
    limits, in 8 KiB chunks. A fresh child of the province then takes it down in chunks."""
    nodes = Nodes(tmp_path, city={"retain_deltas": 2})
    try:
        rng = random.Random(6)
        gd = nodes.start(nodes.gd_files)
        gz = nodes.start(nodes.gz_files)
        cards = revoke_many(gz, rng)
        wait_until("440000 to hold 440100's feed", converged(gd, gz))
        gd = lose_province_copy(nodes, gd)
        wait_until("440000 to get 440100's feed back", converged(gd, gz))
        assert head(gd, GZ)[2] == DELTAS * PER_DELTA
        assert revoked_at(gd, rng.sample(cards, 500))
        assert metric(gz, "blacklist_snapshot_transfers_total", direction="sent", result="ok") >= 1
        assert (
            metric(gd, "blacklist_snapshot_transfers_total", direction="received", result="ok") >= 1
        )
        assert metric(gd, "blacklist_sync_received_bytes_total") > 3 * LIMIT

        fs = nodes.child(FS)
        wait_until("a fresh 440600 to bootstrap from 440000", converged(fs, gd))
        assert revoked_at(fs, rng.sample(cards, 500))
        assert (
            metric(fs, "blacklist_snapshot_transfers_total", direction="received", result="ok") >= 1
        )
    finally:
        nodes.close()


# ------------------------------------------------------------------ refused transfers
def made_up_snapshot(key: SigningKey, n: int = 20_000) -> tuple[bytes, list[str]]:
    """A signed snapshot of 440100 at version 7 (~200 KB, many chunks)."""
    rng = random.Random(n)
    cards = [card_id(GZ, rng.getrandbits(64)) for _ in range(n)]
    entries = EntryColumns(
        cards_from_ids(cards),
        np.full(n, int(Reason.LOSS), np.uint8),
        np.full(n, int(time.time()), np.int64),
    )
    versions = np.full(n, 7, dtype=np.uint64)
    head7 = FeedHead(GZ, 7, hashlib.sha256(b"440100 v7").digest())
    return sign_snapshot(key, head7, entries, versions, int(time.time())).to_bytes(), cards


def parts(data: bytes, damage: Callable[[list[bytes]], None] | None = None) -> list[Any]:
    manifest, chunks = split_snapshot(GZ, 7, data, CHUNK)
    if damage is not None:
        damage(chunks)
    return [
        sync_pb2.SnapshotPart(manifest=manifest_message(manifest)),
        *(sync_pb2.SnapshotPart(chunk=c) for c in chunks),
    ]


def test_tampered_chunk_going_up_is_refused_and_nothing_is_applied(nodes: Nodes) -> None:
    gd = nodes.start(nodes.gd_files)
    data, cards = made_up_snapshot(load_signing_key(nodes.gz_files.keys.private))  # type: ignore[union-attr]
    assert len(data) > 2 * LIMIT

    def flip(chunks: list[bytes]) -> None:
        damaged = bytearray(chunks[5])
        damaged[100] ^= 0x04
        chunks[5] = bytes(damaged)

    corrupt = metric(gd, "blacklist_deltas_rejected_total", cause="snapshot_checksum")
    with pytest.raises(grpc.RpcError) as refused:
        sync_stub(gd).PushSnapshot(iter(parts(data, flip)), timeout=30)
    assert refused.value.code() == grpc.StatusCode.DATA_LOSS
    assert "chunk 5 fails its checksum" in (refused.value.details() or "")
    assert head(gd, GZ) == (0, b"", 0)
    check = gd.card_status.CheckCard(card_status_pb2.CheckCardRequest(card_id=cards[0]), timeout=10)
    assert check.status == S.NO_DATA
    assert metric(gd, "blacklist_deltas_rejected_total", cause="snapshot_checksum") == corrupt + 1
    assert (
        metric(gd, "blacklist_snapshot_transfers_total", direction="received", result="corrupt")
        == 1
    )

    # Intact chunks of forged content: the checksums pass, the signature does not.
    forged = bytearray(data)
    forged[-1] ^= 0x01
    response = sync_stub(gd).PushSnapshot(iter(parts(bytes(forged))), timeout=30)
    assert not response.applied and response.rejected.startswith("bad_signature: ")
    assert head(gd, GZ) == (0, b"", 0)

    # The same snapshot untouched is taken: the flipped bit was the only problem.
    response = sync_stub(gd).PushSnapshot(iter(parts(data)), timeout=30)
    assert (response.applied, response.rejected) == (True, "")
    assert head(gd, GZ)[:1] == (7,) and head(gd, GZ)[2] == len(cards)
    assert revoked_at(gd, cards[:500])
    again = sync_stub(gd).PushSnapshot(iter(parts(data)), timeout=30)
    assert (again.applied, again.already_held) == (False, True)


def test_manifest_over_the_max_snapshot_size_is_refused_before_any_chunk(nodes: Nodes) -> None:
    gd = nodes.start(nodes.gd_files)
    claimed = MAX_SNAPSHOT + 1
    manifest = sync_pb2.SnapshotManifest(
        publisher=GZ, version=7, total_bytes=claimed, chunk_bytes=CHUNK,
        chunk_xxh64=[0] * -(-claimed // CHUNK),
    )  # fmt: skip
    hold = threading.Event()
    sent: list[str] = []

    def stream() -> Iterator[Any]:
        sent.append("manifest")
        yield sync_pb2.SnapshotPart(manifest=manifest)
        hold.wait(30)  # no chunk follows until the call has its answer
        sent.append("chunk")
        yield sync_pb2.SnapshotPart(chunk=b"x" * CHUNK)

    try:
        with pytest.raises(grpc.RpcError) as refused:
            sync_stub(gd).PushSnapshot(stream(), timeout=20)
    finally:
        hold.set()
    assert sent[:1] == ["manifest"] and refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"announces {claimed} bytes, over this node's max_snapshot_bytes of {MAX_SNAPSHOT}" in (
        refused.value.details() or ""
    )
    assert (
        metric(gd, "blacklist_snapshot_transfers_total", direction="received", result="too_large")
        == 1
    )
    assert head(gd, GZ) == (0, b"", 0)
    answer = gd.card_status.CheckCard(
        card_status_pb2.CheckCardRequest(card_id=card_id(GZ)), timeout=10
    )
    assert answer.status == S.NO_DATA  # still serving


def test_push_snapshot_landing_on_a_worker_is_relayed_part_by_part(tmp_path: Path) -> None:
    """With ``workers = 2`` a child's connection lands on a worker: PushSnapshot (the one
    client-streaming Sync method) is relayed to the writer as it arrives, and so is the
    writer's status (DATA_LOSS for a damaged chunk)."""
    gz_keys = write_node(tmp_path / "gz", GZ).keys
    assert gz_keys is not None
    files = write_node(
        tmp_path / "gd", GD, role="province", signing=False, trusted=[gz_keys.public],
        extra={"workers": 2, **SMALL},
    )  # fmt: skip
    data, cards = made_up_snapshot(load_signing_key(gz_keys.private))

    def flip(chunks: list[bytes]) -> None:
        chunks[3] = bytes([chunks[3][0] ^ 1]) + chunks[3][1:]

    options = [("grpc.max_send_message_length", LIMIT), ("grpc.use_local_subchannel_pool", 1)]
    relayed_status: list[grpc.StatusCode] = []
    with NodeProcess(files.config) as gd:
        outcomes = []
        for _ in range(10):  # each over its own connection, spread by SO_REUSEPORT
            with grpc.insecure_channel(gd.grpc, options=options) as channel:
                stub = sync_pb2_grpc.SyncStub(channel)  # type: ignore[no-untyped-call]
                with pytest.raises(grpc.RpcError) as refused:
                    stub.PushSnapshot(iter(parts(data, flip)), timeout=30)
                # Known, rare (about 1 push in 30 through a worker): when the writer ends
                # the relayed client stream early, grpc.aio's request consumer in the worker
                # is cancelled mid-read and the caller sees INTERNAL instead of DATA_LOSS.
                # Either way nothing is applied (checked below) and the child retries.
                assert refused.value.code() in (grpc.StatusCode.DATA_LOSS, grpc.StatusCode.INTERNAL)
                relayed_status.append(refused.value.code())
                answer = stub.PushSnapshot(iter(parts(data)), timeout=30)
                outcomes.append((answer.applied, answer.already_held, answer.rejected))
        assert outcomes == [(True, False, "")] + [(False, True, "")] * 9
        assert relayed_status.count(grpc.StatusCode.DATA_LOSS) >= 5, relayed_status
        assert head(gd, GZ)[0] == 7 and revoked_at(gd, cards[:300])
        info = gd.scrape().samples.get("blacklist_worker_info", [])
        relayed = 0.0
        for url in [labels["metrics_url"] for labels, _ in info]:
            worker = Metrics.of(url)
            relayed += worker.get("blacklist_relayed_calls_total", grpc_method="PushSnapshot")
        assert relayed == 20  # the writer serves no connection: every push was relayed
