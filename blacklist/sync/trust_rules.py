"""What a feed's trust section may carry: the acceptance rule for certificates and key
revocations that travel in a delta or snapshot (DESIGN §6, issue #11). Pure, no I/O.

Records authenticate themselves (a chain must still reach the pinned root, see
:mod:`blacklist.trust`); this rule keeps each feed to its own business and keeps the trust
records bounded and conflict-free, so that no publisher can put into every node's store a
record that makes chain building explode or two publishers answer for one region. Checked
in this order, the first failure wins (:class:`~blacklist.rejections.BadTrustRecord`):

1. at most ``max_trust_records`` records in the item (before decoding any), and at most that
   many held for the feed once the item's are added (a snapshot repeats the feed's records,
   so they are counted once, by digest);
2. each record decodes;
3. no self-issued certificate (issuer key = subject key: it certifies nothing, and a flood
   of them was the chain-building bomb);
4. it is issued by one of the publisher's own keys (the signing key, or one it used before a
   rotation), or it is a certificate *of* the publisher (its own, issued by its certifier, so
   that a rotated key travels in its own feed); and that issuer's signature verifies;
5. a certificate grants nothing beyond its issuer's scope, and only what a certifier may
   delegate: its own rotation or strictly narrower prefixes
   (:func:`blacklist.chainverify.check_delegation`);
6. a certificate does not make two publishers claim one region prefix at once: another
   publisher's key in the node's keyring claims that exact prefix (now, or once a
   certificate not valid yet takes effect), or another certificate in
   the same record set does. The exceptions: a reassignment — the two claims were certified
   by the same publisher at different ``not_before`` (the prefix's certifier may move it;
   the publisher directory prefers the newer certificate, and the certifier revokes the old
   key; a snapshot of its feed carries both) — or the same record set revokes the other
   claim's key. One certifier granting one prefix to two publishers at once is refused;
7. a certificate does not name a key for a publisher other than one it is already certified
   for (here or earlier in the set): a key certified for two publishers is trusted for
   neither, so without this rule any certifier could switch off another's key (Beijing
   certifying Guangzhou's public key for a Beijing prefix would stop Guangzhou's feed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from blacklist.certs import Certificate, KeyRevocation, decode_trust_record, verified_by
from blacklist.errors import CodecError
from blacklist.rejections import BadTrustRecord
from blacklist.signing import TrustedKey
from blacklist.trust import (
    DEFAULT_MAX_TRUST_RECORDS,
    NATIONAL_PREFIX,
    CertifiedKeys,
    KeysAtTime,
    PrefixClaim,
    TrustError,
    check_delegation,
    claims_of,
)


def _issuer_of(
    key_id: bytes, signer: TrustedKey, keys: Mapping[bytes, TrustedKey]
) -> TrustedKey | None:
    """The key that issued a trust record, as this node knows it (unverified: its authority
    is the chain's business), or None."""
    if key_id == signer.key_id:
        return signer
    if isinstance(keys, CertifiedKeys):
        for root in keys.anchors:
            if key_id == root.key_id:
                return root.trusted()
    if isinstance(keys, KeysAtTime):
        return keys.claimed(key_id)
    return keys.get(key_id)


def _check_count(
    signer: TrustedKey,
    label: str,
    decoded: Sequence[Certificate | KeyRevocation],
    keys: Mapping[bytes, TrustedKey],
    limit: int,
) -> None:
    """Rule 1's second half: what the feed holds together with the item's records."""
    if not isinstance(keys, CertifiedKeys) or not decoded:
        return
    total = len(keys.feed_records(signer.publisher) | {r.digest for r in decoded})
    if total > limit:
        raise BadTrustRecord(
            f"{label}: publisher {signer.publisher}'s feed would hold {total} trust records, "
            f"at most {limit}"
        )


def _decode(label: str, i: int, data: bytes) -> Certificate | KeyRevocation:
    try:
        return decode_trust_record(data)
    except CodecError as exc:
        raise BadTrustRecord(f"{label}: trust record {i}: {exc}") from exc


def _check_record(
    signer: TrustedKey,
    label: str,
    record: Certificate | KeyRevocation,
    keys: Mapping[bytes, TrustedKey],
) -> str:
    """Rules 3–5 for one record; returns the issuer's publisher."""
    if isinstance(record, Certificate) and record.issuer_key_id == record.key_id:
        raise BadTrustRecord(
            f"{label}: {record.label} is self-issued (key {record.key_id.hex()} certifies itself)"
        )
    issuer = _issuer_of(record.issuer_key_id, signer, keys)
    own = isinstance(record, Certificate) and record.publisher == signer.publisher
    if issuer is None or (issuer.publisher != signer.publisher and not own):
        raise BadTrustRecord(
            f"{label}: {record.label} is issued by key {record.issuer_key_id.hex()}, "
            f"which is not a key of publisher {signer.publisher} (nor its certificate's "
            "issuer)"
        )
    if not verified_by(record, issuer):
        raise BadTrustRecord(f"{label}: {record.label}: signature does not verify")
    if isinstance(record, Certificate):
        scope = None if issuer.prefixes == (NATIONAL_PREFIX,) else issuer.prefixes
        try:
            check_delegation(record, issuer.publisher, scope)
        except TrustError as exc:
            raise BadTrustRecord(f"{label}: {exc}") from exc
    return issuer.publisher


def _check_conflicts(
    label: str,
    certificates: Sequence[tuple[Certificate, str]],
    revocations: Sequence[KeyRevocation],
    keys: Mapping[bytes, TrustedKey],
) -> None:
    """Rules 6 and 7, over the keyring's claims and the record set's own certificates."""
    named: dict[bytes, set[str]] = {}
    for cert, _ in certificates:
        publishers = named.setdefault(cert.key_id, set(_certified_publishers(keys, cert.key_id)))
        others = sorted(publishers - {cert.publisher})
        if others:
            raise BadTrustRecord(
                f"{label}: {cert.label} certifies key {cert.key_id.hex()} for publisher "
                f"{cert.publisher}, but it is already certified for {others[0]} (one key "
                "publishes one feed)"
            )
        publishers.add(cert.publisher)
    revoked = {(r.revoked_key_id, r.issuer_key_id) for r in revocations}
    by_prefix: dict[str, list[PrefixClaim]] = {}
    for claim in claims_of(keys, pending=True):
        if (claim.key_id, claim.issuer_key_id) not in revoked:
            by_prefix.setdefault(claim.prefix, []).append(claim)
    for cert, issuer_publisher in certificates:
        for prefix in cert.prefixes:
            for other in by_prefix.get(prefix, ()):
                if other.publisher == cert.publisher or (
                    other.issuer_publisher == issuer_publisher
                    and other.not_before != cert.not_before
                ):
                    continue  # the same publisher, or its certifier reassigning the prefix
                raise BadTrustRecord(
                    f"{label}: {cert.label} would make publishers {cert.publisher} and "
                    f"{other.publisher} both claim region prefix {prefix!r} "
                    f"({other.label})"
                )
        for prefix in cert.prefixes:
            by_prefix.setdefault(prefix, []).append(
                PrefixClaim(
                    prefix,
                    cert.publisher,
                    cert.key_id,
                    issuer_publisher=issuer_publisher,
                    issuer_key_id=cert.issuer_key_id,
                    not_before=cert.not_before,
                    serial=cert.serial,
                )
            )


def _certified_publishers(keys: Mapping[bytes, TrustedKey], key_id: bytes) -> frozenset[str]:
    if isinstance(keys, CertifiedKeys):
        return keys.certified_publishers(key_id)
    key = keys.get(key_id)
    return frozenset() if key is None else frozenset({key.publisher})


def max_trust_records(keys: Mapping[bytes, TrustedKey]) -> int:
    """The per-feed bound the node configured (CertifiedKeys carry it), or the default."""
    return keys.max_trust_records if isinstance(keys, CertifiedKeys) else DEFAULT_MAX_TRUST_RECORDS


def check_trust_records(
    signer: TrustedKey,
    label: str,
    records: Sequence[bytes],
    keys: Mapping[bytes, TrustedKey],
) -> None:
    """Raise :class:`BadTrustRecord` unless every record of an item's trust section may
    travel in ``signer``'s publisher's feed (the module docstring's rules, in order).
    ``keys`` are the node's trusted keys; ``label`` names the item in messages."""
    limit = max_trust_records(keys)
    if len(records) > limit:  # before decoding any
        raise BadTrustRecord(f"{label}: {len(records)} trust records, at most {limit} per feed")
    decoded = [_decode(label, i, data) for i, data in enumerate(records)]
    _check_count(signer, label, decoded, keys, limit)
    certificates: list[tuple[Certificate, str]] = []
    revocations: list[KeyRevocation] = []
    for record in decoded:
        issuer_publisher = _check_record(signer, label, record, keys)
        if isinstance(record, Certificate):
            certificates.append((record, issuer_publisher))
        else:
            revocations.append(record)
    if certificates:
        _check_conflicts(label, certificates, revocations, keys)
