"""Why a delta or snapshot was refused: one type per cause.

Each carries ``cause``, a short stable label used as the metrics label value, and a message
naming the failing value. A rejected delta changes nothing.
"""

from __future__ import annotations

from typing import ClassVar

from blacklist.errors import BlacklistError


class DeltaRejected(BlacklistError):
    cause: ClassVar[str] = "rejected"


class MalformedDelta(DeltaRejected):
    """The bytes do not decode, or the content breaks a rule (unknown reason code, ...)."""

    cause = "malformed"


class UnknownKey(DeltaRejected):
    """Signed with a key id this node does not trust."""

    cause = "unknown_key"


class KeyRevokedRejection(DeltaRejected):
    """Signed with a certified key that its certifier revoked as of a time at or before the
    delta's ``issued_at`` (or whose chain contains a key so revoked)."""

    cause = "key_revoked"


class BadSignature(DeltaRejected):
    """The signature does not verify over the body's digest."""

    cause = "bad_signature"


class KeyNotAllowed(DeltaRejected):
    """The key is trusted, but not for this publisher or for a region in the delta."""

    cause = "key_not_allowed"


class ReplayedDelta(DeltaRejected):
    """The version is at or below the head: a replay or a rollback."""

    cause = "replay"


class VersionGap(DeltaRejected):
    """The version skips ahead of head + 1: deltas are missing in between."""

    cause = "version_gap"


class ForkedFeed(DeltaRejected):
    """The previous-digest does not match the head's digest: two histories for one version."""

    cause = "fork"


class DuplicateCard(DeltaRejected):
    """One card appears more than once in a delta (twice in adds, twice in removes, or both)."""

    cause = "duplicate_card"


class BadTrustRecord(DeltaRejected):
    """A certificate or key revocation in the feed's trust section that does not decode, is
    not issued by the key that signed the delta, does not verify, or certifies beyond the
    signer's own scope."""

    cause = "bad_trust_record"


ALL_CAUSES: tuple[str, ...] = tuple(
    c.cause
    for c in (
        MalformedDelta,
        UnknownKey,
        KeyRevokedRejection,
        BadSignature,
        KeyNotAllowed,
        ReplayedDelta,
        VersionGap,
        ForkedFeed,
        DuplicateCard,
        BadTrustRecord,
    )
)
