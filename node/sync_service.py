"""The Sync service: what a node serves its children (see proto/blacklist/v1/sync.proto).
Decisions come from blacklist.sync.plan; this module only moves bytes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import xxhash

from blacklist.delta import FeedHead
from blacklist.rejections import DeltaRejected
from blacklist.store import RevocationStore
from blacklist.sync.plan import SendDeltas, SendSnapshot, plan_updates
from node.gen.blacklist.v1 import sync_pb2, sync_pb2_grpc
from node.hub import FeedHub, Outcome, Source
from node.metrics import NodeMetrics
from node.rpc import InvalidRequest

log = logging.getLogger("node.sync")
CHUNK_BYTES = 1 << 20
RESPONSE_BUDGET = 8 << 20  # stay well under the 16 MiB message limit; the child pulls again


def heads_from(messages: Any) -> dict[str, FeedHead]:
    heads = {}
    for h in messages:
        if len(h.publisher) != 6 or not h.publisher.isdigit() or len(h.digest) not in (0, 32):
            raise InvalidRequest(f"malformed head {h.publisher!r} v{h.version}")
        heads[h.publisher] = FeedHead(h.publisher, h.version, h.digest or bytes(32))
    return heads


def head_messages(heads: dict[str, FeedHead]) -> list[sync_pb2.Head]:
    return [
        sync_pb2.Head(publisher=p, version=h.version, digest=h.digest)
        for p, h in sorted(heads.items())
    ]


class SyncServicer(sync_pb2_grpc.SyncServicer):
    def __init__(self, store: RevocationStore, hub: FeedHub, metrics: NodeMetrics) -> None:
        self._store = store
        self._hub = hub
        self._metrics = metrics

    async def GetUpdates(
        self, request: sync_pb2.GetUpdatesRequest, context: Any
    ) -> sync_pb2.GetUpdatesResponse:
        plan = plan_updates(self._store.histories(), heads_from(request.heads))
        response = sync_pb2.GetUpdatesResponse(heads=head_messages(self._store.heads()))
        budget = RESPONSE_BUDGET
        for publisher, action in plan.items():
            update = response.updates.add(
                publisher=publisher, upstream_version=self._store.head(publisher).version
            )
            if isinstance(action, SendSnapshot):
                update.take_snapshot = True
            elif isinstance(action, SendDeltas):
                for data in self._store.archive.deltas(publisher, action.first, action.last):
                    if len(data) > budget and len(update.deltas):
                        break  # the rest next pull: upstream_version tells the child
                    update.deltas.append(data)
                    budget -= len(data)
            else:
                log.warning("child %s is behind on %s: %s", request.node, publisher, action.reason)
        return response

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

    async def Subscribe(
        self, request: sync_pb2.SubscribeRequest, context: Any
    ) -> AsyncIterator[sync_pb2.SubscribeEvent]:
        queue = self._hub.subscribe()
        log.info("child %s subscribed", request.node or "?")
        try:
            while True:
                data = await queue.get()
                if data is None:
                    return  # cut off for being slow; it reconnects and pulls
                yield sync_pb2.SubscribeEvent(delta=data)
        finally:
            self._hub.unsubscribe(queue)

    async def GetSnapshot(
        self, request: sync_pb2.GetSnapshotRequest, context: Any
    ) -> AsyncIterator[sync_pb2.SnapshotPart]:
        data = self._store.archive.snapshot(request.publisher)
        if data is None:
            raise InvalidRequest(f"no snapshot of {request.publisher!r} is held here")
        chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)]
        snap_version = self._store.archive.snapshot_version(request.publisher) or 0
        yield sync_pb2.SnapshotPart(
            manifest=sync_pb2.SnapshotManifest(
                publisher=request.publisher,
                version=snap_version,
                total_bytes=len(data),
                chunk_bytes=CHUNK_BYTES,
                chunk_xxh64=[xxhash.xxh64_intdigest(c) for c in chunks],
            )
        )
        for chunk in chunks:
            yield sync_pb2.SnapshotPart(chunk=chunk)
        self._metrics.snapshot_transfers.labels("sent", "ok").inc()
