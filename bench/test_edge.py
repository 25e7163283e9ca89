"""Issue #16 part 1 figures: the edge replica (blacklist/edge) beside a node's CheckCard over
gRPC and Redis SISMEMBER, in one run.

The upstream is a real node process (``python -m node run``) holding BENCH_SCALE entries of
BENCH_PUBLISHERS cities (bench/test_node.py builds its store and config). An edge replica
in this process follows it and catches up; then, one card at a time, on loopback:

* ``test_edge_check``: the replica's ``check`` per miss and per hit (in-process, no
  network), CheckCard over gRPC to the node (grpc's synchronous client, one call in flight),
  and SISMEMBER through redis-py to a redis-server holding the same revoked ids:
  ``edge_ns_per_check``, ``grpc_ns_per_check``, ``redis_ns_per_check`` (misses, the common
  case), ``edge_hit_ns_per_check``, and the ratios (goal: ≥ 100× faster than either);
* ``test_edge_check_many``: ``check_many`` of 1,000 ids (1% revoked), ``cards_per_s``;
* ``test_edge_catch_up``: the replica is closed (the link is down), the authority publishes
  10,000 revocations in 100 deltas meanwhile, the replica reopens: ``catch_up_seconds`` until
  it holds the new head, ``catch_up_bytes`` received;
* ``test_edge_footprint``: ``python -m node edge`` as its own process, caught up with all
  BENCH_SCALE entries: resident memory (``rss_mib``) and the data directory on disk
  (``disk_mib``, ``disk_bytes_per_entry``), beside the node process's RSS in the same run.
  10M: ``BENCH_SCALE=10000000`` (slow: building the upstream's store takes minutes).

Under ``--benchmark-disable`` (``make test``) every figure is measured once, on few calls.
"""

from __future__ import annotations

import statistics
import time
import timeit
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from bench.conftest import progress
from bench.figures import record, timed
from bench.grpc_load import ServerProcess, python_command
from bench.redis_baseline import REDIS_SERVER, SET_KEY, RedisServer
from bench.test_node import MAP_SIZE_GIB, ROOT, _build_node
from blacklist.edge import EdgeReplica, EdgeStatus
from node.gen.blacklist.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    card_status_pb2,
    card_status_pb2_grpc,
    types_pb2,
)
from node.keyfiles import load_trusted_keys

OUTAGE_REVOCATIONS = 10_000
OUTAGE_DELTAS = 100
BATCH = 1000
NOT_REVOKED = types_pb2.CardStatusCode.Value("NOT_REVOKED")


@dataclass
class Upstream:
    server: ServerProcess
    root: Path
    entries: int
    valid: list[str]
    revoked: list[str]
    own: str  # the node's own publisher (it signs what the catch-up benchmark revokes)

    def keys(self) -> list[Any]:
        return load_trusted_keys(sorted((self.root / "keys").glob("*.pub")))


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    root = tmp_path_factory.mktemp("bench-edge-node")
    config, entries, valid, revoked = _build_node(root)
    own = next(line for line in config.read_text().splitlines() if line.startswith("region"))
    config.write_text(config.read_text() + "head_statement_interval = 5.0\n")
    server = ServerProcess(
        python_command("-m", "node", "run", "--config", str(config)),
        cwd=ROOT,
        log=root / "node.log",
    )
    try:
        yield Upstream(server, root, entries, valid, revoked, own.split('"')[1])
    finally:
        assert server.stop() == 0, (root / "node.log").read_text()


def open_replica(upstream: Upstream, data_dir: Path) -> EdgeReplica:
    return EdgeReplica.open(
        data_dir,
        upstreams=[upstream.server.address],
        trusted_keys=upstream.keys(),
        map_size=MAP_SIZE_GIB << 30,
        sync_interval=0.5,
    )


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 1800.0) -> float:
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
    return time.perf_counter() - start


@pytest.fixture(scope="module")
def replica(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeReplica]:
    replica = open_replica(upstream, tmp_path_factory.mktemp("bench-edge") / "data")
    last = upstream.revoked[-1]
    seconds = wait_for("the bootstrap", lambda: replica.check(last).status is EdgeStatus.REVOKED)
    progress(
        f"edge replica bootstrapped {replica.store.entry_count():,} entries in {seconds:.1f} s "
        f"({sum(replica.counters.received_bytes.values()):,} bytes)"
    )
    try:
        yield replica
    finally:
        replica.close()


@pytest.fixture(scope="module")
def redis(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    import shutil

    if shutil.which(REDIS_SERVER) is None:
        pytest.skip("redis-server not found (`make compare-tools` installs Debian's redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("bench-edge-redis"))
    try:
        server.load_set(upstream.revoked)  # membership of a miss costs the same at any size
        yield server
    finally:
        server.stop()


def ns_per_call(fn: Callable[[str], object], cards: Sequence[str], repeat: int) -> float:
    """The median of ``repeat`` passes, in ns per call of ``fn`` over ``cards`` (issue #15:
    headline figures are medians, never the best pass). The same rule for the edge and both
    baselines."""
    times = timeit.repeat(lambda: [fn(c) for c in cards], repeat=repeat, number=1)
    return statistics.median(times) / len(cards) * 1e9


def test_edge_check(
    benchmark: Any, upstream: Upstream, replica: EdgeReplica, redis: RedisServer
) -> None:
    full = timed(benchmark)
    misses = upstream.valid[: 10_000 if full else 200]
    hits = upstream.revoked[: 2_000 if full else 50]
    remote = upstream.valid[: 2_000 if full else 50]  # one call in flight: ~0.5 ms each
    assert all(replica.check(c).status is EdgeStatus.NOT_REVOKED for c in misses)
    assert all(replica.check(c).status is EdgeStatus.REVOKED for c in hits)
    channel = grpc.insecure_channel(upstream.server.address)
    stub = card_status_pb2_grpc.CardStatusStub(channel)  # type: ignore[no-untyped-call]

    def check_card(card: str) -> object:
        return stub.CheckCard(card_status_pb2.CheckCardRequest(card_id=card), timeout=10)

    def sismember(card: str) -> object:
        return redis.client.sismember(SET_KEY, card)

    assert check_card(misses[0]).status == NOT_REVOKED  # type: ignore[attr-defined]
    assert not sismember(misses[0]) and sismember(upstream.revoked[0])
    repeat = 5 if full else 1
    benchmark.name = "test_edge_check"
    # An edge pass takes milliseconds, a remote one seconds: more passes for the edge, so
    # that each side's median spans a similar stretch of this shared machine's time.
    edge_ns = benchmark.pedantic(
        ns_per_call, args=(replica.check, misses, 4 * repeat), rounds=1, iterations=1
    )
    hit_ns = ns_per_call(replica.check, hits, 4 * repeat)
    grpc_ns = ns_per_call(check_card, remote, repeat)
    redis_ns = ns_per_call(sismember, remote, repeat)
    channel.close()
    record(
        benchmark,
        entries=upstream.entries,
        edge_ns_per_check=edge_ns,
        edge_hit_ns_per_check=hit_ns,
        grpc_ns_per_check=grpc_ns,
        redis_ns_per_check=redis_ns,
        speedup_vs_grpc=grpc_ns / edge_ns,
        speedup_vs_redis=redis_ns / edge_ns,
        redis_version=redis.version,
    )


def test_edge_check_many(benchmark: Any, upstream: Upstream, replica: EdgeReplica) -> None:
    rng = np.random.default_rng(16)
    ids = [*upstream.valid[: BATCH - BATCH // 100], *upstream.revoked[: BATCH // 100]]
    ids = [ids[i] for i in rng.permutation(len(ids))]
    result = replica.check_many(ids)
    assert result.counts() == {
        EdgeStatus.NOT_REVOKED: BATCH - BATCH // 100,
        EdgeStatus.REVOKED: BATCH // 100,
    }
    benchmark.name = "test_edge_check_many"
    repeat = 20 if timed(benchmark) else 1
    seconds = benchmark.pedantic(
        lambda: statistics.median(
            timeit.repeat(lambda: replica.check_many(ids), repeat=repeat, number=1)
        ),
        rounds=1,
        iterations=1,
    )
    record(benchmark, entries=upstream.entries, batch=BATCH, cards_per_s=BATCH / seconds)


def test_edge_catch_up(
    benchmark: Any, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Closed while the authority publishes 10,000 revocations (100 deltas of 100), then
    reopened: the seconds until it holds the new head, and the bytes it received."""
    data_dir = tmp_path_factory.mktemp("bench-edge-outage") / "data"
    replica = open_replica(upstream, data_dir)
    wait_for(
        "the bootstrap", lambda: replica.check(upstream.revoked[-1]).status is EdgeStatus.REVOKED
    )
    replica.close()
    total = OUTAGE_REVOCATIONS if timed(benchmark) else 200
    rng = np.random.default_rng(17)
    serials = rng.integers(0, 2**63, size=total, dtype=np.int64)
    cards = [f"{upstream.own}D156000005{int(s):016X}" for s in serials]
    with grpc.insecure_channel(upstream.server.address) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
        per = total // OUTAGE_DELTAS
        for start in range(0, total, per):
            admin.Revoke(
                admin_pb2.RevokeRequest(
                    revocations=[
                        admin_pb2.Revocation(card_id=c, reason=types_pb2.LOSS)
                        for c in cards[start : start + per]
                    ]
                ),
                timeout=60,
            )
    benchmark.name = "test_edge_catch_up"
    holder: list[EdgeReplica] = []

    def catch_up() -> float:
        t0 = time.perf_counter()
        holder.append(open_replica(upstream, data_dir))
        wait_for("the catch-up", lambda: holder[0].check(cards[-1]).status is EdgeStatus.REVOKED)
        return time.perf_counter() - t0

    seconds = benchmark.pedantic(catch_up, rounds=1, iterations=1)
    replica = holder[0]
    try:
        assert all(
            a.status is EdgeStatus.REVOKED
            for a in map(replica.check, cards[:: max(1, total // 500)])
        )
        received = sum(replica.counters.received_bytes.values())
        record(
            benchmark,
            revocations=total,
            deltas=OUTAGE_DELTAS,
            catch_up_seconds=seconds,
            catch_up_bytes=received,
            bytes_per_revocation=received / total,
            snapshots=replica.counters.snapshots["ok"],
        )
    finally:
        replica.close()


def _rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of ``pid`` (proc(5) status): all of it (VmRSS), or only the
    anonymous part (RssAnon: the heap, not LMDB's file pages, which are page cache the
    kernel may take back)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def _disk_bytes(path: Path) -> int:
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


def _empty_daemon_rss(root: Path, pubs: str) -> int:
    """The baseline: the same daemon with an empty store and no upstream reachable, after
    the same 1,000 checks (the interpreter, grpc, numpy and LMDB, no entries)."""
    root.mkdir()
    config = root / "edge.toml"
    config.write_text(
        f'data_dir = "data"\nlisten = "unix:{root / "edge.sock"}"\n'
        f'upstreams = ["127.0.0.1:9"]\ntrusted_keys = [{pubs}]\nplaintext = true\n'
    )
    daemon = ServerProcess(
        python_command("-m", "node", "edge", "--config", str(config)),
        cwd=ROOT,
        log=root / "edge.log",
    )
    try:
        with grpc.insecure_channel(daemon.address) as channel:
            stub = card_status_pb2_grpc.CardStatusStub(channel)  # type: ignore[no-untyped-call]
            for card in [f"440100D156000005{i:016X}" for i in range(1000)]:
                stub.CheckCard(card_status_pb2.CheckCardRequest(card_id=card), timeout=10)
        return _rss_bytes(daemon.proc.pid)
    finally:
        assert daemon.stop() == 0, (root / "edge.log").read_text()


def test_edge_footprint(
    benchmark: Any, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The daemon as a gateway runs it, caught up with every entry: RSS and disk."""
    root = tmp_path_factory.mktemp("bench-edge-daemon")
    pubs = ", ".join(
        f'"{p}"' for p in sorted(str(p) for p in (upstream.root / "keys").glob("*.pub"))
    )
    config = root / "edge.toml"
    config.write_text(
        f'data_dir = "data"\nlisten = "unix:{root / "edge.sock"}"\n'
        f'upstreams = ["{upstream.server.address}"]\ntrusted_keys = [{pubs}]\nplaintext = true\n'
        f"map_size_gib = {MAP_SIZE_GIB}\nsync_interval = 0.5\n"
    )
    benchmark.name = "test_edge_footprint"
    empty_rss = _empty_daemon_rss(root / "empty", pubs)
    daemon = ServerProcess(
        python_command("-m", "node", "edge", "--config", str(config)),
        cwd=ROOT,
        log=root / "edge.log",
    )
    command = python_command("-m", "node", "edge", "--config", str(config))

    def first_checks(address: str) -> None:  # a reader's first checks: the index paged in
        with grpc.insecure_channel(address) as channel:
            stub = card_status_pb2_grpc.CardStatusStub(channel)  # type: ignore[no-untyped-call]
            for card in upstream.valid[:1000]:
                stub.CheckCard(card_status_pb2.CheckCardRequest(card_id=card), timeout=10)

    try:
        channel = grpc.insecure_channel(daemon.address)
        stub = card_status_pb2_grpc.CardStatusStub(channel)  # type: ignore[no-untyped-call]
        last = card_status_pb2.CheckCardRequest(card_id=upstream.revoked[-1])
        revoked = types_pb2.CardStatusCode.Value("REVOKED")
        seconds = benchmark.pedantic(
            wait_for,
            args=(
                "the daemon's catch-up",
                lambda: stub.CheckCard(last, timeout=10).status == revoked,
            ),
            rounds=1,
            iterations=1,
        )
        channel.close()
        first_checks(daemon.address)
        rss = _rss_bytes(daemon.proc.pid)
        anon = _rss_bytes(daemon.proc.pid, "RssAnon")
        node_rss = _rss_bytes(upstream.server.proc.pid)
        node_anon = _rss_bytes(upstream.server.proc.pid, "RssAnon")
    finally:
        assert daemon.stop() == 0, (root / "edge.log").read_text()
    # A restart (a gateway's reboot): ready and answering from its own store.
    t0 = time.perf_counter()
    daemon = ServerProcess(command, cwd=ROOT, log=root / "edge-restart.log")
    try:
        with grpc.insecure_channel(daemon.address) as channel:
            stub = card_status_pb2_grpc.CardStatusStub(channel)  # type: ignore[no-untyped-call]
            assert stub.CheckCard(last, timeout=10).status == revoked
        restart_seconds = time.perf_counter() - t0
        first_checks(daemon.address)
        restart_rss = _rss_bytes(daemon.proc.pid)
        restart_anon = _rss_bytes(daemon.proc.pid, "RssAnon")
    finally:
        assert daemon.stop() == 0, (root / "edge-restart.log").read_text()
    disk = _disk_bytes(root / "data")
    entries = upstream.entries
    record(
        benchmark,
        entries=entries,
        bootstrap_seconds=seconds,
        rss_mib=rss / 2**20,
        rss_anon_mib=anon / 2**20,
        empty_rss_mib=empty_rss / 2**20,
        rss_bytes_per_entry=(rss - empty_rss) / entries,
        restart_seconds=restart_seconds,
        restart_rss_mib=restart_rss / 2**20,
        restart_rss_anon_mib=restart_anon / 2**20,
        node_rss_mib=node_rss / 2**20,
        node_rss_anon_mib=node_anon / 2**20,
        disk_mib=disk / 2**20,
        disk_bytes_per_entry=disk / entries,
    )
