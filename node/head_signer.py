"""The authority's signed freshness (DESIGN §5, "Freshness is signed"): a head statement every
``head_statement_interval`` seconds and right after each publication, verified and kept
through the hub like any other statement, so it reaches the children at once (Subscribe)
and goes up. A statement creates no feed version."""

from __future__ import annotations

import asyncio
import logging

from blacklist.authority import Authority
from node.ingest import Ingest, Source
from node.metrics import NodeMetrics

log = logging.getLogger("node.freshness")


class HeadSigner:
    def __init__(
        self, authority: Authority, hub: Ingest, metrics: NodeMetrics, interval: float
    ) -> None:
        if interval <= 0:
            raise ValueError(f"head_statement_interval must be positive, got {interval}")
        self._authority = authority
        self._hub = hub
        self._metrics = metrics
        self._interval = interval

    async def sign_now(self) -> None:
        # On the writer thread: the head read and the statement signed are of one state.
        statement = await self._hub.write(self._authority.head_statement)
        self._metrics.statements_signed.inc()
        received = await self._hub.accept_statements([statement], Source.LOCAL)
        for problem in received.rejected:  # our own key refused: say so, keep serving
            log.warning("this authority's own head statement was refused: %s", problem)

    async def run(self, stopping: asyncio.Event) -> None:
        published = self._hub.published
        while not stopping.is_set():
            published.clear()
            try:
                await self.sign_now()
            except Exception:  # a store or signing failure: next time, never a dead loop
                log.exception("signing this authority's head statement failed")
            waits = [asyncio.create_task(published.wait()), asyncio.create_task(stopping.wait())]
            try:
                await asyncio.wait(
                    waits, timeout=self._interval, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for w in waits:
                    w.cancel()
