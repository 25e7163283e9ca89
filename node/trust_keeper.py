"""Keeps the node's trusted keys current (DESIGN §6): rebuilt from the config and the trust
records that arrived in feeds whenever a new one lands, and on a timer so that a certificate
that expires, or a revocation whose time comes, takes effect without a restart.

Who holds the keys: the hub and the authority use them on the writer thread (acceptance),
the checker on the event loop (which publisher answers for a region). A rebuild after a
write happens on the writer thread, so the next delta in the queue is already judged by the
new keys; the checker gets them through the loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping

from blacklist.clock import Clock
from blacklist.publishers import PublisherDirectory
from blacklist.signing import TrustedKey
from blacklist.store import RevocationStore
from blacklist.trust import PrefixConflict
from node.config import NodeConfig
from node.metrics import NodeMetrics

log = logging.getLogger("node.trust")
Keys = Mapping[bytes, TrustedKey]


class TrustKeeper:
    def __init__(
        self, config: NodeConfig, store: RevocationStore, metrics: NodeMetrics, clock: Clock
    ) -> None:
        self._config = config
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._lock = threading.Lock()
        self._material = config.trust_material()  # the config's files, read once
        self._seen = store.trust.changes
        self._reported: set[str] = set()  # dropped claims already logged
        self.keys: Keys = self._build()
        self._writer_side: list[Callable[[Keys], None]] = []
        self._loop_side: list[Callable[[Keys], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def _build(self) -> Keys:
        keys = self._material.keys(self._store.trust.records(), int(self._clock()))
        self._metrics.trusted_keys.set(len(keys))
        self._report_conflicts(keys)
        return keys

    def _report_conflicts(self, keys: Keys) -> None:
        """Two publishers claiming one prefix never stops the node (issue #11): the
        directory keeps one claim by its rule (blacklist/publishers.py); each dropped claim
        is logged once and counted while it lasts."""
        dropped = PublisherDirectory.from_keys(keys).dropped
        self._metrics.trust_dropped_claims.set(len(dropped))
        now = {str(e) for e in dropped}
        for text in sorted(now - self._reported):
            log.warning("conflicting region claims (%s): %s", PrefixConflict.cause, text)
        self._reported = now

    def attach(
        self,
        loop: asyncio.AbstractEventLoop,
        writer_side: list[Callable[[Keys], None]],
        loop_side: list[Callable[[Keys], None]],
    ) -> None:
        """Who to hand new keys to: setters run at once (writer thread or loop), loop-side
        ones through ``loop``."""
        self._loop = loop
        self._writer_side = writer_side
        self._loop_side = loop_side

    def refresh(self, trigger: str) -> None:
        with self._lock:
            self._seen = self._store.trust.changes
            self.keys = keys = self._build()
        self._metrics.trust_refreshes.labels(trigger).inc()
        for give in self._writer_side:
            give(keys)
        if self._loop is not None and self._loop.is_running():
            for give in self._loop_side:
                self._loop.call_soon_threadsafe(give, keys)
        else:
            for give in self._loop_side:
                give(keys)

    def after_write(self) -> None:
        """Call after any store write: rebuilds only if new trust records landed."""
        if self._store.trust.changes != self._seen:
            log.info("new certificates or key revocations arrived: rebuilding trusted keys")
            self.refresh("feed")

    async def run(self, stop: asyncio.Event) -> None:
        """Re-check validity times every ``trust_refresh_interval`` seconds until ``stop``."""
        interval = self._config.trust_refresh_interval
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                self.refresh("timer")
