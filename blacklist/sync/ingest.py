"""What became of one signed item offered to a node: the ingest decision, pure.

Acceptance (:mod:`blacklist.sync.accept`) says yes, or raises the refusal that forbids the
item. Ingest turns that into what the node does next, in one place, h11-style:

    refusal              outcome     the node...
    (none)               APPLIED     fans the delta out to its children, and up unless it
                                     came from there
    DuplicateDelta       DUPLICATE   nothing: a copy of what it holds (push and pull overlap;
                                     a child re-pushing after a reconnect)
    ReplayedDelta        STALE       nothing: older than its head, no copy to compare with
    VersionGap           BEHIND      pulls now: something before it has not arrived yet
    any other            REJECTED    counts it by cause (only tampering produces these:
                                     the critical alert's counter), logs it, keeps serving

Only REJECTED is an alarm (issue #11: ordinary restarts must not raise the tamper alarm).
"""

from __future__ import annotations

import enum

from blacklist.rejections import DeltaRejected, DuplicateDelta, ReplayedDelta, VersionGap


class Outcome(enum.Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    STALE = "stale"
    BEHIND = "behind"
    REJECTED = "rejected"

    @property
    def held(self) -> bool:
        """The offering side may forget it: this node holds it or something newer."""
        return self in (Outcome.APPLIED, Outcome.DUPLICATE, Outcome.STALE)


def outcome_of(refusal: DeltaRejected | None) -> Outcome:
    """The ingest outcome of an acceptance result (None: accepted)."""
    if refusal is None:
        return Outcome.APPLIED
    if isinstance(refusal, DuplicateDelta):
        return Outcome.DUPLICATE
    if isinstance(refusal, ReplayedDelta):
        return Outcome.STALE
    if isinstance(refusal, VersionGap):
        return Outcome.BEHIND
    return Outcome.REJECTED
