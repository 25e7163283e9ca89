"""Deciding whether a signed delta or snapshot may be applied: pure functions, no I/O.

The order of checks follows Let's Encrypt's CRL storer and DESIGN §5, cheapest first, and the
first failure wins and names its cause; nothing is applied on any failure:

1. the container and its fixed header parse (:func:`blacklist.deltadecode.open_envelope`;
   the body is not decoded yet);
2. the key is known and certified for the item's ``issued_at`` *and*, for anything that
   moves a feed forward, still valid at the node's clock; the key's revocation may bound the
   versions it stands behind (:attr:`TrustedKey.max_version`);
3. the signature verifies over the signed bytes; the key signs this publisher's feed;
4. an item at or below the head moves nothing: a held copy, an older copy, or a fork;
5. the version is under the feed ceiling and the key's bound (so a snapshot cannot carry a
   feed past what its key may stand behind, whatever date it claims); time is bounded by
   what the node knows (:class:`FeedPosition`, :class:`AcceptPolicy`): ``issued_at`` never
   goes back from the head's and is at most ``max_skew`` ahead of the node's clock;
6. only now the body is decoded (:func:`blacklist.deltadecode.decode_body`), with every declared
   count bounded by :class:`~blacklist.deltadecode.DecodeLimits`; then every region within the
   key's scope, reasons known, no card twice, PSAMs and trust records by the same rules,
   end times only on reasons that may lapse and within the node's longest lapse period
   (the codec already holds every end time after its effective time):
   :mod:`blacklist.sync.content`;
7. a delta is exactly head + 1 and names the head's digest (DESIGN §5's order: a signed
   out-of-scope delta is counted as out of scope even when it would also leave a gap).

Refusals that are normal on a network with two paths and restarts (a copy of what is held, an
older copy, one that arrives before its predecessor) have ``tampering = False`` and are
counted apart from the rest (:mod:`blacklist.rejections`).

"Who signed it" depends on the keys given: a plain :class:`~blacklist.signing.Keyring` has
no time, so a key is trusted or not; a :class:`~blacklist.trust.CertifiedKeys` resolves the
key as of the item's ``issued_at`` and the node's clock, see :mod:`blacklist.trust`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from blacklist.delta import Delta, Envelope, FeedHead, Kind, Snapshot
from blacklist.deltadecode import DEFAULT_LIMITS, DecodeLimits, decode, decode_body, open_envelope
from blacklist.errors import CodecError
from blacklist.rejections import (
    Backdated,
    BadSignature,
    DuplicateDelta,
    ForkedFeed,
    FromTheFuture,
    KeyNotAllowed,
    KeyRevokedRejection,
    MalformedDelta,
    ReplayedDelta,
    UnknownKey,
    VersionCeiling,
    VersionGap,
)
from blacklist.signing import TrustedKey
from blacklist.sync.content import check_delta_content, check_snapshot_content
from blacklist.trust import KeyRevoked, KeysAtTime, TrustError

# Versions stay far below 2**64 so that a feed can always be continued (a forged version
# near the top once left the real authority unable to publish: issue #11).
MAX_FEED_VERSION = 2**48
DEFAULT_MAX_SKEW = 300  # seconds a signer's clock may run ahead of this node's
# The longest a lapsing entry may last (issue #17: offices use 7–15 days; a year leaves
# room for any city's rule and refuses an "end time" that is really no end).
DEFAULT_MAX_LAPSE = 366 * 86_400

Signed = Delta | Snapshot | Envelope


@dataclass(frozen=True, slots=True)
class AcceptPolicy:
    """What a node sets and knows, against which every claim of a signer is bounded.

    ``now`` is the node's clock; None (offline tools, unit tests of other rules) skips the
    clock checks, never the others."""

    now: int | None = None
    max_skew: int = DEFAULT_MAX_SKEW
    max_version: int = MAX_FEED_VERSION
    limits: DecodeLimits = DEFAULT_LIMITS
    max_lapse: int = DEFAULT_MAX_LAPSE

    def __post_init__(self) -> None:
        if self.max_skew < 0:
            raise ValueError(f"max_skew must be >= 0, got {self.max_skew}")
        if self.max_lapse < 1:
            raise ValueError(f"max_lapse must be >= 1 s, got {self.max_lapse}")
        if not 1 <= self.max_version <= MAX_FEED_VERSION:
            raise ValueError(f"max_version must be in 1..{MAX_FEED_VERSION}")


NO_CLOCK = AcceptPolicy()


def _no_history(version: int) -> bytes | None:
    return None


@dataclass(frozen=True, slots=True)
class FeedPosition:
    """What this node holds of one feed, as acceptance needs it: the head, when the head's
    item was issued (None: no feed yet), and the digest of a retained older version."""

    head: FeedHead
    issued_at: int | None = None
    digest_at: Callable[[int], bytes | None] = field(default=_no_history, compare=False)

    @classmethod
    def of(cls, head: FeedHead | FeedPosition) -> FeedPosition:
        return head if isinstance(head, FeedPosition) else cls(head)

    def held_digest(self, version: int) -> bytes | None:
        if version == self.head.version:
            return self.head.digest if version else None
        return self.digest_at(version)


def parse_signed(data: bytes, limits: DecodeLimits = DEFAULT_LIMITS) -> Delta | Snapshot:
    """Decode bytes from the wire without verifying anything (tools and tests; a node uses
    :func:`accept_signed`); any decoding failure is a :class:`MalformedDelta`."""
    try:
        return decode(data, limits)
    except CodecError as exc:
        raise MalformedDelta(str(exc)) from exc


def _open(data: bytes) -> Envelope:
    try:
        return open_envelope(data)
    except CodecError as exc:
        raise MalformedDelta(str(exc)) from exc


def _decode(envelope: Envelope, limits: DecodeLimits) -> Delta | Snapshot:
    try:
        return decode_body(envelope, limits)
    except CodecError as exc:
        raise MalformedDelta(
            f"{envelope.publisher} v{envelope.version}: body does not decode: {exc}"
        ) from exc


def _signature_verifies(item: Signed, key: TrustedKey) -> bool:
    return key.suite_id == item.header.suite_id and key.verify_body(item.body, item.signature)


def _key_at_issue(item: Signed, keys: KeysAtTime, now: int | None) -> TrustedKey | None:
    """The signing key as certified when the item says it was issued (DESIGN §6: a key
    revoked as of T signs nothing dated T or later). A revoked key's signature is checked
    first, so that a forgery naming a revoked key id counts as a bad signature."""
    h = item.header
    try:
        return keys.key_at(h.key_id, h.issued_at, now=now)
    except KeyRevoked as exc:
        claimed = keys.claimed(h.key_id)
        if claimed is not None and not _signature_verifies(item, claimed):
            raise BadSignature(
                f"{h.publisher} v{h.version}: signature does not verify with key {h.key_id.hex()}"
            ) from exc
        raise KeyRevokedRejection(
            f"{h.publisher} v{h.version} issued at {h.issued_at}: {exc}"
        ) from exc
    except TrustError as exc:
        raise UnknownKey(f"{h.publisher} v{h.version}: key id {h.key_id.hex()}: {exc}") from exc


def _verify_origin(
    item: Signed, keys: Mapping[bytes, TrustedKey], now: int | None = None
) -> TrustedKey:
    h = item.header
    key = _key_at_issue(item, keys, now) if isinstance(keys, KeysAtTime) else keys.get(h.key_id)
    if key is None:
        raise UnknownKey(f"{h.publisher} v{h.version}: key id {h.key_id.hex()} is not trusted")
    if key.suite_id != h.suite_id:
        raise BadSignature(
            f"{h.publisher} v{h.version}: suite {h.suite_id} does not match key "
            f"{h.key_id.hex()} (suite {key.suite_id})"
        )
    if not key.verify_body(item.body, item.signature):
        raise BadSignature(
            f"{h.publisher} v{h.version}: signature does not verify with key {h.key_id.hex()}"
        )
    if key.publisher != h.publisher:
        raise KeyNotAllowed(
            f"key {h.key_id.hex()} signs for publisher {key.publisher}, not for {h.publisher}"
        )
    return key


def _check_time(label: str, item: Signed, position: FeedPosition, policy: AcceptPolicy) -> None:
    """``issued_at`` is the signer's claim: bounded below by the head's (a backdated item
    cannot slip under a revocation or an expiry) and above by the node's clock."""
    t = item.header.issued_at
    if position.issued_at is not None and t < position.issued_at:
        raise Backdated(
            f"{label}: issued at {t}, before the head's {position.issued_at} "
            f"(v{position.head.version})"
        )
    if policy.now is not None and t > policy.now + policy.max_skew:
        raise FromTheFuture(
            f"{label}: issued at {t}, more than {policy.max_skew} s after this node's clock "
            f"{policy.now}"
        )


def _check_ceiling(label: str, item: Signed, key: TrustedKey, policy: AcceptPolicy) -> None:
    v = item.header.version
    if v > policy.max_version:
        raise VersionCeiling(f"{label}: version {v} is above the ceiling {policy.max_version}")
    if key.max_version is not None and v > key.max_version:
        raise KeyRevokedRejection(
            f"{label}: key {item.header.key_id.hex()} may stand behind versions up to "
            f"{key.max_version} only (its certifier revoked or rotated it)"
        )
    if key.max_digest is not None and v == key.max_version:
        # The revocation also names the head the key stood behind at that version: another
        # history for it is the thief's, however it is dated.
        digest = item.header.link if item.header.kind is Kind.SNAPSHOT else item.digest
        if digest != key.max_digest:
            raise KeyRevokedRejection(
                f"{label}: key {item.header.key_id.hex()} stands behind version {v} only "
                f"with digest {key.max_digest.hex()[:16]}, not {digest.hex()[:16]}"
            )


def _check_old_delta(label: str, delta: Signed, position: FeedPosition) -> None:
    """A delta at or below the head that is not a held copy (:func:`_check_envelope` found
    those first): an older one this node no longer holds (normal), or a second history for a
    held version (tampering)."""
    v = delta.header.version
    if position.held_digest(v) is None:
        raise ReplayedDelta(f"{label}: at or below the head version {position.head.version}")
    raise ForkedFeed(f"{label}: a different delta is held for version {v}")


def _check_old_snapshot(label: str, snapshot: Signed, position: FeedPosition) -> None:
    head = position.head
    if snapshot.header.version < head.version:
        raise ReplayedDelta(f"{label}: older than the head version {head.version}")
    if snapshot.header.link != head.digest:
        raise ForkedFeed(f"{label}: same version as the head, different digest")
    raise DuplicateDelta(f"{label}: this node is already at that version")


def _label(item: Signed) -> str:
    kind = "delta" if item.header.kind is Kind.DELTA else "snapshot"
    return f"{kind} {item.header.publisher} v{item.header.version}"


def _check_envelope(
    position: FeedPosition,
    item: Signed,
    keys: Mapping[bytes, TrustedKey],
    policy: AcceptPolicy,
) -> TrustedKey:
    """Steps 2–5 of the module doc (no body needed): key, signature, what an item at or
    below the head is, ceiling and time.

    An item at or below the head moves nothing: it is a copy (a held digest, recognised
    before any signature work: nothing of it is used), an older copy, or a fork; only an
    item that moves the feed forward is held to the node's clock (a dead key's old, honest
    work may still travel as a copy, but never extend a feed)."""
    label = _label(item)
    head = position.head
    if head.publisher != item.header.publisher:
        raise ValueError(f"head is for {head.publisher}, {label}")
    is_delta = item.header.kind is Kind.DELTA
    forward = item.header.version > head.version
    if is_delta and not forward and position.held_digest(item.header.version) == item.digest:
        raise DuplicateDelta(f"{label}: already held")
    key = _verify_origin(item, keys, policy.now if forward else None)
    if not forward:
        (_check_old_delta if is_delta else _check_old_snapshot)(label, item, position)
    _check_ceiling(label, item, key, policy)
    _check_time(label, item, position, policy)
    return key


def _check_link(position: FeedPosition, item: Signed) -> None:
    """A delta extends the head by exactly one version and names its digest (after the
    content checks, so that a signed out-of-scope delta counts as what it is, not as a
    gap)."""
    if item.header.kind is not Kind.DELTA:
        return
    label, head = _label(item), position.head
    if item.header.version != head.version + 1:
        raise VersionGap(f"{label}: expected version {head.version + 1}")
    if item.header.link != head.digest:
        raise ForkedFeed(
            f"{label}: previous digest {item.header.link.hex()[:16]} does not match the "
            f"head's {head.digest.hex()[:16]}"
        )


@dataclass(frozen=True, slots=True)
class Accepted:
    """A verified item and the feed head it moves to."""

    item: Delta | Snapshot
    head: FeedHead


def accept_signed(
    data: bytes,
    position_of: Callable[[str], FeedPosition],
    keys: Mapping[bytes, TrustedKey],
    policy: AcceptPolicy = NO_CLOCK,
) -> Accepted:
    """The whole rule for bytes from the wire, in the module doc's order: the body is
    decoded only after the signature verified and the numbering fits."""
    envelope = _open(data)
    position = position_of(envelope.publisher)
    key = _check_envelope(position, envelope, keys, policy)
    item = _decode(envelope, policy.limits)
    if isinstance(item, Delta):
        check_delta_content(key, item, keys, policy.max_lapse)
        _check_link(position, item)
        return Accepted(item, FeedHead(item.publisher, item.version, item.digest))
    check_snapshot_content(key, item, keys, policy.max_lapse)
    return Accepted(item, FeedHead(item.publisher, item.version, item.head_digest))


def accept_delta(
    head: FeedHead | FeedPosition,
    delta: Delta,
    keys: Mapping[bytes, TrustedKey],
    policy: AcceptPolicy = NO_CLOCK,
) -> FeedHead:
    """Return the feed head after an already decoded ``delta`` (this node's own, or a test's),
    or raise the :class:`DeltaRejected` that forbids it; the same rules as
    :func:`accept_signed`.

    ``head`` is this node's head for the delta's publisher (:meth:`FeedHead.genesis` if it has
    none), or its fuller :class:`FeedPosition`.
    """
    position = FeedPosition.of(head)
    key = _check_envelope(position, delta, keys, policy)
    check_delta_content(key, delta, keys, policy.max_lapse)
    _check_link(position, delta)
    return FeedHead(delta.publisher, delta.version, delta.digest)


def accept_snapshot(
    head: FeedHead | FeedPosition,
    snapshot: Snapshot,
    keys: Mapping[bytes, TrustedKey],
    policy: AcceptPolicy = NO_CLOCK,
) -> FeedHead:
    """Return the feed head a verified snapshot moves to, or raise why it may not be used.

    A snapshot may move a feed forward, never back (rollback is a replay), and at the head's
    own version it must reproduce the same head (else the feed has forked). It cannot move a
    feed past the version its key may stand behind, nor past the ceiling.
    """
    key = _check_envelope(FeedPosition.of(head), snapshot, keys, policy)
    check_snapshot_content(key, snapshot, keys, policy.max_lapse)
    return FeedHead(snapshot.publisher, snapshot.version, snapshot.head_digest)


def accept_current_snapshot(
    head: FeedHead, snapshot: Snapshot, keys: Mapping[bytes, TrustedKey]
) -> None:
    """Check a snapshot that reproduces ``head`` (to keep and serve, not to apply): the same
    verification as any snapshot, and exactly the head's version and digest."""
    label = _label(snapshot)
    key = _verify_origin(snapshot, keys)
    if snapshot.version < head.version:
        raise ReplayedDelta(f"{label}: older than the head version {head.version}")
    if snapshot.version > head.version:
        raise VersionGap(f"{label}: newer than the head version {head.version}; apply it")
    if snapshot.head_digest != head.digest:
        raise ForkedFeed(f"{label}: same version as the head, different digest")
    check_snapshot_content(key, snapshot, keys, NO_CLOCK.max_lapse)
