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
from blacklist.sync.budget import TransferLimits
from blacklist.sync.ingest import Outcome
from node.gen.blacklist.v1 import sync_pb2
from node.ingest import Ingest, Source
from node.metrics import NodeMetrics
from node.sync_client import SyncClient
from tests.conftest import Keys, card


class GatedHub(Ingest):
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


class DripUpstream:
    """Answers GetUpdates with at most one delta a round (as an upstream whose answers are
    full would), or, with ``stuck``, with no delta and ``too_large_version`` (a delta no
    answer can carry); records every request."""

    def __init__(self, deltas: list[bytes], head: int, stuck: bool = False) -> None:
        self.deltas = deltas
        self.head = head
        self.stuck = stuck
        self.asked: list[tuple[int, int]] = []  # (child's version, max_response_bytes)

    async def GetUpdates(
        self, request: sync_pb2.GetUpdatesRequest, timeout: float
    ) -> sync_pb2.GetUpdatesResponse:
        have = {h.publisher: h.version for h in request.heads}.get("440100", 0)
        self.asked.append((have, request.max_response_bytes))
        update = sync_pb2.FeedUpdate(publisher="440100", upstream_version=self.head)
        if self.stuck:
            update.too_large_version = have + 1
        elif have < len(self.deltas):
            update.deltas.append(self.deltas[have])
        return sync_pb2.GetUpdatesResponse(updates=[update], max_push_bytes=1 << 20)

    async def PushDeltas(
        self, request: sync_pb2.PushDeltasRequest, timeout: float
    ) -> sync_pb2.PushDeltasResponse:
        return sync_pb2.PushDeltasResponse()


def _chain(keys: Keys, n: int) -> list[bytes]:
    head = FeedHead.genesis("440100")
    out = []
    for _ in range(n):
        delta = build_delta(keys.gz, head, [Revocation(card(), Reason.LOSS, 1)])
        head = FeedHead("440100", delta.version, delta.digest)
        out.append(delta.to_bytes())
    return out


def _pull(store: RevocationStore, keys: Keys, clock: ManualClock, upstream: Any) -> None:
    async def scenario() -> None:
        with ThreadPoolExecutor(max_workers=1) as writer:
            metrics = NodeMetrics(CollectorRegistry())
            client = SyncClient(
                region="110100",
                upstreams=["upstream"],
                interval=60.0,
                store=store,
                hub=Ingest(store, keys.ring, writer, metrics),
                metrics=metrics,
                clock=clock,
                limits=TransferLimits(max_message_bytes=1 << 20),
            )
            await asyncio.wait_for(client.pull(upstream), 10)

    asyncio.run(scenario())


def test_one_pull_keeps_asking_while_behind_and_moving(
    store: RevocationStore, keys: Keys, clock: ManualClock
) -> None:
    """Answers that each carry part of the backlog: one pull takes it all (no early stop),
    stating this node's limit every time."""
    upstream = DripUpstream(_chain(keys, 5), head=5)
    _pull(store, keys, clock, upstream)
    assert store.head("440100").version == 5
    assert upstream.asked == [(v, 1 << 20) for v in range(6)][:5]


def test_a_pull_without_progress_ends_instead_of_spinning(
    store: RevocationStore, keys: Keys, clock: ManualClock
) -> None:
    """An upstream that can send nothing (the next delta too large, or it is missing):
    one round, then the pull ends; the next scheduled pull tries again."""
    upstream = DripUpstream([], head=9, stuck=True)
    _pull(store, keys, clock, upstream)
    assert upstream.asked == [(0, 1 << 20)]
    upstream = DripUpstream(_chain(keys, 2), head=9)  # claims 9, has 2
    _pull(store, keys, clock, upstream)
    assert store.head("440100").version == 2
    assert [v for v, _ in upstream.asked] == [0, 1, 2]
