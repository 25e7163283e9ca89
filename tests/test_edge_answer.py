"""The edge replica's freshness policy (blacklist/edge/answer.py) at, below and above
``max_feed_age``, through ``EdgeReplica.check`` and ``check_many`` on a store in this
process (``start=False``: no sync thread) with a manual clock, so that the cached fresh
answer is proven to turn STALE on time."""

from __future__ import annotations

from pathlib import Path

import pytest

from blacklist.authority import Revocation, build_delta
from blacklist.clock import ManualClock
from blacklist.edge import EdgeReplica, EdgeStatus, StalePolicy
from blacklist.entry import Reason
from tests.conftest import Keys, card

GZ = "440100"
ISSUED = 1_700_000_000
MAX_AGE = 600.0


@pytest.fixture
def replica(tmp_path: Path, keys: Keys) -> EdgeReplica:
    clock = ManualClock(ISSUED)
    replica = EdgeReplica.open(
        tmp_path / "edge",
        upstreams=["127.0.0.1:9"],
        trusted_keys=list(keys.ring.values()),
        max_feed_age=MAX_AGE,
        clock=clock,
        start=False,
        map_size=1 << 28,
    )
    return replica


def publish(replica: EdgeReplica, keys: Keys, cards: list[str]) -> None:
    delta = build_delta(
        keys.gz,
        replica.store.head(GZ),
        [Revocation(c, Reason.LOSS, ISSUED - 10) for c in cards],
        issued_at=int(replica.clock()),
    )
    replica.store.apply(delta.to_bytes(), replica.keys)


def test_an_answer_turns_stale_just_past_max_feed_age(replica: EdgeReplica, keys: Keys) -> None:
    revoked, fine = card(), card()
    publish(replica, keys, [revoked])
    clock = replica.clock
    assert isinstance(clock, ManualClock)
    with replica:
        assert replica.check(fine).status is EdgeStatus.NOT_REVOKED  # cached from here on
        clock.advance(MAX_AGE - 1)  # below
        assert replica.check(fine).status is EdgeStatus.NOT_REVOKED
        clock.advance(1)  # at: still fresh
        assert replica.check(fine).status is EdgeStatus.NOT_REVOKED
        assert replica.check(revoked).status is EdgeStatus.REVOKED
        assert replica.check_many([fine, revoked]).statuses.tolist() == [1, 2]
        clock.advance(0.5)  # above
        stale = replica.check(fine)
        assert (stale.status, stale.copy_status, stale.stale) == (
            EdgeStatus.STALE,
            EdgeStatus.NOT_REVOKED,
            True,
        )
        hit = replica.check(revoked)
        assert (hit.status, hit.copy_status, hit.revoked) == (
            EdgeStatus.STALE,
            EdgeStatus.REVOKED,
            True,
        )
        assert hit.reason is Reason.LOSS and hit.feed_age_seconds == MAX_AGE + 0.5
        batch = replica.check_many([fine, revoked, card("510100")])
        assert batch.statuses.tolist() == [EdgeStatus.STALE, EdgeStatus.STALE, 3]
        assert batch[1].copy_status is EdgeStatus.REVOKED
        assert batch.counts() == {EdgeStatus.STALE: 2, EdgeStatus.UNKNOWN_ISSUER: 1}
        # A newer signed time (here a new delta) makes the copy fresh again.
        publish(replica, keys, [card()])
        assert replica.check(fine).status is EdgeStatus.NOT_REVOKED


def test_answers_without_a_feed_are_never_stale(replica: EdgeReplica) -> None:
    clock = replica.clock
    assert isinstance(clock, ManualClock)
    with replica:
        clock.advance(10 * MAX_AGE)
        assert replica.check(card()).status is EdgeStatus.NO_DATA  # 440100: known, no feed
        assert replica.check(card("510100")).status is EdgeStatus.UNKNOWN_ISSUER


def test_no_policy_never_says_stale(tmp_path: Path, keys: Keys) -> None:
    clock = ManualClock(ISSUED)
    with EdgeReplica.open(
        tmp_path / "e",
        upstreams=["127.0.0.1:9"],
        trusted_keys=list(keys.ring.values()),
        clock=clock,
        start=False,
        map_size=1 << 28,
    ) as replica:
        publish(replica, keys, [])
        clock.advance(1e8)
        answer = replica.check(card())
        assert answer.status is EdgeStatus.NOT_REVOKED and answer.feed_age_seconds == 1e8


@pytest.mark.parametrize("bad", [0, -1.0, float("nan")])
def test_a_max_feed_age_that_is_not_positive_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="max_feed_age must be a positive"):
        StalePolicy(bad)


def test_trust_is_the_anchor_or_bare_keys_not_both(tmp_path: Path, keys: Keys) -> None:
    with pytest.raises(ValueError, match="not both"):
        EdgeReplica.open(tmp_path / "e", upstreams=["127.0.0.1:9"], start=False)
    with pytest.raises(ValueError, match="at least one upstream"):
        EdgeReplica.open(
            tmp_path / "e", upstreams=[], trusted_keys=list(keys.ring.values()), start=False
        )
