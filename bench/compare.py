"""`make bench-compare` (issue #6): the node beside what an operator would otherwise pick,
measured side by side in one run, written to ``compare.json``, ``compare.md`` and
``compare.png``.

    python -m bench.compare --scale 1000000 [--seconds 4 --rounds 3 --out bench/results]

One run, in this order (progress on stderr):

1. **Data.** BENCH_SCALE entries of 300 real cities (``bench/scale.py``), one signed
   delta per city applied to a store as an operator's node would hold it; the index's
   bytes and ``data.mdb``'s size per entry are read there. The same ids go into one
   Redis set (``SADD`` of the 32-character ids) and into Python sets.
2. **Memory.** The node's resident size (``VmRSS``, proc(5)) after start-up and one check,
   minus that of the same node over an empty data directory; Redis ``used_memory`` before
   and after the ``SADD``; a Python set of the id strings and of the 18-byte keys
   (``sys.getsizeof`` of the set and its members).
3. **Loads, in rounds.** Every side runs once per round, one after another, so that
   drift in these shared cores' speed falls on all of them; each side's median round is
   reported (its calls/s and that run's own p50/p99) with the range of the rounds' rates
   beside it, and every round's rate kept in the JSON. Every server is its own process on loopback, driven by a C client at the same
   number of calls in flight (:data:`INFLIGHT`): h2load for the gRPC servers (the node with
   1 and, where ``node.config`` has ``workers``, 2 workers; ``bench/empty_server.py``),
   ``redis-benchmark`` for Redis and for a raw TCP echo server (``bench/tcp_echo.py``).
   Redis through redis-py (several blocking client processes) is the Python client's view.
   Unary calls check a valid card (the common case); batches are 1,000 ids, 1% revoked.
4. **Sizes.** A signed delta of 100,000 revocations (one city, one hour) against the same
   revocations as a DER X.509 delta CRL (``bench/test_core.py``'s builder).
5. **Sync.** Propagation and bootstrap are not rerun (minutes of federation): they are
   read from the newest ``bench/results/*.json`` of ``make bench`` that holds them, and
   the table names the file and its date.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench.compare_loads import (
    EchoServer,
    Side,
    h2load_side,
    progress,
    redis_benchmark_side,
    redis_py_side,
    rss_bytes,
    run_rounds,
)
from bench.crl import crl_bytes
from bench.data import city_entries
from bench.grpc_load import ServerProcess, grpc_body, h2load_path, python_command
from bench.redis_baseline import (
    RedisServer,
    redis_benchmark_path,
)
from bench.scale import ScaleDataset, scale_dataset, unseen_card_ids
from blacklist.delta import sign_delta
from blacklist.entryblock import CardColumns
from blacklist.feedhead import FeedHead
from blacklist.signing import Keyring, SigningKey
from blacklist.store import RevocationStore
from node.config import NodeConfig
from node.gen.blacklist.v1 import card_status_pb2, card_status_pb2_grpc, types_pb2
from node.keyfiles import write_key_pair

ROOT = Path(__file__).resolve().parent.parent
SERVICE = "blacklist.v1.CardStatus"
BATCH = 1000
REVOKED_SHARE = 100  # one revoked card in a hundred in a batch
INFLIGHT = 128  # calls in flight for every C-client load: h2load -c 8 -m 16, -c 128 otherwise
H2_CLIENTS, H2_STREAMS = 8, 16
BATCH_INFLIGHT = 8  # batches are ~1,000x the work of a call: a few in flight saturate
REDIS_PY_PROCESSES = 4
DELTA_SIZE = 100_000
MAP_SIZE_GIB = 64
NOT_REVOKED = types_pb2.CardStatusCode.Value("NOT_REVOKED")
REVOKED = types_pb2.CardStatusCode.Value("REVOKED")


def workers_supported() -> bool:
    """Multi-process serving (issue #6) is configured by a ``workers`` field."""
    return "workers" in NodeConfig.__dataclass_fields__


@dataclass
class Built:
    root: Path
    data: ScaleDataset
    entries: int
    build_seconds: float
    index_bytes: int
    lmdb_bytes: int
    config: Path
    config_empty: Path
    config_workers: Path | None
    valid: list[str]
    revoked: list[str]


def build(root: Path, data: ScaleDataset) -> Built:
    """Keys, a store of every entry, and node configs, as an operator's files."""
    keys = {p: SigningKey.generate(p, [p[:4]]) for p in data.publishers}
    for key in keys.values():
        write_key_pair(key, root / "keys")
    ring = Keyring(k.trusted() for k in keys.values())
    start = time.perf_counter()
    store = RevocationStore(root / "data", map_size=MAP_SIZE_GIB << 30)
    for n, (pub, feed) in enumerate(data.by_publisher(), 1):
        delta = sign_delta(keys[pub], store.head(pub), feed, CardColumns.empty(), 0)
        store.apply_delta(delta, ring)
        if n % 50 == 0:
            progress(f"store: {n} of {len(data.publishers)} cities ({store.entry_count():,})")
    entries = store.entry_count()
    index_bytes = store.index.memory_bytes()
    assert len(store.index) == entries
    store.close()  # saves the index, so that the node starts without rebuilding it
    seconds = time.perf_counter() - start
    progress(f"store: {entries:,} entries in {seconds:.1f} s")
    lmdb_bytes = (root / "data" / "data.mdb").stat().st_size
    (root / "empty-data").mkdir()
    own = data.publishers[0]
    pubs = ", ".join(f'"keys/{p}.pub"' for p in data.publishers)

    def config(name: str, data_dir: str, extra: str = "") -> Path:
        path = root / name
        path.write_text(
            f'role = "city"\nregion = "{own}"\nlisten = "127.0.0.1:0"\n'
            f'metrics_listen = "127.0.0.1:0"\ndata_dir = "{data_dir}"\n'
            f'signing_key = "keys/{own}.key"\ntrusted_keys = [{pubs}]\n'
            f"map_size_gib = {MAP_SIZE_GIB}\nplaintext = true\n{extra}"
        )
        return path

    workers = None
    if workers_supported():
        shutil.copytree(root / "data", root / "data-workers")  # its own environment
        workers = config("node-workers.toml", "data-workers", "workers = 2\n")
    revoked_rows = np.linspace(0, len(data) - 1, num=min(len(data), 200)).astype(np.intp)
    return Built(
        root,
        data,
        entries,
        seconds,
        index_bytes,
        lmdb_bytes,
        config("node.toml", "data"),
        config("node-empty.toml", "empty-data"),
        workers,
        unseen_card_ids(data, 2000),
        data.card_ids(revoked_rows),
    )


def check_card_request(card: str) -> card_status_pb2.CheckCardRequest:
    return card_status_pb2.CheckCardRequest(card_id=card)


def verify_node(server: ServerProcess, valid: str, batch: list[str], revoked: int) -> None:
    """The very requests of the loads, through a grpc client: the answers are right."""
    with grpc.insecure_channel(server.address) as channel:
        stub = card_status_pb2_grpc.CardStatusStub(channel)  # type: ignore[no-untyped-call]
        assert stub.CheckCard(check_card_request(valid)).status == NOT_REVOKED
        answer = stub.BatchCheck(card_status_pb2.BatchCheckRequest(card_ids=batch))
        assert answer.count == len(batch) and len(answer.cards) == revoked, answer.count
        assert all(c.status == REVOKED for c in answer.cards)


# --- memory and sizes ----------------------------------------------------------------------


def python_set_bytes(members: list[Any]) -> int:
    """A Python set of ``members``: the table plus each member object (all the same size)."""
    table = set(members)
    size = sys.getsizeof(table) + sum(sys.getsizeof(m) for m in members[:1]) * len(table)
    del table
    return size


def binary_keys(data: ScaleDataset) -> list[bytes]:
    """The 18-byte keys (blacklist/cardid.py layout: region u24, middle u56, serial u64, all
    big-endian) of every entry."""
    cards = data.entries.cards
    rows = np.empty((len(cards), 18), dtype=np.uint8)
    rows[:, 0:3] = cards.region.astype(">u4").view(np.uint8).reshape(-1, 4)[:, 1:]
    rows[:, 3:10] = cards.middle.astype(">u8").view(np.uint8).reshape(-1, 8)[:, 1:]
    rows[:, 10:18] = cards.serial.astype(">u8").view(np.uint8).reshape(-1, 8)
    flat = rows.tobytes()
    return [flat[i : i + 18] for i in range(0, len(flat), 18)]


def delta_and_crl_bytes(size: int) -> dict[str, float]:
    """Bytes per entry of a signed delta and of a DER X.509 delta CRL of the same
    revocations (bench/crl.py, bench/data.py: one city, mixed reasons, per-second times
    within one hour)."""
    key = SigningKey.generate("440300", ["4403"])
    entries = city_entries(np.random.default_rng(5), "440300", size, start=1_767_225_600, span=3600)
    delta = sign_delta(key, FeedHead.genesis("440300"), entries, CardColumns.empty(), 0)
    return {
        "entries": size,
        "delta_bytes_per_entry": len(delta.to_bytes()) / size,
        "crl_bytes_per_entry": crl_bytes(entries) / size,
    }


# --- the run -------------------------------------------------------------------------------


@dataclass
class Settings:
    scale: int
    seconds: float = 4.0
    rounds: int = 3
    publishers: int = 300
    seed: int = 1
    delta_size: int = DELTA_SIZE
    redis_py_processes: int = REDIS_PY_PROCESSES
    out: Path = ROOT / "bench" / "results"
    sync_results: Path = ROOT / "bench" / "results"


def run_compare(settings: Settings, workdir: Path) -> dict[str, Any]:
    """Everything of one run, as the JSON that compare.md and compare.png are made from."""
    if h2load_path() is None:
        raise RuntimeError("h2load not found (Debian package nghttp2-client)")
    if redis_benchmark_path() is None:
        raise RuntimeError("redis-benchmark not found (Debian package redis-tools)")
    started = time.perf_counter()
    result: dict[str, Any] = {
        "scale": settings.scale,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "load_1m_start": os.getloadavg()[0],
        "seconds_per_load": settings.seconds,
        "rounds": settings.rounds,
        "inflight": INFLIGHT,
        "batch_size": BATCH,
    }
    t0 = time.perf_counter()
    data = scale_dataset(settings.scale, min(settings.publishers, settings.scale), settings.seed)
    progress(
        f"data: {len(data):,} entries of {len(data.publishers)} cities in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    built = build(workdir, data)
    n = built.entries
    result["entries"] = n
    result["publishers"] = len(data.publishers)
    result["build_seconds"] = built.build_seconds
    memory: dict[str, float] = {"index": built.index_bytes / n}
    sizes: dict[str, float] = {"lmdb": built.lmdb_bytes / n}
    batch = built.valid[: BATCH - BATCH // REVOKED_SHARE] + built.revoked[: BATCH // REVOKED_SHARE]
    batch = batch[:BATCH]
    revoked_in_batch = sum(1 for c in batch if c in set(built.revoked))

    servers: list[Any] = []
    try:
        # The node over an empty data directory: what a node costs before any entry.
        empty_node = ServerProcess(
            python_command("-m", "node", "run", "--config", str(built.config_empty)),
            cwd=ROOT,
            log=workdir / "node-empty.log",
        )
        servers.append(empty_node)  # stopped in `finally` too if anything below fails
        verify_empty = grpc.insecure_channel(empty_node.address)
        card_status_pb2_grpc.CardStatusStub(verify_empty).CheckCard(  # type: ignore[no-untyped-call]
            check_card_request(built.valid[0])
        )
        verify_empty.close()
        rss_empty = rss_bytes(empty_node.proc.pid)
        assert empty_node.stop() == 0
        node = ServerProcess(
            python_command("-m", "node", "run", "--config", str(built.config)),
            cwd=ROOT,
            log=workdir / "node.log",
            timeout=300,
        )
        servers.append(node)
        verify_node(node, built.valid[0], batch, revoked_in_batch)
        rss_node = rss_bytes(node.proc.pid)
        result["node_rss_bytes"] = rss_node
        result["empty_node_rss_bytes"] = rss_empty
        memory["node_rss"] = (rss_node["VmRSS"] - rss_empty["VmRSS"]) / n
        memory["node_rss_anon"] = (rss_node["RssAnon"] - rss_empty["RssAnon"]) / n
        progress(
            f"node: {rss_node['VmRSS'] / 2**20:,.0f} MiB resident "
            f"(empty node {rss_empty['VmRSS'] / 2**20:,.0f} MiB)"
        )
        workers = None
        if built.config_workers is not None:
            workers = ServerProcess(
                python_command("-m", "node", "run", "--config", str(built.config_workers)),
                cwd=ROOT,
                log=workdir / "node-workers.log",
                timeout=300,
            )
            servers.append(workers)
            time.sleep(1.0)  # the worker processes come up after READY
            verify_node(workers, built.valid[0], batch, revoked_in_batch)
        empty = ServerProcess(
            python_command("-m", "bench.empty_server"), cwd=ROOT, log=workdir / "empty.log"
        )
        servers.append(empty)
        echo = EchoServer(workdir / "echo.log")
        servers.append(echo)
        redis = RedisServer(workdir / "redis")
        servers.append(redis)
        result["redis_version"] = redis.version

        progress("memory: Redis set and Python sets of every id")
        ids = data.card_ids()
        before = redis.used_memory()
        redis.load_set(ids)
        assert redis.client.scard("revoked") == n
        memory["redis_set"] = (redis.used_memory() - before) / n
        memory["python_set_str"] = python_set_bytes(ids) / n
        del ids
        memory["python_set_bytes18"] = python_set_bytes(binary_keys(data)) / n
        assert redis.client.sismember("revoked", built.revoked[0])
        assert not redis.client.sismember("revoked", built.valid[0])
        assert sum(redis.client.smismember("revoked", batch)) == revoked_in_batch
        result["memory_bytes_per_entry"] = memory

        bodies = workdir / "bodies"
        bodies.mkdir()
        unary_body = bodies / "check.bin"
        unary_body.write_bytes(grpc_body([check_card_request(built.valid[0])]))
        batch_body = bodies / "batch.bin"
        batch_body.write_bytes(grpc_body([card_status_pb2.BatchCheckRequest(card_ids=batch)]))
        s = settings.seconds
        h2 = (H2_CLIENTS, H2_STREAMS)
        rpid = redis.proc.pid
        py = settings.redis_py_processes
        unary: list[tuple[Side, Callable[[Side, Path], None]]] = [
            (
                Side("node, 1 worker", f"h2load -c {h2[0]} -m {h2[1]}", 1),
                h2load_side(node, "CheckCard", unary_body, s, h2),
            ),
        ]
        if workers is not None:
            unary.append(
                (
                    Side("node, 2 workers", f"h2load -c {h2[0]} -m {h2[1]}", 1),
                    h2load_side(workers, "CheckCard", unary_body, s, h2, one_process_metrics=False),
                )
            )
        unary += [
            (
                Side("empty grpc.aio handler", f"h2load -c {h2[0]} -m {h2[1]}", 1),
                h2load_side(empty, "CheckCard", unary_body, s, h2),
            ),
            (
                Side("Redis SISMEMBER", f"redis-benchmark -c {INFLIGHT} -P 1", 1),
                redis_benchmark_side(
                    redis.port, ["SISMEMBER", "revoked", built.valid[0]], INFLIGHT, s, rpid
                ),
            ),
            (
                Side("raw TCP echo (Python asyncio)", f"redis-benchmark -c {INFLIGHT} -P 1", 1),
                redis_benchmark_side(
                    echo.port, ["ECHO", built.valid[0]], INFLIGHT, s, echo.proc.pid
                ),
            ),
            (
                Side(
                    "Redis SISMEMBER via redis-py",
                    f"redis-py, {py} processes, 1 call in flight each",
                    1,
                ),
                redis_py_side(redis.port, built.valid, 1, s, rpid, py),
            ),
        ]
        # Latency without queueing: one call at a time, the same client per server.
        one = (1, 1)
        single: list[tuple[Side, Callable[[Side, Path], None]]] = [
            (
                Side("node, 1 worker", "h2load -c 1 -m 1", 1),
                h2load_side(node, "CheckCard", unary_body, s / 2, one),
            ),
            (
                Side("empty grpc.aio handler", "h2load -c 1 -m 1", 1),
                h2load_side(empty, "CheckCard", unary_body, s / 2, one),
            ),
            (
                Side("Redis SISMEMBER", "redis-benchmark -c 1 -P 1", 1),
                redis_benchmark_side(
                    redis.port,
                    ["SISMEMBER", "revoked", built.valid[0]],
                    1,
                    s / 2,
                    rpid,
                    calibrate=500,
                ),
            ),
            (
                Side("raw TCP echo (Python asyncio)", "redis-benchmark -c 1 -P 1", 1),
                redis_benchmark_side(
                    echo.port, ["ECHO", built.valid[0]], 1, s / 2, echo.proc.pid, calibrate=500
                ),
            ),
        ]
        b = BATCH_INFLIGHT
        batches: list[tuple[Side, Callable[[Side, Path], None]]] = [
            (
                Side("node BatchCheck, 1 worker", f"h2load -c 2 -m {b // 2}", BATCH),
                h2load_side(node, "BatchCheck", batch_body, s, (2, b // 2)),
            ),
        ]
        if workers is not None:
            batches.append(
                (
                    Side("node BatchCheck, 2 workers", f"h2load -c 2 -m {b // 2}", BATCH),
                    h2load_side(
                        workers, "BatchCheck", batch_body, s, (2, b // 2), one_process_metrics=False
                    ),
                )
            )
        batches += [
            (
                Side("empty grpc.aio BatchCheck", f"h2load -c 2 -m {b // 2}", BATCH),
                h2load_side(empty, "BatchCheck", batch_body, s, (2, b // 2)),
            ),
            (
                Side("Redis SMISMEMBER", f"redis-benchmark -c {b} -P 1", BATCH),
                redis_benchmark_side(
                    redis.port, ["SMISMEMBER", "revoked", *batch], b, s, rpid, calibrate=50
                ),
            ),
            (
                Side(
                    "Redis SMISMEMBER via redis-py",
                    f"redis-py, {py} processes, 1 call in flight each",
                    BATCH,
                ),
                redis_py_side(redis.port, batch, BATCH, s, rpid, py),
            ),
        ]
        logs = workdir / "logs"
        logs.mkdir()
        progress(f"unary loads: {len(unary)} sides x {settings.rounds} rounds x {s:g} s")
        run_rounds(unary, settings.rounds, logs)
        progress(f"one call in flight: {len(single)} sides x {settings.rounds} rounds")
        run_rounds(single, settings.rounds, logs, "single-")
        progress(f"batch loads: {len(batches)} sides x {settings.rounds} rounds x {s:g} s")
        run_rounds(batches, settings.rounds, logs)
        result["unary"] = [side.summary() for side, _ in unary]
        result["single"] = [side.summary() for side, _ in single]
        result["batch"] = [side.summary() for side, _ in batches]
    finally:
        for server in reversed(servers):
            server.stop()
    size = min(settings.delta_size, settings.scale)
    progress(f"sizes: a delta and a DER delta CRL of {size:,} entries")
    sizes.update(delta_and_crl_bytes(size))
    result["bytes_per_entry"] = sizes
    from bench.compare_report import sync_figures

    result["sync"] = sync_figures(settings.sync_results)
    result["load_1m_end"] = os.getloadavg()[0]
    result["run_seconds"] = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--scale", type=int, default=int(os.environ.get("BENCH_SCALE", "1000000")))
    parser.add_argument("--seconds", type=float, default=4.0, help="per load run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--publishers", type=int, default=300)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--sync-results",
        type=Path,
        default=ROOT / "bench" / "results",
        help="where make bench's JSON files are (propagation, bootstrap)",
    )
    args = parser.parse_args(argv)
    settings = Settings(
        args.scale,
        args.seconds,
        args.rounds,
        args.publishers,
        out=args.out,
        sync_results=args.sync_results,
    )
    from bench.compare_report import write_outputs

    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        result = run_compare(settings, Path(tmp))
    paths = write_outputs(result, settings.out)
    progress(f"done in {result['run_seconds']:.0f} s: " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
