"""Serving across cores: the writer process supervises ``workers`` worker processes.

The writer (node/server.py) holds the node's port (bound with SO_REUSEPORT, never
listening) and serves none of it: it applies deltas, signs and syncs. Each worker
(node/workers/worker.py) binds the same port and serves CardStatus from a read-only
follower of the same LMDB environment, relaying Admin and Sync to the writer
(node/workers/relay.py). The kernel spreads incoming connections over the workers.

This module starts the workers, waits until each printed READY, restarts one that dies
(backoff 0.1 s doubling to 5 s, back to 0.1 s after a worker ran 10 s), and stops them
all with SIGTERM (SIGKILL after the grace period) when the node stops. Workers also die
with the writer (PR_SET_PDEATHSIG).

Metrics, on the writer's registry: ``blacklist_workers`` (serving processes alive: the
workers; with ``workers = 1``, 1 for the writer that serves alone), ``blacklist_worker_restarts_total``, and ``blacklist_worker_info``
(one series per worker: its pid and the URL of its own /metrics, which counts the checks
it answered; a worker's metrics port is the node's + its number, or any free port when
the node's is 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pickle
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from node.config import NodeConfig
from node.workers.worker import WorkerSpec

log = logging.getLogger("node.workers")
READY_TIMEOUT = 60.0  # a cold interpreter imports numpy and grpc, and may rebuild an index
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
STEADY_SECONDS = 10.0  # a worker that ran this long restarts without backoff


class WorkerStartError(RuntimeError):
    """A worker exited or stayed silent before it printed READY."""


@dataclass
class _Slot:
    index: int
    spec: WorkerSpec
    proc: asyncio.subprocess.Process | None = None
    metrics_url: str = ""
    started: float = 0.0
    restarts: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None and bool(self.metrics_url)


class _InfoCollector(Collector):
    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool

    def collect(self) -> Iterator[GaugeMetricFamily]:
        info = GaugeMetricFamily(
            "blacklist_worker_info",
            "One per live worker process: its pid and the URL of its own /metrics",
            labels=["worker", "pid", "metrics_url"],
        )
        for slot in self._pool.slots:
            if slot.alive and slot.proc is not None:
                info.add_metric([str(slot.index), str(slot.proc.pid), slot.metrics_url], 1)
        yield info


def pool_metrics(registry: CollectorRegistry) -> tuple[Counter, Gauge]:
    """``blacklist_worker_restarts_total`` and ``blacklist_workers``. A node with
    ``workers = 1`` exports them too (0 restarts, 1 process: the writer), so that dashboards
    and alerts need no case for it (issue #13)."""
    restarts = Counter(
        "blacklist_worker_restarts",
        "Worker processes restarted after they died",
        registry=registry,
    )
    alive = Gauge(
        "blacklist_workers",
        "Serving processes alive on the node's port",
        registry=registry,
    )
    return restarts, alive


def worker_metrics_address(metrics_listen: str, index: int) -> str:
    host, _, port = metrics_listen.rpartition(":")
    return f"{host}:{int(port) + index if int(port) else 0}"


class WorkerPool:
    def __init__(
        self,
        config: NodeConfig,
        *,
        address: str,
        relay: str,
        registry: CollectorRegistry,
        grace: float = 5.0,
        after_exit: Callable[[], object] | None = None,
    ) -> None:
        """``after_exit`` runs when a worker died: the writer clears LMDB reader slots that
        a killed process left behind (``Environment.reader_check``), which would otherwise
        keep old pages from being reused."""
        parent = os.getpid()
        self.slots = [
            _Slot(
                i,
                WorkerSpec(
                    replace(config, source=None),
                    i,
                    address,
                    relay,
                    worker_metrics_address(config.metrics_listen, i),
                    parent,
                ),
            )
            for i in range(1, config.workers + 1)
        ]
        self._grace = grace
        self._after_exit = after_exit
        self._stopping = asyncio.Event()
        self.restarts, alive = pool_metrics(registry)
        alive.set_function(lambda: sum(s.alive for s in self.slots))
        registry.register(_InfoCollector(self))

    @property
    def pids(self) -> list[int]:
        return [s.proc.pid for s in self.slots if s.alive and s.proc is not None]

    async def start(self) -> None:
        """Start every worker and wait until all serve; WorkerStartError if one cannot."""
        try:
            await asyncio.gather(*(self._launch(slot) for slot in self.slots))
        except BaseException:
            await self.stop()
            raise
        for slot in self.slots:
            slot.task = asyncio.create_task(self._supervise(slot))

    async def _launch(self, slot: _Slot) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "node.workers.worker",
            "--index",
            str(slot.index),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        slot.proc, slot.metrics_url, slot.started = proc, "", time.monotonic()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(pickle.dumps(slot.spec))
        await proc.stdin.drain()
        proc.stdin.close()
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=READY_TIMEOUT)
        except TimeoutError:
            line = b""
        if not line.startswith(b"READY "):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise WorkerStartError(
                f"worker {slot.index} (pid {proc.pid}) did not start: "
                f"exit {proc.returncode}, said {line[:200]!r}"
            )
        slot.metrics_url = json.loads(line[6:])["metrics"]
        log.info("worker %d serving: pid %d, metrics at %s", slot.index, proc.pid, slot.metrics_url)

    async def _supervise(self, slot: _Slot) -> None:
        backoff = BACKOFF_FIRST
        while True:
            proc = slot.proc
            assert proc is not None and proc.stdout is not None
            async for line in proc.stdout:  # nothing is expected after READY; keep it drained
                log.info("worker %d: %s", slot.index, line.decode(errors="replace").rstrip())
            code = await proc.wait()
            if self._after_exit is not None:
                self._after_exit()
            if self._stopping.is_set():
                return
            if time.monotonic() - slot.started >= STEADY_SECONDS:
                backoff = BACKOFF_FIRST
            log.warning(
                "worker %d (pid %d) exited with %s; restarting in %.1f s",
                slot.index,
                proc.pid,
                code,
                backoff,
            )
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=backoff)
                if self._stopping.is_set():
                    return
                backoff = min(BACKOFF_MAX, backoff * 2)
                try:
                    await self._launch(slot)
                except (WorkerStartError, OSError) as exc:
                    log.error("%s; retrying in %.1f s", exc, backoff)
                    continue
                slot.restarts += 1
                self.restarts.inc()
                break

    async def stop(self) -> None:
        """SIGTERM every worker, SIGKILL those still running after the grace period."""
        self._stopping.set()
        procs = [s.proc for s in self.slots if s.proc is not None and s.proc.returncode is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), timeout=self._grace + 5.0)
            except TimeoutError:
                log.error("worker pid %d ignored SIGTERM; killing it", proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            if proc.returncode != 0:
                log.warning("worker pid %d exited with %s", proc.pid, proc.returncode)
        tasks = [s.task for s in self.slots if s.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
