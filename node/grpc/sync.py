"""The Sync service: what a node serves its children (see proto/blacklist/v1/sync.proto).
Decisions come from blacklist.sync.plan; this module only moves bytes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from blacklist.delta import FeedHead
from blacklist.edge.child import head_messages
from blacklist.errors import shown
from blacklist.rejections import DeltaRejected
from blacklist.store import RevocationStore
from blacklist.sync.budget import (
    MIN_MESSAGE_BYTES,
    FeedFill,
    TransferLimits,
    chunk_payload_limit,
    chunk_size,
    effective_limit,
    field_size,
    fill_updates,
    oversize_first,
)
from blacklist.sync.chunks import (
    Manifest,
    SnapshotCorrupt,
    SnapshotTooLarge,
    assemble,
    split_snapshot,
)
from blacklist.sync.freshness import HeadStatement, statements_within
from blacklist.sync.ingest import Outcome
from blacklist.sync.plan import SendDeltas, SendSnapshot, plan_updates
from node.gen.blacklist.v1 import sync_pb2, sync_pb2_grpc
from node.grpc.calls import InvalidRequest, NotFound
from node.ingest import Ingest, Source
from node.metrics import NodeMetrics

log = logging.getLogger("node.sync")


# Head statements in one PushHeadStatements: one per publisher is all a child ever has to
# send (a few hundred nationally); each costs a signature check on the writer thread.
MAX_PUSH_STATEMENTS = 4096


def heads_from(messages: Any) -> dict[str, FeedHead]:
    heads = {}
    for h in messages:
        if len(h.publisher) != 6 or not h.publisher.isdigit() or len(h.digest) not in (0, 32):
            raise InvalidRequest(f"malformed head {shown(h.publisher)} v{h.version}")
        heads[h.publisher] = FeedHead(h.publisher, h.version, h.digest or bytes(32))
    return heads


def stated_limit(value: int, own: int, what: str) -> int:
    """The ceiling of a message to a peer that stated ``value`` (0: gRPC's default)."""
    if value and value < MIN_MESSAGE_BYTES:
        raise InvalidRequest(f"{what} {value} is below the {MIN_MESSAGE_BYTES}-byte floor")
    return effective_limit(value, own)


def manifest_message(manifest: Manifest) -> sync_pb2.SnapshotManifest:
    return sync_pb2.SnapshotManifest(
        publisher=manifest.publisher,
        version=manifest.version,
        total_bytes=manifest.total_bytes,
        chunk_bytes=manifest.chunk_bytes,
        chunk_xxh64=list(manifest.checksums),
    )


class SyncServicer(sync_pb2_grpc.SyncServicer):
    def __init__(
        self,
        store: RevocationStore,
        hub: Ingest,
        metrics: NodeMetrics,
        limits: TransferLimits | None = None,
    ) -> None:
        self._store = store
        self._hub = hub
        self._metrics = metrics
        self._limits = limits or TransferLimits()
        self._statement_turn = 0  # where the next answer's statements start (see below)

    async def GetUpdates(
        self, request: sync_pb2.GetUpdatesRequest, context: Any
    ) -> sync_pb2.GetUpdatesResponse:
        """The deltas after the child's heads, as many as fit the answer's ceiling
        (blacklist/sync/budget.py): the child asks again for the rest."""
        limit = stated_limit(
            request.max_response_bytes, self._limits.max_message_bytes, "max_response_bytes"
        )
        histories = self._store.histories()
        plan = plan_updates(histories, heads_from(request.heads))
        response = sync_pb2.GetUpdatesResponse(
            heads=head_messages(self._store.heads()),
            max_push_bytes=self._limits.max_message_bytes,
        )
        sending: list[tuple[Any, SendDeltas]] = []
        self._add_statements(response, limit)
        for publisher, action in plan.items():
            update = response.updates.add(
                publisher=publisher, upstream_version=self._store.head(publisher).version
            )
            if isinstance(action, SendSnapshot):
                update.take_snapshot = True
            elif isinstance(action, SendDeltas):
                sending.append((update, action))
            else:
                log.warning("child %s is behind on %s: %s", request.node, publisher, action.reason)
        fills = [
            FeedFill(
                update.ByteSize(),
                [histories[a.publisher].retained[v].size for v in a.versions()],
            )
            for update, a in sending
        ]
        # A delta no answer can carry: the snapshot if it covers it, else say so.
        for (update, action), big in zip(
            sending, oversize_first(limit, response.ByteSize(), fills), strict=True
        ):
            if not big:
                continue
            snap = histories[action.publisher].snapshot_version
            if snap is not None and snap >= action.first:
                update.take_snapshot = True
            else:
                update.too_large_version = action.first
            self._metrics.sync_too_large.labels("sent").inc()
        flagged = [u.take_snapshot or u.too_large_version for u, _ in sending]
        fills = [
            FeedFill(u.ByteSize(), [] if f else fill.sizes)
            for (u, _), fill, f in zip(sending, fills, flagged, strict=True)
        ]
        counts = fill_updates(limit, response.ByteSize(), fills)
        for (update, action), n in zip(sending, counts, strict=True):
            if n:
                last = action.first + n - 1
                update.deltas.extend(
                    self._store.archive.deltas(action.publisher, action.first, last)
                )
        return response

    def _add_statements(self, response: sync_pb2.GetUpdatesResponse, limit: int) -> None:
        """Every head statement held, as signed (the child's feed ages are measured from
        them), within half the answer's ceiling: at a small configured limit the rest come
        in the next answers, in turn (blacklist/sync/freshness.py: statements_within)."""
        held = [s.to_bytes() for _, s in sorted(self._store.statements.all().items())]
        chosen, self._statement_turn = statements_within(
            held, limit // 2 - response.ByteSize(), self._statement_turn
        )
        response.head_statements.extend(chosen)

    async def PushDeltas(
        self, request: sync_pb2.PushDeltasRequest, context: Any
    ) -> sync_pb2.PushDeltasResponse:
        response = sync_pb2.PushDeltasResponse()
        for data in request.deltas:
            self._metrics.sync_received_bytes.inc(len(data))
            try:
                outcome = await self._hub.apply(data, Source.CHILD)
            except DeltaRejected as exc:
                response.rejected.append(f"{exc.cause}: {exc}")
                continue
            if outcome is Outcome.APPLIED:
                response.applied += 1
            else:
                response.already_held += 1
        return response

    async def PushHeadStatements(
        self, request: sync_pb2.PushHeadStatementsRequest, context: Any
    ) -> sync_pb2.PushHeadStatementsResponse:
        if len(request.statements) > MAX_PUSH_STATEMENTS:
            raise InvalidRequest(
                f"{len(request.statements)} head statements exceed the limit of "
                f"{MAX_PUSH_STATEMENTS} per call"
            )
        received = await self._hub.accept_statements(list(request.statements), Source.CHILD)
        return sync_pb2.PushHeadStatementsResponse(
            accepted=received.accepted,
            already_held=received.duplicates,
            rejected=received.rejected,
        )

    async def Subscribe(
        self, request: sync_pb2.SubscribeRequest, context: Any
    ) -> AsyncIterator[sync_pb2.SubscribeEvent]:
        limit = stated_limit(
            request.max_event_bytes, self._limits.max_message_bytes, "max_event_bytes"
        )
        queue = self._hub.subscribe()
        log.info("child %s subscribed", request.node or "?")
        try:
            while True:
                data = await queue.get()
                if data is None:
                    return  # cut off for being slow; it reconnects and pulls
                if isinstance(data, HeadStatement):
                    yield sync_pb2.SubscribeEvent(head_statement=data.to_bytes())
                    continue
                if field_size(len(data)) > limit:
                    # Over the child's limit: its next pull gets take_snapshot or
                    # too_large_version for it instead (GetUpdates above).
                    self._metrics.sync_too_large.labels("sent").inc()
                    continue
                yield sync_pb2.SubscribeEvent(delta=data)
        finally:
            self._hub.unsubscribe(queue)

    async def GetSnapshot(
        self, request: sync_pb2.GetSnapshotRequest, context: Any
    ) -> AsyncIterator[sync_pb2.SnapshotPart]:
        limit = stated_limit(
            request.max_part_bytes, self._limits.max_message_bytes, "max_part_bytes"
        )
        publisher = request.publisher
        if len(publisher) != 6 or not publisher.isascii() or not publisher.isdigit():
            raise InvalidRequest(f"publisher {shown(publisher)} is not a 6-digit code")
        data = self._store.archive.snapshot(publisher)
        if data is None:
            raise NotFound(f"no snapshot of feed {publisher} is held here")
        snap_version = self._store.archive.snapshot_version(request.publisher) or 0
        chunk = chunk_size(len(data), self._limits.snapshot_chunk_bytes, limit)
        manifest, parts = split_snapshot(request.publisher, snap_version, data, chunk)
        yield sync_pb2.SnapshotPart(manifest=manifest_message(manifest))
        for part in parts:
            yield sync_pb2.SnapshotPart(chunk=part)
        self._metrics.snapshot_transfers.labels("sent", "ok").inc()

    async def PushSnapshot(
        self, requests: AsyncIterator[sync_pb2.SnapshotPart], context: Any
    ) -> sync_pb2.PushSnapshotResponse:
        """A child's snapshot, in chunks (blacklist/sync/chunks.py): nothing is applied
        unless the manifest is within this node's limits and every chunk checks out; then
        it is applied through the hub exactly as a pulled snapshot."""
        data = await receive_snapshot(requests, self._limits, self._metrics, direction="received")
        self._metrics.sync_received_bytes.inc(len(data))
        try:
            outcome = await self._hub.apply(data, Source.CHILD)
        except DeltaRejected as exc:
            self._metrics.snapshot_transfers.labels("received", "rejected").inc()
            return sync_pb2.PushSnapshotResponse(rejected=f"{exc.cause}: {exc}")
        self._metrics.snapshot_transfers.labels("received", "ok").inc()
        if outcome is Outcome.APPLIED:
            return sync_pb2.PushSnapshotResponse(applied=True)
        return sync_pb2.PushSnapshotResponse(already_held=True)


async def receive_snapshot(
    parts: AsyncIterator[Any], limits: TransferLimits, metrics: NodeMetrics, direction: str
) -> bytes:
    """Assemble one chunked snapshot from ``parts`` (a manifest, then chunks), checked as it
    arrives: SnapshotTooLarge right after the manifest, SnapshotCorrupt at the first bad
    part (both counted), the snapshot's bytes once complete. Shared by PushSnapshot (up)
    and the sync client's GetSnapshot (down)."""
    try:
        return await assemble(
            parts,
            max_total=limits.max_snapshot_bytes,
            max_chunk=chunk_payload_limit(limits.max_message_bytes),
        )
    except SnapshotTooLarge:
        # A limit, not tampering: not in blacklist_deltas_rejected_total (the tamper alarm).
        metrics.snapshot_transfers.labels(direction, "too_large").inc()
        raise
    except SnapshotCorrupt as exc:
        metrics.rejected.labels(exc.cause).inc()
        metrics.snapshot_transfers.labels(direction, "corrupt").inc()
        raise
