"""SyncServicer.GetUpdates at a stated limit, in process (a real store, no sockets): the
answer never exceeds what the child states, and a delta no answer can carry becomes
``take_snapshot`` when the stored snapshot covers it, else ``too_large_version``; never an
oversize answer (issue #11 item 4, blacklist/sync/budget.py)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import CollectorRegistry

from blacklist.authority import Revocation, build_delta
from blacklist.clock import ManualClock
from blacklist.delta import FeedHead, sign_snapshot
from blacklist.edge.child import head_messages
from blacklist.entry import Reason
from blacklist.store import RevocationStore
from blacklist.sync.budget import MIN_MESSAGE_BYTES, TransferLimits
from node.gen.blacklist.v1 import sync_pb2
from node.grpc.sync import SyncServicer
from node.ingest import Ingest, Source
from node.metrics import NodeMetrics
from tests.conftest import Keys, card

GZ = "440100"


def publish(store: RevocationStore, keys: Keys, clock: ManualClock, cards: int) -> FeedHead:
    head = store.head(GZ)
    delta = build_delta(
        keys.gz,
        head,
        [Revocation(card(GZ), Reason.LOSS, 1) for _ in range(cards)],
        issued_at=int(clock()),
    )
    store.apply_delta(delta, keys.ring)
    clock.advance(1)
    return store.head(GZ)


def keep_snapshot(store: RevocationStore, keys: Keys, clock: ManualClock) -> None:
    entries, versions = store.feed_entries(GZ)
    snapshot = sign_snapshot(keys.gz, store.head(GZ), entries, versions, int(clock()))
    store.keep_snapshot(snapshot, keys.ring)


def ask(store: RevocationStore, keys: Keys, child: FeedHead | None) -> sync_pb2.GetUpdatesResponse:
    async def call() -> sync_pb2.GetUpdatesResponse:
        with ThreadPoolExecutor(max_workers=1) as writer:
            metrics = NodeMetrics(CollectorRegistry())
            servicer = SyncServicer(
                store, Ingest(store, keys.ring, writer, metrics), metrics, TransferLimits()
            )
            request = sync_pb2.GetUpdatesRequest(
                heads=head_messages({GZ: child} if child else {}),
                node="probe",
                max_response_bytes=MIN_MESSAGE_BYTES,
            )
            return await servicer.GetUpdates(request, None)

    return asyncio.run(call())


def test_small_deltas_fill_the_stated_answer_and_no_more(
    store: RevocationStore, keys: Keys, clock: ManualClock
) -> None:
    for _ in range(12):
        publish(store, keys, clock, 1000)  # ~8 KB each: ~96 KB in all
    answer = ask(store, keys, None)
    (update,) = answer.updates
    assert answer.ByteSize() <= MIN_MESSAGE_BYTES
    assert 1 <= len(update.deltas) < 12 and update.upstream_version == 12
    assert not update.take_snapshot and not update.too_large_version


def test_a_delta_over_the_stated_limit_without_a_snapshot_is_named_not_sent(
    store: RevocationStore, keys: Keys, clock: ManualClock
) -> None:
    publish(store, keys, clock, 10)
    v1 = store.head(GZ)
    publish(store, keys, clock, 12_000)  # ~96 KB: no 64 KiB answer can carry it
    answer = ask(store, keys, v1)
    (update,) = answer.updates
    assert answer.ByteSize() <= MIN_MESSAGE_BYTES
    assert (list(update.deltas), update.take_snapshot, update.too_large_version) == ([], False, 2)


def test_a_delta_over_the_stated_limit_covered_by_the_snapshot_becomes_take_snapshot(
    store: RevocationStore, keys: Keys, clock: ManualClock
) -> None:
    for _ in range(3):
        publish(store, keys, clock, 6000)  # a base larger than the big delta
    v3 = store.head(GZ)
    publish(store, keys, clock, 12_000)
    keep_snapshot(store, keys, clock)  # at v4: covers the big delta
    assert store.archive.snapshot_version(GZ) == 4
    answer = ask(store, keys, v3)
    (update,) = answer.updates
    assert answer.ByteSize() <= MIN_MESSAGE_BYTES
    assert (list(update.deltas), update.take_snapshot, update.too_large_version) == ([], True, 0)


def test_subscribe_skips_a_delta_over_the_childs_limit_and_keeps_the_stream(
    store: RevocationStore, keys: Keys
) -> None:
    big, small = b"B" * MIN_MESSAGE_BYTES, b"s" * 100

    async def stream() -> list[bytes]:
        with ThreadPoolExecutor(max_workers=1) as writer:
            metrics = NodeMetrics(CollectorRegistry())
            hub = Ingest(store, keys.ring, writer, metrics)
            servicer = SyncServicer(store, hub, metrics, TransferLimits())
            events = servicer.Subscribe(
                sync_pb2.SubscribeRequest(node="probe", max_event_bytes=MIN_MESSAGE_BYTES), None
            )
            first = asyncio.ensure_future(anext(events))
            await asyncio.sleep(0.01)  # subscribed
            at_limit = b"a" * (MIN_MESSAGE_BYTES - 4)  # its event is exactly the limit
            assert sync_pb2.SubscribeEvent(delta=at_limit).ByteSize() == MIN_MESSAGE_BYTES
            for data in (big, small, at_limit):
                hub.fan_out(data, Source.UPSTREAM)
            got = [(await first).delta, (await anext(events)).delta]
            await events.aclose()
            return got

    assert asyncio.run(stream()) == [small, b"a" * (MIN_MESSAGE_BYTES - 4)]
