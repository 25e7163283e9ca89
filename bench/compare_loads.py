"""The loads of `make bench-compare` (bench/compare.py): each side is a server and a client
run once per round, recording calls/s, p50/p99 and the server's CPU per 1,000 cards.

Servers are separate processes on loopback; the clients are h2load (gRPC), redis-benchmark
(Redis and the raw TCP echo) and redis-py processes. Server CPU is read from /proc, over
the whole process tree (a node's worker processes included).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import figures
from bench.grpc_load import ServerProcess, percentile, python_command, run_h2load
from bench.redis_baseline import process_cpu_seconds, redis_benchmark, redis_py_load
from node.local.scrape import sample, scrape

ROOT = Path(__file__).resolve().parent.parent
SERVICE = "blacklist.v1.CardStatus"


def progress(message: str) -> None:
    figures.progress(message, "compare")


# --- what one run measures ---------------------------------------------------------------


@dataclass
class Side:
    """One server + client pairing under load: its median round (issue #15: never the best),
    with the range of the rounds' rates beside it."""

    name: str
    client: str
    per_call: int  # cards per call
    rates: list[float] = field(default_factory=list)  # calls/s, one per round
    p50_us: list[float] = field(default_factory=list)
    p99_us: list[float] = field(default_factory=list)
    cpu_ms_per_1000: list[float] = field(default_factory=list)  # server CPU per 1,000 cards

    def median_round(self) -> int:
        """The round whose rate is the median (the upper one of an even count), so that its
        own p50/p99 go with the headline rate."""
        ordered = sorted(range(len(self.rates)), key=self.rates.__getitem__)
        return ordered[len(ordered) // 2]

    def summary(self) -> dict[str, Any]:
        b = self.median_round()
        low, high = min(self.rates), max(self.rates)
        return {
            "name": self.name,
            "client": self.client,
            "per_call": self.per_call,
            "calls_per_s": self.rates[b],
            "cards_per_s": self.rates[b] * self.per_call,
            "calls_per_s_range": f"{low:,.0f}-{high:,.0f}",
            "cards_per_s_range": f"{low * self.per_call:,.0f}-{high * self.per_call:,.0f}",
            "p50_us": self.p50_us[b],
            "p99_us": self.p99_us[b],
            "server_cpu_ms_per_1000_cards": (
                statistics.median(self.cpu_ms_per_1000) if self.cpu_ms_per_1000 else None
            ),
            "rounds_calls_per_s": [round(r, 1) for r in self.rates],
        }


# --- processes -----------------------------------------------------------------------------


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and all its descendants (worker processes), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += process_cpu_seconds(p)
        except (OSError, IndexError):
            continue
        todo += children.get(p, [])
    return total


def rss_bytes(pid: int) -> dict[str, int]:
    """VmRSS and RssAnon of a process (proc(5) status), in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile"):
            out[name] = int(value.split()[0]) * 1024
    return out


class EchoServer:
    def __init__(self, log: Path) -> None:
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            python_command("-m", "bench.tcp_echo"),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(b"READY "):
            self.stop()
            raise RuntimeError(f"echo server did not start: {log.read_text()}")
        self.port = int(json.loads(line[6:])["tcp"].rpartition(":")[2])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._log.close()


def h2load_side(
    server: ServerProcess,
    method: str,
    body: Path,
    seconds: float,
    in_flight: tuple[int, int],
    *,
    one_process_metrics: bool = True,
) -> Callable[[Side, Path], None]:
    """A load of ``server`` by h2load; records rate, latency from its per-request log, the
    server's CPU (with any worker processes) per 1,000 cards. Where the server has
    metrics and ``one_process_metrics`` (its /metrics counts every call it serves), they
    must show every call h2load completed, answered OK."""

    def run(side: Side, log: Path) -> None:
        cpu0 = tree_cpu_seconds(server.proc.pid)
        metrics = server.info.get("metrics")
        before = scrape(metrics) if metrics else {}
        result = run_h2load(
            server.url(f"{SERVICE}/{method}"),
            body,
            clients=in_flight[0],
            streams=in_flight[1],
            duration_s=seconds,
            log_file=log,
        )
        cpu = tree_cpu_seconds(server.proc.pid) - cpu0
        assert result.failed == result.errored == result.timeout == 0, result
        assert result.status_2xx >= result.succeeded > 0, result
        if metrics:  # the server really answered them, all OK (node/grpc/calls.py's Meter)
            time.sleep(0.2)
            labels = {"grpc_service": SERVICE, "grpc_method": method, "grpc_code": "OK"}
            after = scrape(metrics)
            grew = sample(after, "grpc_server_handled_total", **labels) - sample(
                before, "grpc_server_handled_total", **labels
            )
            if one_process_metrics:
                assert grew >= result.succeeded, (grew, result)
        side.rates.append(result.rps)
        side.p50_us.append(result.percentile_us(50))
        side.p99_us.append(result.percentile_us(99))
        side.cpu_ms_per_1000.append(cpu / max(1, result.done * side.per_call) * 1e6)

    return run


def redis_benchmark_side(
    port: int, args: list[str], clients: int, seconds: float, pid: int, calibrate: int = 2000
) -> Callable[[Side, Path], None]:
    def run(side: Side, log: Path) -> None:
        result = redis_benchmark(
            port,
            args,
            clients=clients,
            seconds=seconds,
            server_pid=pid,
            calibrate_requests=calibrate,
        )
        log.write_text(" ".join(result.command) + "\n")
        side.rates.append(result.rps)
        side.p50_us.append(result.p50_us)
        side.p99_us.append(result.p99_us)
        side.cpu_ms_per_1000.append(
            result.server_cpu_seconds / max(1, result.requests * side.per_call) * 1e6
        )

    return run


def redis_py_side(
    port: int, members: list[str], batch: int, seconds: float, pid: int, processes: int
) -> Callable[[Side, Path], None]:
    def run(side: Side, log: Path) -> None:
        cpu0 = process_cpu_seconds(pid)
        result = redis_py_load(port, members, batch=batch, processes=processes, seconds=seconds)
        cpu = process_cpu_seconds(pid) - cpu0
        side.rates.append(result.rps)
        side.p50_us.append(percentile([round(x) for x in result.latencies_us], 50))
        side.p99_us.append(percentile([round(x) for x in result.latencies_us], 99))
        side.cpu_ms_per_1000.append(cpu / max(1, result.calls * batch) * 1e6)

    return run


def run_rounds(
    sides: list[tuple[Side, Callable[[Side, Path], None]]],
    rounds: int,
    logs: Path,
    prefix: str = "",
) -> None:
    for n in range(rounds):
        for side, run in sides:
            name = side.name.replace(" ", "_").replace(",", "")
            run(side, logs / f"{prefix}{name}-{n}.log")
            progress(f"round {n + 1}/{rounds}: {side.name}: {side.rates[-1]:,.0f} calls/s")
