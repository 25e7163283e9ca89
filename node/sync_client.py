"""The child side of sync for a node: keep this node's copy of every feed current from its
upstream, and push up what it has that the upstream lacks.

What is taken from the upstream (pull rounds, snapshots, the Subscribe stream, failover
with backoff) is the read-only child of blacklist/edge/child.py, shared with edge
replicas; this module is its :class:`~blacklist.edge.child.Follower` over the node's hub
and adds the way up: after each pull it pushes up whatever this node applied that did not
come from the upstream (deltas, snapshots, head statements), and while a session lasts it
sends up what the hub queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from typing import Any

from blacklist.clock import Clock
from blacklist.delta import FeedHead
from blacklist.edge.child import ChildSync, Follower, follow, forever, hold, open_channel
from blacklist.store import RevocationStore
from blacklist.sync.budget import (
    GRPC_DEFAULT_LIMIT,
    TransferLimits,
    TransferTooLarge,
    chunk_size,
    effective_limit,
    oversize,
    plan_push_batches,
    split_push,
)
from blacklist.sync.chunks import SnapshotCorrupt, split_snapshot
from blacklist.sync.freshness import (
    HeadStatement,
    StatementRejected,
    decode_statement,
    plan_statement_push,
    push_batches,
)
from blacklist.sync.plan import SendSnapshot, plan_push
from node.gen.blacklist.v1 import sync_pb2, sync_pb2_grpc
from node.grpc.sync import (
    MAX_PUSH_STATEMENTS,
    heads_from,
    manifest_message,
    receive_snapshot,
)
from node.ingest import Ingest, Source
from node.metrics import NodeMetrics

log = logging.getLogger("node.sync")
UPLINK_BATCH = 100  # deltas taken from the uplink queue at once (then split by size)
__all__ = ["SnapshotCorrupt", "SyncClient"]


class _HubFollower(Follower):
    """The node's hub as the child's follower: everything lands through Ingest.apply."""

    def __init__(
        self, store: RevocationStore, hub: Ingest, metrics: NodeMetrics, limits: TransferLimits
    ) -> None:
        self._store = store
        self._hub = hub
        self._metrics = metrics
        self._limits = limits

    def heads(self) -> dict[str, FeedHead]:
        return self._store.heads()

    def head(self, publisher: str) -> FeedHead:
        return self._store.head(publisher)

    async def apply(self, data: bytes) -> None:
        await self._hub.apply(data, Source.UPSTREAM)

    async def accept_statements(self, statements: list[bytes]) -> None:
        await self._hub.accept_statements(statements, Source.UPSTREAM)

    async def receive_snapshot(self, parts: AsyncIterator[Any]) -> bytes:
        return await receive_snapshot(parts, self._limits, self._metrics, "received")

    def received(self, nbytes: int, what: str) -> None:
        self._metrics.sync_received_bytes.inc(nbytes)

    def snapshot_applied(self, ok: bool) -> None:
        self._metrics.snapshot_transfers.labels("received", "ok" if ok else "rejected").inc()

    def too_large(self, publisher: str, version: int) -> None:
        self._metrics.sync_too_large.labels("received").inc()
        log.warning(
            "%s v%d is too large for a %d-byte answer: waiting for its snapshot",
            publisher,
            version,
            self._limits.max_message_bytes,
        )


class SyncClient:
    def __init__(
        self,
        *,
        region: str,
        upstreams: list[str],
        interval: float,
        store: RevocationStore,
        hub: Ingest,
        metrics: NodeMetrics,
        clock: Clock,
        subscribe: bool = True,
        rng: random.Random | None = None,
        credentials: Any = None,
        limits: TransferLimits | None = None,
    ) -> None:
        self._limits = limits or TransferLimits()
        # What the upstream said it accepts (GetUpdatesResponse.max_push_bytes), capped by
        # this node's own limit; until it answers, gRPC's default.
        self._push_limit = min(GRPC_DEFAULT_LIMIT, self._limits.max_message_bytes)
        # grpc.ChannelCredentials of this node's certificate (mutual TLS), or None: plaintext.
        self._credentials = credentials
        self._use_push = subscribe
        self._region = region
        self._upstreams = upstreams
        self._interval = interval
        self._store = store
        self._hub = hub
        self._metrics = metrics
        self._clock = clock
        self._rng = rng or random.Random()
        self._stopped = asyncio.Event()
        self._child = ChildSync(
            _HubFollower(store, hub, metrics, self._limits),
            node=region,
            limits=self._limits,
            interval=interval,
            gap=hub.gap_detected,
            after_pull=self._after_pull,
        )
        self.connected_to: str | None = None
        for up in upstreams:
            metrics.upstream_up.labels(up).set(0)

    async def run(self) -> None:
        await follow(
            self._upstreams, self._session, self._stopped, ended=self._ended, rng=self._rng
        )

    def _ended(self, upstream: str) -> None:
        self._metrics.upstream_up.labels(upstream).set(0)
        self.connected_to = None

    async def stop(self) -> None:
        self._stopped.set()

    async def _session(self, upstream: str) -> None:
        async with open_channel(
            upstream, self._credentials, self._limits.max_message_bytes
        ) as channel:
            stub = sync_pb2_grpc.SyncStub(channel)  # type: ignore[no-untyped-call]
            await self.pull(stub)
            log.info("syncing from %s", upstream)
            self.connected_to = upstream
            self._metrics.upstream_up.labels(upstream).set(1)
            await hold(
                self._stopped,
                self._child.subscribe(stub) if self._use_push else forever(),
                self._child.pull_loop(stub),
                self._push_loop(stub),
                self._push_statements_loop(stub),
            )

    async def pull(self, stub: Any) -> None:
        """GetUpdates rounds (blacklist/edge/child.py), each followed by the way up."""
        await self._child.pull(stub)

    @property
    def caught_up(self) -> bool:
        """Once a pull round ended with no feed behind its upstream: the replica has
        bootstrapped (blacklist/sync/readiness.py), and stays so."""
        return self._child.caught_up

    async def _subscribe(self, stub: Any) -> None:
        await self._child.subscribe(stub)

    async def _after_pull(self, stub: Any, response: Any) -> None:
        """After each pull round: the upstream's limit for what goes up, this node's lag,
        then push up the statements and feeds the upstream lacks."""
        self._push_limit = effective_limit(response.max_push_bytes, self._limits.max_message_bytes)
        upstream_heads = heads_from(response.heads)
        self._record_lag(upstream_heads)
        await self._statements_up(stub, response.head_statements)
        self._metrics.sync_last_success.set(self._clock())
        await self._push(stub, upstream_heads)

    def _record_lag(self, upstream_heads: dict[str, Any]) -> None:
        for publisher, head in upstream_heads.items():
            mine = self._store.head(publisher)
            self._metrics.sync_lag.labels(publisher).set(max(0, head.version - mine.version))

    async def _statements_up(self, stub: Any, statements: Any) -> None:
        """Send up the statements the upstream lacks (its newer ones were kept already)."""
        theirs: dict[str, HeadStatement] = {}
        for data in statements:
            with contextlib.suppress(StatementRejected):  # counted when accepted
                statement = decode_statement(data)
                theirs[statement.publisher] = statement
        missing = plan_statement_push(self._store.statements.all(), theirs)
        if missing:
            await self._send_statements_up(stub, missing)

    async def _send_statements_up(self, stub: Any, statements: list[HeadStatement]) -> None:
        # Within the upstream's request limit (less room for the node name and framing).
        for batch in push_batches(
            [s.to_bytes() for s in statements], self._push_limit - 1024, MAX_PUSH_STATEMENTS
        ):
            response = await stub.PushHeadStatements(
                sync_pb2.PushHeadStatementsRequest(statements=batch, node=self._region),
                timeout=30,
            )
            for problem in response.rejected:
                log.info("upstream refused a head statement we pushed: %s", problem)

    async def _push_statements_loop(self, stub: Any) -> None:
        """The fast path up: statements kept from children or signed here, as they come."""
        while True:
            await self._hub.statements_waiting.wait()
            statements = self._hub.take_statements_up()
            if statements:
                await self._send_statements_up(stub, statements)

    async def _push(self, stub: Any, upstream_heads: dict[str, Any]) -> None:
        """Push up what the upstream lacks, in requests that fit its limit
        (blacklist/sync/budget.py): retained deltas in batches, or the snapshot in chunks."""
        histories = self._store.histories()
        plan = plan_push(histories, upstream_heads)
        for publisher, action in plan.items():
            if isinstance(action, SendSnapshot):
                await self._push_snapshot(stub, publisher)
                continue
            history = histories[publisher]
            sizes = [history.retained[v].size for v in action.versions()]
            batches = plan_push_batches(
                action.first, sizes, self._push_limit, history.snapshot_version
            )
            if batches.snapshot:
                await self._push_snapshot(stub, publisher)
                continue
            for first, last in batches.batches:
                await self._send_up(stub, self._store.archive.deltas(publisher, first, last))
            if batches.too_large is not None:
                self._metrics.sync_too_large.labels("sent").inc()
                log.warning(
                    "cannot push %s v%d up: over the upstream's %d-byte limit, and no "
                    "snapshot covers it yet",
                    publisher,
                    batches.too_large,
                    self._push_limit,
                )

    async def _push_snapshot(self, stub: Any, publisher: str) -> None:
        """The feed's stored snapshot up in chunks (PushSnapshot), sized to the upstream's
        limit; the deltas after it follow on the next pull."""
        data = self._store.archive.snapshot(publisher)
        version = self._store.archive.snapshot_version(publisher)
        if data is None or version is None:
            return
        try:
            chunk = chunk_size(len(data), self._limits.snapshot_chunk_bytes, self._push_limit)
        except TransferTooLarge as exc:
            log.warning("cannot push the snapshot of %s up: %s", publisher, exc)
            return
        manifest, parts = split_snapshot(publisher, version, data, chunk)

        async def stream() -> AsyncIterator[sync_pb2.SnapshotPart]:
            yield sync_pb2.SnapshotPart(manifest=manifest_message(manifest))
            for part in parts:
                yield sync_pb2.SnapshotPart(chunk=part)

        response = await stub.PushSnapshot(stream(), timeout=300)
        if response.rejected:
            self._metrics.snapshot_transfers.labels("sent", "rejected").inc()
            log.warning("upstream refused the snapshot of %s: %s", publisher, response.rejected)
            return
        self._metrics.snapshot_transfers.labels("sent", "ok").inc()
        log.info(
            "pushed the snapshot of %s v%d up (%d bytes, %d chunks)",
            publisher,
            version,
            len(data),
            len(parts),
        )

    async def _send_up(self, stub: Any, deltas: list[bytes]) -> None:
        response = await stub.PushDeltas(
            sync_pb2.PushDeltasRequest(deltas=deltas, node=self._region), timeout=30
        )
        for problem in response.rejected:
            log.warning("upstream refused a delta we pushed: %s", problem)

    async def _push_loop(self, stub: Any) -> None:
        while True:
            batch = [await self._hub.uplink.get()]
            while not self._hub.uplink.empty() and len(batch) < UPLINK_BATCH:
                batch.append(self._hub.uplink.get_nowait())
            sizes = [len(d) for d in batch]
            for i in oversize(sizes, self._push_limit):
                # Left for the next pull's plan_push, which sends the snapshot covering it.
                self._metrics.sync_too_large.labels("sent").inc()
                log.warning(
                    "a %d-byte delta is over the upstream's %d-byte limit: it goes up by snapshot",
                    sizes[i],
                    self._push_limit,
                )
            for part in split_push(sizes, self._push_limit):
                await self._send_up(stub, batch[part.start : part.stop])
