"""Issue #6, "Scale data": the national list of bench/scale.py (BENCH_SCALE entries of ~300
real city publishers) held by one upstream, and a fresh city that bootstraps all of it over
real gRPC; then, at that city, resident memory, CheckCard latency and LMDB bytes per entry.

* **Upstream**: a province-like node (``python -m node run``, role province, 440000) over a
  store built with the library before it starts, as bench/snapshot_upstream.py builds its
  own: every publisher has its own Ed25519 key, one signed delta of its whole list applied
  to the store, its signed snapshot kept, and no retained deltas (``retain_deltas=0``), so
  a fresh child can only start from the ~300 snapshots.
* **Bootstrap** (``seconds``): a city (110100, no signing key, the upstream's public keys
  trusted) with an empty data directory is spawned; ``seconds`` runs from the spawn until
  its heads (version and digest of every feed) equal the upstream's. Baseline
  (``baseline_seconds``): copying the upstream's ``data.mdb`` and fsyncing it, same run.
* **Resident memory** (``/proc/PID/status``): ``VmRSS`` (and its anonymous part, and the
  peak ``VmHWM``) of the upstream after serving the bootstrap and of the bootstrapped city
  after the latency runs, beside a city node of the same config started over an empty data
  directory with no upstream (``baseline_rss_mib``: what the process costs with no entry).
* **CheckCard latency** at the bootstrapped city, one call at a time from one Python grpc
  client on one channel: valid cards of the listed cities (the common case, drawn in
  proportion to each city's list) and listed cards (REVOKED); p50/p99 of the client's round
  trips (``p50_us``/``p99_us``), beside the same client against bench/empty_server.py
  (grpc.aio, same servicer base and options, empty answers), rounds alternated. Server side:
  the node's ``blacklist_check_seconds`` histogram over the same calls (``server_p50_us``,
  ``server_p99_us``: Prometheus-style interpolation inside its buckets; ``server_mean_us``:
  sum / count).
* **LMDB on disk** (``lmdb_bytes_per_entry``): the bootstrapped city's ``data.mdb`` size
  after a clean stop, per entry (issue #6's target: ≤ 60), beside the upstream's file
  (``baseline_lmdb_bytes_per_entry``), built in process by one delta per feed.

Nothing about time is asserted; what is asserted is that the figures are real: every feed
at the upstream's head, every snapshot transfer verified, the entry counts equal, every
answer right (NOT_REVOKED, or REVOKED by the card's own city), and the node's check counter
grown by exactly the calls made. Under ``--benchmark-disable`` (``make test``) the same runs
happen with a few hundred calls.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench.conftest import SCALE
from bench.figures import median_range, progress, timed
from bench.figures import record as record_figures
from bench.grpc_load import ServerProcess, percentile, python_command
from bench.scale import PUBLISHERS, ScaleDataset, scale_dataset, unseen_card_ids
from bench.snapshot_upstream import MAP_SIZE_GIB
from bench.test_sync import Bootstrap, bootstrap_city, copy_seconds, heads
from blacklist.authority import Authority
from blacklist.delta import sign_delta
from blacklist.entryblock import CardColumns
from blacklist.signing import Keyring, SigningKey
from blacklist.store import RevocationStore
from node.gen.blacklist.v1 import card_status_pb2, card_status_pb2_grpc, types_pb2
from node.keyfiles import write_key_pair
from node.local.process import LocalNode, NodeSpec, start_node, write_config
from node.local.scrape import Samples, sample, scrape

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM, CITY = "440000", "110100"
REVOKED = types_pb2.CardStatusCode.Value("REVOKED")
NOT_REVOKED = types_pb2.CardStatusCode.Value("NOT_REVOKED")
# (rounds per side, valid calls per round, revoked calls); make test: a few hundred calls.
CALLS = {"timed": (4, 2_500, 2_000), "untimed": (1, 200, 50)}
BOOTSTRAP_TIMEOUT = 1800.0
MIB = 2**20


def record(benchmark: Any, **figures: float | int | str) -> None:
    figures.setdefault("load_1m", os.getloadavg()[0])
    record_figures(benchmark, **figures)


# --- the upstream's files ----------------------------------------------------------------------


@dataclass(frozen=True)
class NationalUpstream:
    data_dir: Path
    public_keys: tuple[Path, ...]
    publishers: tuple[str, ...]
    entries: int
    snapshot_bytes: int  # all publishers' snapshots together
    build_seconds: float


def build_national_upstream(data: ScaleDataset, data_dir: Path, keys_dir: Path) -> NationalUpstream:
    """Every feed of ``data`` as one signed delta under its own key, its signed snapshot
    kept, no retained deltas (see bench/snapshot_upstream.py for why the benchmark may hold
    every publisher's key)."""
    feeds = [(p, e) for p, e in data.by_publisher() if len(e)]  # a city with no entry: no feed
    keys = {p: SigningKey.generate(p, [p[:4]]) for p, _ in feeds}
    public = tuple(write_key_pair(k, keys_dir)[1] for k in keys.values())
    ring = Keyring(k.trusted() for k in keys.values())
    start = time.perf_counter()
    store = RevocationStore(data_dir, map_size=MAP_SIZE_GIB << 30, retain_deltas=0)
    snapshot_bytes = 0
    try:
        for n, (pub, entries) in enumerate(feeds, 1):
            delta = sign_delta(keys[pub], store.head(pub), entries, CardColumns.empty(), 0)
            store.apply_delta(delta, ring)
            snapshot = Authority(store, keys[pub], ring).maybe_snapshot()
            assert snapshot is not None, f"no snapshot policy fired for {pub}"
            snapshot_bytes += len(snapshot.to_bytes())
            if n % 50 == 0 or n == len(feeds):
                progress(
                    f"national upstream: {store.entry_count():,} of {len(data):,} entries, "
                    f"{n} of {len(feeds)} feeds signed ({time.perf_counter() - start:.1f} s)"
                )
        entries_held = store.entry_count()
    finally:
        store.close()  # saves the index, so that the node starts without rebuilding it
    return NationalUpstream(
        data_dir,
        public,
        tuple(keys),
        entries_held,
        snapshot_bytes,
        time.perf_counter() - start,
    )


# --- measurements ----------------------------------------------------------------------------


def memory_bytes(pid: int) -> dict[str, int]:
    """Resident size, its anonymous and file-backed parts and the peak, from proc(5) status."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[name] = int(value.split()[0]) * 1024
    return out


def histogram_quantile(before: Samples, after: Samples, name: str, q: float) -> float:
    """The q-quantile of the observations between two scrapes of a histogram, by linear
    interpolation inside the bucket that holds it (as PromQL's histogram_quantile)."""
    bounds: dict[float, float] = {}
    for (n, labels), value in after.items():
        if n == f"{name}_bucket":
            le = float(dict(labels)["le"])
            bounds[le] = value - before.get((n, labels), 0.0)
    ordered = sorted(bounds.items())
    total = ordered[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for le, cumulative in ordered:
        if cumulative >= rank:
            if le == float("inf"):
                return lower  # above the last finite bucket: its bound, as PromQL
            inside = cumulative - below
            return lower + (le - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = le, cumulative
    return lower


def round_trips_us(address: str, cards: list[str], expect: int | None) -> list[float]:
    """One CheckCard at a time on one channel; each answer must have status ``expect``
    (with the card's own city as publisher when REVOKED); None checks nothing (the empty
    server answers nothing)."""
    requests = [card_status_pb2.CheckCardRequest(card_id=c) for c in cards]
    out = []
    with grpc.insecure_channel(address) as channel:
        check = card_status_pb2_grpc.CardStatusStub(channel).CheckCard  # type: ignore[no-untyped-call]
        check(requests[0], timeout=10)  # the connection, outside the figures
        for card, request in zip(cards, requests, strict=True):
            t0 = time.perf_counter()
            answer = check(request, timeout=10)
            out.append((time.perf_counter() - t0) * 1e6)
            if expect == REVOKED:
                assert answer.status == REVOKED and answer.publisher == card[:6], (card, answer)
            elif expect == NOT_REVOKED:
                assert answer.status == NOT_REVOKED, (card, answer)
    return out


def check_latency(
    city: LocalNode, empty: ServerProcess, data: ScaleDataset, calls: tuple[int, int, int]
) -> dict[str, float]:
    """Valid cards one at a time, rounds alternated between the node and the empty server;
    then listed cards at the node; the node's histogram scraped around each part."""
    rounds, per_round, revoked_calls = calls
    valid = unseen_card_ids(data, rounds * per_round, seed=7)
    rows = np.random.default_rng(8).choice(
        len(data), size=min(revoked_calls, len(data)), replace=False
    )
    revoked = data.card_ids(np.sort(rows))
    node_us: list[float] = []
    empty_us: list[float] = []
    m0 = scrape(city.metrics_url)
    for r in range(rounds):
        cards = valid[r * per_round : (r + 1) * per_round]
        node_us += round_trips_us(city.grpc, cards, NOT_REVOKED)
        empty_us += round_trips_us(empty.address, cards, None)
    m1 = scrape(city.metrics_url)
    revoked_us = round_trips_us(city.grpc, revoked, REVOKED)
    m2 = scrape(city.metrics_url)
    # Every call was a check the node counted (plus the connection's first call per round).
    checks = sample(m1, "blacklist_check_seconds_count") - sample(
        m0, "blacklist_check_seconds_count"
    )
    assert checks == len(node_us) + rounds, (checks, len(node_us), rounds)
    hist = "blacklist_check_seconds"
    return {
        "p50_us": percentile(node_us, 50),
        "p99_us": percentile(node_us, 99),
        "baseline_p50_us": percentile(empty_us, 50),
        "baseline_p99_us": percentile(empty_us, 99),
        "revoked_p50_us": percentile(revoked_us, 50),
        "revoked_p99_us": percentile(revoked_us, 99),
        "server_p50_us": histogram_quantile(m0, m1, hist, 0.50) * 1e6,
        "server_p99_us": histogram_quantile(m0, m1, hist, 0.99) * 1e6,
        "server_mean_us": (sample(m1, f"{hist}_sum") - sample(m0, f"{hist}_sum")) / checks * 1e6,
        "server_revoked_p50_us": histogram_quantile(m1, m2, hist, 0.50) * 1e6,
        "server_revoked_p99_us": histogram_quantile(m1, m2, hist, 0.99) * 1e6,
        "calls_valid": len(node_us),
        "calls_revoked": len(revoked_us),
    }


# --- the benchmark -----------------------------------------------------------------------------


def empty_city_memory(spec: NodeSpec, directory: Path, card: str) -> dict[str, int]:
    """The city's process with no entry and no upstream, after one check: the baseline."""
    node = start_node(spec, directory, ready_timeout=120)
    try:
        round_trips_us(node.grpc, [card], None)
        held = memory_bytes(node.pid)
        assert node.stop() == 0, node.log_tail()
    finally:
        node.close()
    return held


def test_national_bootstrap(benchmark: Any, tmp_path: Path) -> None:
    publishers = min(PUBLISHERS, max(1, SCALE // 10))
    t0 = time.perf_counter()
    data = scale_dataset(SCALE, publishers)
    progress(f"national list: {len(data):,} entries of {publishers} cities")
    built = build_national_upstream(data, tmp_path / "upstream" / "data", tmp_path / "keys")
    progress(f"upstream built in {time.perf_counter() - t0:.1f} s")
    data_file = built.data_dir / "data.mdb"
    upstream_file_bytes = data_file.stat().st_size
    # The file copied three times; the median and the range (issue #15: not the fastest).
    baseline, baseline_range = median_range(
        (copy_seconds(data_file, tmp_path / "data.mdb.copy") for _ in range(3)), ".2f"
    )
    city_spec = NodeSpec(CITY, trusted_keys=built.public_keys, map_size_gib=MAP_SIZE_GIB)
    empty_memory = empty_city_memory(
        city_spec, tmp_path / "empty-city", unseen_card_ids(data, 1, seed=9)[0]
    )
    upstream = start_node(
        NodeSpec(
            UPSTREAM, role="province", trusted_keys=built.public_keys, map_size_gib=MAP_SIZE_GIB
        ),
        tmp_path / "upstream",
        ready_timeout=300,
    )
    city: LocalNode | None = None
    empty: ServerProcess | None = None
    try:
        want, upstream_entries = heads(upstream.grpc)
        assert len(want) == len(built.publishers) and upstream_entries == built.entries
        config = write_config(
            NodeSpec(
                CITY,
                trusted_keys=built.public_keys,
                upstreams=(upstream.grpc,),
                map_size_gib=MAP_SIZE_GIB,
            ),
            tmp_path / "city",
        )

        def bootstrap() -> Bootstrap:
            return bootstrap_city(config, want, BOOTSTRAP_TIMEOUT)

        progress(
            f"bootstrapping a fresh city from {built.entries:,} entries in "
            f"{len(built.publishers)} snapshots"
        )
        result = benchmark.pedantic(bootstrap, rounds=1, iterations=1)
        city = result.node
        progress(f"bootstrapped in {result.seconds:.1f} s; CheckCard latency")
        assert heads(city.grpc)[1] == built.entries
        samples = scrape(city.metrics_url)
        received = sample(samples, "blacklist_sync_received_bytes_total")
        transfers = sample(
            samples, "blacklist_snapshot_transfers_total", direction="received", result="ok"
        )
        assert transfers == len(built.publishers), (transfers, len(built.publishers))
        upstream_memory = memory_bytes(upstream.pid)
        empty = ServerProcess(
            python_command("-m", "bench.empty_server"), cwd=ROOT, log=tmp_path / "empty.log"
        )
        latency = check_latency(
            city, empty, data, CALLS["timed" if timed(benchmark) else "untimed"]
        )
        city_memory = memory_bytes(city.pid)
        assert empty.stop() == 0
        empty = None
        assert city.stop() == 0, city.log_tail()
        assert upstream.stop() == 0, upstream.log_tail()
        city_file = tmp_path / "city" / "data" / "data.mdb"
        city_file_bytes = city_file.stat().st_size
        n = built.entries
        record(
            benchmark,
            entries=n,
            publishers=len(built.publishers),
            seconds=result.seconds,
            baseline_seconds=baseline,
            baseline_seconds_range=baseline_range,
            ready_seconds=result.ready_seconds,
            sync_seconds=result.seconds - result.ready_seconds,
            bootstrap_entries_per_s=n / (result.seconds - result.ready_seconds),
            received_bytes_per_entry=received / n,
            snapshot_bytes_per_entry=built.snapshot_bytes / n,
            baseline_file_bytes_per_entry=upstream_file_bytes / n,
            upstream_build_seconds=built.build_seconds,
            city_rss_mib=city_memory["VmRSS"] / MIB,
            city_rss_anon_mib=city_memory["RssAnon"] / MIB,
            city_hwm_mib=city_memory["VmHWM"] / MIB,
            upstream_rss_mib=upstream_memory["VmRSS"] / MIB,
            upstream_rss_anon_mib=upstream_memory["RssAnon"] / MIB,
            upstream_hwm_mib=upstream_memory["VmHWM"] / MIB,
            baseline_rss_mib=empty_memory["VmRSS"] / MIB,
            baseline_rss_anon_mib=empty_memory["RssAnon"] / MIB,
            city_rss_bytes_per_entry=(city_memory["VmRSS"] - empty_memory["VmRSS"]) / n,
            city_anon_bytes_per_entry=(city_memory["RssAnon"] - empty_memory["RssAnon"]) / n,
            **latency,
            lmdb_bytes_per_entry=city_file_bytes / n,
            lmdb_allocated_bytes_per_entry=city_file.stat().st_blocks * 512 / n,
            baseline_lmdb_bytes_per_entry=upstream_file_bytes / n,
        )
        # Both stores are ~60 bytes per entry (GBs at 10M); pytest keeps its last tmp dirs.
        for data_dir in (built.data_dir, tmp_path / "city" / "data"):
            shutil.rmtree(data_dir)
    finally:
        if empty is not None:
            empty.stop()
        if city is not None:
            city.close()
        upstream.close()
