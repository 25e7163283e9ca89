"""A CheckCard load generator that can present a TLS client certificate (issue #5).

h2load, which drives the plain-text node benchmarks (``bench/grpc_load.py``), cannot present
a client certificate, and a node serving mutual TLS refuses a handshake without one. This
generator is grpcio's C core, as a terminal's own client would be, driven by grpc.aio:

* a **pool** is ``processes`` worker processes against one server, each started fresh
  (``python -m bench.tls_load SPEC.json``: grpc's C core does not survive a fork) and kept
  for the whole benchmark, so that every run of a pool uses the same warm connections;
* a **worker** holds one channel (one HTTP/2 connection; with TLS the handshake is done
  before the first run, as a terminal holds its connection open) and keeps ``inflight``
  unary calls in flight on it: that many coroutines, each calling, checking the answer and
  calling again. The request bodies are serialized once, up front; every answer is
  decoded and its status and card id compared with what the spec expects;
* a **run** lasts ``seconds``: every worker starts on the parent's word, stops issuing at
  its deadline and waits for its calls in flight, so that a run ends with none outstanding
  and the server's own counters must match the answers exactly.

Plain text and mutual TLS differ only in the channel's credentials: same process count,
same calls in flight, same cards, same client code.

The worker speaks one line at a time on stdin/stdout::

    worker → READY {"pid": P, "checked": N}   connected; one call per card answered right
    parent → RUN <seconds>
    worker → DONE {"calls": …, "wrong": …, "errors": {code: n}, "seconds": …,
                   "cpu_seconds": …, "latencies_us": […]}
    parent → (closes stdin)                   the worker exits 0
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import select
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import grpc

from node.gen.blacklist.v1 import card_status_pb2

CHECK_CARD = "/blacklist.v1.CardStatus/CheckCard"
READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ClientCert:
    """What a terminal presents: the CA it trusts for the server, its certificate and key."""

    ca: str
    cert: str
    key: str


@dataclass(frozen=True)
class LoadSpec:
    address: str  # host:port
    cards: list[tuple[str, int]]  # (card id, expected CardStatusCode), sent round-robin
    inflight: int  # calls in flight per worker
    tls: ClientCert | None = None  # None: plain text

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self)))
        return path

    @classmethod
    def read(cls, path: Path) -> LoadSpec:
        data = json.loads(path.read_text())
        tls = data.pop("tls")
        return cls(
            address=data["address"],
            cards=[(c, int(s)) for c, s in data["cards"]],
            inflight=int(data["inflight"]),
            tls=ClientCert(**tls) if tls else None,
        )


@dataclass
class LoadRun:
    """One run of a pool, all workers together."""

    calls: int  # answered, every one checked
    wrong: int  # answers with another status or card id than expected
    errors: dict[str, int]  # gRPC status code → calls that failed with it
    rps: float  # the sum of the workers' rates, each over its own run
    wall_seconds: float  # the parent's view: from RUN to the last DONE
    cpu_seconds: float  # the workers' own CPU (every thread), user + system
    latencies_us: list[int]  # every call's round trip, sorted


# --- the worker (its own process) ---------------------------------------------------------------


def _channel(spec: LoadSpec) -> grpc.aio.Channel:
    if spec.tls is None:
        return grpc.aio.insecure_channel(spec.address)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(spec.tls.ca).read_bytes(),
        private_key=Path(spec.tls.key).read_bytes(),
        certificate_chain=Path(spec.tls.cert).read_bytes(),
    )
    return grpc.aio.secure_channel(spec.address, credentials)


Calls = list[tuple[bytes, str, int]]  # (request body, card id, expected status)


async def _connect(spec: LoadSpec) -> tuple[grpc.aio.Channel, Any, Calls]:
    channel = _channel(spec)
    await asyncio.wait_for(channel.channel_ready(), READY_TIMEOUT_S)
    check = channel.unary_unary(
        CHECK_CARD,
        request_serializer=None,  # bytes, serialized once below
        response_deserializer=card_status_pb2.CheckCardResponse.FromString,
    )
    calls = [
        (card_status_pb2.CheckCardRequest(card_id=card).SerializeToString(), card, status)
        for card, status in spec.cards
    ]
    for body, card, status in calls:
        answer = await check(body, timeout=30)
        if answer.status != status or answer.card_id != card:
            raise AssertionError(f"{card}: expected status {status}, got {answer}")
    return channel, check, calls


async def _run(check: Any, calls: Calls, inflight: int, seconds: float) -> dict[str, Any]:
    latencies: list[int] = []
    errors: Counter[str] = Counter()
    wrong = 0
    at = 0
    usage0 = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    start = time.perf_counter()
    deadline = start + seconds

    async def caller() -> None:
        nonlocal wrong, at
        clock = time.perf_counter_ns
        while time.perf_counter() < deadline:
            body, card, status = calls[at]
            at = (at + 1) % len(calls)
            t0 = clock()
            try:
                answer = await check(body, timeout=30)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1
                continue
            latencies.append((clock() - t0) // 1000)
            if answer.status != status or answer.card_id != card:
                wrong += 1

    await asyncio.gather(*(caller() for _ in range(inflight)))
    elapsed = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (usage.ru_utime - usage0.ru_utime) + (usage.ru_stime - usage0.ru_stime)
    return {
        "calls": len(latencies),
        "wrong": wrong,
        "errors": dict(errors),
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "latencies_us": latencies,
    }


def worker(spec_path: Path) -> int:
    spec = LoadSpec.read(spec_path)
    # One loop for the worker's life: an aio channel belongs to the loop that made it. Between
    # runs the loop is idle and the worker blocks on stdin.
    loop = asyncio.new_event_loop()
    channel, check, calls = loop.run_until_complete(_connect(spec))
    print("READY " + json.dumps({"pid": os.getpid(), "checked": len(calls)}), flush=True)
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command != "RUN":
            raise ValueError(f"unknown command {line!r}")
        result = loop.run_until_complete(_run(check, calls, spec.inflight, float(arg)))
        print("DONE " + json.dumps(result), flush=True)
    loop.run_until_complete(channel.close())
    loop.close()
    return 0


# --- the pool (the benchmark's process) -----------------------------------------------------


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    return env


def _read_line(proc: subprocess.Popen[bytes], prefix: bytes, timeout: float, log: Path) -> Any:
    """The JSON after ``prefix`` on the worker's next line; the worker's log if it fails."""
    stdout: IO[bytes] | None = proc.stdout
    assert stdout is not None
    ready, _, _ = select.select([stdout], [], [], timeout)
    line = stdout.readline() if ready else b""
    if not line.startswith(prefix):
        proc.kill()
        proc.wait()
        raise RuntimeError(
            f"load worker {proc.pid} sent {line[:200]!r} instead of {prefix!r}:\n"
            + log.read_text(errors="replace")[-4000:]
        )
    return json.loads(line[len(prefix) :])


class LoadPool:
    """``processes`` workers of one :class:`LoadSpec`, started now and kept until close()."""

    def __init__(self, spec: LoadSpec, processes: int, *, cwd: Path, work: Path, name: str):
        self.name = name
        spec_path = spec.write(work / f"{name}.json")
        self._logs = [work / f"{name}-{n}.log" for n in range(processes)]
        self.procs: list[subprocess.Popen[bytes]] = []
        try:
            for log in self._logs:
                with open(log, "wb") as err:
                    self.procs.append(
                        subprocess.Popen(
                            [sys.executable, "-m", "bench.tls_load", str(spec_path)],
                            cwd=cwd,
                            stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE,
                            stderr=err,
                            env=_env(cwd),
                        )
                    )
            # Started together, then waited for: their imports and handshakes overlap.
            self.ready = [
                _read_line(p, b"READY ", READY_TIMEOUT_S, log)
                for p, log in zip(self.procs, self._logs, strict=True)
            ]
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def run(self, seconds: float) -> LoadRun:
        t0 = time.perf_counter()
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(f"RUN {seconds}\n".encode())
            p.stdin.flush()
        done = [
            _read_line(p, b"DONE ", seconds + 60, log)
            for p, log in zip(self.procs, self._logs, strict=True)
        ]
        wall = time.perf_counter() - t0
        errors: Counter[str] = Counter()
        for d in done:
            errors.update(d["errors"])
        return LoadRun(
            calls=sum(d["calls"] for d in done),
            wrong=sum(d["wrong"] for d in done),
            errors=dict(errors),
            rps=sum(d["calls"] / d["seconds"] for d in done),
            wall_seconds=wall,
            cpu_seconds=sum(d["cpu_seconds"] for d in done),
            latencies_us=sorted(t for d in done for t in d["latencies_us"]),
        )

    def close(self) -> list[int | None]:
        """Close every worker's stdin (it exits 0) and return the exit codes."""
        for p in self.procs:
            if p.stdin is not None and not p.stdin.closed:
                p.stdin.close()
        codes: list[int | None] = []
        for p in self.procs:
            try:
                codes.append(p.wait(30))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                codes.append(None)
            if p.stdout is not None:
                p.stdout.close()
        return codes

    def log_tail(self) -> str:
        return "\n".join(log.read_text(errors="replace")[-2000:] for log in self._logs)


def describe(processes: int, inflight: int) -> str:
    return f"{processes} grpc.aio client process(es) x {inflight} CheckCard calls in flight"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m bench.tls_load SPEC.json  (started by LoadPool)", file=sys.stderr)
        return 2
    return worker(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
