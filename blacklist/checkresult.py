"""What a check answers: a four-way status (never a bool, after crlite's ``contains``), the
feed that answered and its freshness, and for a revoked card its entry; a batch's answers
sized by what is revoked rather than by the batch. Part of the check wing (checker.py)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from blacklist.clock import Clock, system_clock
from blacklist.entry import Entry, Reason
from blacklist.records import decode_entry


class CheckStatus(enum.IntEnum):
    NOT_REVOKED = 1
    REVOKED = 2
    UNKNOWN_ISSUER = 3  # the card's region belongs to no publisher this node knows
    NO_DATA = 4  # a known publisher, but its feed has never arrived here


class CheckResult:
    """One answer. A plain slotted class rather than a frozen dataclass: it is built on every
    revoked answer, and frozen dataclasses cost several times more to construct.

    A REVOKED answer read from LMDB keeps the stored record (``raw``: key, value, canonical id)
    and decodes its :class:`Entry` only when asked (``entry``, ``reason``, ...): an answer
    decodes the fields its caller reads, and one that only asks ``revoked`` decodes none."""

    __slots__ = (
        "_clock",
        "_entry",
        "_raw",
        "feed_checked_at",
        "feed_version",
        "publisher",
        "status",
    )

    def __init__(
        self,
        status: CheckStatus,
        publisher: str | None,
        feed_version: int,
        feed_checked_at: float | None,
        entry: Entry | None = None,
        clock: Clock = system_clock,
        raw: tuple[bytes, bytes, bytes] | None = None,
    ) -> None:
        self.status = status
        self.publisher = publisher  # the feed that answered (None for UNKNOWN_ISSUER)
        self.feed_version = feed_version  # 0 when there is no feed
        # The publisher's signed time as of which this copy is known current (FeedState)
        self.feed_checked_at = feed_checked_at
        self._entry = entry  # set for REVOKED, or decoded from ``raw`` on first use
        self._raw = raw
        self._clock = clock

    @property
    def entry(self) -> Entry | None:
        """The revoked entry (REVOKED only)."""
        entry = self._entry
        if entry is None and self._raw is not None:
            key, value, canon = self._raw
            entry = self._entry = decode_entry(key, value, canon.decode("ascii"))
        return entry

    def __repr__(self) -> str:
        return (
            f"CheckResult({self.status.name}, publisher={self.publisher}, "
            f"feed_version={self.feed_version}, entry={self.entry})"
        )

    @property
    def revoked(self) -> bool:
        return self.status is CheckStatus.REVOKED

    @property
    def reason(self) -> Reason | None:
        return self.entry.reason if self.entry else None

    @property
    def effective_time(self) -> int | None:
        return self.entry.effective_time if self.entry else None

    @property
    def expires_at(self) -> int | None:
        """When a REVOKED answer's entry lapses by itself (None: it does not)."""
        return self.entry.expires_at if self.entry else None

    @property
    def feed_age_seconds(self) -> float | None:
        """Seconds since the newest time the publisher signed at which its head was one
        this node holds (a head statement or the head delta; blacklist/sync/freshness.py)."""
        if self.feed_checked_at is None:
            return None
        return max(0.0, self._clock() - self.feed_checked_at)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Answers for a batch, sized by what is revoked rather than by the batch.

    ``statuses[i]`` is every id's CheckStatus value; only revoked ids have an object in
    ``revoked``; the feed that answered id ``i`` is ``feeds[feed_of[i]]``.
    """

    statuses: NDArray[np.uint8]
    feed_of: NDArray[np.intp]
    feeds: list[CheckResult]  # one per distinct region in the batch: its "not revoked" answer
    revoked: dict[int, CheckResult]

    def __len__(self) -> int:
        return len(self.statuses)

    def __getitem__(self, i: int) -> CheckResult:
        hit = self.revoked.get(i)
        return hit if hit is not None else self.feeds[int(self.feed_of[i])]

    def counts(self) -> dict[CheckStatus, int]:
        tally = np.bincount(self.statuses, minlength=len(CheckStatus) + 1).tolist()
        return {s: tally[s] for s in CheckStatus if tally[s]}

    def answering_feeds(self) -> list[CheckResult]:
        """One answer per feed that answered some id of this batch (for its freshness)."""
        used = np.flatnonzero(np.bincount(self.feed_of, minlength=len(self.feeds))).tolist()
        return [self.feeds[i] for i in used]
