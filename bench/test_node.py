"""Issue #3 figures: the node's gRPC CardStatus service under load, from outside its process.

The node (``python -m node run``) holds BENCH_SCALE revocations of BENCH_PUBLISHERS cities,
built into its data directory with the library before it starts, and is driven by h2load
(nghttp2-client: C, one thread, a fraction of a core at these rates), so the Python server
is the limit. The baseline, measured in the same run and alternated with the node's runs
(these 2 shared cores are noisy), is ``bench/empty_server.py``: grpc.aio serving the same
methods with handlers that do nothing.

* ``CheckCard`` peak throughput, ``rps`` vs ``baseline_rps`` (target: ≥ 90%), for a valid
  card of a known publisher (the common case) and for a revoked one;
* ``CheckCard`` latency paced at half the node's peak, ``p50_us`` / ``p99_us`` from h2load's
  per-request log (target: p99 ≤ 1 ms), beside the empty server at the same rate;
* ``BatchCheck`` of 1,000 ids (1% revoked), ``cards_per_s`` (target: ≥ 500,000);
* ``CheckStream`` with 1,000 requests per stream, ``messages_per_s``.

Every load is proven real: the same request body goes through a grpc client first and its
answer is checked, and after each load the node's ``grpc_server_handled_total`` must have
grown by the calls h2load counted (all with code OK) and ``blacklist_checks_total`` by the
cards in them. Under ``--benchmark-disable`` (``make test``) the loads are a few hundred
calls; without h2load only the grpc-client half runs and the rest is skipped, named.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from bench import empty_server
from bench.conftest import PUBLISHERS, SCALE, progress
from bench.data import card_strings, make_dataset, unseen_cards
from bench.figures import median_range, record, timed
from bench.grpc_load import (
    H2LoadRun,
    ServerProcess,
    busy_cpu_seconds,
    grpc_body,
    h2load_path,
    paced,
    percentile,
    python_command,
    run_h2load,
    unframe,
)
from blacklist.delta import sign_delta
from blacklist.entryblock import CardColumns
from blacklist.signing import Keyring, SigningKey
from blacklist.store import RevocationStore
from node.configfields import DEFAULT_MAX_MESSAGE_BYTES
from node.gen.blacklist.v1 import card_status_pb2, card_status_pb2_grpc, types_pb2
from node.keyfiles import write_key_pair
from node.local.scrape import Samples, sample, scrape

ROOT = Path(__file__).resolve().parent.parent
SERVICE = "blacklist.v1.CardStatus"
BATCH = 1000  # ids per BatchCheck call, and requests per CheckStream stream
REVOKED_SHARE = 100  # one revoked card in a hundred, as in test_core's check_many
MAP_SIZE_GIB = 64
NOT_REVOKED = types_pb2.CardStatusCode.Value("NOT_REVOKED")
REVOKED = types_pb2.CardStatusCode.Value("REVOKED")


@dataclass(frozen=True)
class Load:
    """h2load settings: connections, calls in flight per connection, and how long."""

    clients: int
    streams: int
    seconds: float | None = None  # timed (-D) runs; else a fixed count of calls
    requests: int | None = None
    rounds: int = 1  # node/empty pairs, alternated

    def describe(self) -> str:
        amount = f"{self.seconds:g} s" if self.seconds else f"{self.requests} calls"
        return f"h2load -c {self.clients} -m {self.streams}, {amount} x {self.rounds} rounds"


# Chosen on the 2-core dev machine: 8 connections x 32 streams saturate one grpc.aio
# process (more in flight only queues); a batch or a stream is ~1,000 times the work of a
# unary call, so a few in flight are enough.
UNARY_PEAK = Load(clients=8, streams=32, seconds=4, rounds=4)
BATCH_LOAD = Load(clients=2, streams=4, seconds=5, rounds=2)
STREAM_LOAD = Load(clients=2, streams=2, seconds=5, rounds=2)
# Latency: paced (connections and --rps from grpc_load.paced), node and empty server
# alternated, the samples of all rounds pooled; the first half second of each run left out.
LATENCY_ROUNDS = 3
LATENCY_SECONDS = 4
LATENCY_STREAMS = 8
WARM_UP_US = 500_000
# --benchmark-disable (make test): prove the plumbing, in well under a second per load.
TINY = {
    "unary": Load(clients=2, streams=4, requests=200),
    "batch": Load(clients=1, streams=2, requests=10),
    "stream": Load(clients=1, streams=2, requests=4),
}
TINY_RATE = 160  # calls/s for one second: two paced connections


def need_h2load() -> None:
    if h2load_path() is None:
        pytest.skip(
            "h2load not found (Debian package nghttp2-client; `make bench` installs it): "
            "the grpc-client checks above ran, the load did not"
        )


# --- the node under test and its baseline -----------------------------------------------------


@dataclass
class NodeUnderTest:
    server: ServerProcess
    metrics_url: str
    entries: int
    valid: list[str]  # cards of known publishers that are not revoked
    revoked: list[str]


@dataclass(frozen=True)
class BenchStore:
    """A store of SCALE entries in ``root/data``, signed by keys written to ``root/keys``."""

    entries: int
    publishers: list[str]  # the first is the node's own city; it trusts the others
    valid: list[str]  # cards of known publishers that are not revoked
    revoked: list[str]


def build_store(root: Path, label: str, valid: int = 10_000, seed: int = 3) -> BenchStore:
    """Keys and a store of SCALE entries, as an operator's files (the node benchmarks share
    it: test_tls, test_workers, test_latency_under_sync)."""
    data = make_dataset(SCALE, min(PUBLISHERS, max(1, SCALE // 1000)))
    keys = {p: SigningKey.generate(p, [p[:4]]) for p in data.publishers}
    for key in keys.values():
        write_key_pair(key, root / "keys")
    ring = Keyring(k.trusted() for k in keys.values())
    start = time.perf_counter()
    store = RevocationStore(root / "data", map_size=MAP_SIZE_GIB << 30)
    for pub, entries in data.entries.items():
        store.apply_delta(
            sign_delta(keys[pub], store.head(pub), entries, CardColumns.empty(), 0), ring
        )
    held = store.entry_count()
    store.close()  # saves the index, so that the node starts without rebuilding it
    progress(f"{label}: {held:,} entries in {time.perf_counter() - start:.1f} s")
    revoked: list[str] = []
    for entries in data.entries.values():
        revoked += card_strings(entries.cards.take(np.arange(min(len(entries), 20))))
    cards = unseen_cards(np.random.default_rng(seed), data.publishers, valid)
    return BenchStore(held, list(data.publishers), cards, revoked)


def _build_node(root: Path) -> tuple[Path, int, list[str], list[str]]:
    """:func:`build_store` and a config; returns the config path, the entry count and sample
    valid and revoked cards."""
    built = build_store(root, "node store")
    own = built.publishers[0]
    pubs = ", ".join(f'"keys/{p}.pub"' for p in built.publishers)
    config = root / "node.toml"
    config.write_text(
        f'role = "city"\nregion = "{own}"\nlisten = "127.0.0.1:0"\n'
        f'metrics_listen = "127.0.0.1:0"\ndata_dir = "data"\nsigning_key = "keys/{own}.key"\n'
        f"trusted_keys = [{pubs}]\nmap_size_gib = {MAP_SIZE_GIB}\n"
        # Plain text: these figures are the node against grpc.aio; mTLS costs are issue #5's.
        "plaintext = true\n"
    )
    return config, built.entries, built.valid, built.revoked


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeUnderTest]:
    root = tmp_path_factory.mktemp("bench-node")
    config, entries, valid, revoked = _build_node(root)
    server = ServerProcess(
        python_command("-m", "node", "run", "--config", str(config)),
        cwd=ROOT,
        log=root / "node.log",
    )
    try:
        yield NodeUnderTest(server, server.info["metrics"], entries, valid, revoked)
    finally:
        assert server.stop() == 0, (root / "node.log").read_text()


@pytest.fixture(scope="module")
def empty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # Same options as the node, so that only the handlers differ.
    assert empty_server.MAX_MESSAGE == DEFAULT_MAX_MESSAGE_BYTES
    root = tmp_path_factory.mktemp("bench-empty")
    server = ServerProcess(
        python_command("-m", "bench.empty_server"), cwd=ROOT, log=root / "empty.log"
    )
    try:
        yield server
    finally:
        assert server.stop() == 0, (root / "empty.log").read_text()


# --- one verified load --------------------------------------------------------------------------


@dataclass
class Measured:
    run: H2LoadRun
    server_cores: float  # CPU the server process used, in cores, over the run
    other_cores: float  # CPU used by everything but the server and h2load (shared machine)
    cpu_us_per_call: float  # the server's CPU over the calls it handled
    # The node's own view (None for the empty server): mean time inside our handler per call
    # (grpc_server_handling_seconds: the Edge interceptor's one timing of each call: the
    # Meter, the servicer, the checker) and per CheckCard (blacklist_check_seconds, the same
    # observations for CheckCard calls).
    handler_us: float | None = None
    check_us: float | None = None


def settled(metrics_url: str, labels: dict[str, str], timeout: float = 10.0) -> Samples:
    """The node's metrics once every call it started has been handled (calls still in
    flight when h2load stopped finish or are cancelled shortly after)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(metrics_url)
        started = sample(samples, "grpc_server_started_total", **labels)
        if sample(samples, "grpc_server_handled_total", **labels) >= started:
            return samples
        if time.monotonic() > deadline:
            return samples  # the assertions below name what is missing
        time.sleep(0.05)


def _load(
    server: ServerProcess,
    method: str,
    body: Path,
    load: Load,
    *,
    metrics_url: str | None = None,
    cards_per_call: int = 1,
    rps_per_client: int | None = None,
    log_file: Path | None = None,
    warm_up_us: float = 0.0,
) -> Measured:
    """One h2load run against ``server``; with ``metrics_url`` (the node), proves that the
    server handled the calls h2load counted, all OK, and checked every card in them."""
    labels = {"grpc_service": SERVICE, "grpc_method": method}
    before = scrape(metrics_url) if metrics_url else {}
    cpu0, busy0, t0 = server.cpu_seconds(), busy_cpu_seconds(), time.perf_counter()
    run = run_h2load(
        server.url(f"{SERVICE}/{method}"),
        body,
        clients=load.clients,
        streams=load.streams,
        duration_s=load.seconds,
        requests=load.requests,
        rps_per_client=rps_per_client,
        stagger=rps_per_client is not None,
        log_file=log_file,
        skip_us=warm_up_us,
    )
    wall = time.perf_counter() - t0
    cpu, busy = server.cpu_seconds() - cpu0, busy_cpu_seconds() - busy0
    assert run.failed == run.errored == run.timeout == 0, run
    # 2xx counts response headers: a timed run stops with some calls answered but not done.
    assert run.status_2xx >= run.succeeded > 0, run
    assert load.seconds or run.status_2xx == run.succeeded == load.requests, run
    handled = float(run.done)
    handler_us = check_us = None
    if metrics_url:
        after = settled(metrics_url, labels)

        def grew(name: str, **more: str) -> float:
            return sample(after, name, **more) - sample(before, name, **more)

        ok = grew("grpc_server_handled_total", grpc_code="OK", **labels)
        started = grew("grpc_server_started_total", **labels)
        checks = grew("blacklist_checks_total")
        # Every call h2load saw complete was handled OK, with each of its cards checked. A
        # timed run stops with up to clients x streams calls in flight, which the server
        # finishes or sees cancelled (a stream cancelled part-way still counts as OK in
        # node/grpc/calls.py, hence no upper bound on OK but the calls started).
        assert run.succeeded <= ok <= started <= run.started, (ok, started, run)
        assert grew("grpc_server_handled_total", **labels) == started
        assert run.succeeded * cards_per_call <= checks <= started * cards_per_call, (
            checks,
            run.succeeded,
            started,
        )
        handled = started
        handler_us = grew("grpc_server_handling_seconds_sum", **labels) / started * 1e6
        timed_checks = grew("blacklist_check_seconds_count")
        if timed_checks:
            check_us = grew("blacklist_check_seconds_sum") / timed_checks * 1e6
    return Measured(
        run,
        server_cores=cpu / wall,
        other_cores=(busy - cpu - run.cpu_seconds) / wall,
        cpu_us_per_call=cpu / handled * 1e6,
        handler_us=handler_us,
        check_us=check_us,
    )


def _alternate(
    node: NodeUnderTest,
    empty: ServerProcess,
    method: str,
    body: Path,
    load: Load,
    *,
    cards_per_call: int = 1,
    rps_per_client: int | None = None,
    warm_up_us: float = 0.0,
    logs: Path | None = None,
) -> tuple[list[Measured], list[Measured]]:
    """``load.rounds`` pairs of runs, node then empty server, so that drift in the machine's
    speed (other work on these shared cores) falls on both sides."""
    ours: list[Measured] = []
    base: list[Measured] = []
    for n in range(load.rounds):
        for server, runs, metrics, cards in (
            (node.server, ours, node.metrics_url, cards_per_call),
            (empty, base, None, 1),
        ):
            name = "node" if metrics else "empty"
            runs.append(
                _load(
                    server,
                    method,
                    body,
                    load,
                    metrics_url=metrics,
                    cards_per_call=cards,
                    rps_per_client=rps_per_client,
                    log_file=logs / f"{name}-{n}.log" if logs else None,
                    warm_up_us=warm_up_us,
                )
            )
    return ours, base


def _median_run(runs: Sequence[Measured]) -> Measured:
    """The run whose rate is the median (the upper one of an even count): its own latencies
    and CPU go with the headline rate, never the best run's (issue #15)."""
    ordered = sorted(runs, key=lambda m: m.run.rps)
    return ordered[len(ordered) // 2]


def _throughput_figures(
    ours: Sequence[Measured], base: Sequence[Measured], per_call: int, unit: str
) -> dict[str, float | int | str]:
    """Each side's median rate over its runs with the range beside, every run's rate, the
    median ratio of the paired runs, and where the server's CPU went."""
    rate, rate_range = median_range(m.run.rps * per_call for m in ours)
    base_rate, base_range = median_range(m.run.rps * per_call for m in base)
    mid = _median_run(ours)
    figures: dict[str, float | int | str] = {
        unit: rate,
        f"{unit}_range": rate_range,
        f"baseline_{unit}": base_rate,
        f"baseline_{unit}_range": base_range,
        "ratio": rate / base_rate,
        "ratio_paired_median": statistics.median(
            a.run.rps / b.run.rps for a, b in zip(ours, base, strict=True)
        ),
        "runs": " ".join(f"{m.run.rps * per_call:.0f}" for m in ours),
        "baseline_runs": " ".join(f"{m.run.rps * per_call:.0f}" for m in base),
        "cpu_us_per_call": statistics.median(m.cpu_us_per_call for m in ours),
        "baseline_cpu_us_per_call": statistics.median(m.cpu_us_per_call for m in base),
        "server_cores": statistics.median(m.server_cores for m in ours),
        "h2load_cores": statistics.median(m.run.cpu_seconds / m.run.seconds for m in ours),
        "other_cores": statistics.fmean(m.other_cores for m in [*ours, *base]),
    }
    if mid.handler_us is not None:
        figures["handler_us"] = statistics.median(m.handler_us or 0.0 for m in ours)
    if mid.check_us is not None:
        figures["check_us"] = statistics.median(m.check_us or 0.0 for m in ours)
    return figures


def _write_body(path: Path, messages: Sequence[Any]) -> Path:
    path.write_bytes(grpc_body(messages))
    return path


# --- the figures --------------------------------------------------------------------------------

_PEAK_RPS: dict[str, float] = {}  # CheckCard peak of the node, for the latency run


def _stub(server: ServerProcess) -> tuple[grpc.Channel, Any]:
    channel = grpc.insecure_channel(server.address)
    return channel, card_status_pb2_grpc.CardStatusStub(channel)  # type: ignore[no-untyped-call]


def _check_card_body(tmp_path: Path, card: str) -> tuple[Path, card_status_pb2.CheckCardRequest]:
    """The body file h2load sends, and the request read back from it (so that the grpc
    client sends the very bytes h2load will)."""
    body = _write_body(tmp_path / "check.bin", [card_status_pb2.CheckCardRequest(card_id=card)])
    (frame,) = unframe(body.read_bytes())
    return body, card_status_pb2.CheckCardRequest.FromString(frame)


@pytest.mark.parametrize("kind", ["valid", "revoked"])
def test_node_check_card(
    benchmark: Any, node: NodeUnderTest, empty: ServerProcess, tmp_path: Path, kind: str
) -> None:
    card = node.valid[0] if kind == "valid" else node.revoked[0]
    body, request = _check_card_body(tmp_path, card)
    channel, stub = _stub(node.server)
    with channel:
        answer = stub.CheckCard(request)
    assert answer.status == (NOT_REVOKED if kind == "valid" else REVOKED), answer
    assert answer.card_id == card and answer.publisher == card[:6]
    channel, stub = _stub(empty)
    with channel:
        assert stub.CheckCard(request) == card_status_pb2.CheckCardResponse()
    need_h2load()
    load = UNARY_PEAK if timed(benchmark) else TINY["unary"]
    benchmark.name = f"test_node_check_card_{kind}"
    ours, base = benchmark.pedantic(
        _alternate, args=(node, empty, "CheckCard", body, load), rounds=1, iterations=1
    )
    if kind == "valid":
        _PEAK_RPS["node"] = _median_run(ours).run.rps
    record(
        benchmark,
        entries=node.entries,
        **_throughput_figures(ours, base, 1, "rps"),
        load=load.describe(),
    )


def test_node_check_card_latency(
    benchmark: Any, node: NodeUnderTest, empty: ServerProcess, tmp_path: Path
) -> None:
    """Latency at half the node's peak CheckCard rate (from test_node_check_card, or a short
    run of its own when run alone), offered evenly: one call per connection per h2load tick."""
    body, request = _check_card_body(tmp_path, node.valid[1])
    channel, stub = _stub(node.server)
    with channel:
        assert stub.CheckCard(request).status == NOT_REVOKED
    need_h2load()
    if timed(benchmark):
        if "node" not in _PEAK_RPS:
            peak = _load(node.server, "CheckCard", body, replace(UNARY_PEAK, seconds=3))
            _PEAK_RPS["node"] = peak.run.rps
        rate, seconds, rounds, warm_up = (
            _PEAK_RPS["node"] / 2,
            LATENCY_SECONDS,
            LATENCY_ROUNDS,
            WARM_UP_US,
        )
    else:
        rate, seconds, rounds, warm_up = TINY_RATE, 1, 1, 0
    clients, per_client = paced(rate)
    load = Load(clients, LATENCY_STREAMS, requests=clients * per_client * seconds, rounds=rounds)
    ours, base = benchmark.pedantic(
        _alternate,
        args=(node, empty, "CheckCard", body, load),
        kwargs={"rps_per_client": per_client, "warm_up_us": warm_up, "logs": tmp_path},
        rounds=1,
        iterations=1,
    )
    mine = sorted(t for m in ours for t in m.run.latencies_us)
    theirs = sorted(t for m in base for t in m.run.latencies_us)
    assert mine and theirs
    record(
        benchmark,
        entries=node.entries,
        rate_offered=float(clients * per_client),
        rate_achieved=statistics.fmean(m.run.rps for m in ours),
        p50_us=percentile(mine, 50),
        p99_us=percentile(mine, 99),
        p999_us=percentile(mine, 99.9),
        mean_us=statistics.fmean(mine),
        baseline_p50_us=percentile(theirs, 50),
        baseline_p99_us=percentile(theirs, 99),
        baseline_p999_us=percentile(theirs, 99.9),
        samples=len(mine),
        runs_p99_us=" ".join(f"{m.run.percentile_us(99):.0f}" for m in ours),
        baseline_runs_p99_us=" ".join(f"{m.run.percentile_us(99):.0f}" for m in base),
        server_cores=statistics.fmean(m.server_cores for m in ours),
        other_cores=statistics.fmean(m.other_cores for m in [*ours, *base]),
        load=f"h2load -c {clients} -m {LATENCY_STREAMS} --rps {per_client} -r 1 "
        f"--rate-period 1ms -n {load.requests} x {rounds} rounds",
    )


def _gateway_batch(node: NodeUnderTest) -> list[str]:
    """A gateway's 1,000 cards: mostly valid, the last 1% revoked."""
    revoked = BATCH // REVOKED_SHARE
    return node.valid[: BATCH - revoked] + node.revoked[:revoked]


def test_node_batch_check(
    benchmark: Any, node: NodeUnderTest, empty: ServerProcess, tmp_path: Path
) -> None:
    ids = _gateway_batch(node)
    body = _write_body(tmp_path / "batch.bin", [card_status_pb2.BatchCheckRequest(card_ids=ids)])
    request = card_status_pb2.BatchCheckRequest.FromString(unframe(body.read_bytes())[0])
    channel, stub = _stub(node.server)
    with channel:
        answer = stub.BatchCheck(request)
    assert answer.count == BATCH
    assert [c.index for c in answer.cards] == list(range(BATCH - BATCH // REVOKED_SHARE, BATCH))
    assert all(c.status == REVOKED for c in answer.cards), answer.cards
    channel, stub = _stub(empty)
    with channel:
        assert stub.BatchCheck(request).count == BATCH
    need_h2load()
    load = BATCH_LOAD if timed(benchmark) else TINY["batch"]
    ours, base = benchmark.pedantic(
        _alternate,
        args=(node, empty, "BatchCheck", body, load),
        kwargs={"cards_per_call": BATCH},
        rounds=1,
        iterations=1,
    )
    record(
        benchmark,
        entries=node.entries,
        **_throughput_figures(ours, base, BATCH, "cards_per_s"),
        mean_call_us=_median_run(ours).run.mean_us,
        load=f"{load.describe()}, {BATCH} ids per call (1% revoked)",
    )


def test_node_check_stream(
    benchmark: Any, node: NodeUnderTest, empty: ServerProcess, tmp_path: Path
) -> None:
    ids = _gateway_batch(node)
    body = _write_body(
        tmp_path / "stream.bin", [card_status_pb2.CheckCardRequest(card_id=c) for c in ids]
    )
    requests = [card_status_pb2.CheckCardRequest.FromString(f) for f in unframe(body.read_bytes())]
    channel, stub = _stub(node.server)
    with channel:
        answers = list(stub.CheckStream(iter(requests)))
    assert [a.card_id for a in answers] == ids
    valid = BATCH - BATCH // REVOKED_SHARE
    assert [a.status for a in answers] == [NOT_REVOKED] * valid + [REVOKED] * (BATCH - valid)
    channel, stub = _stub(empty)
    with channel:
        assert len(list(stub.CheckStream(iter(requests)))) == BATCH
    need_h2load()
    load = STREAM_LOAD if timed(benchmark) else TINY["stream"]
    ours, base = benchmark.pedantic(
        _alternate,
        args=(node, empty, "CheckStream", body, load),
        kwargs={"cards_per_call": BATCH},
        rounds=1,
        iterations=1,
    )
    figures = _throughput_figures(ours, base, BATCH, "messages_per_s")
    del figures["handler_us"]  # a stream's handling time is its whole life, not work
    record(
        benchmark,
        entries=node.entries,
        **figures,
        cpu_us_per_message=float(figures["cpu_us_per_call"]) / BATCH,
        baseline_cpu_us_per_message=float(figures["baseline_cpu_us_per_call"]) / BATCH,
        load=f"{load.describe()}, {BATCH} requests per stream (1% revoked)",
    )


# --- packed BatchCheck beside Redis SMISMEMBER (issue #15) --------------------------------------

PACKED_SIZES = (1000, 10_000)
PACKED_ROUNDS = 3
PACKED_LOAD = Load(clients=2, streams=4, seconds=5, rounds=PACKED_ROUNDS)
REDIS_CLIENTS = PACKED_LOAD.clients * PACKED_LOAD.streams  # the same calls in flight


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """redis-server holding the node's revoked entries (the same dataset, regenerated from
    its seed) as one set of the 32-character ids, as bench-compare loads it."""
    from bench.redis_baseline import RedisServer, redis_benchmark_path

    if redis_benchmark_path() is None:
        pytest.skip("redis-benchmark not found (Debian package redis-tools)")
    try:
        server = RedisServer(tmp_path_factory.mktemp("bench-redis"))
    except RuntimeError as exc:
        pytest.skip(str(exc))
    try:
        data = make_dataset(SCALE, min(PUBLISHERS, max(1, SCALE // 1000)))
        members = [c for entries in data.entries.values() for c in card_strings(entries.cards)]
        server.load_set(members)
        assert server.client.scard("revoked") == len(members)
        yield server
    finally:
        server.stop()


def _per_cpu_second(cards: int, cpu_us_per_call: list[float]) -> float:
    cpu = statistics.median(cpu_us_per_call)
    return cards / cpu * 1e6 if cpu > 0 else 0.0


def _packed_batch(node: NodeUnderTest, size: int) -> list[str]:
    """``size`` cards, 1% revoked (the last ones), as _gateway_batch."""
    revoked = size // REVOKED_SHARE
    assert len(node.valid) >= size - revoked and len(node.revoked) >= revoked, "sample too small"
    return node.valid[: size - revoked] + node.revoked[:revoked]


@pytest.mark.parametrize("size", PACKED_SIZES)
def test_node_batch_check_packed(
    benchmark: Any,
    node: NodeUnderTest,
    empty: ServerProcess,
    redis: Any,
    tmp_path: Path,
    size: int,
) -> None:
    """BatchCheck with ``packed_ids`` (one bytes field of 32-byte ids) against Redis
    SMISMEMBER of the same ids on a set of the same entries, by redis-benchmark, the node
    and Redis alternated round by round (and the empty grpc.aio handler receiving the same
    body: the framework's floor). Headline figures are medians over the rounds."""
    from bench.redis_baseline import SET_KEY, redis_benchmark

    ids = _packed_batch(node, size)
    request = card_status_pb2.BatchCheckRequest(packed_ids="".join(ids).encode())
    body = _write_body(tmp_path / "packed.bin", [request])
    assert card_status_pb2.BatchCheckRequest.FromString(unframe(body.read_bytes())[0]) == request
    channel, stub = _stub(node.server)
    with channel:
        answer = stub.BatchCheck(request)
    revoked = size // REVOKED_SHARE
    assert answer.count == size
    assert [c.index for c in answer.cards] == list(range(size - revoked, size))
    assert all(c.status == REVOKED for c in answer.cards), answer.cards
    assert sum(redis.client.smismember(SET_KEY, ids)) == revoked  # the same question
    need_h2load()
    load = PACKED_LOAD if timed(benchmark) else TINY["batch"]
    seconds = load.seconds or 0.2

    def rounds() -> tuple[list[Measured], list[Measured], list[float], list[float]]:
        ours: list[Measured] = []
        floor: list[Measured] = []
        theirs: list[float] = []
        redis_cpu: list[float] = []
        for _ in range(load.rounds):
            ours.append(
                _load(
                    node.server,
                    "BatchCheck",
                    body,
                    load,
                    metrics_url=node.metrics_url,
                    cards_per_call=size,
                )
            )
            floor.append(_load(empty, "BatchCheck", body, load))
            run = redis_benchmark(
                redis.port,
                ["SMISMEMBER", SET_KEY, *ids],
                clients=REDIS_CLIENTS,
                seconds=seconds,
                server_pid=redis.proc.pid,
                calibrate_requests=200 if timed(benchmark) else REDIS_CLIENTS,
            )
            theirs.append(run.rps * size)
            redis_cpu.append(run.server_cpu_seconds / max(1, run.requests) * 1e6)
        return ours, floor, theirs, redis_cpu

    ours, floor, theirs, redis_cpu = benchmark.pedantic(rounds, rounds=1, iterations=1)
    mine = [m.run.rps * size for m in ours]
    base = [m.run.rps * size for m in floor]
    record(
        benchmark,
        entries=node.entries,
        ids_per_call=size,
        cards_per_s=statistics.median(mine),
        redis_cards_per_s=statistics.median(theirs),
        ratio_to_redis=statistics.median(mine) / statistics.median(theirs),
        ratio_to_redis_paired_median=statistics.median(
            a / b for a, b in zip(mine, theirs, strict=True)
        ),
        empty_handler_cards_per_s=statistics.median(base),
        runs=" ".join(f"{x:.0f}" for x in mine),
        redis_runs=" ".join(f"{x:.0f}" for x in theirs),
        empty_handler_runs=" ".join(f"{x:.0f}" for x in base),
        cpu_us_per_call=statistics.median(m.cpu_us_per_call for m in ours),
        empty_handler_cpu_us_per_call=statistics.median(m.cpu_us_per_call for m in floor),
        redis_cpu_us_per_call=statistics.median(redis_cpu),
        handler_us=statistics.median(m.handler_us or 0.0 for m in ours),
        # Cards per second of server CPU: what each server could do given a core, whatever
        # its single-threaded client could send (redis-benchmark leaves Redis part idle).
        # (0 when a tiny run's CPU is below the clock's tick.)
        cards_per_cpu_s=_per_cpu_second(size, [m.cpu_us_per_call for m in ours]),
        redis_cards_per_cpu_s=_per_cpu_second(size, redis_cpu),
        other_cores=statistics.fmean(m.other_cores for m in [*ours, *floor]),
        load=f"{load.describe()}, {size} ids per call (1% revoked), packed_ids; "
        f"redis-benchmark -c {REDIS_CLIENTS} -P 1 SMISMEMBER, same ids",
    )
