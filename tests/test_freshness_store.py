"""Signed freshness in the store and the checker: what ``feed_age_seconds`` is measured from
(blacklist/sync/freshness.py), kept in LMDB across a reopen, in one write transaction, and
seen by a follower (a worker process's view)."""

from __future__ import annotations

from pathlib import Path

import pytest

from blacklist.authority import Authority, Revocation, build_delta
from blacklist.checker import Checker
from blacklist.clock import ManualClock
from blacklist.delta import FeedHead
from blacklist.entry import Reason
from blacklist.follower import FollowingChecker, ReadOnlyStore, StoreFollower
from blacklist.store import RevocationStore
from blacklist.sync.freshness import StatementFork, StatementTimeBackwards, sign_statement
from tests.conftest import Keys, card

GZ = "440100"
SKEW = 60


@pytest.fixture
def gz(store: RevocationStore, keys: Keys, clock: ManualClock) -> Authority:
    return Authority(store, keys.gz, keys.ring, clock=clock)


def age(store: RevocationStore, keys: Keys, clock: ManualClock) -> float | None:
    return Checker(store, keys.ring, clock=clock).check(card(GZ)).feed_age_seconds


def test_without_statements_the_age_runs_from_the_head_deltas_issued_at(
    store: RevocationStore, keys: Keys, clock: ManualClock
) -> None:
    """A delta signed 10 minutes ago and applied now is 10 minutes old, not fresh: the
    apply time is this node's word, the issued_at the publisher's."""
    now = int(clock())
    delta = build_delta(
        keys.gz, FeedHead.genesis(GZ), [Revocation(card(), Reason.LOSS, 1)], (), now - 600
    )
    store.apply(delta.to_bytes(), keys.ring)
    assert store.feeds[GZ].checked_at == now - 600
    assert age(store, keys, clock) == 600


def test_a_statement_for_the_held_head_refreshes_it_and_a_duplicate_writes_nothing(
    store: RevocationStore, keys: Keys, gz: Authority, clock: ManualClock
) -> None:
    gz.publish([Revocation(card(), Reason.LOSS, 1)])
    clock.advance(300)
    assert age(store, keys, clock) == 300
    statement = gz.head_statement()
    [result] = store.accept_statements([statement], keys.ring, clock(), SKEW)
    assert result.accepted and age(store, keys, clock) == 0
    generation = store.generation
    [again] = store.accept_statements([statement], keys.ring, clock(), SKEW)
    assert again.duplicate and store.generation == generation


def test_refused_statements_change_nothing(
    store: RevocationStore, keys: Keys, gz: Authority, clock: ManualClock
) -> None:
    gz.publish([Revocation(card(), Reason.LOSS, 1)])
    clock.advance(100)
    newest = gz.head_statement()
    store.accept_statements([newest], keys.ring, clock(), SKEW)
    generation, feed = store.generation, store.feeds[GZ]
    older = sign_statement(keys.gz, store.head(GZ), int(clock()) - 1)
    fork = sign_statement(keys.gz, FeedHead(GZ, 1, bytes(32)), int(clock()) + 1)
    results = store.accept_statements([older, fork], keys.ring, clock(), SKEW)
    assert [type(r.rejection) for r in results] == [StatementTimeBackwards, StatementFork]
    assert store.generation == generation and store.feeds[GZ] == feed
    assert store.statements.newest(GZ) == newest


def test_behind_the_newest_statement_the_age_grows_until_the_head_reaches_it(
    store: RevocationStore, keys: Keys, clock: ManualClock, tmp_path: Path
) -> None:
    """A relay gave this node v1 but withholds v2: the authority's statement for v2 shows
    lag 1 and the age keeps counting from v1; once v2 arrives, the node is fresh as of the
    statement (not only of v2's older issued_at)."""
    t0 = int(clock())
    v1 = build_delta(keys.gz, FeedHead.genesis(GZ), [Revocation(card(), Reason.LOSS, 1)], (), t0)
    v2 = build_delta(
        keys.gz, FeedHead(GZ, 1, v1.digest), [Revocation(card(), Reason.LOSS, 1)], (), t0 + 10
    )
    store.apply(v1.to_bytes(), keys.ring)
    clock.advance(120)
    ahead = sign_statement(keys.gz, FeedHead(GZ, 2, v2.digest), t0 + 100)
    store.accept_statements([ahead], keys.ring, clock(), SKEW)
    assert store.freshness(GZ).lag == 1
    assert age(store, keys, clock) == 120
    clock.advance(30)
    assert age(store, keys, clock) == 150
    store.apply(v2.to_bytes(), keys.ring)
    assert store.freshness(GZ).lag == 0
    assert store.feeds[GZ].checked_at == t0 + 100
    assert age(store, keys, clock) == 50


def test_statements_and_freshness_survive_a_reopen(
    keys: Keys, clock: ManualClock, tmp_path: Path
) -> None:
    path = tmp_path / "node"
    with RevocationStore(path, clock=clock, map_size=1 << 28) as store:
        gz = Authority(store, keys.gz, keys.ring, clock=clock)
        gz.publish([Revocation(card(), Reason.LOSS, 1)])
        clock.advance(50)
        statement = gz.head_statement()
        ahead = sign_statement(keys.sz, FeedHead("440300", 4, bytes(32)), int(clock()))
        store.accept_statements([statement, ahead], keys.ring, clock(), SKEW)
    with RevocationStore(path, clock=clock, map_size=1 << 28) as store:
        assert store.statements.newest(GZ) == statement
        assert store.statements.holds(statement.to_bytes())
        assert store.statements.newest("440300") == ahead
        assert store.freshness("440300").lag == 4
        assert store.feeds[GZ].checked_at == int(clock())


def test_a_follower_sees_the_signed_freshness(
    store: RevocationStore, keys: Keys, gz: Authority, clock: ManualClock
) -> None:
    gz.publish([Revocation(card(), Reason.LOSS, 1)])
    follower = StoreFollower(store.path, env=store.env, background=False)
    checker = FollowingChecker(follower, keys.ring, clock=clock)
    clock.advance(200)
    assert checker.check(card(GZ)).feed_age_seconds == 200
    store.accept_statements([gz.head_statement()], keys.ring, clock(), SKEW)
    assert checker.check(card(GZ)).feed_age_seconds == 0
    with pytest.raises(ReadOnlyStore):
        follower.accept_statements([], keys.ring, clock(), SKEW)
    follower.close()


def test_an_authoritys_statements_are_never_dated_backwards(
    store: RevocationStore, keys: Keys, gz: Authority, clock: ManualClock
) -> None:
    gz.publish([Revocation(card(), Reason.LOSS, 1)])
    first = gz.head_statement()
    store.accept_statements([first], keys.ring, clock(), SKEW)
    clock.advance(-30)  # the authority's clock stepped back
    again = gz.head_statement()
    assert again.issued_at == first.issued_at
    [result] = store.accept_statements([again], keys.ring, clock(), SKEW)
    assert result.duplicate


def test_getupdates_carries_statements_within_half_its_limit_in_turns(
    store: RevocationStore, clock: ManualClock
) -> None:
    """At the smallest message limit (64 KiB) 500 publishers' statements (~66 KB) do not
    fit one answer: each answer stays under the limit and the next carries the others."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from prometheus_client import CollectorRegistry

    from blacklist.signing import Keyring, SigningKey
    from blacklist.sync.budget import MIN_MESSAGE_BYTES, TransferLimits
    from node.gen.blacklist.v1 import sync_pb2
    from node.grpc.sync import SyncServicer
    from node.ingest import Ingest
    from node.metrics import NodeMetrics

    signers = [SigningKey.generate(f"{110000 + i:06d}", ["11"]) for i in range(1, 501)]
    ring = Keyring(k.trusted() for k in signers)
    statements = [sign_statement(k, FeedHead.genesis(k.publisher), int(clock())) for k in signers]
    assert all(r.accepted for r in store.accept_statements(statements, ring, clock(), SKEW))
    with ThreadPoolExecutor(max_workers=1) as writer:
        metrics = NodeMetrics(CollectorRegistry())
        hub = Ingest(store, ring, writer, metrics)
        servicer = SyncServicer(store, hub, metrics, TransferLimits(MIN_MESSAGE_BYTES))
        request = sync_pb2.GetUpdatesRequest(node="probe", max_response_bytes=MIN_MESSAGE_BYTES)
        seen: set[bytes] = set()
        for _ in range(3):
            answer = asyncio.run(servicer.GetUpdates(request, None))
            assert answer.ByteSize() <= MIN_MESSAGE_BYTES // 2
            assert 0 < len(answer.head_statements) < len(statements)
            seen.update(answer.head_statements)
        assert seen == {s.to_bytes() for s in statements}


def test_the_store_knows_the_bytes_it_holds(
    store: RevocationStore, keys: Keys, gz: Authority, clock: ManualClock
) -> None:
    """Duplicates at every pull are found by their bytes alone; a newer statement replaces
    the old bytes, and a reopen knows them again."""
    first = gz.head_statement()
    store.accept_statements([first], keys.ring, clock(), SKEW)
    assert store.statements.holds(first.to_bytes())
    clock.advance(1)
    second = gz.head_statement()
    store.accept_statements([second], keys.ring, clock(), SKEW)
    assert store.statements.holds(second.to_bytes())
    assert not store.statements.holds(first.to_bytes())
    assert not store.statements.holds(second.to_bytes()[:-1] + b"\x00")
