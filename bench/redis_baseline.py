"""The Redis side of `make bench-compare` (issue #6): a throwaway redis-server on loopback,
loads from ``redis-benchmark`` (C, like h2load) and from redis-py in several processes.

The server is Debian's ``redis-server``, started on a free loopback port with persistence
off (``--save '' --appendonly no``) in a scratch directory, and shut down with
``SHUTDOWN NOSAVE`` (or killed) at the end. Revoked cards are one Redis set of the
32-character card ids, as an operator would store them; a check is ``SISMEMBER`` and a
batch ``SMISMEMBER`` (Redis ≥ 6.2) with the same ids the node gets.

``redis-benchmark`` sends any command given on its command line and reports throughput and
percentiles (``--csv``, Redis 7 columns). It has no duration option, so each run is sized
from a short calibration run to last about the wanted seconds.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REDIS_SERVER = "redis-server"
REDIS_BENCHMARK = "redis-benchmark"
SET_KEY = "revoked"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (proc(5) stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RedisServer:
    """redis-server on 127.0.0.1:<free port>, no persistence, stopped by :meth:`stop`."""

    def __init__(self, workdir: Path, timeout: float = 20.0) -> None:
        import redis

        if shutil.which(REDIS_SERVER) is None:
            raise RuntimeError(
                "redis-server not found (Debian package redis-server; "
                "`make bench-compare` installs it)"
            )
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self._log = open(workdir / "redis.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.client = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"redis-server did not start: {(workdir / 'redis.log').read_text()}"
                    ) from None
                time.sleep(0.05)
        self.version = str(self.client.info("server")["redis_version"])

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.proc.pid)

    def load_set(self, members: Sequence[str], chunk: int = 20_000) -> None:
        """SADD every member, pipelined in chunks (no transaction)."""
        pipe = self.client.pipeline(transaction=False)
        for start in range(0, len(members), chunk):
            pipe.sadd(SET_KEY, *members[start : start + chunk])
            if (start // chunk) % 10 == 9:
                pipe.execute()
        pipe.execute()

    def stop(self) -> None:
        if self.proc.poll() is None:
            # The connection drops as the server shuts down: whatever redis-py raises then.
            with contextlib.suppress(Exception):
                self.client.shutdown(nosave=True)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.client.close()
        self._log.close()


# --- redis-benchmark ---------------------------------------------------------------------


@dataclass
class BenchmarkRun:
    """One redis-benchmark run: calls/s and its own latency percentiles (µs)."""

    command: list[str]
    rps: float
    p50_us: float
    p99_us: float
    requests: int
    seconds: float  # wall time of the run
    server_cpu_seconds: float  # the server's CPU over the run (None-free: 0 when unknown)


def parse_redis_benchmark_csv(text: str) -> dict[str, float]:
    """The one result row of ``redis-benchmark --csv`` (Redis 7: rps, avg, min, p50, p95,
    p99, max latency in ms)."""
    # The "test" column repeats the whole command: 10,000 ids of an SMISMEMBER are ~330 KB.
    csv.field_size_limit(max(csv.field_size_limit(), len(text)))
    rows = list(csv.DictReader(io.StringIO(text.strip())))
    if len(rows) != 1 or "p99_latency_ms" not in rows[0]:
        raise ValueError(f"unexpected redis-benchmark output:\n{text}")
    row = rows[0]
    return {
        "rps": float(row["rps"]),
        "p50_us": float(row["p50_latency_ms"]) * 1e3,
        "p99_us": float(row["p99_latency_ms"]) * 1e3,
    }


def redis_benchmark(
    port: int,
    args: Sequence[str],
    *,
    clients: int,
    seconds: float,
    server_pid: int | None = None,
    calibrate_requests: int = 2000,
) -> BenchmarkRun:
    """``redis-benchmark -P 1`` (no pipelining) sending ``args`` for about ``seconds``."""

    def run(requests: int) -> tuple[list[str], dict[str, float], float, float]:
        command = [
            REDIS_BENCHMARK,
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-c",
            str(clients),
            "-n",
            str(requests),
            "-P",
            "1",
            "--csv",
            *args,
        ]
        cpu0 = process_cpu_seconds(server_pid) if server_pid else 0.0
        t0 = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        wall = time.perf_counter() - t0
        cpu = (process_cpu_seconds(server_pid) - cpu0) if server_pid else 0.0
        if proc.returncode != 0:
            raise RuntimeError(f"redis-benchmark failed: {proc.stderr}\n{proc.stdout[:2000]}")
        return command, parse_redis_benchmark_csv(proc.stdout), wall, cpu

    _, probe, _, _ = run(max(calibrate_requests, clients))
    requests = max(clients, math.ceil(probe["rps"] * seconds))
    command, figures, wall, cpu = run(requests)
    # Shown with "..." instead of a thousand ids, so that the table stays readable.
    shown = command if len(command) < 30 else [*command[:20], f"... ({len(args) - 1} ids)"]
    return BenchmarkRun(shown, requests=requests, seconds=wall, server_cpu_seconds=cpu, **figures)


def redis_benchmark_path() -> str | None:
    return shutil.which(REDIS_BENCHMARK)


# --- redis-py in several processes --------------------------------------------------------


@dataclass
class ClientRun:
    calls: int
    seconds: float
    latencies_us: list[float]

    @property
    def rps(self) -> float:
        return self.calls / self.seconds


def _redis_py_client(
    port: int, members: list[str], batch: int, start_at: float, seconds: float
) -> tuple[int, list[float], float, float]:
    """One client: blocking calls one after another (no pipelining) from ``start_at`` (wall
    clock) for ``seconds``; SISMEMBER if ``batch`` is 1, else SMISMEMBER of ``batch``
    members. Returns the calls made, each one's latency in µs, and when it began and ended
    (wall clock)."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    client.ping()
    latencies: list[float] = []
    i, n = 0, len(members)
    while time.time() < start_at:
        time.sleep(0.001)
    began = time.time()
    end = time.perf_counter() + seconds
    while (t0 := time.perf_counter()) < end:
        if batch == 1:
            client.sismember(SET_KEY, members[i % n])
        else:
            client.smismember(SET_KEY, members[:batch])
        latencies.append(round((time.perf_counter() - t0) * 1e6, 1))
        i += 1
    client.close()
    return len(latencies), latencies, began, time.time()


def redis_py_load(
    port: int, members: list[str], *, batch: int, processes: int, seconds: float
) -> ClientRun:
    """``processes`` redis-py clients, each its own ``python -m bench.redis_baseline``
    process (which imports redis and nothing of this project), calling at once for
    ``seconds``; latencies pooled and sorted."""
    start_at = time.time() + 0.5 + 0.25 * processes  # time for the interpreters to start
    job = json.dumps([port, members, batch, start_at, seconds])
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.redis_baseline"],
            cwd=Path(__file__).resolve().parent.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    for proc in procs:  # every job handed out before any result is read: they run at once
        assert proc.stdin is not None
        proc.stdin.write(job)
        proc.stdin.close()
    results = []
    for proc in procs:
        assert proc.stdout is not None
        out = proc.stdout.read()
        if proc.wait(timeout=seconds + 120) != 0:
            raise RuntimeError(f"redis-py client failed ({proc.returncode})")
        results.append(json.loads(out))
    # The rate over the span from the first client's start to the last one's end, in case
    # an interpreter started after start_at.
    span = max(r[3] for r in results) - min(r[2] for r in results)
    latencies = sorted(t for r in results for t in r[1])
    return ClientRun(sum(r[0] for r in results), span, latencies)


if __name__ == "__main__":
    # A redis-py client process of redis_py_load: its job as JSON on stdin, its result on
    # stdout.
    port, members, batch, start_at, seconds = json.loads(sys.stdin.read())
    print(json.dumps(_redis_py_client(port, members, batch, start_at, seconds)))
