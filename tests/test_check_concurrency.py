"""The check path under concurrency (issue #15, "hits confirmed cheaply"): every checking
thread keeps one long-lived LMDB read transaction (blacklist/storereader.py), renewed when
the store moves. What must hold, on real LMDB files:

* a card whose revoking delta was committed (and, for the writer's own process, its
  in-memory state followed) before a check starts is REVOKED in that check, in every
  thread, whether another process or another thread of this one wrote it;
* a card whose reinstating delta was committed before a check starts is not REVOKED;
* a thread's transaction is the same one while the store stands still and a newer one as
  soon as it moved; a hit is confirmed by a point get of the answering publisher's key,
  and another publisher's entry (overlapping scopes) or a lapsed one is still found right.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from blacklist.authority import Revocation, build_delta
from blacklist.checker import Checker, CheckStatus
from blacklist.clock import ManualClock
from blacklist.entry import Reason
from blacklist.follower import FollowingChecker, StoreFollower
from blacklist.signing import Keyring, SigningKey
from blacklist.store import RevocationStore
from tests.delta_writer import PUBLISHER, reinstated, revoked

THREADS = 4
DELTAS = 60
T = 1_700_000_000
GZ = SigningKey.generate(PUBLISHER, [PUBLISHER[:4]])
KEYS = Keyring([GZ.trusted()])  # the directory the readers need: 440100 answers for 4401
UNTOUCHED = [f"440100D156000007{i:016X}" for i in range(50)]


class Timeline:
    """When each change was known committed (monotonic seconds), and what threads saw."""

    def __init__(self) -> None:
        self.revoked_at: dict[str, float] = {}
        self.reinstated_at: dict[str, float] = {}
        self.wrong: list[str] = []
        self.checks = 0
        self.done = threading.Event()

    def committed(self, i: int) -> None:
        now = time.monotonic()
        self.revoked_at[revoked(i)] = now
        if i % 3 == 0:
            self.reinstated_at[reinstated(i // 3)] = now

    def judge(self, check: Callable[[str], CheckStatus], card: str) -> None:
        """Check ``card`` and record an answer that contradicts a change committed before
        the check started (a later change may or may not be seen: either is right)."""
        started = time.monotonic()
        revoked_before = self.revoked_at.get(card, float("inf")) < started
        reinstated_before = self.reinstated_at.get(card, float("inf")) < started
        status = check(card)
        self.checks += 1
        if revoked_before and status is not CheckStatus.REVOKED:
            self.wrong.append(f"{card} revoked before the check, answered {status.name}")
        if reinstated_before and status is CheckStatus.REVOKED:
            self.wrong.append(f"{card} reinstated before the check, answered REVOKED")
        if card in UNTOUCHED and status is not CheckStatus.NOT_REVOKED:
            self.wrong.append(f"{card} never revoked, answered {status.name}")

    def readers(self, check: Callable[[str], CheckStatus]) -> list[threading.Thread]:
        def run(seed: int) -> None:
            n = seed
            while not self.done.is_set():
                n += 1
                known = list(self.revoked_at) + list(self.reinstated_at)
                pool = known[-8:] + UNTOUCHED[n % 50 : n % 50 + 1]
                for card in pool:
                    self.judge(check, card)

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(THREADS)]
        for thread in threads:
            thread.start()
        return threads


def test_threads_never_see_a_committed_change_undone_while_another_process_writes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store"
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.delta_writer", str(path), str(DELTAS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", os.getcwd())},
    )
    assert writer.stdout is not None and writer.stdin is not None
    try:
        assert writer.stdout.readline().strip() == "ready"
        follower = StoreFollower(path)  # this process opens the writer's files read-only
        checker = FollowingChecker(follower, KEYS)
        timeline = Timeline()
        threads = timeline.readers(lambda card: checker.check(card).status)
        for line in writer.stdout:
            if line.startswith("applied "):
                timeline.committed(int(line.split()[1]))
            elif line.strip() == "done":
                break
        time.sleep(0.2)  # the readers go on a moment past the last commit
        timeline.done.set()
        for thread in threads:
            thread.join(timeout=30)
        assert timeline.wrong == []
        assert len(timeline.revoked_at) == DELTAS and timeline.checks > DELTAS
        for i in range(DELTAS):  # and, once all is committed, every thread agrees
            assert checker.check(revoked(i)).status is CheckStatus.REVOKED
        assert checker.check(reinstated(0)).status is CheckStatus.NOT_REVOKED
        follower.close()
    finally:
        writer.stdin.close()
        writer.wait(timeout=30)


def test_threads_never_see_a_committed_change_undone_while_a_writer_thread_applies(
    tmp_path: Path,
) -> None:
    """The writer's own process (a node, or an edge replica): checks on several threads
    share the Checker while another thread applies; each change counts as committed once
    ``apply`` has returned (its in-memory state followed the commit)."""
    store = RevocationStore(tmp_path / "w", map_size=1 << 27)
    first = [Revocation(reinstated(j), Reason.LOSS, T) for j in range(DELTAS // 3 + 1)]
    store.apply(build_delta(GZ, store.head(PUBLISHER), first, (), T).to_bytes(), KEYS)
    checker = Checker(store, KEYS)
    timeline = Timeline()
    threads = timeline.readers(lambda card: checker.check(card).status)
    for i in range(DELTAS):
        back = [reinstated(i // 3)] if i % 3 == 0 else []
        revoke = [Revocation(revoked(i), Reason.LOSS, T)]
        store.apply(build_delta(GZ, store.head(PUBLISHER), revoke, back, T).to_bytes(), KEYS)
        timeline.committed(i)
        time.sleep(0.002)  # let the readers in between applies
    timeline.done.set()
    for thread in threads:
        thread.join(timeout=30)
    assert timeline.wrong == []
    assert timeline.checks > DELTAS
    batch = checker.check_many([revoked(i) for i in range(DELTAS)])
    assert batch.counts() == {CheckStatus.REVOKED: DELTAS}
    store.close()


def test_a_thread_keeps_its_transaction_until_the_store_moves(tmp_path: Path) -> None:
    store = RevocationStore(tmp_path / "w", map_size=1 << 26)
    checker = Checker(store, KEYS)
    apply = store.apply
    apply(build_delta(GZ, store.head(PUBLISHER), [Revocation(revoked(0), Reason.LOSS, T)]), KEYS)
    assert checker.check(revoked(0)).feed_version == 1
    first = store.current_txn()
    first_id = first.id()
    assert store.current_txn() is first  # the store stood still: the same transaction
    checker.check(revoked(0))
    assert store.current_txn() is first
    apply(build_delta(GZ, store.head(PUBLISHER), [Revocation(revoked(1), Reason.LOSS, T)]), KEYS)
    answer = checker.check(revoked(1))  # renewed: it sees the new commit
    assert answer.status is CheckStatus.REVOKED and answer.feed_version == 2
    second = store.current_txn()
    assert second is not first and second.id() > first_id  # the old one was ended
    other: list[object] = []  # another thread has a transaction of its own
    worker = threading.Thread(target=lambda: other.append(store.current_txn()))
    worker.start()
    worker.join()
    assert other[0] is not second
    store.release_txn()
    assert store.current_txn() is not second  # released: the next one is new
    store.close()


def test_a_follower_thread_renews_before_every_check(tmp_path: Path) -> None:
    """Another process writes, so no in-process epoch tells a follower the store moved:
    each check renews the thread's transaction and catches up to exactly it."""
    store = RevocationStore(tmp_path / "w", map_size=1 << 26)
    apply = store.apply
    apply(build_delta(GZ, store.head(PUBLISHER), [Revocation(revoked(0), Reason.LOSS, T)]), KEYS)
    follower = StoreFollower(store.path, env=store.env, background=False)
    checker = FollowingChecker(follower, KEYS)
    assert checker.check(revoked(1)).status is CheckStatus.NOT_REVOKED
    apply(build_delta(GZ, store.head(PUBLISHER), [Revocation(revoked(1), Reason.LOSS, T)]), KEYS)
    answer = checker.check(revoked(1))
    assert answer.status is CheckStatus.REVOKED and answer.feed_version == 2
    assert follower.current_txn().id() == store.current_txn().id()  # the same snapshot
    follower.close()
    store.close()


# ------------------------------------------------------------------ the point get's fallback
PROVINCE = SigningKey.generate("440000", ["44"])


def _overlap(tmp_path: Path, clock: ManualClock | None = None) -> RevocationStore:
    return RevocationStore(tmp_path / "o", map_size=1 << 26, clock=clock or ManualClock(T))


@pytest.mark.parametrize("batch", [False, True])
def test_another_publishers_entry_is_found_behind_the_point_get(
    tmp_path: Path, batch: bool
) -> None:
    """The city answers for 4401, but the entry for this 4401 card is the province's (two
    scopes overlap): the point get of the city's key misses, the walk finds the province's."""
    keys = Keyring([GZ.trusted(), PROVINCE.trusted()])
    store = _overlap(tmp_path)
    card = revoked(5)
    delta = build_delta(PROVINCE, store.head("440000"), [Revocation(card, Reason.LOSS, T)])
    store.apply(delta, keys)
    checker = Checker(store, keys)
    answer = checker.check_many([card])[0] if batch else checker.check(card)
    assert answer.status is CheckStatus.REVOKED
    assert answer.publisher == "440000" and answer.entry is not None
    assert answer.entry.publisher == "440000" and answer.feed_version == 1
    store.close()


def test_a_lapsed_entry_of_the_answering_publisher_yields_to_a_live_one(tmp_path: Path) -> None:
    """The city's own entry for the card has lapsed (issue #17): the point get finds it over,
    and the province's live entry for the same card answers; once that is gone too, the card
    is valid."""
    keys = Keyring([GZ.trusted(), PROVINCE.trusted()])
    clock = ManualClock(T)
    store = _overlap(tmp_path, clock)
    card = revoked(6)
    temporary = Revocation(card, Reason.TEMPORARY_LOSS, T, expires_at=T + 100)
    store.apply(build_delta(GZ, store.head(PUBLISHER), [temporary], (), T), keys)
    checker = Checker(store, keys, clock=clock)
    assert checker.check(card).publisher == PUBLISHER  # the city's, by the point get
    province = build_delta(PROVINCE, store.head("440000"), [Revocation(card, Reason.LOSS, T)])
    store.apply(province, keys)
    clock.advance(100)  # the city's entry is over from this second
    answer = checker.check(card)
    assert answer.status is CheckStatus.REVOKED and answer.publisher == "440000"
    store.apply(build_delta(PROVINCE, store.head("440000"), [], [card], T), keys)
    assert checker.check(card).status is CheckStatus.NOT_REVOKED
    store.close()
