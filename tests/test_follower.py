"""A follower (blacklist/follower.py) against a real LMDB written by a RevocationStore.

py-lmdb allows one handle per environment and process, so here the follower reads through
the writer's handle: the same read transactions a worker process makes through its own
(tests/test_workers.py runs real processes). The property that matters: after any refresh,
no card the writer holds is reported valid by the follower (no false negatives), across
deltas, reinstatements, pruned history, snapshots and index rebuilds.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from blacklist.authority import PsamChanges, Revocation, build_delta
from blacklist.certs import issue_certificate
from blacklist.checker import CheckStatus
from blacklist.clock import ManualClock
from blacklist.delta import sign_snapshot
from blacklist.entry import Reason
from blacklist.follower import FollowingChecker, ReadOnlyStore, StoreFollower
from blacklist.signing import Keyring, SigningKey
from blacklist.store import RevocationStore
from blacklist.sync.freshness import sign_statement
from blacklist.trust import CertifiedKeys, TrustAnchor, certified_keys_from_records

GZ = SigningKey.generate("440100", ["4401"])
SZ = SigningKey.generate("440300", ["4403"])
KEYS = Keyring([GZ.trusted(), SZ.trusted()])
T = 1_700_000_000


def card(i: int, region: str = "440100") -> str:
    return f"{region}D156000005{i * 7919 + 1:016X}"


class Pair:
    """A writer store, a source store that can sign snapshots of what it holds, and a
    follower reading the writer's environment."""

    def __init__(self, tmp: Path, *, retain: int = 1000, width: int | None = None) -> None:
        self.clock = ManualClock(T)
        self.writer = RevocationStore(
            tmp / "w", clock=self.clock, map_size=1 << 26, retain_deltas=retain
        )
        self.source = RevocationStore(tmp / "s", clock=self.clock, map_size=1 << 26)
        self.width = width
        self.follower = StoreFollower(
            tmp / "w", env=self.writer.env, background=False, fingerprint_width=width
        )
        self.checker = FollowingChecker(self.follower, KEYS, clock=self.clock)

    def publish(
        self,
        revoke: list[str] = [],  # noqa: B006 - never mutated
        reinstate: list[str] = [],  # noqa: B006
        *,
        key: SigningKey = GZ,
        psams: PsamChanges | None = None,
        to_writer: bool = True,
    ) -> None:
        kwargs = {"psams": psams} if psams is not None else {}
        delta = build_delta(
            key,
            self.source.head(key.publisher),
            [Revocation(c, Reason.LOSS, T) for c in revoke],
            reinstate,
            T,
            **kwargs,  # type: ignore[arg-type]
        )
        self.source.apply(delta.to_bytes(), KEYS)
        if to_writer:
            self.writer.apply(delta.to_bytes(), KEYS)

    def snapshot_to_writer(self, key: SigningKey = GZ) -> None:
        entries, versions = self.source.feed_entries(key.publisher)
        psams, psam_versions = self.source.psams.feed_psams(key.publisher)
        snap = sign_snapshot(
            key,
            self.source.head(key.publisher),
            entries,
            versions,
            T,
            psams=psams,
            psam_versions=psam_versions,
        )
        self.writer.apply(snap.to_bytes(), KEYS)

    def status(self, card_id: str) -> CheckStatus:
        return self.checker.check(card_id).status

    def close(self) -> None:
        self.follower.close()
        self.writer.close()
        self.source.close()


@pytest.fixture
def pair(tmp_path: Path) -> Pair:
    return Pair(tmp_path)


def test_a_revocation_is_seen_at_the_next_check(pair: Pair) -> None:
    assert pair.status(card(1)) is CheckStatus.NO_DATA
    pair.publish([card(1)])
    result = pair.checker.check(card(1))
    assert result.status is CheckStatus.REVOKED and result.feed_version == 1
    assert pair.status(card(2)) is CheckStatus.NOT_REVOKED
    assert pair.follower.feeds["440100"].version == 1
    pair.close()


def test_a_reinstatement_is_refuted_by_lmdb_and_leaves_a_stale_fingerprint(pair: Pair) -> None:
    pair.publish([card(1), card(2)])
    assert pair.status(card(1)) is CheckStatus.REVOKED
    pair.publish(reinstate=[card(1)])
    assert pair.status(card(1)) is CheckStatus.NOT_REVOKED
    assert pair.status(card(2)) is CheckStatus.REVOKED
    assert pair.follower.stale == 1
    pair.close()


def test_refresh_is_a_no_op_until_the_writer_commits(pair: Pair) -> None:
    pair.publish([card(1)])
    assert pair.follower.refresh()
    epoch = pair.follower.epoch
    assert not pair.follower.refresh()
    assert pair.follower.epoch == epoch
    statement = sign_statement(GZ, pair.writer.head("440100"), T + 60)
    pair.writer.accept_statements([statement], KEYS, T + 60, 0)
    assert pair.follower.refresh()
    assert pair.follower.feeds["440100"].checked_at == T + 60
    pair.close()


def test_pruned_history_falls_back_to_the_stored_entries(tmp_path: Path) -> None:
    pair = Pair(tmp_path, retain=2)
    pair.follower.refresh()
    for i in range(6):  # the follower misses five deltas, of which only two are retained
        pair.publish([card(i)])
    builds = pair.follower.rebuilds
    assert all(pair.status(card(i)) is CheckStatus.REVOKED for i in range(6))
    assert pair.follower.rebuilds == builds  # caught up from the feed's entries, no rebuild
    pair.close()


def test_a_snapshot_that_replaces_the_feed_is_caught_up(pair: Pair) -> None:
    pair.publish([card(1)])
    assert pair.status(card(1)) is CheckStatus.REVOKED
    pair.publish([card(2), card(3)], [card(1)], to_writer=False)
    pair.publish([card(4)], to_writer=False)
    pair.snapshot_to_writer()
    assert [pair.status(card(i)) for i in range(1, 5)] == [
        CheckStatus.NOT_REVOKED,
        *[CheckStatus.REVOKED] * 3,
    ]
    assert pair.follower.feeds["440100"].version == 3
    pair.close()


def test_stale_fingerprints_trigger_a_rebuild_inline(pair: Pair) -> None:
    pair.follower.stale_floor = 3
    pair.publish([card(i) for i in range(10)])
    pair.checker.check(card(0))
    builds = pair.follower.rebuilds
    pair.publish(reinstate=[card(i) for i in range(5)])
    assert pair.status(card(9)) is CheckStatus.REVOKED
    assert pair.follower.rebuilds == builds + 1 and pair.follower.stale == 0
    assert len(pair.follower.index) == 5
    pair.close()


def test_a_background_rebuild_is_swapped_in_and_caught_up(pair: Pair) -> None:
    pair.follower.background = True
    pair.follower.stale_floor = 3
    pair.publish([card(i) for i in range(10)])
    pair.checker.check(card(0))
    pair.publish(reinstate=[card(i) for i in range(5)])
    pair.checker.check(card(9))  # starts the rebuild
    pair.follower.wait_for_rebuild()
    pair.publish([card(20)])  # after the rebuild's snapshot: the swap must catch this up
    builds = pair.follower.rebuilds
    assert pair.status(card(20)) is CheckStatus.REVOKED
    assert pair.follower.rebuilds == builds + 1
    assert len(pair.follower.index) == 6
    pair.close()


def test_psam_denials_and_feeds_follow(pair: Pair) -> None:
    psam = "440100" + "00000000000000A1"
    assert pair.checker.psam_denial(psam) is None
    pair.publish([card(1)], psams=PsamChanges(denials=[Revocation(psam, Reason.LOSS, T)]))
    denial = pair.checker.psam_denial(psam)  # the first call after the write sees it
    assert denial is not None and denial.publisher == "440100"
    pair.close()


def test_trust_records_from_a_feed_change_the_followers_keys(tmp_path: Path) -> None:
    """A certificate arriving in the province's feed certifies the city's key: the
    follower's checker then answers 4401 cards for 440100 (before: for 440000)."""
    root = SigningKey.generate("000000", [])
    gd = SigningKey.generate("440000", ["44"])
    gz = SigningKey.generate("440100", ["4401"])
    gd_cert = issue_certificate(root, gd, ["44"], T - 86_400, T + 86_400, serial=1)
    gz_cert = issue_certificate(gd, gz, ["4401"], T - 86_400, T + 86_400, serial=2)

    def keys_for(records: list[bytes]) -> CertifiedKeys:
        return certified_keys_from_records(TrustAnchor.of(root), [[gd_cert]], records, [], T)

    # The writer's clock is the certificates' (valid a day around T): acceptance checks a
    # certificate at the node's clock too (issue #11).
    writer = RevocationStore(tmp_path / "w", map_size=1 << 26, clock=ManualClock(T))
    follower = StoreFollower(tmp_path / "w", env=writer.env, background=False)
    checker = FollowingChecker(follower, keys_for([]), keys_for=keys_for)
    writer.apply(build_delta(gd, writer.head("440000"), issued_at=T).to_bytes(), keys_for([]))
    assert checker.check(card(1)).publisher == "440000"
    trust = build_delta(gd, writer.head("440000"), issued_at=T, trust=[gz_cert.to_bytes()])
    writer.apply(trust.to_bytes(), keys_for([]))
    answer = checker.check(card(1))
    assert (answer.publisher, answer.status) == ("440100", CheckStatus.NO_DATA)
    assert follower.trust_version == 1
    follower.close()
    writer.close()


def test_a_follower_refuses_to_write(pair: Pair) -> None:
    delta = build_delta(GZ, pair.follower.head("440100"), [Revocation(card(1), Reason.LOSS, T)])
    with pytest.raises(ReadOnlyStore):
        pair.follower.apply(delta.to_bytes(), KEYS)
    with pytest.raises(ReadOnlyStore):
        pair.follower.save_index()
    pair.close()


def test_a_follower_opened_later_uses_the_saved_index_of_the_same_generation(
    tmp_path: Path,
) -> None:
    pair = Pair(tmp_path)
    pair.publish([card(1)])
    pair.writer.save_index()
    pair.follower.close()
    follower = StoreFollower(tmp_path / "w", env=pair.writer.env)
    assert follower.rebuilds == 1 and card(1) and len(follower.index) == 1
    assert FollowingChecker(follower, KEYS).check(card(1)).status is CheckStatus.REVOKED
    pair.close()


def test_randomised_writer_and_follower_never_disagree_on_a_revoked_card(tmp_path: Path) -> None:
    """Random deltas, reinstatements, snapshots and refreshes at random moments; 4-bit
    fingerprints so that most cards collide."""
    rng = random.Random(6)
    pair = Pair(tmp_path, retain=3, width=4)
    pair.follower.stale_floor = 8
    pool = [card(i) for i in range(40)] + [card(i, "440300") for i in range(10)]
    for _ in range(150):
        move = rng.random()
        if move < 0.6:
            held = [c for c in pool if pair.writer.lookup_all(_key(c))]
            key = GZ if rng.random() < 0.8 else SZ
            mine = [c for c in pool if c.startswith(key.prefixes[0])]
            revoke = rng.sample(mine, rng.randint(0, 4))
            reinstate = [c for c in held if c in mine and c not in revoke and rng.random() < 0.2]
            pair.publish(revoke, reinstate, key=key)
        elif move < 0.7:
            for _ in range(rng.randint(1, 3)):
                pair.publish(rng.sample(pool[:40], 2), to_writer=False)
            pair.snapshot_to_writer()
        elif move < 0.8:
            pair.clock.advance(rng.randint(0, 9))
            statements = [
                sign_statement(k, pair.writer.head(k.publisher), int(pair.clock()))
                for k in (GZ, SZ)
            ]
            pair.writer.accept_statements(statements, KEYS, pair.clock(), 0)
        else:
            _agree(pair, pool)
    _agree(pair, pool)
    pair.close()


def _key(card_id: str) -> bytes:
    from blacklist.fastpath import card_key

    return card_key(card_id.encode())


def _agree(pair: Pair, pool: list[str]) -> None:
    for c in pool:
        truth = pair.writer.lookup(_key(c)) is not None
        assert (pair.status(c) is CheckStatus.REVOKED) == truth, c


class FollowerVsWriter(RuleBasedStateMachine):
    """The same property as a hypothesis state machine (STYLE.md: pyroaring's tests)."""

    POOL: ClassVar[list[str]] = [card(i) for i in range(24)]

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.pair = Pair(Path(tempfile.mkdtemp(prefix="follow-")), retain=2, width=3)
        self.pair.follower.stale_floor = 4

    @rule(
        revoke=st.sets(st.sampled_from(POOL), max_size=4),
        reinstate=st.sets(st.sampled_from(POOL), max_size=3),
        to_writer=st.booleans(),
    )
    def publish(self, revoke: set[str], reinstate: set[str], to_writer: bool) -> None:
        self.pair.publish(sorted(revoke), sorted(reinstate - revoke), to_writer=to_writer)
        if not to_writer:
            self.pair.snapshot_to_writer()

    @rule(card_id=st.sampled_from(POOL))
    def check_one(self, card_id: str) -> None:
        truth = self.pair.writer.lookup(_key(card_id)) is not None
        assert (self.pair.status(card_id) is CheckStatus.REVOKED) == truth

    @invariant()
    def index_holds_every_stored_card(self) -> None:
        self.pair.follower.refresh()
        for c in self.POOL:
            if self.pair.writer.lookup(_key(c)) is not None:
                assert self.pair.status(c) is CheckStatus.REVOKED

    def teardown(self) -> None:
        self.pair.close()


TestFollowerVsWriter = FollowerVsWriter.TestCase
TestFollowerVsWriter.settings = settings(max_examples=25, stateful_step_count=15, deadline=None)
