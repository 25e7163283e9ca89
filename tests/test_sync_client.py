"""SyncClient against a fake upstream stub: a scheduled pull that falls while a delta pushed
down the Subscribe stream is being applied must ask from the new head, or the upstream
sends the same delta a second time (found by bench/test_sync.py's wire-bytes figure)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client import CollectorRegistry

from blacklist.authority import Revocation, build_delta
from blacklist.clock import ManualClock
from blacklist.delta import FeedHead
from blacklist.entry import Reason
from blacklist.store import RevocationStore
from node.gen.blacklist.v1 import sync_pb2
from node.hub import FeedHub, Outcome, Source
from node.metrics import NodeMetrics
from node.sync_client import SyncClient
from tests.conftest import Keys, card


class GatedHub(FeedHub):
    """Applies only once ``gate`` is set, so a test can act while an apply is under way."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.gate = asyncio.Event()
        self.applying = asyncio.Event()

    async def apply(self, data: bytes, source: Source) -> Outcome:
        self.applying.set()
        await self.gate.wait()
        return await super().apply(data, source)


class FakeUpstream:
    """Pushes one delta on Subscribe and records the heads of every GetUpdates."""

    def __init__(self, pushed: bytes) -> None:
        self.pushed = pushed
        self.asked: list[dict[str, int]] = []

    def Subscribe(self, request: sync_pb2.SubscribeRequest) -> AsyncIterator[Any]:
        async def stream() -> AsyncIterator[sync_pb2.SubscribeEvent]:
            yield sync_pb2.SubscribeEvent(delta=self.pushed)
            await asyncio.Event().wait()  # the stream stays open

        return stream()

    async def GetUpdates(
        self, request: sync_pb2.GetUpdatesRequest, timeout: float
    ) -> sync_pb2.GetUpdatesResponse:
        self.asked.append({h.publisher: h.version for h in request.heads})
        return sync_pb2.GetUpdatesResponse()

    async def PushDeltas(
        self, request: sync_pb2.PushDeltasRequest, timeout: float
    ) -> sync_pb2.PushDeltasResponse:
        return sync_pb2.PushDeltasResponse()


def test_pull_waits_for_a_pushed_delta_being_applied(
    store: RevocationStore, keys: Keys, clock: ManualClock
) -> None:
    delta = build_delta(
        keys.gz, FeedHead.genesis("440100"), [Revocation(card(), Reason.LOSS, 1)]
    ).to_bytes()

    async def scenario() -> list[dict[str, int]]:
        with ThreadPoolExecutor(max_workers=1) as writer:
            metrics = NodeMetrics(CollectorRegistry())
            hub = GatedHub(store, keys.ring, writer, metrics)
            client = SyncClient(
                region="110100",
                upstreams=["upstream"],
                interval=60.0,
                store=store,
                hub=hub,
                metrics=metrics,
                clock=clock,
            )
            upstream = FakeUpstream(delta)
            subscription = asyncio.create_task(client._subscribe(upstream))
            await hub.applying.wait()  # the pushed delta is being applied...
            pull = asyncio.create_task(client.pull(upstream))
            await asyncio.sleep(0.05)  # ...when the scheduled pull comes
            hub.gate.set()
            await asyncio.wait_for(pull, 10)
            subscription.cancel()
            await asyncio.gather(subscription, return_exceptions=True)
            return upstream.asked

    assert asyncio.run(scenario()) == [{"440100": 1}]
