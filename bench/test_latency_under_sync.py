"""Issue #6 figure: ``CheckCard`` p99 at half of maximum load, while sync applies deltas.

A node (``python -m node run``, plain text) over a store of BENCH_SCALE entries (the city
node of bench/test_node.py), with ``workers = 1`` and, over a copy of the store, with
``workers = 2`` (the writer and one worker, SO_REUSEPORT); beside them the baseline,
bench/empty_server.py (grpc.aio with handlers that do nothing). For each:

1. **Maximum load**: h2load at saturation (``-c 8 -m 32``, ``-c 32 -m 8`` for two workers,
   as test_node.py and test_workers.py), 3 runs of 3 s, the median taken (the range beside it).
2. **Half of it, offered at a constant rate**: h2load ``--rps`` per connection, at most 80
   calls/s each so that every connection sends one call per tick (bench/grpc_load.py,
   ``paced``), connections opened 1 ms apart; the sends follow the clock whatever the
   answers do (up to 8 calls in flight per connection), so a stall shows as late answers
   and is not hidden by calls never sent. p50/p99 come from h2load's per-request log, the
   first 0.5 s of each run left out; the samples of the rounds are pooled.
3. Three windows per round, alternated over 3 rounds of 4 s: the node with **no writes**,
   the node **while a separate process pushes signed deltas** (bench/delta_pusher.py: a
   city the node trusts, 1,000 new revocations per delta, 5 deltas a second through
   ``Sync.PushDeltas``, each verified and applied by the node's writer), and the empty
   server at half **its own** maximum rate (the baseline).

Figures: ``p99_us`` (with sync; target ≤ 1,000 µs) beside ``baseline_p99_us`` (the empty
handler), ``p99_us_no_writes``, the deltas applied inside the windows and their rate, from
the node's ``blacklist_sync_deltas_applied_total{source="child"}`` scraped right before and
after each h2load run. Proven real: the body h2load sends is checked through a grpc client
first (a valid card: NOT_REVOKED); every call h2load counted must appear as handled OK in
the node's metrics (summed over the writer's and the worker's); each window with writes
must have applied deltas, none rejected, the feed version on /metrics must be the
pusher's last, and a card of its last delta must answer REVOKED. Timings are never
asserted. Under ``--benchmark-disable`` it is one 0.5 s window of each kind at 160 calls/s.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest

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
)
from bench.test_node import MAP_SIZE_GIB, ROOT, SERVICE, _build_node
from blacklist.delta import FeedHead
from blacklist.store import RevocationStore
from node.gen.blacklist.v1 import card_status_pb2, card_status_pb2_grpc, types_pb2
from node.local.scrape import sample, scrape

NOT_REVOKED = types_pb2.CardStatusCode.Value("NOT_REVOKED")
REVOKED = types_pb2.CardStatusCode.Value("REVOKED")
CHECK_CARD = f"{SERVICE}/CheckCard"

# Saturation, as test_node.py (one process) and test_workers.py (connections enough for
# SO_REUSEPORT to split them between two).
PEAK_LOAD = {1: (8, 32), 2: (32, 8)}
PEAK_SECONDS, PEAK_ROUNDS = 3, 3
ROUNDS, SECONDS, STREAMS, WARM_UP_US = 3, 4, 8, 500_000
PUSH_RATE, PUSH_CARDS = 5.0, 1000  # deltas per second, cards per delta
TINY_RATE, TINY_SECONDS, TINY_PUSH_RATE = 160, 0.5, 10.0


@dataclass(frozen=True)
class Writes:
    """What the pusher sends during a window: ``cards`` per delta, ``rate`` deltas a second,
    in windows of ``seconds``."""

    cards: int
    rate: float
    seconds: float


# steady: many small deltas (issue #6); big: a 100,000-card delta every 10 s (issue #15),
# in 12 s windows so that each window holds at least one whole apply.
WRITES = {
    "steady": Writes(PUSH_CARDS, PUSH_RATE, SECONDS),
    "big": Writes(100_000, 0.1, 12.0),
}
TINY_WRITES = Writes(2000, TINY_PUSH_RATE, TINY_SECONDS)


@dataclass
class Server:
    label: str
    server: ServerProcess
    metrics_urls: list[str] = field(default_factory=list)  # the writer's, then the workers'
    pids: list[int] = field(default_factory=list)
    head: FeedHead | None = None  # the pushed publisher's feed on this node

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total


@dataclass
class Setup:
    root: Path
    nodes: dict[int, Server]  # by workers
    empty: Server
    entries: int
    valid: str
    revoked: str
    pusher_key: Path  # a city the node trusts, not its own


def _start_node(root: Path, config: Path, workers: int, head: FeedHead) -> Server:
    mine = root / f"node-{workers}.toml"
    mine.write_text(
        config.read_text().replace('data_dir = "data"', f'data_dir = "data-{workers}"')
        + f"workers = {workers}\n"
    )
    server = ServerProcess(
        python_command("-m", "node", "run", "--config", str(mine)),
        cwd=ROOT,
        log=root / f"node-{workers}.log",
    )
    writer = server.info["metrics"]
    info = [dict(ls) for (name, ls) in scrape(writer) if name == "blacklist_worker_info"]
    served = Server(
        f"{workers}_worker{'s' if workers > 1 else ''}",
        server,
        [writer, *(i["metrics_url"] for i in info)],
        [server.proc.pid, *(int(i["pid"]) for i in info)],
        head,
    )
    # workers >= 2: that many workers serve, beside the writer that serves none (issue #15).
    if len(served.pids) != workers + (workers > 1):
        server.stop()  # not left running when the check fails
        raise AssertionError(served.pids)
    return served


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("bench-latency-sync")
    config, entries, valid, revoked = _build_node(root)
    own = tomllib.loads(config.read_text())["region"]
    pusher_key = next(k for k in sorted((root / "keys").glob("*.key")) if k.stem != own)
    store = RevocationStore(root / "data", map_size=MAP_SIZE_GIB << 30)
    head = store.head(pusher_key.stem)
    store.close(save_index=False)
    assert head.version > 0, head
    started: list[Server] = []
    try:
        nodes = {}
        for n in (1, 2):
            shutil.copytree(root / "data", root / f"data-{n}")
            nodes[n] = _start_node(root, config, n, head)
            started.append(nodes[n])
        empty = ServerProcess(
            python_command("-m", "bench.empty_server"), cwd=ROOT, log=root / "empty.log"
        )
        started.append(Server("empty", empty, pids=[empty.proc.pid]))
        yield Setup(root, nodes, started[-1], entries, valid[0], revoked[0], pusher_key)
    finally:
        for s in started:
            assert s.server.stop() == 0, s.label


# --- the writes ---------------------------------------------------------------------------------


class Pusher:
    """bench/delta_pusher.py in its own process, its deltas signed and the node reached."""

    def __init__(self, node: Server, key: Path, writes: Writes, log: Path):
        rate, seconds = writes.rate, writes.seconds
        assert node.head is not None
        self.node = node
        self._log = open(log, "ab")  # noqa: SIM115 - closed in finish()
        count = math.ceil(rate * (seconds * 2 + 5))  # more than the window needs
        head = node.head
        args = {
            "--target": node.server.address,
            "--key": str(key),
            "--version": str(head.version),
            "--digest": head.digest.hex(),
            "--cards": str(writes.cards),
            "--rate": str(rate),
            "--count": str(count),
            "--seed": str(head.version),  # new cards in every window
        }
        self.proc = subprocess.Popen(
            python_command("-m", "bench.delta_pusher", *(x for kv in args.items() for x in kv)),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(b"READY "):
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"delta pusher did not start: {log.read_text(errors='replace')}")

    def finish(self) -> dict[str, Any]:
        """Stop it and check what it did: every delta it sent applied, none rejected; the
        node's head moves to its last one."""
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        self._log.close()
        assert self.proc.returncode == 0, self.proc.returncode
        (line,) = [x for x in out.decode().splitlines() if x.startswith("DONE ")]
        done: dict[str, Any] = json.loads(line[5:])
        assert done["rejected"] == [] and done["applied"] == done["sent"] > 0, done
        assert self.node.head is not None
        self.node.head = FeedHead(
            self.node.head.publisher, done["version"], bytes.fromhex(done["digest"])
        )
        return done


# --- one verified load --------------------------------------------------------------------------


@dataclass
class Window:
    run: H2LoadRun
    deltas: float  # applied by the node during the h2load run
    apply_seconds: float  # the node's time verifying and applying them (its histogram's sum)
    other_cores: float  # CPU of everything but the server and h2load (the pusher included)


def _applied(server: Server) -> tuple[float, float]:
    """Deltas pushed and applied so far, and the seconds spent applying deltas (writer)."""
    if not server.metrics_urls:
        return 0.0, 0.0
    samples = scrape(server.metrics_urls[0])
    return (
        sample(samples, "blacklist_sync_deltas_applied_total", source="child"),
        sample(samples, "blacklist_delta_apply_seconds_sum"),
    )


def _handled_ok(server: Server) -> float:
    labels = {"grpc_service": SERVICE, "grpc_method": "CheckCard", "grpc_code": "OK"}
    return sum(
        sample(scrape(u), "grpc_server_handled_total", **labels) for u in server.metrics_urls
    )


def _h2load(
    server: Server,
    body: Path,
    *,
    clients: int,
    streams: int,
    seconds: float | None = None,
    requests: int | None = None,
    per_client: int | None = None,
    log_file: Path | None = None,
    warm_up_us: float = 0.0,
) -> Window:
    """One h2load run; for a node, proves that it handled every call h2load counted, OK."""
    handled0, applied0 = _handled_ok(server), _applied(server)
    cpu0, busy0, t0 = server.cpu_seconds(), busy_cpu_seconds(), time.perf_counter()
    run = run_h2load(
        server.server.url(CHECK_CARD),
        body,
        clients=clients,
        streams=streams,
        duration_s=seconds,
        requests=requests,
        rps_per_client=per_client,
        stagger=per_client is not None,
        log_file=log_file,
        skip_us=warm_up_us,
    )
    wall = time.perf_counter() - t0
    applied1 = _applied(server)
    deltas, apply_seconds = applied1[0] - applied0[0], applied1[1] - applied0[1]
    busy, cpu = busy_cpu_seconds() - busy0, server.cpu_seconds() - cpu0
    assert run.failed == run.errored == run.timeout == 0, run
    assert run.status_2xx >= run.succeeded > 0, run
    assert seconds or run.succeeded == requests, run
    if server.metrics_urls:
        time.sleep(0.2)  # calls in flight when a timed run stopped finish
        assert _handled_ok(server) - handled0 >= run.succeeded, run
    return Window(run, deltas, apply_seconds, (busy - cpu - run.cpu_seconds) / wall)


def _peak(server: Server, body: Path, workers: int) -> tuple[float, str]:
    """The median saturated rate of PEAK_ROUNDS runs (issue #15: not the best) and their range."""
    clients, streams = PEAK_LOAD[workers]
    runs = [
        _h2load(server, body, clients=clients, streams=streams, seconds=PEAK_SECONDS)
        for _ in range(PEAK_ROUNDS)
    ]
    return median_range(w.run.rps for w in runs)


_EMPTY_PEAK: dict[str, tuple[float, str]] = {}


def _windows(
    setup: Setup,
    node: Server,
    body: Path,
    rates: dict[str, float],
    tmp: Path,
    tiny: bool,
    writes: Writes,
) -> dict[str, list[Window]]:
    """``ROUNDS`` rounds of: the node without writes, the node with the pusher running, the
    empty server; each paced at its own half-peak rate."""
    rounds, warm_up = (1, 0.0) if tiny else (ROUNDS, WARM_UP_US)
    seconds = writes.seconds
    out: dict[str, list[Window]] = {"quiet": [], "sync": [], "empty": []}
    for n in range(rounds):
        for kind in out:
            server = setup.empty if kind == "empty" else node
            clients, per_client = paced(rates["empty" if kind == "empty" else "node"])

            paced_run = partial(
                _h2load,
                server,
                body,
                clients=clients,
                streams=STREAMS,
                requests=round(clients * per_client * seconds),
                per_client=per_client,
                log_file=tmp / f"{kind}-{n}.log",
                warm_up_us=warm_up,
            )
            if kind != "sync":
                out[kind].append(paced_run())
                continue
            pusher = Pusher(node, setup.pusher_key, writes, tmp / "pusher.log")
            try:
                window = paced_run()
            finally:
                done = pusher.finish()
            # The writes were real and inside the window: applied there, the feed's version
            # on /metrics is the pusher's last, and a card it revoked answers so.
            assert window.deltas > 0, (window, done)
            assert node.head is not None
            version = sample(
                scrape(node.metrics_urls[0]),
                "blacklist_feed_version",
                publisher=node.head.publisher,
            )
            assert version == node.head.version, (version, node.head)
            assert _check(node, done["revoked_card"]).status == REVOKED
            out[kind].append(window)
    return out


def _check(server: Server, card: str) -> Any:
    with grpc.insecure_channel(server.server.address) as channel:
        stub: Any = card_status_pb2_grpc.CardStatusStub(channel)  # type: ignore[no-untyped-call]
        return stub.CheckCard(card_status_pb2.CheckCardRequest(card_id=card))


def _pooled(windows: list[Window]) -> list[int]:
    return sorted(t for w in windows for t in w.run.latencies_us)


def _over_1ms(latencies: list[int]) -> str:
    return f"{sum(1 for t in latencies if t > 1000) / len(latencies):.3f}"


@pytest.mark.parametrize("writes", ["steady", "big"])
@pytest.mark.parametrize("workers", [1, 2])
def test_check_card_latency_under_sync(
    benchmark: Any, setup: Setup, tmp_path: Path, workers: int, writes: str
) -> None:
    node = setup.nodes[workers]
    request = card_status_pb2.CheckCardRequest(card_id=setup.valid)
    answer = _check(node, setup.valid)
    assert answer.status == NOT_REVOKED and answer.card_id == setup.valid, answer
    assert _check(node, setup.revoked).status == REVOKED
    assert _check(setup.empty, setup.valid) == card_status_pb2.CheckCardResponse()
    if h2load_path() is None:
        pytest.skip("h2load not found (Debian package nghttp2-client; `make bench` installs it)")
    body = tmp_path / "check.bin"
    body.write_bytes(grpc_body([request]))
    tiny = not timed(benchmark)
    if tiny and writes != "steady":
        pytest.skip("the tiny untimed run writes one way only (the steady case)")
    kind = TINY_WRITES if tiny else WRITES[writes]
    suffix = "" if writes == "steady" else f"_{writes}_deltas"  # steady keeps issue #6's name
    benchmark.name = f"test_check_card_latency_under_sync_{node.label}{suffix}"

    def measure() -> tuple[dict[str, tuple[float, str]], dict[str, list[Window]]]:
        if tiny:
            peaks = {"node": (2.0 * TINY_RATE, "tiny"), "empty": (2.0 * TINY_RATE, "tiny")}
        else:
            if "empty" not in _EMPTY_PEAK:
                _EMPTY_PEAK["empty"] = _peak(setup.empty, body, 1)
            peaks = {"node": _peak(node, body, workers), "empty": _EMPTY_PEAK["empty"]}
        rates = {k: v / 2 for k, (v, _) in peaks.items()}
        return peaks, _windows(setup, node, body, rates, tmp_path, tiny, kind)

    peaks, windows = benchmark.pedantic(measure, rounds=1, iterations=1)
    sync, quiet, empty = (
        _pooled(windows["sync"]),
        _pooled(windows["quiet"]),
        _pooled(windows["empty"]),
    )
    assert sync and quiet and empty
    sync_seconds = sum(w.run.seconds for w in windows["sync"])
    deltas = sum(w.deltas for w in windows["sync"])
    node_clients, node_per_client = paced(peaks["node"][0] / 2)
    empty_clients, empty_per_client = paced(peaks["empty"][0] / 2)

    def runs(kind: str) -> str:
        return " ".join(f"{w.run.percentile_us(99):.0f}" for w in windows[kind])

    record(
        benchmark,
        entries=setup.entries,
        workers=workers,
        peak_rps=peaks["node"][0],
        peak_rps_range=peaks["node"][1],
        baseline_peak_rps=peaks["empty"][0],
        baseline_peak_rps_range=peaks["empty"][1],
        rate_offered=float(node_clients * node_per_client),
        baseline_rate_offered=float(empty_clients * empty_per_client),
        p50_us=percentile(sync, 50),
        p99_us=percentile(sync, 99),
        p999_us=percentile(sync, 99.9),
        p50_us_no_writes=percentile(quiet, 50),
        p99_us_no_writes=percentile(quiet, 99),
        p999_us_no_writes=percentile(quiet, 99.9),
        baseline_p50_us=percentile(empty, 50),
        baseline_p99_us=percentile(empty, 99),
        p99_us_range=median_range([w.run.percentile_us(99) for w in windows["sync"]], ".0f")[1],
        p99_us_no_writes_range=median_range(
            [w.run.percentile_us(99) for w in windows["quiet"]], ".0f"
        )[1],
        runs_p99_us=runs("sync"),
        runs_p99_us_no_writes=runs("quiet"),
        baseline_runs_p99_us=runs("empty"),
        samples=len(sync),
        deltas_applied=int(deltas),
        deltas_per_s=deltas / sync_seconds,
        apply_ms_per_delta=sum(w.apply_seconds for w in windows["sync"]) / deltas * 1e3,
        share_over_1ms=_over_1ms(sync),
        share_over_1ms_no_writes=_over_1ms(quiet),
        baseline_share_over_1ms=_over_1ms(empty),
        cards_written_per_s=deltas * kind.cards / sync_seconds,
        p99_ratio=percentile(sync, 99) / percentile(quiet, 99),
        delta_cards=kind.cards,
        other_cores=statistics.fmean(w.other_cores for ws in windows.values() for w in ws),
        load=f"h2load -c {node_clients} -m {STREAMS} --rps {node_per_client} -r 1 "
        f"--rate-period 1ms (empty: -c {empty_clients} --rps {empty_per_client}), "
        f"{kind.seconds:g} s x {1 if tiny else ROUNDS} rounds; "
        f"{kind.rate:g} deltas/s of {kind.cards} cards",
    )
