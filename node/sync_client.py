"""The child side of sync: keep this node's copy of every feed current from its upstream.

One session at a time with the first upstream that answers (failing over down the list:
a city to its province, the province's standby, or the ministry). A session pulls at once,
then holds the Subscribe stream (the fast path), pulls again every ``interval`` (the
fallback, and the cure for anything a stream missed) and pushes up whatever this node
applied that did not come from the upstream. Any failure ends the session; the next starts
after an exponential backoff with jitter, so that children of a restarted upstream do not
all return at the same instant.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from typing import Any

import grpc

from blacklist.clock import Clock
from blacklist.errors import BlacklistError
from blacklist.rejections import DeltaRejected
from blacklist.store import RevocationStore
from blacklist.sync.budget import (
    GRPC_DEFAULT_LIMIT,
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
from node.config import message_options
from node.gen.blacklist.v1 import sync_pb2, sync_pb2_grpc
from node.grpc.sync import (
    MAX_PUSH_STATEMENTS,
    TransferLimits,
    head_messages,
    heads_from,
    manifest_message,
    receive_snapshot,
)
from node.hub import FeedHub, Source
from node.metrics import NodeMetrics

log = logging.getLogger("node.sync")
BACKOFF_START = 0.2
BACKOFF_MAX = 10.0
UPLINK_BATCH = 100  # deltas taken from the uplink queue at once (then split by size)
__all__ = ["SnapshotCorrupt", "SyncClient"]


class SyncClient:
    def __init__(
        self,
        *,
        region: str,
        upstreams: list[str],
        interval: float,
        store: RevocationStore,
        hub: FeedHub,
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
        # Held while a delta pushed down the Subscribe stream is applied: a pull waits for
        # it before reading its heads, or it would ask from the older head and receive the
        # same delta a second time (the whole delta again on the wire).
        self._applying_pushed = asyncio.Lock()
        self.connected_to: str | None = None
        # Set once a pull round ends with no feed behind its upstream: the replica has
        # bootstrapped (blacklist/sync/readiness.py), and stays so; lag is judged afterwards.
        self.caught_up = False
        for up in upstreams:
            metrics.upstream_up.labels(up).set(0)

    async def run(self) -> None:
        attempt = 0
        index = 0
        while not self._stopped.is_set():
            upstream = self._upstreams[index % len(self._upstreams)]
            try:
                await self._session(upstream)
                attempt = 0
            except (TimeoutError, grpc.aio.AioRpcError, OSError, BlacklistError) as exc:
                log.warning("sync with %s failed: %s", upstream, _describe(exc))
                index += 1  # fail over to the next upstream
                attempt += 1
            finally:
                self._metrics.upstream_up.labels(upstream).set(0)
                self.connected_to = None
            if self._stopped.is_set():
                break
            delay = min(BACKOFF_MAX, BACKOFF_START * 2 ** min(attempt, 10))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), delay * self._rng.uniform(0.5, 1.5))

    async def stop(self) -> None:
        self._stopped.set()

    async def _session(self, upstream: str) -> None:
        options = message_options(self._limits.max_message_bytes)
        channel = (
            grpc.aio.secure_channel(upstream, self._credentials, options=options)
            if self._credentials is not None
            else grpc.aio.insecure_channel(upstream, options=options)
        )
        async with channel:
            stub = sync_pb2_grpc.SyncStub(channel)  # type: ignore[no-untyped-call]
            await self.pull(stub)
            log.info("syncing from %s", upstream)
            self.connected_to = upstream
            self._metrics.upstream_up.labels(upstream).set(1)
            tasks = [
                asyncio.create_task(self._subscribe(stub) if self._use_push else _forever()),
                asyncio.create_task(self._pull_loop(stub)),
                asyncio.create_task(self._push_loop(stub)),
                asyncio.create_task(self._push_statements_loop(stub)),
                asyncio.create_task(self._stopped.wait()),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # re-raise the failure that ended the session
                if not self._stopped.is_set():
                    raise OSError("subscription ended by the upstream")
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def pull(self, stub: Any) -> None:
        """GetUpdates rounds: apply what the upstream has, then push up what it lacks.
        Each answer fits the limit this node states, so a long backlog takes several
        rounds: ask again while some feed is still behind and the last round moved at
        least one head (no progress, e.g. a delta too large for any answer, waits for the
        next scheduled pull instead of spinning)."""
        while True:
            async with self._applying_pushed:
                before = self._store.heads()
                request = sync_pb2.GetUpdatesRequest(
                    heads=head_messages(before),
                    node=self._region,
                    max_response_bytes=self._limits.max_message_bytes,
                )
            response = await stub.GetUpdates(request, timeout=30)
            self._push_limit = effective_limit(
                response.max_push_bytes, self._limits.max_message_bytes
            )
            behind = False
            for update in response.updates:
                if update.take_snapshot:
                    await self._fetch_snapshot(stub, update.publisher)
                for data in update.deltas:
                    self._metrics.sync_received_bytes.inc(len(data))
                    with contextlib.suppress(DeltaRejected):  # counted by the hub
                        await self._hub.apply(data, Source.UPSTREAM)
                if update.too_large_version:
                    self._metrics.sync_too_large.labels("received").inc()
                    log.warning(
                        "%s v%d is too large for a %d-byte answer: waiting for its snapshot",
                        update.publisher,
                        update.too_large_version,
                        self._limits.max_message_bytes,
                    )
                if self._store.head(update.publisher).version < update.upstream_version:
                    behind = True
            upstream_heads = heads_from(response.heads)
            self._after_pull(upstream_heads)
            # Freshness comes only from the signed statements (and the deltas themselves),
            # never from the upstream's unsigned heads: a relay that withholds deltas
            # cannot make a frozen feed look current (blacklist/sync/freshness.py).
            await self._statements_from(stub, response.head_statements)
            self._metrics.sync_last_success.set(self._clock())
            await self._push(stub, upstream_heads)
            if not behind:
                self.caught_up = True
            if not behind or self._store.heads() == before:
                return

    def _after_pull(self, upstream_heads: dict[str, Any]) -> None:
        for publisher, head in upstream_heads.items():
            mine = self._store.head(publisher)
            self._metrics.sync_lag.labels(publisher).set(max(0, head.version - mine.version))

    async def _statements_from(self, stub: Any, statements: Any) -> None:
        """Keep the upstream's newer statements, then send up those it lacks."""
        if statements:
            await self._hub.accept_statements(list(statements), Source.UPSTREAM)
        theirs: dict[str, HeadStatement] = {}
        for data in statements:
            with contextlib.suppress(StatementRejected):  # counted when accepted above
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

    async def _subscribe(self, stub: Any) -> None:
        request = sync_pb2.SubscribeRequest(
            node=self._region, max_event_bytes=self._limits.max_message_bytes
        )
        async for event in stub.Subscribe(request):
            if event.head_statement:
                await self._hub.accept_statements([event.head_statement], Source.UPSTREAM)
                continue
            self._metrics.sync_received_bytes.inc(len(event.delta))
            with contextlib.suppress(DeltaRejected):
                async with self._applying_pushed:
                    await self._hub.apply(event.delta, Source.UPSTREAM)

    async def _pull_loop(self, stub: Any) -> None:
        while True:
            gap = self._hub.gap_detected
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(gap.wait(), self._interval)
            gap.clear()
            await self.pull(stub)

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

    async def _fetch_snapshot(self, stub: Any, publisher: str) -> None:
        request = sync_pb2.GetSnapshotRequest(
            publisher=publisher, max_part_bytes=self._limits.max_message_bytes
        )
        call = stub.GetSnapshot(request)
        try:
            data = await receive_snapshot(call, self._limits, self._metrics, "received")
        finally:
            cancel = getattr(call, "cancel", None)
            if cancel is not None:
                cancel()  # a refused manifest: stop the rest of the transfer at once
        self._metrics.sync_received_bytes.inc(len(data))
        try:
            await self._hub.apply(data, Source.UPSTREAM)
        except DeltaRejected:
            self._metrics.snapshot_transfers.labels("received", "rejected").inc()
            raise
        self._metrics.snapshot_transfers.labels("received", "ok").inc()
        log.info("bootstrapped %s from a snapshot (%d bytes)", publisher, len(data))


async def _forever() -> None:
    await asyncio.Event().wait()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"
