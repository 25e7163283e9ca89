"""Issue #6 figure: ``CheckCard`` throughput with 1 and 2 serving processes (``workers``).

Two nodes over copies of one store of BENCH_SCALE entries, started side by side, one with
``workers = 1`` and one with ``workers = 2`` (two workers on one port, with SO_REUSEPORT,
and the writer serving none of it; node/workers/pool.py). h2load (nghttp2-client, one thread) drives each in turn,
alternated over the rounds so that drift in this shared machine's speed falls on both; the
idle node uses no CPU meanwhile. h2load shares the machine's 2 cores with the servers, as
the issue says.

Figures: ``rps`` of each and their ``ratio`` (target: 2 workers ≥ 1.4× one), and the
servers' CPU seconds per 1,000 checks (every process of the node, read from /proc), so
that scaling efficiency shows apart from the machine's size. Every load is proven real:
the calls h2load counted must appear, handled OK, in the node's metrics, summed over the
writer's and the workers' own /metrics; and both workers must have answered some.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from bench.figures import median_range, record, timed
from bench.grpc_load import (
    ServerProcess,
    busy_cpu_seconds,
    grpc_body,
    h2load_path,
    python_command,
    run_h2load,
)
from bench.test_node import ROOT, SERVICE, _build_node
from node.gen.blacklist.v1 import card_status_pb2, card_status_pb2_grpc, types_pb2
from node.local.scrape import sample, scrape

NOT_REVOKED = types_pb2.CardStatusCode.Value("NOT_REVOKED")
_CLOCK_TICKS = 100  # USER_HZ on Linux (proc(5)); checked against os.sysconf below


@dataclass(frozen=True)
class Load:
    clients: int
    streams: int
    seconds: float | None = None
    requests: int | None = None
    rounds: int = 1

    def describe(self) -> str:
        amount = f"{self.seconds:g} s" if self.seconds else f"{self.requests} calls"
        return f"h2load -c {self.clients} -m {self.streams}, {amount} x {self.rounds} rounds"


# More connections than test_node's 8: SO_REUSEPORT places each connection by a hash of
# its addresses, so 32 of them split between two processes within a few either way.
PEAK = Load(clients=32, streams=8, seconds=4, rounds=3)
TINY = Load(clients=8, streams=4, requests=400)


@dataclass
class Served:
    label: str
    server: ServerProcess
    metrics_urls: list[str]  # the writer's, then each worker's
    pids: list[int]


def _cpu_seconds(pid: int) -> float:
    import os

    assert os.sysconf("SC_CLK_TCK") == _CLOCK_TICKS
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _start(root: Path, config: Path, workers: int) -> Served:
    text = config.read_text() + f"workers = {workers}\n"
    mine = root / f"node-{workers}.toml"
    mine.write_text(text.replace('data_dir = "data"', f'data_dir = "data-{workers}"'))
    server = ServerProcess(
        python_command("-m", "node", "run", "--config", str(mine)),
        cwd=ROOT,
        log=root / f"node-{workers}.log",
    )
    writer = server.info["metrics"]
    info = [
        labels for (name, labels), _ in scrape(writer).items() if name == "blacklist_worker_info"
    ]
    urls = [writer, *(dict(ls)["metrics_url"] for ls in info)]
    pids = [server.proc.pid, *(int(dict(ls)["pid"]) for ls in info)]
    # workers >= 2: that many workers serve, beside the writer that serves none (issue #15).
    if len(pids) != workers + (workers > 1):
        server.stop()  # not left running when the check fails
        raise AssertionError((pids, workers))
    return Served(f"{workers}_worker{'s' if workers > 1 else ''}", server, urls, pids)


@dataclass
class Nodes:
    by_workers: dict[int, Served]
    entries: int
    valid: str  # a card of a known publisher that is not revoked


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    root = tmp_path_factory.mktemp("bench-workers")
    config, entries, valid, _ = _build_node(root)
    for n in (1, 2):
        shutil.copytree(root / "data", root / f"data-{n}")
    started: dict[int, Served] = {}
    try:
        for n in (1, 2):
            started[n] = _start(root, config, n)
        yield Nodes(started, entries, valid[0])
    finally:
        for served in started.values():
            assert served.server.stop() == 0, (root / f"node-{len(served.pids)}.log").read_text()


@dataclass
class Measured:
    rps: float
    handled: float
    cpu_seconds: float
    per_process: list[float]  # calls each process handled
    cpu_per_process: list[float]  # CPU seconds each process used
    other_cores: float


def _handled(urls: list[str], ok: bool) -> list[float]:
    labels = {"grpc_service": SERVICE, "grpc_method": "CheckCard"}
    if ok:
        labels["grpc_code"] = "OK"
    return [sample(scrape(u), "grpc_server_handled_total", **labels) for u in urls]


def _load(served: Served, body: Path, load: Load) -> Measured:
    before = _handled(served.metrics_urls, ok=True)
    cpu0 = [_cpu_seconds(p) for p in served.pids]
    busy0, t0 = busy_cpu_seconds(), time.perf_counter()
    run = run_h2load(
        served.server.url(f"{SERVICE}/CheckCard"),
        body,
        clients=load.clients,
        streams=load.streams,
        duration_s=load.seconds,
        requests=load.requests,
    )
    wall = time.perf_counter() - t0
    busy = busy_cpu_seconds() - busy0
    time.sleep(0.2)  # calls in flight when a timed run stopped finish
    cpu_each = [_cpu_seconds(p) - c for p, c in zip(served.pids, cpu0, strict=True)]
    cpu = sum(cpu_each)
    assert run.failed == run.errored == run.timeout == 0, run
    assert load.seconds or run.succeeded == load.requests, run
    after = _handled(served.metrics_urls, ok=True)
    per_process = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(per_process) >= run.succeeded > 0, (per_process, run)
    return Measured(
        run.rps,
        sum(per_process),
        cpu,
        per_process,
        cpu_each,
        (busy - cpu - run.cpu_seconds) / wall,
    )


def _rounds(nodes: dict[int, Served], body: Path, load: Load) -> dict[int, list[Measured]]:
    runs: dict[int, list[Measured]] = {1: [], 2: []}
    for _ in range(load.rounds):
        for n in (1, 2):
            runs[n].append(_load(nodes[n], body, load))
    return runs


def test_check_card_with_one_and_two_workers(benchmark: Any, nodes: Nodes, tmp_path: Path) -> None:
    request = card_status_pb2.CheckCardRequest(card_id=nodes.valid)
    for served in nodes.by_workers.values():
        with grpc.insecure_channel(served.server.address) as channel:
            stub: Any = card_status_pb2_grpc.CardStatusStub(channel)  # type: ignore[no-untyped-call]
            assert stub.CheckCard(request).status == NOT_REVOKED
    if h2load_path() is None:
        pytest.skip("h2load not found (Debian package nghttp2-client; `make bench` installs it)")
    body = tmp_path / "check.bin"
    body.write_bytes(grpc_body([request]))
    load = PEAK if timed(benchmark) else TINY
    by = nodes.by_workers
    runs = benchmark.pedantic(_rounds, args=(by, body, load), rounds=1, iterations=1)
    # Both workers of the 2-worker node answered (the kernel spread the connections) and its
    # writer none (issue #15). With few connections on a loaded machine the kernel may,
    # rarely, hand all of them to one worker (or one was not listening yet): measure the
    # 2-worker side again, at most twice.
    for _ in range(2):
        spread = [sum(col) for col in zip(*(m.per_process for m in runs[2]), strict=True)]
        if all(n > 0 for n in spread[1:]):
            break
        runs[2] = [_load(by[2], body, load) for _ in range(load.rounds)]
    writer, *spread = [sum(col) for col in zip(*(m.per_process for m in runs[2]), strict=True)]
    assert writer == 0 and all(n > 0 for n in spread), (writer, spread)
    # Medians over the rounds with the range beside (issue #15: never the best round).
    rate = {n: median_range(m.rps for m in runs[n]) for n in (1, 2)}
    figures: dict[str, float | int | str] = {"entries": nodes.entries}
    for n in (1, 2):
        name = by[n].label
        figures[f"rps_{name}"] = rate[n][0]
        figures[f"rps_{name}_range"] = rate[n][1]
        cpu = statistics.median(m.cpu_seconds / m.handled * 1000 for m in runs[n])
        figures[f"cpu_s_per_1000_checks_{name}"] = f"{cpu:.3f}"  # record() prints floats .1f
        figures[f"runs_{name}"] = " ".join(f"{m.rps:.0f}" for m in runs[n])
    figures["ratio"] = rate[2][0] / rate[1][0]
    figures["ratio_paired_median"] = statistics.median(
        b.rps / a.rps for a, b in zip(runs[1], runs[2], strict=True)
    )
    figures["share_of_calls_by_process_2_workers"] = " ".join(
        f"{n / sum(spread):.2f}" for n in spread
    )
    # Each worker apart (the writer answers none: its CPU is in cpu_s_per_1000_checks).
    figures["cpu_s_per_1000_checks_by_process_2_workers"] = " ".join(
        f"{statistics.median(m.cpu_per_process[i] / max(1, m.per_process[i]) * 1000 for m in runs[2]):.3f}"
        for i in range(1, len(spread) + 1)
    )
    figures["other_cores"] = statistics.fmean(m.other_cores for ms in runs.values() for m in ms)
    record(benchmark, **figures, load=load.describe())
