"""A relay that forges what it forwards, for the edge replica's tests: a WithholdingRelay
(tests/withholding_relay.py: the same life cycle, the real upstream behind it) that, while
``tamper`` names a kind, flips one bit in every delta or every head statement it passes
on, in GetUpdates answers and on the Subscribe stream. A relay cannot sign, so each forged
item must be refused by its signature and change nothing::

    with TamperingRelay(upstream.grpc, publisher="440100") as relay:
        relay.tamper = "delta"       # or "statement"; None passes everything unchanged
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from blacklist.sync.chunks import assemble, split_snapshot
from node.gen.blacklist.v1 import sync_pb2
from node.grpc.sync import manifest_message
from tests.fake_upstream import flip_bit
from tests.withholding_relay import WithholdingRelay, _Servicer

DELTA = "delta"
STATEMENT = "statement"


class TamperingRelay(WithholdingRelay):
    tamper: str | None = None
    forged = 0  # items forged so far

    def forge(self, data: bytes) -> bytes:
        self.forged += 1
        return flip_bit(data, -1)  # the last byte: the signature's


class _Forging(_Servicer):
    async def GetUpdates(
        self, request: sync_pb2.GetUpdatesRequest, context: Any
    ) -> sync_pb2.GetUpdatesResponse:
        response = await super().GetUpdates(request, context)
        relay: Any = self._relay
        if relay.tamper == DELTA:
            for update in response.updates:
                forged = [relay.forge(d) for d in update.deltas]
                del update.deltas[:]
                update.deltas.extend(forged)
        if relay.tamper == STATEMENT:
            forged = [relay.forge(s) for s in response.head_statements]
            del response.head_statements[:]
            response.head_statements.extend(forged)
        return response

    async def Subscribe(
        self, request: sync_pb2.SubscribeRequest, context: Any
    ) -> AsyncIterator[sync_pb2.SubscribeEvent]:
        relay: Any = self._relay
        async for event in super().Subscribe(request, context):
            if event.delta and relay.tamper == DELTA:
                event = sync_pb2.SubscribeEvent(delta=relay.forge(event.delta))
            elif event.head_statement and relay.tamper == STATEMENT:
                event = sync_pb2.SubscribeEvent(head_statement=relay.forge(event.head_statement))
            yield event

    async def GetSnapshot(
        self, request: sync_pb2.GetSnapshotRequest, context: Any
    ) -> AsyncIterator[sync_pb2.SnapshotPart]:
        relay: Any = self._relay
        parts = super().GetSnapshot(request, context)
        if relay.tamper != DELTA:
            async for part in parts:
                yield part
            return
        data = relay.forge(await assemble(parts, max_total=1 << 30, max_chunk=1 << 24))
        manifest, chunks = split_snapshot(request.publisher, 0, data, 4096)
        yield sync_pb2.SnapshotPart(manifest=manifest_message(manifest))
        for chunk in chunks:
            yield sync_pb2.SnapshotPart(chunk=chunk)


TamperingRelay.servicer = _Forging
