"""The certified key hierarchy: deciding whether a key is trusted. Pure functions, no I/O.

Every node pins one :class:`TrustAnchor`, the ministry root key, whose scope is national:
any province-level prefix of :data:`blacklist.regions.PROVINCE_PREFIXES` or a longer prefix
under one. A chain runs from the anchor to the key that signs, root-most certificate first
(province, then city). :func:`verify_chain` checks each certificate in a fixed order — the
first failure wins and names the certificate and the value:

1. its issuer key id is the anchor's (first certificate) or the previous certificate's
   subject key id (``unknown_issuer``: a chain to a self-made root ends here);
2. the issuer's signature over SHA-256 of its body (``bad_certificate_signature``);
3. ``not_before <= at <= not_after`` (``not_yet_valid``, ``expired``);
4. its scope lies within its issuer's: every prefix starts with one of the issuer's, and so
   does the subject's publisher code, so that a province can neither grant another
   province's regions nor give a key another province's feed to write (``scope_violation``);
5. its certifier has not revoked the subject key as of ``at`` (``key_revoked``). Only a
   revocation signed by the key that issued the certificate counts; any other, including one
   that claims the certifier's key id but does not verify, is ignored.

Scope is also what a leaf may *sign* (its :class:`~blacklist.signing.TrustedKey` prefixes):
a province key certified for "44" may sign cards of any city in 44 in its own feed, which
it could anyway by certifying itself a city key. Depth is bounded by scope, not by a count:
a city key may certify another key inside its own prefixes, which grants nothing new.

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
(``replay``) or its previous-digest is not the head's (``fork``), see
:mod:`blacklist.accept`. ``issued_at`` is the signer's own claim, so a thief of a revoked
key can backdate a delta to before T; that delta must also extend the head by exactly one
version with the right previous-digest, which after the authority's first delta under its
new key it cannot (the chain has moved on). The window that remains — a thief racing the
authority to the next version — is why a compromise revocation should name the suspected
time of compromise, and why acceptance should also refuse an ``issued_at`` older than the
head's (a check :mod:`blacklist.accept` does not make yet).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

from blacklist.certs import (
    Certificate,
    KeyRevocation,
    SubjectKey,
    decode_certificate,
    decode_trust_record,
)
from blacklist.errors import BlacklistError, CodecError
from blacklist.regions import MINISTRY_CODE, PROVINCE_PREFIXES
from blacklist.signing import Keyring, TrustedKey, key_id_of, suite

# The scope a TrustedKey carries for the anchor: "" matches every region, and as the
# shortest prefix it loses to every province and city in PublisherDirectory's lookup.
NATIONAL_PREFIX = ""


class TrustError(BlacklistError):
    """A certificate chain does not make a key trusted. ``cause`` is a stable metrics label;
    ``certificate`` is the failing certificate, when there is one."""

    cause: ClassVar[str] = "untrusted"

    def __init__(self, message: str, certificate: Certificate | None = None) -> None:
        super().__init__(message)
        self.certificate = certificate


class MalformedCertificate(TrustError):
    """The bytes do not decode as a certificate."""

    cause = "malformed_certificate"


class UnknownIssuer(TrustError):
    """Issued by a key that is neither the pinned root nor the previous certificate's."""

    cause = "unknown_issuer"


class BadCertificateSignature(TrustError):
    """The issuer's signature does not verify over the certificate's body."""

    cause = "bad_certificate_signature"


class NotYetValid(TrustError):
    cause = "not_yet_valid"


class CertificateExpired(TrustError):
    cause = "expired"


class ScopeViolation(TrustError):
    """The certificate grants a prefix or publisher outside its issuer's scope."""

    cause = "scope_violation"


class KeyRevoked(TrustError):
    """A key in the chain was revoked by its certifier at or before the time checked."""

    cause = "key_revoked"


class ConflictingCertificates(TrustError):
    """Valid chains certify one key for different publishers (so it is trusted for none)."""

    cause = "conflicting_certificates"


ALL_TRUST_CAUSES: tuple[str, ...] = tuple(
    c.cause
    for c in (
        MalformedCertificate,
        UnknownIssuer,
        BadCertificateSignature,
        NotYetValid,
        CertificateExpired,
        ScopeViolation,
        KeyRevoked,
        ConflictingCertificates,
    )
)


class Certifier(Protocol):
    """A key that issues certificates and revocations: the anchor or a certified key."""

    @property
    def key_id(self) -> bytes: ...

    def verify(self, message: bytes, signature: bytes) -> bool: ...


@dataclass(frozen=True, slots=True)
class TrustAnchor:
    """The pinned ministry root key: publisher 000000, national scope."""

    suite_id: int
    public: bytes

    def __post_init__(self) -> None:
        suite(self.suite_id)  # KeyFormatError for an unknown suite
        if not self.public:
            raise ValueError("the trust anchor needs a public key")

    @classmethod
    def of(cls, key: SubjectKey) -> TrustAnchor:
        """The anchor for a root key (its publisher must be the ministry's)."""
        if key.publisher != MINISTRY_CODE:
            raise ValueError(f"a root key publishes for {MINISTRY_CODE}, not {key.publisher}")
        return cls(key.suite_id, key.public)

    @property
    def publisher(self) -> str:
        return MINISTRY_CODE

    @property
    def key_id(self) -> bytes:
        return key_id_of(self.suite_id, self.public)

    def verify(self, message: bytes, signature: bytes) -> bool:
        return suite(self.suite_id).verify(self.public, message, signature)

    def trusted(self) -> TrustedKey:
        return TrustedKey(self.suite_id, self.public, MINISTRY_CODE, (NATIONAL_PREFIX,))


def effective_revocation(
    key_id: bytes, certifier: Certifier, revocations: Iterable[KeyRevocation]
) -> KeyRevocation | None:
    """The earliest revocation of ``key_id`` that ``certifier`` signed, or None.

    Revocations by any other key, and ones whose signature does not verify, are ignored:
    only the key that vouched for a key may withdraw it.
    """
    found: KeyRevocation | None = None
    for r in revocations:
        if r.revoked_key_id != key_id or r.issuer_key_id != certifier.key_id:
            continue
        if found is not None and r.effective_at >= found.effective_at:
            continue
        if certifier.verify(r.digest, r.signature):
            found = r
    return found


def key_valid_at(
    key_id: bytes, certifier: Certifier, revocations: Iterable[KeyRevocation], t: int
) -> bool:
    """Whether something signed at ``t`` with ``key_id`` escapes its certifier's
    revocations: True iff no revocation by ``certifier`` takes effect at or before ``t``."""
    r = effective_revocation(key_id, certifier, revocations)
    return r is None or t < r.effective_at


def _in_national_scope(code: str) -> bool:
    return len(code) >= 2 and code[:2].isdigit() and int(code[:2]) in PROVINCE_PREFIXES


def _within(code: str, scope: tuple[str, ...] | None) -> bool:
    """``scope`` None is the anchor's national scope."""
    return _in_national_scope(code) if scope is None else code.startswith(scope)


def _scope_text(scope: tuple[str, ...] | None) -> str:
    return "the national scope" if scope is None else f"the issuer's scope {list(scope)}"


def check_scope(cert: Certificate, scope: tuple[str, ...] | None) -> None:
    """Raise :class:`ScopeViolation` unless ``cert``'s publisher and every prefix lie within
    ``scope`` (an issuer certificate's prefixes; None is the anchor's national scope)."""
    label = cert.label
    publisher_ok = _within(cert.publisher, scope) or (
        scope is None and cert.publisher == MINISTRY_CODE
    )
    if not publisher_ok:
        raise ScopeViolation(
            f"{label}: publisher {cert.publisher} is outside {_scope_text(scope)}", cert
        )
    for prefix in cert.prefixes:
        if not _within(prefix, scope):
            raise ScopeViolation(
                f"{label}: prefix {prefix!r} is outside {_scope_text(scope)}", cert
            )


def _verify_link(
    cert: Certificate,
    issuer: Certifier,
    issuer_name: str,
    scope: tuple[str, ...] | None,
    revocations: Sequence[KeyRevocation],
    at: int,
) -> None:
    label = cert.label
    if cert.issuer_key_id != issuer.key_id:
        raise UnknownIssuer(
            f"{label}: issuer key {cert.issuer_key_id.hex()} is not {issuer_name} "
            f"({issuer.key_id.hex()})",
            cert,
        )
    if not issuer.verify(cert.digest, cert.signature):
        raise BadCertificateSignature(
            f"{label}: signature does not verify with issuer key {issuer.key_id.hex()}", cert
        )
    if at < cert.not_before:
        raise NotYetValid(f"{label}: not valid before {cert.not_before}, checked at {at}", cert)
    if at > cert.not_after:
        raise CertificateExpired(f"{label}: expired at {cert.not_after}, checked at {at}", cert)
    check_scope(cert, scope)
    revocation = effective_revocation(cert.key_id, issuer, revocations)
    if revocation is not None and revocation.effective_at <= at:
        raise KeyRevoked(
            f"{label}: key {cert.key_id.hex()} revoked as of {revocation.effective_at} "
            f"({revocation.reason.name.lower()}, revocation #{revocation.serial}), "
            f"checked at {at}",
            cert,
        )


def verify_chain(
    chain: Sequence[Certificate],
    anchor: TrustAnchor,
    revocations: Iterable[KeyRevocation],
    at: int,
) -> TrustedKey:
    """The leaf key of ``chain`` (root-most certificate first) as trusted at time ``at``,
    with the leaf certificate's publisher and prefixes; or the :class:`TrustError` that
    forbids it. The empty chain names the anchor itself."""
    revs = tuple(revocations)
    issuer: Certifier = anchor
    issuer_name = "the pinned root key"
    scope: tuple[str, ...] | None = None
    for cert in chain:
        _verify_link(cert, issuer, issuer_name, scope, revs, at)
        issuer = cert.trusted()
        issuer_name = f"the key of {cert.label}"
        scope = cert.prefixes
    return chain[-1].trusted() if chain else anchor.trusted()


def decode_chain(chain: Sequence[bytes]) -> list[Certificate]:
    """Decode a chain from the wire; a certificate that does not decode is a
    :class:`MalformedCertificate` naming its position."""
    out = []
    for i, data in enumerate(chain):
        try:
            out.append(decode_certificate(data))
        except CodecError as exc:
            raise MalformedCertificate(f"certificate {i} of the chain: {exc}") from exc
    return out


def verify_chain_bytes(
    chain: Sequence[bytes],
    anchor: TrustAnchor,
    revocations: Iterable[KeyRevocation],
    at: int,
) -> TrustedKey:
    """:func:`verify_chain` over encoded certificates."""
    return verify_chain(decode_chain(chain), anchor, revocations, at)


def keyring_from_chains(
    chains: Iterable[Sequence[Certificate]],
    anchor: TrustAnchor,
    revocations: Iterable[KeyRevocation],
    at: int,
) -> tuple[Keyring, list[TrustError]]:
    """The keyring of every leaf whose chain verifies at ``at``, and why the others did not.

    One key certified by several valid chains for the same publisher gets the union of their
    prefixes (any valid certificate suffices); certified for different publishers, it is
    ambiguous and left out, with a :class:`ConflictingCertificates` for each such chain.
    """
    revs = tuple(revocations)
    errors: list[TrustError] = []
    by_id: dict[bytes, list[tuple[TrustedKey, Certificate | None]]] = {}
    for chain in chains:
        try:
            key = verify_chain(chain, anchor, revs, at)
        except TrustError as exc:
            errors.append(exc)
            continue
        by_id.setdefault(key.key_id, []).append((key, chain[-1] if chain else None))
    keys: list[TrustedKey] = []
    for key_id, found in by_id.items():
        publishers = sorted({k.publisher for k, _ in found})
        if len(publishers) > 1:
            for _, leaf in found:
                name = leaf.label if leaf is not None else "the pinned root key"
                errors.append(
                    ConflictingCertificates(
                        f"{name}: key {key_id.hex()} is certified for publishers {publishers}",
                        leaf,
                    )
                )
            continue
        first = found[0][0]
        prefixes = sorted({p for k, _ in found for p in k.prefixes})
        keys.append(TrustedKey(first.suite_id, first.public, first.publisher, tuple(prefixes)))
    return Keyring(keys), errors


@runtime_checkable
class KeysAtTime(Protocol):
    """A key mapping with a time dimension (:class:`CertifiedKeys`); acceptance resolves a
    delta's key as of its ``issued_at`` through it. A plain Keyring has none."""

    def key_at(self, key_id: bytes, t: int) -> TrustedKey | None: ...

    def claimed(self, key_id: bytes) -> TrustedKey | None: ...


class CertifiedKeys(Mapping[bytes, TrustedKey]):
    """The keys an anchor's certificate chains certify, honouring their certifiers'
    revocations. Immutable: build a new one (:meth:`updated`) for new chains or revocations.

    As a Mapping it is the keyring of the keys valid at ``at`` (:func:`keyring_from_chains`;
    what a checker or a publisher directory needs). :meth:`key_at` answers for any time: the
    key as trusted for something signed at ``t``, which is what delta acceptance asks.
    """

    def __init__(
        self,
        anchor: TrustAnchor,
        chains: Iterable[Sequence[Certificate]],
        revocations: Iterable[KeyRevocation],
        at: int,
    ) -> None:
        self.anchor = anchor
        self.chains: tuple[tuple[Certificate, ...], ...] = tuple(tuple(c) for c in chains)
        self.revocations: tuple[KeyRevocation, ...] = tuple(revocations)
        self.at = at
        self._by_leaf: dict[bytes, list[tuple[Certificate, ...]]] = {}
        for chain in self.chains:
            leaf = chain[-1].key_id if chain else anchor.key_id
            self._by_leaf.setdefault(leaf, []).append(chain)
        self._now, self.errors = keyring_from_chains(self.chains, anchor, self.revocations, at)

    def updated(
        self,
        chains: Iterable[Sequence[Certificate]] = (),
        revocations: Iterable[KeyRevocation] = (),
        at: int | None = None,
    ) -> CertifiedKeys:
        """A new view with more chains and revocations, as of ``at`` (default: the same)."""
        return CertifiedKeys(
            self.anchor,
            (*self.chains, *chains),
            (*self.revocations, *revocations),
            self.at if at is None else at,
        )

    def __getitem__(self, key_id: bytes) -> TrustedKey:
        return self._now[key_id]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._now)

    def __len__(self) -> int:
        return len(self._now)

    def publishers(self) -> dict[str, tuple[str, ...]]:
        return self._now.publishers()

    def claimed(self, key_id: bytes) -> TrustedKey | None:
        """The key as a certificate names it, verified against nothing (to check a signature
        before saying that a key is revoked); None if no chain ends in it."""
        chains = self._by_leaf.get(key_id)
        if not chains:
            return None
        return chains[0][-1].trusted() if chains[0] else self.anchor.trusted()

    def key_at(self, key_id: bytes, t: int) -> TrustedKey | None:
        """The key as trusted for something signed at ``t``: None if no chain ends in it;
        raises the :class:`TrustError` that forbids it if none of its chains verifies at
        ``t`` (:class:`KeyRevoked` if any of them fails by a revocation, since that is the
        certifier's explicit word; otherwise the first chain's error).

        Several valid chains give the union of their prefixes, as in
        :func:`keyring_from_chains`; for different publishers, :class:`ConflictingCertificates`.
        """
        chains = self._by_leaf.get(key_id)
        if not chains:
            return None
        found: list[TrustedKey] = []
        errors: list[TrustError] = []
        for chain in chains:
            try:
                found.append(verify_chain(chain, self.anchor, self.revocations, t))
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
        return TrustedKey(first.suite_id, first.public, first.publisher, tuple(prefixes))


MAX_CHAIN_DEPTH = 4  # root → province → city is 2; a little room, never a loop


def chains_from_records(
    anchor: TrustAnchor, certificates: Iterable[Certificate]
) -> list[tuple[Certificate, ...]]:
    """Every chain from ``anchor`` to each certificate, found by issuer key ids: how the
    certificates that travel loose in feeds (DESIGN §6) become the chains
    :class:`CertifiedKeys` takes. Nothing is verified here; certificates with no path to the
    anchor give no chain. Two certificates of one key (a renewal) give two chains."""
    by_subject: dict[bytes, list[Certificate]] = {}
    unique = {c.digest: c for c in certificates}
    for cert in unique.values():
        by_subject.setdefault(cert.key_id, []).append(cert)

    def paths(cert: Certificate, depth: int) -> list[tuple[Certificate, ...]]:
        if cert.issuer_key_id == anchor.key_id:
            return [(cert,)]
        if depth >= MAX_CHAIN_DEPTH:
            return []
        return [
            (*up, cert)
            for parent in by_subject.get(cert.issuer_key_id, ())
            for up in paths(parent, depth + 1)
        ]

    return [chain for cert in unique.values() for chain in paths(cert, 1)]


def certified_keys_from_records(
    anchor: TrustAnchor,
    chains: Iterable[Sequence[Certificate]],
    records: Iterable[bytes],
    revocations: Iterable[KeyRevocation],
    at: int,
) -> CertifiedKeys:
    """The keys certified by configured ``chains`` together with the certificates and
    revocations that arrived in feeds (``records``, encoded; ones that do not decode are
    skipped: acceptance already refused them, so these can only come from an older store)."""
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
    anchor_chain: list[tuple[Certificate, ...]] = [()] if () in configured else []
    return CertifiedKeys(anchor, [*anchor_chain, *chains_from_records(anchor, certs)], revs, at)
