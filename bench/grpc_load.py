"""Load from outside: a gRPC server in its own process, driven by h2load (nghttp2-client).

h2load speaks HTTP/2 over cleartext (h2c), which is all gRPC needs on the wire: a POST to
``/package.Service/Method`` with ``content-type: application/grpc`` and ``te: trailers``,
and a body of length-prefixed messages (gRPC over HTTP/2, "Length-Prefixed-Message")::

    compressed flag   u8       0: not compressed
    length            u32 BE   bytes of the message that follows
    message           the serialized protobuf

A streaming call's body is several of these back to back. h2load counts a response with
HTTP status 200 as a success even when the gRPC status in the trailers is an error, so the
benchmarks prove the calls real elsewhere: one call through a grpc client first, and the
server's own ``grpc_server_handled_total`` after the load.
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

H2LOAD = "h2load"
GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")
_PREFIX = struct.Struct(">BI")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Message(Protocol):
    """A protobuf message, as far as framing it goes."""

    def SerializeToString(self) -> bytes: ...


def grpc_frame(message: Message) -> bytes:
    """One Length-Prefixed-Message (uncompressed)."""
    data = message.SerializeToString()
    return _PREFIX.pack(0, len(data)) + data


def grpc_body(messages: Iterable[Message]) -> bytes:
    """The request body of a call: one frame for a unary call, several for a stream."""
    return b"".join(grpc_frame(m) for m in messages)


def unframe(body: bytes) -> list[bytes]:
    """The serialized messages of a request body (the inverse of :func:`grpc_body`)."""
    messages = []
    at = 0
    while at < len(body):
        compressed, length = _PREFIX.unpack_from(body, at)
        if compressed:
            raise ValueError(f"compressed message at byte {at}: not written by grpc_body")
        at += _PREFIX.size
        messages.append(body[at : at + length])
        at += length
    return messages


def h2load_path() -> str | None:
    return shutil.which(H2LOAD)


# --- h2load ---------------------------------------------------------------------------------


@dataclass
class H2LoadRun:
    """What one h2load run reported, plus the CPU it used (to show it was not the limit)."""

    command: list[str]
    seconds: float  # "finished in" (the measured duration with -D)
    rps: float  # requests finished per second, as h2load reports it
    total: int
    started: int
    done: int
    succeeded: int
    failed: int
    errored: int
    timeout: int
    status_2xx: int
    mean_us: float
    cpu_seconds: float  # h2load's own user + system time
    latencies_us: list[int] = field(default_factory=list)  # from --log-file, sorted

    def percentile_us(self, q: float) -> float:
        return percentile(self.latencies_us, q)


_FINISHED = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")
_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
_CODES = re.compile(r"status codes: (\d+) 2xx")
_TIME_FOR_REQUEST = re.compile(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)")
_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6}


def _duration_us(text: str) -> float:
    """h2load's durations: '332us', '7.13ms', '1.20s'."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if m is None:
        raise ValueError(f"unexpected h2load duration {text!r}")
    return float(m.group(1)) * _UNITS_US[m.group(2)]


def parse_h2load(output: str) -> dict[str, Any]:
    """The summary lines of h2load's report (nghttp2 1.4x–1.6x format)."""
    finished = _FINISHED.search(output)
    requests = _REQUESTS.search(output)
    codes = _CODES.search(output)
    timing = _TIME_FOR_REQUEST.search(output)
    if finished is None or requests is None or codes is None:
        raise ValueError(f"cannot parse h2load output:\n{output}")
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    total, started, done, ok, failed, errored, timeout = map(int, requests.groups())
    return {
        "seconds": seconds,
        "rps": float(finished.group(3)),
        "total": total,
        "started": started,
        "done": done,
        "succeeded": ok,
        "failed": failed,
        "errored": errored,
        "timeout": timeout,
        "status_2xx": int(codes.group(1)),
        "mean_us": _duration_us(timing.group(3)) if timing else math.nan,
    }


def read_log_file(path: Path, skip_us: float = 0.0) -> list[int]:
    """Per-request times (µs) from h2load's --log-file, sorted; requests that started in the
    first ``skip_us`` are left out (warm-up), and failed streams (status -1) too."""
    rows = [line.split("\t") for line in path.read_text().splitlines() if line]
    if not rows:
        return []
    first = min(int(r[0]) for r in rows)
    return sorted(int(r[2]) for r in rows if r[1] != "-1" and int(r[0]) - first >= skip_us)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 < q < 100, to a tenth: 99.9 is the 999th of 1000 cuts) of
    ``values``, interpolated between ranks (statistics.quantiles' inclusive method, as numpy's
    default); nan for no values."""
    if not values:
        return math.nan
    if len(values) == 1:
        return float(values[0])
    cut = round(q * 10)
    if not 0 < cut < 1000:
        raise ValueError(f"percentile {q} is not in (0, 100)")
    return statistics.quantiles(values, n=1000, method="inclusive")[cut - 1]


# h2load's --rps timer ticks every max(10 ms, 1/rps) and sends what is due in one burst
# (nghttp2 src/h2load.cc, Client::connection_made), so a connection paced above 100/s sends
# bursts of several calls that queue behind each other: latency that the server did not
# cause. Pacing connections at most 80/s each sends one call per tick instead.
MAX_PACED_RPS = 80


def paced(rate: float) -> tuple[int, int]:
    """Connections and --rps per connection that offer ``rate`` calls/s one at a time."""
    clients = max(1, math.ceil(rate / MAX_PACED_RPS))
    return clients, max(1, round(rate / clients))


def run_h2load(
    url: str,
    body: Path,
    *,
    clients: int,
    streams: int,
    duration_s: float | None = None,
    requests: int | None = None,
    rps_per_client: int | None = None,
    stagger: bool = False,
    log_file: Path | None = None,
    skip_us: float = 0.0,
    threads: int = 1,
) -> H2LoadRun:
    """Run h2load once: for ``duration_s`` seconds (-D) or ``requests`` calls (-n), each of
    ``clients`` connections keeping up to ``streams`` calls in flight. ``rps_per_client``
    paces each connection (h2load --rps); ``stagger`` opens the connections 1 ms apart, so
    that their pacing timers are out of phase (see :func:`paced`)."""
    command = [H2LOAD, "-c", str(clients), "-m", str(streams), "-t", str(threads), "-d", str(body)]
    for header in GRPC_HEADERS:
        command += ["-H", header]
    if duration_s is not None:
        command += ["-D", f"{max(1, round(duration_s * 1000))}ms"]
    else:
        command += ["-n", str(requests or 1)]
    if rps_per_client is not None:
        command += ["--rps", str(rps_per_client)]
    if stagger:
        command += ["-r", "1", "--rate-period", "1ms"]  # h2load: -r excludes -D
    if log_file is not None:
        log_file.unlink(missing_ok=True)  # h2load appends
        command += ["--log-file", str(log_file)]
    command.append(url)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"h2load failed ({proc.returncode}): {proc.stderr}\n{proc.stdout}")
    summary = parse_h2load(proc.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    latencies = read_log_file(log_file, skip_us) if log_file is not None else []
    return H2LoadRun(command=command, cpu_seconds=cpu, latencies_us=latencies, **summary)


# --- servers in their own processes ---------------------------------------------------------


class ServerProcess:
    """A server started as ``command``, ready once it prints ``READY {json}`` on stdout.

    Stops with SIGTERM and must exit 0 (both servers shut down cleanly on it)."""

    def __init__(self, command: Sequence[str], *, cwd: Path, log: Path, timeout: float = 60.0):
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            list(command), cwd=cwd, stdout=subprocess.PIPE, stderr=self._log, env=_env(cwd)
        )
        self.info = self._wait_ready(log, timeout)
        self.address: str = self.info["grpc"]

    def _wait_ready(self, log: Path, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        stdout: IO[bytes] = self.proc.stdout
        while time.monotonic() < deadline:
            line = stdout.readline()
            if not line:
                break
            if line.startswith(b"READY "):
                info: dict[str, Any] = json.loads(line[6:])
                return info
        self.proc.kill()
        self.proc.wait()
        raise RuntimeError(f"server did not become ready: {log.read_text(errors='replace')}")

    def url(self, method: str) -> str:
        return f"http://{self.address}/{method}"

    def cpu_seconds(self) -> float:
        """User + system CPU of the whole process (all threads) so far (proc(5) stat)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
        return self.proc.returncode


def busy_cpu_seconds() -> float:
    """CPU time every process on the machine has used so far: everything in /proc/stat's
    first line except idle and iowait (proc(5)). Minus the server's and h2load's, it shows
    how much else was running during a load (these machines are shared)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(
            int, f.readline().split()[1:9]
        )
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    return env


def python_command(*args: str) -> list[str]:
    return [sys.executable, *args]


# --- the server's own metrics ----------------------------------------------------------------
