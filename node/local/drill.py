"""`python -m node scale-drill`: kill -9 a replica under load and check every answer.

Runs against what `scale-up` started (node/local/scale.py). Client threads call CheckCard
through the balancer for three kinds of cards: revoked before the run, never revoked, and
revoked *during* the run (one Revoke every ``revoke_every`` seconds at the upstream, whose
answer names the feed version it produced). A third of the way in, one replica is killed
with SIGKILL; after a pause it is started again, and must catch up before it takes calls
(blacklist/sync/readiness.py). An answer is **wrong** when it contradicts the feed version
it names: REVOKED for a card not revoked at that version, NOT_REVOKED for one that is (each
answer carries the version it was read from, so this is exact, with no timing window). A
**failed** call is one that raised; at most the calls in flight on the killed replica may fail
(HAProxy retries a call that finds its replica gone, deploy/haproxy.cfg.in). At the end every
replica must hold every revocation. The report gives calls/s, p50/p99 and the counts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from node.gen.blacklist.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    card_status_pb2,
    card_status_pb2_grpc,
    types_pb2,
)
from node.local.scale import STATE_FILE, Process, ScaleError, spawn, wait_ready_line

REVOKED = types_pb2.REVOKED
NOT_REVOKED = types_pb2.NOT_REVOKED


def card(serial: int) -> str:
    return f"440100D156000005{serial:016X}"


@dataclass
class DrillReport:
    seconds: float
    calls: int
    failed_calls: int
    wrong_answers: int
    stale_answers: int
    rps: float
    p50_us: float
    p99_us: float
    threads: int
    revocations: int
    killed: str
    rejoined_after_s: float | None  # from the restart until the replica was SERVING again
    reached_every_replica: bool
    wrong_examples: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        rejoined = "never" if self.rejoined_after_s is None else f"{self.rejoined_after_s:.1f} s"
        return [
            f"{self.calls} calls in {self.seconds:.1f} s through the balancer "
            f"({self.rps:.0f}/s, {self.threads} client threads), p50 {self.p50_us:.0f} us, "
            f"p99 {self.p99_us:.0f} us",
            f"wrong answers: {self.wrong_answers}; failed calls: {self.failed_calls} "
            f"(at most {self.threads} in flight); answers from a copy 2+ versions behind: "
            f"{self.stale_answers}",
            f"{self.killed} killed with SIGKILL, restarted, serving again after {rejoined}",
            f"{self.revocations} revocations published during the run; every replica holds "
            f"them all: {'yes' if self.reached_every_replica else 'NO'}",
        ]


@dataclass
class _Answer:
    card: str
    status: int
    version: int
    started: float  # time.monotonic() when the call was made


class Drill:
    def __init__(self, directory: Path, *, threads: int = 4, seed: int = 1) -> None:
        self.directory = directory.resolve()
        state = json.loads((self.directory / STATE_FILE).read_text())
        self.balancer: str = state["balancer"]
        self.processes = [Process(**p) for p in state["processes"]]
        self.threads = threads
        self.rng = random.Random(seed)
        self.addresses = {p.name: wait_ready_line(p)["grpc"] for p in self._nodes()}
        self.admin: Any = admin_pb2_grpc.AdminStub(  # type: ignore[no-untyped-call]
            grpc.insecure_channel(self.addresses["upstream"])
        )
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.answers: list[_Answer] = []
        self.latencies_us: list[float] = []
        self.failed = 0
        self.revoked_at: dict[str, int] = {}  # card -> the feed version that revoked it
        self.published: list[tuple[float, int]] = []  # (when Revoke returned, its version)

    def _nodes(self) -> list[Process]:
        return [p for p in self.processes if p.name != "haproxy"]

    def replicas(self) -> list[Process]:
        return [p for p in self._nodes() if p.name != "upstream"]

    def revoke(self, cards: list[str]) -> int:
        reply = self.admin.Revoke(
            admin_pb2.RevokeRequest(
                revocations=[admin_pb2.Revocation(card_id=c, reason=types_pb2.LOSS) for c in cards]
            ),
            timeout=30,
        )
        version = int(reply.version)
        with self._lock:
            for c in cards:
                self.revoked_at[c] = version
            self.published.append((time.monotonic(), version))
        return version

    def version_at(self, name: str) -> int:
        stub: Any = card_status_pb2_grpc.CardStatusStub(  # type: ignore[no-untyped-call]
            grpc.insecure_channel(self.addresses[name])
        )
        try:
            return int(
                stub.CheckCard(card_status_pb2.CheckCardRequest(card_id=card(1))).feed_version
            )
        except grpc.RpcError:
            return -1

    def wait_versions(self, version: int, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.version_at(r.name) >= version for r in self.replicas()):
                return True
            time.sleep(0.1)
        return False

    def _client(self, pool: list[str]) -> None:
        channel = grpc.insecure_channel(self.balancer)
        stub: Any = card_status_pb2_grpc.CardStatusStub(channel)  # type: ignore[no-untyped-call]
        rng = random.Random(self.rng.random())
        while not self._stop.is_set():
            asked = rng.choice(pool)
            at = time.monotonic()
            started = time.perf_counter()
            try:
                reply = stub.CheckCard(card_status_pb2.CheckCardRequest(card_id=asked), timeout=10)
            except grpc.RpcError:
                with self._lock:
                    self.failed += 1
                continue
            elapsed = (time.perf_counter() - started) * 1e6
            with self._lock:
                self.answers.append(_Answer(asked, reply.status, reply.feed_version, at))
                self.latencies_us.append(elapsed)
        channel.close()

    def wrong(self, answer: _Answer) -> bool:
        at = self.revoked_at.get(answer.card)
        revoked = at is not None and answer.version >= at
        return answer.status != (REVOKED if revoked else NOT_REVOKED)

    def stale(self, answer: _Answer) -> bool:
        """Read from a copy 2 or more versions behind what the upstream had published
        before the call was made (1 is the ordinary push delay of a healthy replica)."""
        known = max((v for t, v in self.published if t <= answer.started), default=0)
        return answer.version < known - 1

    def run(self, seconds: float = 9.0, revoke_every: float = 0.25) -> DrillReport:
        before = [card(i) for i in range(100, 120)]
        clean = [card(i) for i in range(200, 240)]
        moving = [card(i) for i in range(1000, 1000 + int(seconds / revoke_every) + 8)]
        start_version = self.revoke(before)
        if not self.wait_versions(start_version):
            raise ScaleError(f"the replicas did not reach v{start_version} before the drill")
        victim = self.replicas()[0]
        clients = [
            threading.Thread(target=self._client, args=(before + clean + moving,), daemon=True)
            for _ in range(self.threads)
        ]
        started = time.monotonic()
        for t in clients:
            t.start()
        published, rejoined, restarted_at = 0, None, None
        killed = False
        while time.monotonic() - started < seconds:
            elapsed = time.monotonic() - started
            if not killed and elapsed >= seconds / 3:
                os.kill(victim.pid, signal.SIGKILL)
                killed = True
            elif killed and restarted_at is None and elapsed >= seconds / 2:
                victim = self._restart(victim)
                restarted_at = time.monotonic()
            if restarted_at is not None and rejoined is None and self._serving(victim):
                rejoined = time.monotonic() - restarted_at
            self.revoke([moving[published]])
            published += 1
            time.sleep(revoke_every)
        self._stop.set()
        for t in clients:
            t.join(timeout=15)
        wall = time.monotonic() - started
        final = self.revoke([moving[published]])  # one more, so the check below is the end
        reached = self.wait_versions(final)
        while rejoined is None and restarted_at is not None and time.monotonic() - started < 90:
            if self._serving(victim):
                rejoined = time.monotonic() - restarted_at
            time.sleep(0.1)
        wrong = [a for a in self.answers if self.wrong(a)]
        stale = sum(1 for a in self.answers if self.stale(a))
        quantiles = (
            statistics.quantiles(self.latencies_us, n=100) if self.latencies_us else [0] * 99
        )
        return DrillReport(
            seconds=wall,
            calls=len(self.answers) + self.failed,
            failed_calls=self.failed,
            wrong_answers=len(wrong),
            stale_answers=stale,
            rps=len(self.answers) / wall,
            p50_us=quantiles[49],
            p99_us=quantiles[98],
            threads=self.threads,
            revocations=published + 1,
            killed=victim.name,
            rejoined_after_s=rejoined,
            reached_every_replica=reached,
            wrong_examples=[f"{a.card}: {a.status} at v{a.version}" for a in wrong[:5]],
        )

    def _restart(self, victim: Process) -> Process:
        (Path(victim.directory) / "out.log").unlink(missing_ok=True)  # the new READY line
        fresh = spawn(victim.name, victim.command, Path(victim.directory))
        self.processes = [fresh if p.name == victim.name else p for p in self.processes]
        state = json.loads((self.directory / STATE_FILE).read_text())
        state["processes"] = [p.__dict__ for p in self.processes]
        (self.directory / STATE_FILE).write_text(json.dumps(state, indent=2))
        self.addresses[victim.name] = wait_ready_line(fresh)["grpc"]
        return fresh

    def _serving(self, replica: Process) -> bool:
        channel = grpc.insecure_channel(self.addresses[replica.name])
        try:
            stub: Any = health_pb2_grpc.HealthStub(channel)
            answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)
        except grpc.RpcError:
            return False
        finally:
            channel.close()


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    drill = sub.add_parser(
        "scale-drill", help="kill -9 a replica of `scale-up` under load; check every answer"
    )
    drill.add_argument("--dir", type=Path, default=Path(".scale"), help="what scale-up wrote")
    drill.add_argument("--seconds", type=float, default=9.0, help="length of the load (3..600)")
    drill.add_argument("--threads", type=int, default=4, help="client threads (1..64)")
    drill.set_defaults(fn=_main)


def _main(args: argparse.Namespace) -> int:
    if not 3 <= args.seconds <= 600 or not 1 <= args.threads <= 64:
        print("error: --seconds must be 3..600 and --threads 1..64", file=sys.stderr)
        return 2
    try:
        report = Drill(args.dir, threads=args.threads).run(args.seconds)
    except (ScaleError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(report.lines()))
    for example in report.wrong_examples:
        print(f"  wrong: {example}")
    ok = report.wrong_answers == 0 and report.failed_calls <= report.threads
    return 0 if ok and report.reached_every_replica else 1
