"""The ingest, the node's one road in: every signed delta or snapshot, whatever its source
(an upstream's push or pull, a child's push, this node's own authority through Admin), is
applied here on the writer thread (:meth:`Ingest.apply` verifies what arrives;
:meth:`Ingest.publish` takes what this node's authority signs and applies in one
transaction), then counted, noticed by the trust keeper (``after_write``), fanned out to subscribed children and, unless it came
from the upstream, queued to go up. Both go through :meth:`Ingest._ingest`: nothing is
applied anywhere else, so the rules, the metrics and the fan-out hold on every path.

Head statements (blacklist/sync/freshness.py) take the same road: verified and kept on the
writer thread, then fanned out to subscribers and, unless they came from the upstream,
sent up (the newest per publisher, so the queue up is bounded by the publishers).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from blacklist.archive import peek
from blacklist.clock import Clock, system_clock
from blacklist.delta import Delta, Kind
from blacklist.headstatements import StatementResult
from blacklist.rejections import DeltaRejected
from blacklist.signing import TrustedKey
from blacklist.store import RevocationStore
from blacklist.sync.freshness import (
    DEFAULT_MAX_SKEW,
    TAMPERING_CAUSES,
    HeadStatement,
    StatementRejected,
    decode_statement,
)
from blacklist.sync.ingest import Outcome, outcome_of
from node.metrics import NodeMetrics

log = logging.getLogger("node.hub")
SUBSCRIBER_QUEUE = 10_000
T = TypeVar("T")
# What a subscriber's queue carries: a delta's bytes, a head statement, or None (cut off).
Event = bytes | HeadStatement | None


class Source(enum.Enum):
    UPSTREAM = "upstream"
    CHILD = "child"
    LOCAL = "local"


@dataclasses.dataclass
class Received:
    """What became of a batch of head statements."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[str] = dataclasses.field(default_factory=list)  # "cause: message"


class Ingest:
    def __init__(
        self,
        store: RevocationStore,
        keys: Mapping[bytes, TrustedKey],
        writer: ThreadPoolExecutor,
        metrics: NodeMetrics,
        after_write: Callable[[], None] | None = None,
        *,
        clock: Clock = system_clock,
        max_skew: int = DEFAULT_MAX_SKEW,
    ) -> None:
        self.store = store
        self.keys = keys
        self._clock = clock
        self._max_skew = max_skew
        self._after_write = after_write  # on the writer thread (node/trust_keeper.py)
        self._writer = writer
        self._metrics = metrics
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self.uplink: asyncio.Queue[bytes] = asyncio.Queue()
        self.gap_detected = asyncio.Event()  # tells the sync client to pull now
        # Head statements to send up: the newest per publisher, and an event when one waits.
        self.statements_up: dict[str, HeadStatement] = {}
        self.statements_waiting = asyncio.Event()
        self.published = asyncio.Event()  # this node's authority published (sign a statement)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store write on the writer thread (LMDB write transactions stay there)."""
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)

    def set_keys(self, keys: Mapping[bytes, TrustedKey]) -> None:
        self.keys = keys

    async def _ingest(
        self, work: Callable[[], tuple[bytes | None, T]], source: Source
    ) -> tuple[bytes | None, T]:
        """The one road in. ``work`` writes on the writer thread and returns the signed bytes
        it applied (None: nothing changed) with its result; then the write is timed, the
        trust keeper notices it, and what was applied is counted and sent on. A refusal is
        counted here and raised (DeltaRejected), changing nothing."""

        def on_writer() -> tuple[bytes | None, T]:
            t0 = time.perf_counter()
            data, result = work()
            if data is not None:
                self._metrics.apply_seconds.observe(time.perf_counter() - t0)
            if self._after_write is not None:
                self._after_write()
            return data, result

        try:
            data, result = await self.write(on_writer)
        except DeltaRejected as exc:
            self._count_refusal(exc, source)
            raise
        if data is not None:
            self._metrics.sync_applied.labels(source.value).inc()
            if peek(data)[0] == Kind.DELTA:
                # Snapshots are not pushed: a child that needs one asks for it (GetSnapshot),
                # and one can exceed a message's size.
                self.fan_out(data, source)
        return data, result

    def _count_refusal(self, exc: DeltaRejected, source: Source) -> None:
        outcome = outcome_of(exc)
        if outcome is Outcome.REJECTED:
            self._metrics.rejected.labels(exc.cause).inc()
            log.warning("rejected %s delta: %s: %s", source.value, exc.cause, exc)
            return
        self._metrics.ignored.labels(exc.cause).inc()
        if outcome is Outcome.DUPLICATE:
            self._metrics.sync_duplicates.inc()
        if outcome is Outcome.BEHIND:
            self.gap_detected.set()

    async def apply(self, data: bytes, source: Source) -> Outcome:
        """Verify and apply. A copy of what is held, or an older one, is DUPLICATE or STALE
        (counted apart, not raised); any other refusal raises DeltaRejected, changing
        nothing: VersionGap (this node is behind: the sync client pulls now) is counted
        apart too, the rest in ``blacklist_deltas_rejected_total`` (blacklist/sync/ingest.py).
        """
        try:
            # self.keys is read on the writer thread, where set_keys changes it
            await self._ingest(lambda: (data, self.store.apply(data, self.keys)), source)
        except DeltaRejected as exc:
            outcome = outcome_of(exc)
            if outcome in (Outcome.REJECTED, Outcome.BEHIND):
                raise
            return outcome
        return Outcome.APPLIED

    async def publish(self, work: Callable[[], tuple[Delta | None, T]]) -> tuple[Delta | None, T]:
        """This node's authority's own delta: ``work`` signs and applies it on the writer
        thread (blacklist/authority.py, in one transaction with its audit records) and returns
        it (None when nothing would change) with its result."""

        def signed() -> tuple[bytes | None, tuple[Delta | None, T]]:
            delta, result = work()
            return (None if delta is None else delta.to_bytes()), (delta, result)

        _, done = await self._ingest(signed, Source.LOCAL)
        return done

    def fan_out(self, data: bytes, source: Source) -> None:
        """Send an applied delta to every subscriber, and up unless it came from there."""
        self._send(data)
        if source is not Source.UPSTREAM:
            self.uplink.put_nowait(data)
        if source is Source.LOCAL:
            self.published.set()

    def _send(self, event: HeadStatement | bytes) -> None:
        for queue in list(self._subscribers):
            # A child that cannot keep up is cut off (None ends its stream); it reconnects
            # and catches up by pulling.
            if queue.qsize() >= SUBSCRIBER_QUEUE:
                self.unsubscribe(queue)
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(None)
            else:
                queue.put_nowait(event)

    async def accept_statements(
        self, items: Sequence[bytes | HeadStatement], source: Source
    ) -> Received:
        """Verify and keep head statements (newer ones only); each kept one goes to every
        subscriber and, unless it came from the upstream, up. Rejections are counted and
        logged, never raised: one bad statement must not cost the others."""
        received = Received()
        statements: list[HeadStatement] = []
        for item in items:
            if isinstance(item, HeadStatement):
                statements.append(item)
                continue
            if self.store.statements.holds(item):
                self._metrics.statements.labels("duplicate").inc()
                received.duplicates += 1
                continue
            try:
                statements.append(decode_statement(item))
            except StatementRejected as exc:
                self._count_rejection(exc, source, received)
        if not statements:
            return received
        results: list[StatementResult] = await self.write(
            self.store.accept_statements, statements, self.keys, self._clock(), self._max_skew
        )
        for result in results:
            if result.rejection is not None:
                self._count_rejection(result.rejection, source, received)
            elif result.duplicate:
                self._metrics.statements.labels("duplicate").inc()
                received.duplicates += 1
            else:
                self._metrics.statements.labels("accepted").inc()
                received.accepted += 1
                self._send(result.statement)
                if source is not Source.UPSTREAM:
                    self.statements_up[result.statement.publisher] = result.statement
                    self.statements_waiting.set()
        return received

    def _count_rejection(self, exc: StatementRejected, source: Source, into: Received) -> None:
        into.rejected.append(f"{exc.cause}: {exc}")
        self._metrics.statements_rejected.labels(exc.cause).inc()
        # Late copies, clocks and keys not known yet recur at every pull: debug only.
        level = logging.WARNING if exc.cause in TAMPERING_CAUSES else logging.DEBUG
        log.log(level, "refused a head statement from %s: %s: %s", source.value, exc.cause, exc)

    def take_statements_up(self) -> list[HeadStatement]:
        """The statements waiting to go up (and forget them)."""
        out = [s for _, s in sorted(self.statements_up.items())]
        self.statements_up.clear()
        self.statements_waiting.clear()
        return out

    def subscribe(self) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._subscribers.add(queue)
        self._metrics.sync_subscribers.set(len(self._subscribers))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        self._subscribers.discard(queue)
        self._metrics.sync_subscribers.set(len(self._subscribers))
