"""A lying relay for freshness tests: a grpc.aio Sync server, in the test process, that sits
between a child and a real upstream and, once ``freeze()`` is called, withholds one
publisher's new deltas while claiming (unsigned) that its head is still the frozen one.

Everything else passes through unchanged: the upstream's answers, its Subscribe events and
whatever signed bytes they carry (a relay cannot forge a signature; it can only leave things
out and lie in the unsigned fields). This is the attack of issue #11 item 7: on a child that
trusted the unsigned head claim, the frozen feed looked fresh. The relay never names the
head statement fields, so it runs unchanged against a build that has none::

    with WithholdingRelay(upstream.grpc, publisher="440100") as relay:
        child = start_node(NodeSpec(..., upstreams=(relay.address,)), directory)
        ...                      # the child syncs honestly through the relay
        relay.freeze(version, digest)   # from now on: nothing after ``version``
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Self

import grpc

from blacklist.deltadecode import decode
from node.gen.blacklist.v1 import sync_pb2, sync_pb2_grpc


class WithholdingRelay:
    servicer: Any = None  # the Sync servicer class (set below; tests/tampering_relay.py's)

    def __init__(self, upstream: str, *, publisher: str) -> None:
        self.upstream = upstream
        self.publisher = publisher
        self.frozen: tuple[int, bytes] | None = None  # (version, digest) claimed while frozen
        self.withheld = 0  # deltas left out so far
        self.address = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="lying-relay")
        self._server: Any = None
        self._channel: Any = None

    def freeze(self, version: int, digest: bytes) -> None:
        """Withhold everything of the publisher after ``version`` and claim it is the head."""
        self.frozen = (version, digest)

    def thaw(self) -> None:
        self.frozen = None

    # ------------------------------------------------------------------ life cycle
    def start(self) -> Self:
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.address = f"127.0.0.1:{port}"
        return self

    async def _start(self) -> int:
        self._channel = grpc.aio.insecure_channel(self.upstream)
        self.stub = sync_pb2_grpc.SyncStub(self._channel)  # type: ignore[no-untyped-call]
        self._server = grpc.aio.server()
        sync_pb2_grpc.add_SyncServicer_to_server(self.servicer(self), self._server)  # type: ignore[no-untyped-call]
        port = int(self._server.add_insecure_port("127.0.0.1:0"))
        await self._server.start()
        return port

    async def _stop(self) -> None:
        await self._server.stop(0)
        await self._channel.close()

    def close(self) -> None:
        if self._thread.is_alive():
            if self._server is not None:
                asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ the lie
    def withholds(self, data: bytes) -> bool:
        if self.frozen is None:
            return False
        item = decode(data)
        return item.publisher == self.publisher and item.version > self.frozen[0]


class _Servicer(sync_pb2_grpc.SyncServicer):
    def __init__(self, relay: WithholdingRelay) -> None:
        self._relay = relay

    async def GetUpdates(
        self, request: sync_pb2.GetUpdatesRequest, context: Any
    ) -> sync_pb2.GetUpdatesResponse:
        relay = self._relay
        response: sync_pb2.GetUpdatesResponse = await relay.stub.GetUpdates(request, timeout=30)
        if relay.frozen is None:
            return response
        version, digest = relay.frozen
        kept = [u for u in response.updates if u.publisher != relay.publisher]
        relay.withheld += sum(
            len(u.deltas) for u in response.updates if u.publisher == relay.publisher
        )
        del response.updates[:]
        response.updates.extend(kept)
        for head in response.heads:
            if head.publisher == relay.publisher:  # "my head is the one you hold"
                head.version, head.digest = version, digest
        return response

    async def Subscribe(
        self, request: sync_pb2.SubscribeRequest, context: Any
    ) -> AsyncIterator[sync_pb2.SubscribeEvent]:
        relay = self._relay
        async for event in relay.stub.Subscribe(request):
            if event.delta and relay.withholds(event.delta):
                relay.withheld += 1
                continue
            yield event

    async def PushDeltas(
        self, request: sync_pb2.PushDeltasRequest, context: Any
    ) -> sync_pb2.PushDeltasResponse:
        return sync_pb2.PushDeltasResponse()  # the child publishes nothing here

    async def GetSnapshot(
        self, request: sync_pb2.GetSnapshotRequest, context: Any
    ) -> AsyncIterator[sync_pb2.SnapshotPart]:
        async for part in self._relay.stub.GetSnapshot(request):
            yield part


WithholdingRelay.servicer = _Servicer
