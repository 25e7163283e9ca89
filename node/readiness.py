"""A replica's readiness on the standard gRPC health service, ``/ready`` and a metric.

The judgement is the library's (blacklist/sync/readiness.py); this module runs it once a
second and says it everywhere a balancer or an operator looks: the gRPC health service of
this process (overall "" and each service), a file in the data directory that worker
processes read to answer the same on their health services (node/worker.py), HTTP ``/ready``
on the metrics port (200 or 503, the reason as text: HAProxy's active check, deploy/), the
gauge ``blacklist_ready`` and one log line per change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from grpc_health.v1 import health_pb2
from prometheus_client import CollectorRegistry, Gauge

from blacklist.clock import Clock
from blacklist.store import RevocationStore
from blacklist.sync.readiness import Readiness, ReadinessLimits, judge

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
FILE_NAME = "readiness"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def readiness_file(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def read_readiness(path: Path) -> Readiness:
    """What the writer process last judged (workers). No file: a node that never gates."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Readiness(True, "not a gated replica")
    state, _, reason = text.partition(" ")
    return Readiness(state == "SERVING", reason.strip())


def _write_readiness(path: Path, readiness: Readiness) -> None:
    state = "SERVING" if readiness.serving else "NOT_SERVING"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{state} {readiness.reason}\n", encoding="utf-8")
    os.replace(tmp, path)  # a worker reads the old state or the new, never half of one


async def set_health(health: Any, services: Iterable[str], readiness: Readiness) -> None:
    status = SERVING if readiness.serving else NOT_SERVING
    for name in ("", *services):
        await health.set(name, status)


class ReadinessReporter:
    """Judges this replica's readiness every tick and reports each change."""

    def __init__(
        self,
        store: RevocationStore,
        limits: ReadinessLimits,
        synced: Callable[[], bool],
        clock: Clock,
        registry: CollectorRegistry,
        data_dir: Path,
    ) -> None:
        self._store = store
        self._limits = limits
        self._synced = synced
        self._clock = clock
        self._file = readiness_file(data_dir)
        self._gauge = Gauge(
            "blacklist_ready",
            "1 while this replica is caught up and takes calls (SERVING), 0 while not",
            registry=registry,
        )
        self.current = Readiness(False, "bootstrapping: not judged yet")
        self._gauge.set(0)
        _write_readiness(self._file, self.current)

    def judge(self) -> Readiness:
        publishers = set(self._store.heads()) | set(self._store.statements.all())
        feeds = {p: self._store.freshness(p) for p in publishers}
        return judge(feeds, self._clock(), synced=self._synced(), limits=self._limits)

    def http(self) -> tuple[bool, str]:
        return self.current.serving, self.current.reason

    async def run(self, health: Any, services: Iterable[str], stop: asyncio.Event) -> None:
        names = tuple(services)
        await set_health(health, names, self.current)
        while not stop.is_set():
            now = await asyncio.to_thread(self.judge)
            if now != self.current:
                level = logging.INFO if now.serving else logging.WARNING
                log.log(level, "%s: %s", "SERVING" if now.serving else "NOT_SERVING", now.reason)
                if now.serving != self.current.serving:
                    await set_health(health, names, now)
                    self._gauge.set(1 if now.serving else 0)
                self.current = now
                _write_readiness(self._file, now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=TICK_SECONDS)
