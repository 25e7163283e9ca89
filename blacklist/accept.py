"""Deciding whether a delta or snapshot may be applied: pure functions, no I/O.

The order of checks follows Let's Encrypt's CRL storer: parse, then who signed it, then the
signature, then what the key may sign, then the feed's numbering and chain, then content.
The first failure wins and names its cause; nothing is applied on any failure.

"Who signed it" depends on the keys given: a plain :class:`~blacklist.signing.Keyring` has
no time, so a key is trusted or not; a :class:`~blacklist.trust.CertifiedKeys` resolves the
key as of the item's ``issued_at``, so a key revoked as of T still vouches for what it signed
before T (``key_revoked`` after), see :mod:`blacklist.trust` on rotation and replay.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np

from blacklist.delta import Delta, FeedHead, Snapshot, decode
from blacklist.entry import Reason
from blacklist.entryblock import CardColumns, EntryColumns
from blacklist.errors import CodecError
from blacklist.rejections import (
    BadSignature,
    DuplicateCard,
    ForkedFeed,
    KeyNotAllowed,
    KeyRevokedRejection,
    MalformedDelta,
    ReplayedDelta,
    UnknownKey,
    VersionGap,
)
from blacklist.signing import TrustedKey
from blacklist.sync.trust_rules import check_trust_records
from blacklist.trust import KeyRevoked, KeysAtTime, TrustError

_MAX_REASON = max(Reason)


def parse_signed(data: bytes) -> Delta | Snapshot:
    """Decode bytes from the wire; any decoding failure is a :class:`MalformedDelta`."""
    try:
        return decode(data)
    except CodecError as exc:
        raise MalformedDelta(str(exc)) from exc


def _signature_verifies(item: Delta | Snapshot, key: TrustedKey) -> bool:
    return key.suite_id == item.header.suite_id and key.verify(
        hashlib.sha256(item.body).digest(), item.signature
    )


def _key_at_issue(item: Delta | Snapshot, keys: KeysAtTime) -> TrustedKey | None:
    """The signing key as certified when the item says it was issued (DESIGN §6: a key
    revoked as of T signs nothing dated T or later). A revoked key's signature is checked
    first, so that a forgery naming a revoked key id counts as a bad signature."""
    h = item.header
    try:
        return keys.key_at(h.key_id, h.issued_at)
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


def _verify_origin(item: Delta | Snapshot, keys: Mapping[bytes, TrustedKey]) -> TrustedKey:
    h = item.header
    key = _key_at_issue(item, keys) if isinstance(keys, KeysAtTime) else keys.get(h.key_id)
    if key is None:
        raise UnknownKey(f"{h.publisher} v{h.version}: key id {h.key_id.hex()} is not trusted")
    if key.suite_id != h.suite_id:
        raise BadSignature(
            f"{h.publisher} v{h.version}: suite {h.suite_id} does not match key "
            f"{h.key_id.hex()} (suite {key.suite_id})"
        )
    if not key.verify(hashlib.sha256(item.body).digest(), item.signature):
        raise BadSignature(
            f"{h.publisher} v{h.version}: signature does not verify with key {h.key_id.hex()}"
        )
    if key.publisher != h.publisher:
        raise KeyNotAllowed(
            f"key {h.key_id.hex()} signs for publisher {key.publisher}, not for {h.publisher}"
        )
    return key


def _distinct_regions(cards: CardColumns) -> set[int]:
    """Blocks are sorted by region, so the distinct regions are where the column changes
    (O(n), no sort)."""
    r = cards.region
    if len(r) == 0:
        return set()
    return set(r[np.flatnonzero(np.r_[True, r[1:] != r[:-1]])].tolist())


def _check_regions(key: TrustedKey, label: str, *card_sets: CardColumns) -> None:
    regions = set().union(*(_distinct_regions(c) for c in card_sets))
    for region in sorted(regions):
        code = f"{region:06d}"
        if not key.allows_region(code):
            raise KeyNotAllowed(
                f"{label}: region {code} is outside the key's prefixes {list(key.prefixes)}"
            )


def _check_entries(label: str, entries: EntryColumns) -> None:
    reasons = entries.reason
    if len(reasons) and (int(reasons.min()) < 1 or int(reasons.max()) > _MAX_REASON):
        bad = int(reasons[(reasons < 1) | (reasons > _MAX_REASON)][0])
        raise MalformedDelta(f"{label}: unknown reason code {bad}")


def _check_unique(label: str, *card_sets: CardColumns) -> None:
    """Blocks are sorted, so a duplicate within one block is two equal neighbours; across
    blocks, the sorted union shows it the same way."""
    cards = CardColumns.concatenate(card_sets).sorted() if len(card_sets) > 1 else card_sets[0]
    dup = cards.first_duplicate()
    if dup is not None:
        raise DuplicateCard(f"{label}: card {dup} appears more than once")


def _check_trust(
    key: TrustedKey, label: str, records: tuple[bytes, ...], keys: Mapping[bytes, TrustedKey]
) -> None:
    """Every record in the trust section belongs in this publisher's feed, within the
    bounds, and makes no two publishers claim one prefix: :mod:`blacklist.sync.trust_rules`."""
    check_trust_records(key, label, records, keys)


def _check_psams(key: TrustedKey, label: str, adds: EntryColumns, removes: CardColumns) -> None:
    if not len(adds) and not len(removes):
        return
    _check_regions(key, f"{label} PSAMs", adds.cards, removes)
    _check_entries(f"{label} PSAMs", adds)
    _check_unique(f"{label} PSAMs", adds.cards, removes)


def accept_delta(head: FeedHead, delta: Delta, keys: Mapping[bytes, TrustedKey]) -> FeedHead:
    """Return the feed head after ``delta``, or raise the :class:`DeltaRejected` that forbids it.

    ``head`` is this node's head for the delta's publisher (:meth:`FeedHead.genesis` if it has
    none).
    """
    label = f"delta {delta.publisher} v{delta.version}"
    if head.publisher != delta.publisher:
        raise ValueError(f"head is for {head.publisher}, delta for {delta.publisher}")
    key = _verify_origin(delta, keys)
    _check_regions(key, label, delta.adds.cards, delta.removes)
    if delta.version <= head.version:
        raise ReplayedDelta(f"{label}: at or below the head version {head.version}")
    if delta.version != head.version + 1:
        raise VersionGap(f"{label}: expected version {head.version + 1}")
    if delta.prev_digest != head.digest:
        raise ForkedFeed(
            f"{label}: previous digest {delta.prev_digest.hex()[:16]} does not match the "
            f"head's {head.digest.hex()[:16]}"
        )
    _check_entries(label, delta.adds)
    _check_unique(label, delta.adds.cards, delta.removes)
    _check_psams(key, label, delta.psam_adds, delta.psam_removes)
    _check_trust(key, label, delta.trust, keys)
    return FeedHead(delta.publisher, delta.version, delta.digest)


def accept_snapshot(
    head: FeedHead, snapshot: Snapshot, keys: Mapping[bytes, TrustedKey]
) -> FeedHead:
    """Return the feed head a verified snapshot moves to, or raise why it may not be used.

    A snapshot may move a feed forward, never back (rollback is a replay), and at the head's
    own version it must reproduce the same head (else the feed has forked).
    """
    label = f"snapshot {snapshot.publisher} v{snapshot.version}"
    if head.publisher != snapshot.publisher:
        raise ValueError(f"head is for {head.publisher}, snapshot for {snapshot.publisher}")
    key = _verify_origin(snapshot, keys)
    _check_regions(key, label, snapshot.entries.cards)
    if snapshot.version < head.version:
        raise ReplayedDelta(f"{label}: older than the head version {head.version}")
    if snapshot.version == head.version:
        if snapshot.head_digest != head.digest:
            raise ForkedFeed(f"{label}: same version as the head, different digest")
        raise ReplayedDelta(f"{label}: this node is already at that version")
    if len(snapshot.versions) and int(snapshot.versions.max()) > snapshot.version:
        raise MalformedDelta(f"{label}: an entry claims a version after the snapshot's")
    _check_snapshot_content(key, label, snapshot, keys)
    return FeedHead(snapshot.publisher, snapshot.version, snapshot.head_digest)


def _check_snapshot_content(
    key: TrustedKey, label: str, snapshot: Snapshot, keys: Mapping[bytes, TrustedKey]
) -> None:
    _check_entries(label, snapshot.entries)
    _check_unique(label, snapshot.entries.cards)
    if len(snapshot.psam_versions) and int(snapshot.psam_versions.max()) > snapshot.version:
        raise MalformedDelta(f"{label}: a PSAM entry claims a version after the snapshot's")
    _check_psams(key, label, snapshot.psams, CardColumns.empty())
    _check_trust(key, label, snapshot.trust, keys)


def accept_current_snapshot(
    head: FeedHead, snapshot: Snapshot, keys: Mapping[bytes, TrustedKey]
) -> None:
    """Check a snapshot that reproduces ``head`` (to keep and serve, not to apply): the same
    verification as any snapshot, and exactly the head's version and digest."""
    label = f"snapshot {snapshot.publisher} v{snapshot.version}"
    key = _verify_origin(snapshot, keys)
    _check_regions(key, label, snapshot.entries.cards)
    if snapshot.version < head.version:
        raise ReplayedDelta(f"{label}: older than the head version {head.version}")
    if snapshot.version > head.version:
        raise VersionGap(f"{label}: newer than the head version {head.version}; apply it")
    if snapshot.head_digest != head.digest:
        raise ForkedFeed(f"{label}: same version as the head, different digest")
    _check_snapshot_content(key, label, snapshot, keys)
