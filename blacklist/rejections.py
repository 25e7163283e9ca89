"""Why a delta or snapshot was refused: one type per cause.

Each carries ``cause``, a short stable label used as the metrics label value, and a message
naming the failing value. A rejected delta changes nothing.

``tampering`` says what a refusal means (issue #11). True: only a forger, a thief of a dead
key, a broken signer or a lying relay produces it (bad signature, fork, out of scope, dead
key, backdated, ...): counted in ``blacklist_deltas_rejected_total``, behind the critical
alert. False: normal on a network with two paths and restarts — a copy of what is held
(``duplicate``), an older copy (``replay``), one that arrives before its predecessor
(``version_gap``, the node is behind and pulls): counted apart.
"""

from __future__ import annotations

from typing import ClassVar

from blacklist.errors import BlacklistError


class DeltaRejected(BlacklistError):
    cause: ClassVar[str] = "rejected"
    tampering: ClassVar[bool] = True


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
    """The version is at or below the head, and this node holds nothing to compare it with
    (an older copy, or a rollback snapshot): stale, not applied."""

    cause = "replay"
    tampering = False


class DuplicateDelta(ReplayedDelta):
    """A copy of a delta (or snapshot) this node holds: same version, same digest."""

    cause = "duplicate"


class VersionGap(DeltaRejected):
    """The version skips ahead of head + 1: deltas are missing in between (this node is
    behind; it pulls)."""

    cause = "version_gap"
    tampering = False


class Backdated(DeltaRejected):
    """``issued_at`` is before the head's: time in a feed never goes back, so a dead key
    cannot date its work to before its revocation or expiry."""

    cause = "backdated"


class FromTheFuture(DeltaRejected):
    """``issued_at`` is further ahead of this node's clock than the configured skew."""

    cause = "clock_skew"


class VersionCeiling(DeltaRejected):
    """The version is above the feed ceiling (a feed must always be continuable)."""

    cause = "version_ceiling"


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


class BadEndTime(DeltaRejected):
    """An entry's end time breaks the lapse rules (issue #17): on a reason that does not
    lapse, past the node's longest lapse period, or (a delta) already over when issued."""

    cause = "bad_end_time"


ALL_REJECTIONS: tuple[type[DeltaRejected], ...] = (
    MalformedDelta,
    UnknownKey,
    KeyRevokedRejection,
    BadSignature,
    KeyNotAllowed,
    ReplayedDelta,
    DuplicateDelta,
    VersionGap,
    ForkedFeed,
    DuplicateCard,
    BadTrustRecord,
    BadEndTime,
    Backdated,
    FromTheFuture,
    VersionCeiling,
)
ALL_CAUSES: tuple[str, ...] = tuple(c.cause for c in ALL_REJECTIONS)
# The causes only tampering produces (behind the critical alert), and the normal ones.
TAMPERING_CAUSES: tuple[str, ...] = tuple(c.cause for c in ALL_REJECTIONS if c.tampering)
NORMAL_CAUSES: tuple[str, ...] = tuple(c.cause for c in ALL_REJECTIONS if not c.tampering)
