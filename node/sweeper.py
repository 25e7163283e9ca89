"""The schedule of the sweep of lapsed entries (issue #17): every ``sweep_interval`` seconds,
and once at start-up, the writer thread removes the entries whose end time has passed by
this node's clock (RevocationStore.sweep). No feed version and no network: every node
removes the same entries by itself. Checks never wait for it: they already answer a lapsed
entry as absent (blacklist/checker.py), so the sweep only frees the space and the
fingerprints."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor

from blacklist.store import RevocationStore
from node.metrics import NodeMetrics

log = logging.getLogger("node")


class Sweeper:
    def __init__(
        self,
        store: RevocationStore,
        writer: ThreadPoolExecutor,
        metrics: NodeMetrics,
        interval: float,
    ) -> None:
        self._store = store
        self._writer = writer  # LMDB write transactions stay on the writer thread
        self._metrics = metrics
        self._interval = interval

    async def sweep_now(self) -> int:
        loop = asyncio.get_running_loop()
        swept = await loop.run_in_executor(self._writer, self._store.sweep_all)
        self._metrics.swept.inc(swept)
        return swept

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.sweep_now()
            except Exception:  # a store failure: next time, never a dead loop
                log.exception("sweeping lapsed entries failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=self._interval)
