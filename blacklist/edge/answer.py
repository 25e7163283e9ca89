"""An edge replica's answer: the node's four-way answer (blacklist/checker.py), with the
application's freshness policy on top.

``max_feed_age`` (seconds, or None for no policy) is the gateway's rule for a lost link:
an answer from a feed whose signed freshness (``feed_age_seconds``, measured from the
newest head statement or head delta the replica verified; blacklist/sync/freshness.py) is
*older* than ``max_feed_age`` says STALE, so that the terminal can refuse or fall back. An
age exactly at the limit is still fresh. STALE never hides what the copy says:
``copy_status`` is the four-way answer of the copy the replica holds, with its reason and
times when REVOKED. Answers without a feed (UNKNOWN_ISSUER, NO_DATA) have no age and are
never STALE.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from blacklist.checker import BatchResult, CheckResult, CheckStatus
from blacklist.entry import Entry, Reason


class EdgeStatus(enum.IntEnum):
    """CheckStatus, plus STALE (the same numbers as CardStatusCode in types.proto)."""

    NOT_REVOKED = 1
    REVOKED = 2
    UNKNOWN_ISSUER = 3
    NO_DATA = 4
    STALE = 6  # the copy is older than the application's max_feed_age: see copy_status
    # (5 is the API's INVALID_CARD_ID, a packed batch's malformed id, never an answer here)


NEVER = float("inf")  # fresh_until of an answer that never turns STALE (one object)
_FROM_CHECK = {s: EdgeStatus(int(s)) for s in CheckStatus}
_AGED = (CheckStatus.NOT_REVOKED, CheckStatus.REVOKED)  # the answers that come from a feed


class StalePolicy:
    """``max_feed_age`` as a pure rule over a feed's signed time and the clock's now."""

    __slots__ = ("max_feed_age",)

    def __init__(self, max_feed_age: float | None) -> None:
        if max_feed_age is not None and not max_feed_age > 0:
            raise ValueError(
                f"max_feed_age must be a positive number of seconds, got {max_feed_age!r}"
            )
        self.max_feed_age = max_feed_age

    def fresh_until(self, checked_at: float | None) -> float:
        """Until when an answer from a feed fresh as of ``checked_at`` is not STALE."""
        if self.max_feed_age is None or checked_at is None:
            return NEVER
        return checked_at + self.max_feed_age

    def stale(self, result: CheckResult, now: float) -> bool:
        return result.status in _AGED and now > self.fresh_until(result.feed_checked_at)


class EdgeAnswer:
    """One card's answer. ``copy`` is the replica's four-way CheckResult; ``status`` is
    its status, or STALE. Slotted and built once per feed answer (see EdgeReplica.check)."""

    __slots__ = ("copy", "good_until", "status")

    def __init__(self, status: EdgeStatus, copy: CheckResult, good_until: float) -> None:
        self.status = status
        self.copy = copy
        # Until when this answer stays right for this copy: a fresh one until it turns
        # STALE; a STALE one for good (NEVER: only a newer copy, a new CheckResult, moves it).
        self.good_until = good_until

    def __repr__(self) -> str:
        return f"EdgeAnswer({self.status.name}, copy={self.copy!r})"

    @property
    def copy_status(self) -> EdgeStatus:
        """What the copy says, STALE or not."""
        return _FROM_CHECK[self.copy.status]

    @property
    def stale(self) -> bool:
        return self.status is EdgeStatus.STALE

    @property
    def revoked(self) -> bool:
        """The copy holds an entry for the card (fresh or STALE)."""
        return self.copy.status is CheckStatus.REVOKED

    @property
    def publisher(self) -> str | None:
        return self.copy.publisher

    @property
    def feed_version(self) -> int:
        return self.copy.feed_version

    @property
    def feed_age_seconds(self) -> float | None:
        return self.copy.feed_age_seconds

    @property
    def entry(self) -> Entry | None:
        return self.copy.entry

    @property
    def reason(self) -> Reason | None:
        return self.copy.reason


def answer_of(result: CheckResult, policy: StalePolicy, now: float) -> EdgeAnswer:
    until = policy.fresh_until(result.feed_checked_at) if result.status in _AGED else NEVER
    if now > until:
        return EdgeAnswer(EdgeStatus.STALE, result, NEVER)
    return EdgeAnswer(_FROM_CHECK[result.status], result, until)


@dataclass(frozen=True, slots=True)
class EdgeBatch:
    """check_many's answers: ``statuses[i]`` is id i's EdgeStatus value (STALE where its
    feed is too old), ``copy`` the replica's BatchResult (what the copy says of each)."""

    statuses: NDArray[np.uint8]
    copy: BatchResult

    def __len__(self) -> int:
        return len(self.statuses)

    def __getitem__(self, i: int) -> EdgeAnswer:
        result = self.copy[i]
        return EdgeAnswer(EdgeStatus(int(self.statuses[i])), result, NEVER)

    def counts(self) -> dict[EdgeStatus, int]:
        tally = np.bincount(self.statuses, minlength=max(EdgeStatus) + 1).tolist()
        return {s: tally[s] for s in EdgeStatus if tally[s]}


def batch_of(result: BatchResult, policy: StalePolicy, now: float) -> EdgeBatch:
    """Mark STALE the ids whose answering feed is older than the policy allows."""
    if policy.max_feed_age is None:
        return EdgeBatch(result.statuses, result)
    stale_feed = np.array([policy.stale(f, now) for f in result.feeds] or [False], bool)
    stale = stale_feed[result.feed_of] & np.isin(result.statuses, _AGED)
    for i, hit in result.revoked.items():  # a revoked id answers from its entry's feed
        stale[i] = policy.stale(hit, now)
    if not stale.any():
        return EdgeBatch(result.statuses, result)
    statuses = result.statuses.copy()
    statuses[stale] = EdgeStatus.STALE
    return EdgeBatch(statuses, result)
