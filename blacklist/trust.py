"""The certified key hierarchy: deciding whether a key is trusted. Pure functions, no I/O.

One chain's rules (the order of checks, scope, delegation, expiry at the node's clock) are
:mod:`blacklist.chainverify`, re-exported here; building chains from loose records is
:mod:`blacklist.chainbuild`. This module combines them into the keys a node trusts.

Key rotation. A revocation voids a key *as of* ``effective_at`` = T: a delta whose
``issued_at`` = t verifies with that key iff t < T (:func:`key_valid_at`; or
:func:`verify_chain` with ``at=t``). So a node catching up on a feed still accepts the deltas
the old key signed before T, and the authority continues under a newly certified key: its
certificate names the same publisher and a new key id, and nothing of the old key's
revocation touches it. Revocations are of keys, not of certificates: re-presenting the old
key's certificate, or a fresh certificate for the same revoked key from the same certifier,
still fails with ``key_revoked``.

Replay. An old delta the old key signed before T still verifies after the rotation; what
stops it being applied again is the feed, not the key: its version is at or below the head
(``replay``) or its previous-digest is not the head's (``fork``), see acceptance.

Version bounds (issue #11). ``issued_at`` is the signer's own claim, so a thief of a key
revoked as of T can date anything T−1. A revocation of format 2 therefore also names the
last version of the key's feed it may stand behind (for a rotation: the head it was
rotated at): :meth:`CertifiedKeys.key_at` returns the key with ``max_version`` = the
smallest such ``last_version`` among the revocations of that key, signed by a key that
certified it, that have taken effect by the node's clock; acceptance refuses any delta or
snapshot past it (``key_revoked``), whatever date it carries. The bound is the key's, not a
chain's: a second, older chain of the same key (a rotated certifier) does not lift it.

An intermediate key's bounded revocation (a province's) bounds the province's own feed
only: versions of different feeds are not comparable, so it says nothing about its cities'
versions. For the keys it certified it acts by ``effective_at`` as any revocation does: a
city certificate the province key issued vouches only for items signed before the
province key's ``effective_at`` (rule 5 on the province's own link), so its cities must be
re-certified by the province's new key; what stops a thief of the old province key from
minting a backdated city certificate and signing city items dated before T is the city
feed's own ``issued_at`` monotonicity and its head's version chain, not this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Protocol, runtime_checkable

from blacklist.certs import Certificate, KeyRevocation, decode_trust_record
from blacklist.chainbuild import MAX_CHAIN_DEPTH, MAX_CHAINS_PER_KEY, chains_from_records
from blacklist.chainverify import (
    ALL_TRUST_CAUSES,
    NATIONAL_PREFIX,
    BadCertificateSignature,
    CertificateExpired,
    Certifier,
    ConflictingCertificates,
    KeyRevoked,
    MalformedCertificate,
    NotYetValid,
    PrefixConflict,
    RevocationIndex,
    ScopeViolation,
    SignatureCache,
    TrustAnchor,
    TrustError,
    UnknownIssuer,
    check_delegation,
    check_scope,
    decode_chain,
    effective_revocation,
    key_valid_at,
    verify_chain,
    verify_chain_bytes,
)
from blacklist.errors import CodecError
from blacklist.publishers import PrefixClaim, claims_of
from blacklist.signing import TrustedKey
from blacklist.trustroots import (
    MAX_ROOTS,
    Chain,
    Roots,
    TooManyRoots,
    anchor_for,
    anchored,
    as_anchors,
    keyring_from_chains,
    keyring_of,
)

# The chain rules and chain building are re-exported: callers import them from here.
__all__ = [
    "ALL_TRUST_CAUSES",
    "DEFAULT_MAX_TRUST_RECORDS",
    "MAX_CHAINS_PER_KEY",
    "MAX_CHAIN_DEPTH",
    "MAX_ROOTS",
    "NATIONAL_PREFIX",
    "BadCertificateSignature",
    "CertificateExpired",
    "CertifiedKeys",
    "Certifier",
    "ConflictingCertificates",
    "KeyRevoked",
    "KeysAtTime",
    "MalformedCertificate",
    "NotYetValid",
    "PrefixClaim",
    "PrefixConflict",
    "RevocationIndex",
    "ScopeViolation",
    "SignatureCache",
    "TooManyRoots",
    "TrustAnchor",
    "TrustError",
    "UnknownIssuer",
    "certified_keys_from_records",
    "chains_from_records",
    "check_delegation",
    "check_scope",
    "claims_of",
    "decode_chain",
    "effective_revocation",
    "key_valid_at",
    "keyring_from_chains",
    "verify_chain",
    "verify_chain_bytes",
]


@runtime_checkable
class KeysAtTime(Protocol):
    """A key mapping with a time dimension (:class:`CertifiedKeys`); acceptance resolves a
    delta's key as of its ``issued_at`` (and the node's clock) through it. A plain Keyring
    has none."""

    def key_at(self, key_id: bytes, t: int, *, now: int | None = None) -> TrustedKey | None: ...

    def claimed(self, key_id: bytes) -> TrustedKey | None: ...


# How many trust records one feed may carry (issue #11: trust records are bounded); a node's
# config may change it (node/config.py ``max_trust_records``).
DEFAULT_MAX_TRUST_RECORDS = 1000


def _certifier(chain: Chain, anchors: Sequence[TrustAnchor]) -> Certifier | None:
    """Who certified the leaf of ``chain`` (None for a root's own empty chain)."""
    if not chain:
        return None
    return chain[-2].trusted() if len(chain) > 1 else anchor_for(anchors, chain)


class CertifiedKeys(Mapping[bytes, TrustedKey]):
    """The keys an anchor's certificate chains certify, honouring their certifiers'
    revocations. Immutable: build a new one (:meth:`updated`) for new chains or revocations.

    As a Mapping it is the keyring of the keys valid at ``at`` (:func:`keyring_from_chains`;
    what a checker or a publisher directory needs; ``at`` is the node's clock when it was
    built). :meth:`key_at` answers for any time: the key as trusted for something signed at
    ``t``, which is what delta acceptance asks. Signatures of certificates and revocations
    are checked once per instance, so a key_at costs comparisons, not signature checks.
    """

    def __init__(
        self,
        anchor: Roots,
        chains: Iterable[Sequence[Certificate]],
        revocations: Iterable[KeyRevocation],
        at: int,
        *,
        max_trust_records: int = DEFAULT_MAX_TRUST_RECORDS,
    ) -> None:
        self.anchors = as_anchors(anchor)  # TooManyRoots (a ValueError) beyond MAX_ROOTS
        self.anchor = self.anchors[0]
        self.chains: tuple[Chain, ...] = tuple(tuple(c) for c in chains)
        self.revocations: tuple[KeyRevocation, ...] = tuple(revocations)
        self.at = at
        self.max_trust_records = max_trust_records
        self._revs = RevocationIndex(self.revocations)
        self._signatures = SignatureCache()
        # Every chain with the root it starts from (the empty chain: each root itself).
        self._by_leaf: dict[bytes, list[tuple[TrustAnchor, Chain]]] = {}
        pairs = anchored(self.anchors, self.chains)
        for root, chain in pairs:
            leaf = chain[-1].key_id if chain else root.key_id
            self._by_leaf.setdefault(leaf, []).append((root, chain))
        self._now, self.errors, self._valid = keyring_of(pairs, self._revs, at, self._signatures)
        self._feed_records: dict[str, frozenset[bytes]] = {}

    def updated(
        self,
        chains: Iterable[Sequence[Certificate]] = (),
        revocations: Iterable[KeyRevocation] = (),
        at: int | None = None,
    ) -> CertifiedKeys:
        """A new view with more chains and revocations, as of ``at`` (default: the same)."""
        return CertifiedKeys(
            self.anchors,
            (*self.chains, *chains),
            (*self.revocations, *revocations),
            self.at if at is None else at,
            max_trust_records=self.max_trust_records,
        )

    def __getitem__(self, key_id: bytes) -> TrustedKey:
        return self._now[key_id]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._now)

    def __len__(self) -> int:
        return len(self._now)

    def publishers(self) -> dict[str, tuple[str, ...]]:
        return self._now.publishers()

    def certified_publishers(self, key_id: bytes) -> frozenset[str]:
        """Every publisher some chain of this node's records names for ``key_id`` (valid or
        not): a certificate naming it for another is refused at the door, since a key
        certified for two publishers is trusted for neither."""
        return frozenset(
            chain[-1].publisher if chain else root.publisher
            for root, chain in self._by_leaf.get(key_id, ())
        )

    def claimed(self, key_id: bytes) -> TrustedKey | None:
        """The key as a certificate names it, verified against nothing (to check a signature
        before saying that a key is revoked); None if no chain ends in it."""
        chains = self._by_leaf.get(key_id)
        if not chains:
            return None
        root, chain = chains[0]
        return chain[-1].trusted() if chain else root.trusted()

    def claims(self, *, pending: bool = False) -> tuple[PrefixClaim, ...]:
        """Each (publisher, prefix) claim of the keys valid at ``at``, one per chain that
        verified, with what a directory needs to pick between two publishers' claims.

        With ``pending``, also the claims of chains that become valid later (a certificate
        whose ``not_before`` is still ahead): what acceptance weighs a new certificate
        against, so that a claim cannot slip in beside one that is merely not valid *yet*.
        """
        out: list[PrefixClaim] = []
        for key_id, chains in self._valid.items():
            for chain in chains:
                out.extend(self._claims_of(chain, self._now[key_id]))
        if pending:
            for chain in self.chains:
                start = max((c.not_before for c in chain), default=self.at)
                if start <= self.at:
                    continue  # judged at ``at`` above
                try:
                    key = verify_chain(
                        chain, anchor_for(self.anchors, chain), self._revs, start, now=self.at,
                        signatures=self._signatures,
                    )  # fmt: skip
                except TrustError:
                    continue
                out.extend(self._claims_of(chain, key))
        return tuple(out)

    def _claims_of(self, chain: Chain, key: TrustedKey) -> list[PrefixClaim]:
        certifier = _certifier(chain, self.anchors)
        leaf = chain[-1] if chain else None
        return [
            PrefixClaim(
                prefix,
                key.publisher,
                key.key_id,
                len(chain),
                None if certifier is None else certifier.publisher,
                None if certifier is None else certifier.key_id,
                0 if leaf is None else leaf.not_before,
                0 if leaf is None else leaf.serial,
            )
            for prefix in (leaf.prefixes if leaf is not None else key.prefixes)
        ]

    def version_limit(self, key_id: bytes, by: int) -> tuple[int, bytes | None] | None:
        """The last feed version ``key_id`` may stand behind: the smallest ``last_version``
        of the revocations of it, signed by any key that certified it, in effect by ``by``
        (None if none names one), with the head digest its revocations name for that version
        (None if none does). Revocations that name two different digests for it contradict
        each other about the last honest version, so the key then stands behind one version
        less (with no digest)."""
        named: list[KeyRevocation] = []
        for _, chain in self._by_leaf.get(key_id, ()):
            certifier = _certifier(chain, self.anchors)
            if certifier is None:
                continue
            named.extend(
                r
                for r in self._revs.by(key_id, certifier)
                if r.last_version is not None and r.effective_at <= by
            )
        if not named:
            return None
        last = min(r.last_version for r in named if r.last_version is not None)
        digests = {r.last_digest for r in named if r.last_version == last} - {None}
        if len(digests) > 1:
            return max(0, last - 1), None
        return last, (digests.pop() if digests else None)

    def key_at(self, key_id: bytes, t: int, *, now: int | None = None) -> TrustedKey | None:
        """The key as trusted for something signed at ``t``: None if no chain ends in it;
        raises the :class:`TrustError` that forbids it if none of its chains verifies at
        ``t`` (:class:`KeyRevoked` if any of them fails by a revocation, since that is the
        certifier's explicit word; otherwise the first chain's error). With ``now`` (the
        node's clock; give it for anything that moves a feed forward), every certificate of
        a chain must also be unexpired at ``now``.

        The key carries ``max_version`` and ``max_digest`` (:meth:`version_limit`) from the
        revocations in effect by ``now`` (or, without it, by the later of ``t`` and ``at``):
        a date the signer chose cannot lift them.

        Several valid chains give the union of their prefixes, as in
        :func:`keyring_from_chains`; for different publishers, :class:`ConflictingCertificates`.
        """
        chains = self._by_leaf.get(key_id)
        if not chains:
            return None
        found: list[TrustedKey] = []
        errors: list[TrustError] = []
        for root, chain in chains:
            try:
                found.append(
                    verify_chain(chain, root, self._revs, t, now=now, signatures=self._signatures)
                )
            except TrustError as exc:
                errors.append(exc)
        if not found:
            revoked = [e for e in errors if isinstance(e, KeyRevoked)]
            raise (revoked or errors)[0]
        publishers = sorted({k.publisher for k in found})
        if len(publishers) > 1:
            raise ConflictingCertificates(
                f"key {key_id.hex()} is certified for publishers {publishers} at {t}"
            )
        prefixes = sorted({p for k in found for p in k.prefixes})
        first = found[0]
        limit = self.version_limit(key_id, max(t, self.at) if now is None else now)
        return TrustedKey(
            first.suite_id,
            first.public,
            first.publisher,
            tuple(prefixes),
            max_version=None if limit is None else limit[0],
            max_digest=None if limit is None else limit[1],
        )

    def feed_records(self, publisher: str) -> frozenset[bytes]:
        """Digests of the trust records this node holds that belong in ``publisher``'s feed
        (issued by one of its keys, or certificates of it): what the per-feed bound counts."""
        cached = self._feed_records.get(publisher)
        if cached is not None:
            return cached
        certs = {c.digest: c for chain in self.chains for c in chain}.values()
        own = {c.key_id for c in certs if c.publisher == publisher}
        if publisher == self.anchor.publisher:
            own.update(a.key_id for a in self.anchors)
        out = frozenset(
            [c.digest for c in certs if c.publisher == publisher or c.issuer_key_id in own]
            + [r.digest for r in self.revocations if r.issuer_key_id in own]
        )
        self._feed_records[publisher] = out
        return out


def certified_keys_from_records(
    anchor: Roots,
    chains: Iterable[Sequence[Certificate]],
    records: Iterable[bytes],
    revocations: Iterable[KeyRevocation],
    at: int,
    *,
    max_trust_records: int = DEFAULT_MAX_TRUST_RECORDS,
) -> CertifiedKeys:
    """The keys certified by configured ``chains`` together with the certificates and
    revocations that arrived in feeds (``records``, encoded; ones that do not decode are
    skipped: acceptance already refused them, so these can only come from an older store).
    Chains are rebuilt from all the certificates (:func:`chains_from_records`, linear)."""
    configured = [tuple(chain) for chain in chains]
    certs: list[Certificate] = [c for chain in configured for c in chain]
    revs = list(revocations)
    for data in records:
        try:
            record = decode_trust_record(data)
        except CodecError:
            continue
        if isinstance(record, Certificate):
            certs.append(record)
        else:
            revs.append(record)
    anchor_chain: list[Chain] = [()] if () in configured else []
    anchors = as_anchors(anchor)
    return CertifiedKeys(
        anchors,
        [*anchor_chain, *chains_from_records(anchors, certs)],
        revs,
        at,
        max_trust_records=max_trust_records,
    )
