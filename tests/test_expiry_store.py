"""Entries that lapse (issue #17) in the store and the checker: the answer at the end time's
boundary by the node's clock, before and after the sweep, across a restart, under a later
delta, in a follower, and the schema migration."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from blacklist import checker as checker_module
from blacklist.authority import Authority, Revocation
from blacklist.cardid import text_to_key
from blacklist.checker import Checker, CheckStatus
from blacklist.clock import ManualClock
from blacklist.delta import sign_snapshot
from blacklist.entry import Reason
from blacklist.errors import StoreError
from blacklist.fastpath import HAVE_SPEEDUPS, python_probe_in, python_scan
from blacklist.follower import FollowingChecker, ReadOnlyStore, StoreFollower
from blacklist.reasoncounts import BUILT
from blacklist.store import SCHEMA_VERSION, RevocationStore
from node.metrics import LAPSE_WINDOW, NodeMetrics
from tests.conftest import Keys, card

DAY = 86_400


def open_store(path: Path, clock: ManualClock, width: int | None = None) -> RevocationStore:
    return RevocationStore(path, clock=clock, map_size=1 << 28, fingerprint_width=width)


@pytest.fixture
def gz(store: RevocationStore, keys: Keys, clock: ManualClock) -> Authority:
    return Authority(store, keys.gz, keys.ring, clock=clock)


def answers(checker: Checker, cards: list[str]) -> list[CheckStatus]:
    one = [checker.check(c).status for c in cards]
    many = [checker.check_many(cards)[i].status for i in range(len(cards))]
    assert one == many
    return one


@pytest.fixture(params=["c", "python"] if HAVE_SPEEDUPS else ["python"])
def front_half(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The C fast path (blacklist/_speedups.c, when built) and the pure-Python fallback:
    the end time is decided after either, by the LMDB read that confirms a hit."""
    if request.param == "python":
        monkeypatch.setattr(checker_module, "probe_in", python_probe_in)
        monkeypatch.setattr(checker_module, "scan", python_scan)
    return str(request.param)


def test_boundary_by_the_clock_with_and_without_the_sweep(
    tmp_path: Path, keys: Keys, clock: ManualClock, front_half: str
) -> None:
    # Width 8: every card collides, so the index says "maybe" and LMDB decides each time.
    store = open_store(tmp_path / "s", clock, width=8)
    gz = Authority(store, keys.gz, keys.ring, clock=clock)
    now = int(clock())
    end = now + 10 * DAY
    lost, formal = card(), card()
    gz.publish([Revocation(lost, Reason.TEMPORARY_LOSS, now, end), Revocation(formal, 2, now)])
    checker = Checker(store, keys.ring, clock=clock)
    r = checker.check(lost)
    assert (r.status, r.reason, r.expires_at) == (CheckStatus.REVOKED, Reason.TEMPORARY_LOSS, end)
    assert checker.check(formal).expires_at is None
    clock.now = end - 1
    assert answers(checker, [lost, formal]) == [CheckStatus.REVOKED, CheckStatus.REVOKED]
    assert store.sweep() == 0  # the sweep never takes one before its end
    for at in (end, end + 1):  # unswept yet: answered by the clock
        clock.now = at
        assert answers(checker, [lost, formal]) == [CheckStatus.NOT_REVOKED, CheckStatus.REVOKED]
    assert answers(checker, [lost, formal]) == [CheckStatus.NOT_REVOKED, CheckStatus.REVOKED]
    assert store.sweep() == 1
    assert store.sweep() == 0
    assert store.feeds["440100"].entries == 1 and store.entry_count() == 1
    assert answers(checker, [lost, formal]) == [CheckStatus.NOT_REVOKED, CheckStatus.REVOKED]
    assert store.lookup_all(text_to_key(lost)) == []
    store.close()


def test_the_answer_survives_a_restart(tmp_path: Path, keys: Keys, clock: ManualClock) -> None:
    store = open_store(tmp_path / "s", clock)
    now = int(clock())
    lost = card()
    Authority(store, keys.gz, keys.ring, clock=clock).publish(
        [Revocation(lost, Reason.TEMPORARY_LOSS, now, now + 100)]
    )
    store.close()
    for at, want in ((now + 99, CheckStatus.REVOKED), (now + 100, CheckStatus.NOT_REVOKED)):
        clock.now = at
        reopened = open_store(tmp_path / "s", clock)
        r = Checker(reopened, keys.ring, clock=clock).check(lost)
        assert r.status is want
        reopened.close()
    clock.now = now + 101
    reopened = open_store(tmp_path / "s", clock)
    assert reopened.sweep() == 1
    reopened.close()
    reopened = open_store(tmp_path / "s", clock)  # the saved index lost the fingerprint too
    assert Checker(reopened, keys.ring, clock=clock).check(lost).status is CheckStatus.NOT_REVOKED
    assert reopened.entry_count() == 0
    reopened.close()


def test_a_later_delta_extends_formalises_or_removes(
    store: RevocationStore, gz: Authority, keys: Keys, clock: ManualClock
) -> None:
    now = int(clock())
    a, b, c = card(), card(), card()
    gz.publish([Revocation(x, Reason.TEMPORARY_LOSS, now, now + 100) for x in (a, b, c)])
    _, result = gz.publish(
        [
            Revocation(a, Reason.TEMPORARY_LOSS, now, now + 200),  # extended
            Revocation(b, Reason.LOSS, now + 50),  # formal loss: no end
        ],
        [c],  # withdrawn (解挂)
    )
    assert (result.changed, result.removed) == (2, 1)
    checker = Checker(store, keys.ring, clock=clock)
    clock.now = now + 150
    assert store.sweep() == 0  # the old end times left the lapse index with their entries
    assert answers(checker, [a, b, c]) == [
        CheckStatus.REVOKED,
        CheckStatus.REVOKED,
        CheckStatus.NOT_REVOKED,
    ]
    assert checker.check(a).expires_at == now + 200
    clock.now = now + 200
    assert store.lapsing_between(now, now + 201) == 1
    assert answers(checker, [a, b]) == [CheckStatus.NOT_REVOKED, CheckStatus.REVOKED]
    assert store.sweep() == 1 and store.lapsing_between(now, now + 201) == 0
    # The same revocation twice is no change; a lapsed entry is not held any more.
    _, again = gz.publish([Revocation(b, Reason.LOSS, now + 50)])
    assert again.version == 2
    _, back = gz.publish([Revocation(a, Reason.TEMPORARY_LOSS, now + 200, now + 300)])
    assert back.added == 1


def test_revoking_again_with_another_end_time_is_a_change(
    store: RevocationStore, gz: Authority, clock: ManualClock
) -> None:
    now = int(clock())
    a = card()
    gz.publish([Revocation(a, Reason.TEMPORARY_LOSS, now, now + 100)])
    same, _ = gz.publish([Revocation(a, Reason.TEMPORARY_LOSS, now, now + 100)])
    assert same is None
    other, _ = gz.publish([Revocation(a, Reason.TEMPORARY_LOSS, now, now + 101)])
    assert other is not None and int(other.adds.ends[0]) == now + 101


def test_a_snapshot_carries_end_times_and_leaves_out_lapsed_entries(
    tmp_path: Path, store: RevocationStore, gz: Authority, keys: Keys, clock: ManualClock
) -> None:
    now = int(clock())
    a, b = card(), card()
    gz.publish([Revocation(a, 1, now, now + 100), Revocation(b, 1, now, now + 50)])
    clock.now = now + 60
    entries, _ = store.feed_entries("440100")
    assert len(entries) == 1 and int(entries.ends[0]) == now + 100
    other = open_store(tmp_path / "child", clock)
    entries, versions = store.feed_entries("440100")
    snap = sign_snapshot(keys.gz, store.head("440100"), entries, versions, int(clock()))
    other.apply(snap.to_bytes(), keys.ring)
    checker = Checker(other, keys.ring, clock=clock)
    assert checker.check(a).expires_at == now + 100
    clock.now = now + 100
    assert checker.check(a).status is CheckStatus.NOT_REVOKED
    assert other.sweep() == 1
    other.close()


def test_a_follower_answers_by_its_clock_and_follows_the_sweep(
    tmp_path: Path, keys: Keys, clock: ManualClock
) -> None:
    store = open_store(tmp_path / "s", clock, width=8)
    now = int(clock())
    lost = card()
    Authority(store, keys.gz, keys.ring, clock=clock).publish([Revocation(lost, 1, now, now + 100)])
    follower = StoreFollower(tmp_path / "s", env=store.env, background=False, fingerprint_width=8)
    checker = FollowingChecker(follower, keys.ring, clock=clock)
    clock.now = now + 99
    assert checker.check(lost).status is CheckStatus.REVOKED
    clock.now = now + 100
    assert checker.check(lost).status is CheckStatus.NOT_REVOKED
    assert store.sweep() == 1
    assert checker.check(lost).status is CheckStatus.NOT_REVOKED
    assert follower.feeds["440100"].entries == 0
    with pytest.raises(ReadOnlyStore):
        follower.sweep()  # only the writer sweeps
    follower.close()
    store.close()


def set_schema(path: Path, clock: ManualClock, version: int) -> None:
    s = open_store(path, clock)
    with s.env.begin(write=True) as txn:
        txn.put(b"schema", struct.pack(">I", version), db=s._meta)
    s.close()


def test_schema_3_migrates_and_older_is_refused(
    tmp_path: Path, keys: Keys, clock: ManualClock
) -> None:
    path = tmp_path / "s"
    store = open_store(path, clock)
    kept = card()
    Authority(store, keys.gz, keys.ring, clock=clock).publish([Revocation(kept, 2, 1)])
    store.close()
    set_schema(path, clock, 3)
    with pytest.raises(StoreError, match="schema 3"):
        StoreFollower(path)  # a follower never migrates
    store = open_store(path, clock)
    with store.env.begin() as txn:
        assert struct.unpack(">I", txn.get(b"schema", db=store._meta))[0] == SCHEMA_VERSION == 4
    assert Checker(store, keys.ring, clock=clock).check(kept).status is CheckStatus.REVOKED
    store.close()
    set_schema(path, clock, 1)
    with pytest.raises(StoreError, match="migrates schemas 2, 3"):
        open_store(path, clock)


def test_reason_counts_follow_writes_and_are_built_for_an_older_store(
    tmp_path: Path, keys: Keys, clock: ManualClock
) -> None:
    path = tmp_path / "s"
    store = open_store(path, clock)
    gz = Authority(store, keys.gz, keys.ring, clock=clock)
    now = int(clock())
    a, b, c = card(), card(), card()
    gz.publish([Revocation(a, 1, now, now + 10), Revocation(b, 2, now), Revocation(c, 2, now)])
    gz.publish([Revocation(c, 5, now)], [b])
    counts = store.reason_counts.by_reason()
    assert (counts[Reason.TEMPORARY_LOSS], counts[Reason.LOSS], counts[Reason.REPLACED]) == (
        1,
        0,
        1,
    )
    clock.now = now + 10
    store.sweep()
    assert store.reason_counts.by_reason()[Reason.TEMPORARY_LOSS] == 0
    # A store from before the counts (no marker): counted once at open.
    with store.env.begin(write=True) as txn:
        txn.delete(BUILT, db=store._meta)
        txn.drop(store.reason_counts.db, delete=False)
    store.close()
    reopened = open_store(path, clock)
    assert reopened.reason_counts.by_reason()[Reason.REPLACED] == 1
    assert sum(reopened.reason_counts.by_reason().values()) == reopened.entry_count() == 1
    reopened.close()


def test_lapse_metrics_at_the_edges_of_the_window(
    store: RevocationStore, gz: Authority, clock: ManualClock
) -> None:
    registry = CollectorRegistry()
    metrics = NodeMetrics(registry)
    metrics.watch_lapses(store, clock)
    now = int(clock())
    edge, beyond, past = card(), card(), card()
    gz.publish(
        [
            Revocation(edge, 1, now, now + LAPSE_WINDOW),  # the window is (now, now + 24 h]
            Revocation(beyond, 1, now, now + LAPSE_WINDOW + 1),
            Revocation(past, 1, now, now + 5),
        ]
    )
    value = registry.get_sample_value
    assert value("blacklist_entries", {"reason": "temporary_loss"}) == 3
    assert value("blacklist_entries", {"reason": "loss"}) == 0
    assert value("blacklist_entries_lapsing_next_24h") == 2
    assert value("blacklist_entries_lapsed_unswept") == 0
    clock.now = now + 5  # `past` is over at its end time: lapsed, not lapsing
    assert value("blacklist_entries_lapsing_next_24h") == 2
    assert value("blacklist_entries_lapsed_unswept") == 1
    store.sweep()
    assert value("blacklist_entries_lapsed_unswept") == 0
    assert value("blacklist_entries", {"reason": "temporary_loss"}) == 2


def test_a_follower_counts_swept_entries_as_stale_and_rebuilds(
    tmp_path: Path, keys: Keys, clock: ManualClock
) -> None:
    store = open_store(tmp_path / "s", clock)
    now = int(clock())
    cards = [card() for _ in range(4)]
    Authority(store, keys.gz, keys.ring, clock=clock).publish(
        [Revocation(c, 1, now, now + 10 * (i + 1)) for i, c in enumerate(cards)]
    )
    follower = StoreFollower(
        tmp_path / "s", env=store.env, background=False, stale_fraction=0.5, stale_floor=0
    )
    rebuilds = follower.rebuilds
    clock.now = now + 10
    assert store.sweep() == 1
    follower.refresh()
    assert (follower.stale, follower.rebuilds) == (1, rebuilds)  # 1 of 3: under half
    clock.now = now + 30
    assert store.sweep() == 2
    follower.refresh()  # 3 stale for 1 entry: rebuilt from LMDB, exact again
    assert (follower.rebuilds, follower.stale, len(follower.index)) == (rebuilds + 1, 0, 1)
    checker = FollowingChecker(follower, keys.ring, clock=clock)
    assert checker.check(cards[3]).status is CheckStatus.REVOKED
    assert checker.check(cards[0]).status is CheckStatus.NOT_REVOKED
    follower.close()
    store.close()
