"""Verifying one certificate chain: the rules of the certified key hierarchy. Pure, no I/O.

Every node pins one :class:`TrustAnchor`, the ministry root key, whose scope is national:
any province-level prefix of :data:`blacklist.regions.PROVINCE_PREFIXES` or a longer prefix
under one. A chain runs from the anchor to the key that signs, root-most certificate first
(province, then city). :func:`verify_chain` checks each certificate in a fixed order — the
first failure wins and names the certificate and the value:

1. its issuer key id is the anchor's (first certificate) or the previous certificate's
   subject key id (``unknown_issuer``: a chain to a self-made root ends here);
2. the issuer's signature over what its encoding signs: the X.509 TBS in the suite the
   certificate names, or its suite's digest of a binary body (``bad_certificate_signature``);
3. ``not_before <= at <= not_after`` (``not_yet_valid``, ``expired``);
4. its scope lies within its issuer's: every prefix starts with one of the issuer's, and so
   does the subject's publisher code, so that a province can neither grant another
   province's regions nor give a key another province's feed to write (``scope_violation``);
   and it delegates only what a certifier may give (issue #11): the issuer's own rotation
   (the issuer's publisher, prefixes within its own) or a key for strictly narrower
   prefixes (each longer than, and under, one of the issuer's). A city certifying another
   publisher for its own "4401" would make two publishers claim one prefix: refused
   (``scope_violation``; at a feed's door, :mod:`blacklist.sync.trust_rules` refuses the
   record itself as ``bad_trust_record``);
5. its certifier has not revoked the subject key as of ``at`` (``key_revoked``). Only a
   revocation signed by the key that issued the certificate counts; any other, including one
   that claims the certifier's key id but does not verify, is ignored;
6. with the node's clock ``now`` given (anything that moves a feed forward, issue #11):
   it has not expired at ``now`` either (``expired``). ``issued_at`` is the signer's word, so
   checking validity at ``at`` alone lets a key whose certificate expired a month ago sign a
   delta dated before that; the node's own clock it cannot move. (``not_before`` is checked
   at ``at`` only: an item dated before its key was certified is refused there, and how far
   ``at`` may run ahead of the clock is acceptance's skew rule.)

Scope is also what a leaf may *sign* (its :class:`~blacklist.signing.TrustedKey` prefixes):
a province key certified for "44" may sign cards of any city in 44 in its own feed, which
it could anyway by certifying itself a city key. Depth is bounded by scope, not by a count:
a city key may certify another key inside its own prefixes, which grants nothing new.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from blacklist.certs import (
    Certificate,
    KeyRevocation,
    SubjectKey,
    decode_certificate,
    verified_by,
)
from blacklist.errors import CodecError
from blacklist.publishers import PrefixConflict as PrefixConflict
from blacklist.regions import MINISTRY_CODE, PROVINCE_PREFIXES
from blacklist.signing import TrustedKey, key_id_of, suite
from blacklist.trusterror import TrustError as TrustError

# The scope a TrustedKey carries for the anchor: "" matches every region, and as the
# shortest prefix it loses to every province and city in PublisherDirectory's lookup.
NATIONAL_PREFIX = ""


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
        PrefixConflict,
    )
)


class Certifier(Protocol):
    """A key that issues certificates and revocations: the anchor or a certified key."""

    @property
    def key_id(self) -> bytes: ...

    @property
    def publisher(self) -> str: ...

    def verify_body(self, body: bytes, signature: bytes) -> bool: ...
    @property
    def suite_id(self) -> int: ...

    def verify(self, message: bytes, signature: bytes) -> bool: ...


@dataclass(frozen=True, slots=True)
class TrustAnchor:
    """The pinned ministry root key: publisher 000000, national scope (an SM2 root may name
    its distinguishing id in root.pub, see :mod:`blacklist.signing`)."""

    suite_id: int
    public: bytes
    distid: bytes | None = None

    def __post_init__(self) -> None:
        # KeyFormatError for an unknown suite or an id the suite does not take
        object.__setattr__(self, "distid", suite(self.suite_id).check_distid(self.distid))
        if not self.public:
            raise ValueError("the trust anchor needs a public key")

    @classmethod
    def of(cls, key: SubjectKey) -> TrustAnchor:
        """The anchor for a root key (its publisher must be the ministry's)."""
        if key.publisher != MINISTRY_CODE:
            raise ValueError(f"a root key publishes for {MINISTRY_CODE}, not {key.publisher}")
        return cls(key.suite_id, key.public, getattr(key, "distid", None))

    @property
    def publisher(self) -> str:
        return MINISTRY_CODE

    @property
    def key_id(self) -> bytes:
        return key_id_of(self.suite_id, self.public)

    def verify_body(self, body: bytes, signature: bytes) -> bool:
        return self.trusted().verify_body(body, signature)

    def verify(self, message: bytes, signature: bytes) -> bool:
        return self.trusted().verify(message, signature)

    def trusted(self) -> TrustedKey:
        return TrustedKey(
            self.suite_id, self.public, MINISTRY_CODE, (NATIONAL_PREFIX,), distid=self.distid
        )


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
        if verified_by(r, certifier):
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


def check_delegation(
    cert: Certificate, issuer_publisher: str, scope: tuple[str, ...] | None
) -> None:
    """Raise :class:`ScopeViolation` unless ``cert`` is within ``scope`` (:func:`check_scope`)
    and is either its issuer's own rotation (publisher ``issuer_publisher``) or a key for
    strictly narrower prefixes: each prefix longer than, and under, one of ``scope``'s
    (issue #11: a key certifies only its own rotation or strictly narrower prefixes, so that
    no certifier can hand its own prefix to a second publisher)."""
    check_scope(cert, scope)
    if cert.publisher == issuer_publisher or scope is None:
        # The national scope is "": every certifiable prefix (>= 2 digits) is narrower.
        return
    for prefix in cert.prefixes:
        if not any(prefix.startswith(s) and len(prefix) > len(s) for s in scope):
            raise ScopeViolation(
                f"{cert.label}: prefix {prefix!r} for publisher {cert.publisher} is not "
                f"strictly narrower than {_scope_text(scope)} (publisher {issuer_publisher}), "
                "and the certificate is not the issuer's own rotation",
                cert,
            )


class RevocationIndex:
    """Revocations by revoked key id, with each signature checked at most once per
    certifier: what chain verification looks up at every link."""

    def __init__(self, revocations: Iterable[KeyRevocation]) -> None:
        self._by_key: dict[bytes, list[KeyRevocation]] = {}
        for r in {r.digest: r for r in revocations}.values():
            self._by_key.setdefault(r.revoked_key_id, []).append(r)
        self._verified: dict[tuple[bytes, bytes], bool] = {}

    def by(self, key_id: bytes, certifier: Certifier) -> list[KeyRevocation]:
        """The revocations of ``key_id`` that ``certifier`` signed (verified)."""
        out = []
        for r in self._by_key.get(key_id, ()):
            if r.issuer_key_id != certifier.key_id:
                continue
            seen = self._verified.get((r.digest, certifier.key_id))
            if seen is None:
                seen = self._verified[r.digest, certifier.key_id] = verified_by(r, certifier)
            if seen:
                out.append(r)
        return out

    def earliest(self, key_id: bytes, certifier: Certifier) -> KeyRevocation | None:
        found = self.by(key_id, certifier)
        return min(found, key=lambda r: (r.effective_at, r.serial)) if found else None


class SignatureCache:
    """Certificate signatures already checked, by (issuer key id, digest, signature): a key's
    chains are verified at every delta, their signatures once."""

    def __init__(self) -> None:
        self._seen: dict[tuple[bytes, bytes, bytes], bool] = {}

    def verifies(self, issuer: Certifier, cert: Certificate) -> bool:
        key = (issuer.key_id, cert.digest, cert.signature)
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = verified_by(cert, issuer)
        return seen


def _verify_link(
    cert: Certificate,
    issuer: Certifier,
    issuer_name: str,
    scope: tuple[str, ...] | None,
    revocations: RevocationIndex,
    at: int,
    now: int | None,
    signatures: SignatureCache,
) -> None:
    label = cert.label
    if cert.issuer_key_id != issuer.key_id:
        raise UnknownIssuer(
            f"{label}: issuer key {cert.issuer_key_id.hex()} is not {issuer_name} "
            f"({issuer.key_id.hex()})",
            cert,
        )
    if not signatures.verifies(issuer, cert):
        raise BadCertificateSignature(
            f"{label}: signature does not verify with issuer key {issuer.key_id.hex()}", cert
        )
    if at < cert.not_before:
        raise NotYetValid(f"{label}: not valid before {cert.not_before}, checked at {at}", cert)
    if at > cert.not_after:
        raise CertificateExpired(f"{label}: expired at {cert.not_after}, checked at {at}", cert)
    if now is not None and now > cert.not_after:
        raise CertificateExpired(
            f"{label}: expired at {cert.not_after}, before this node's clock {now} "
            f"(the item claims {at})",
            cert,
        )
    check_delegation(cert, issuer.publisher, scope)
    revocation = revocations.earliest(cert.key_id, issuer)
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
    revocations: Iterable[KeyRevocation] | RevocationIndex,
    at: int,
    *,
    now: int | None = None,
    signatures: SignatureCache | None = None,
) -> TrustedKey:
    """The leaf key of ``chain`` (root-most certificate first) as trusted for something
    signed at ``at``, with the leaf certificate's publisher and prefixes; or the
    :class:`TrustError` that forbids it. With ``now`` (the node's clock), every certificate
    must also be unexpired at ``now``. The empty chain names the anchor itself."""
    revs = revocations if isinstance(revocations, RevocationIndex) else RevocationIndex(revocations)
    cache = SignatureCache() if signatures is None else signatures
    issuer: Certifier = anchor
    issuer_name = "the pinned root key"
    scope: tuple[str, ...] | None = None
    for cert in chain:
        _verify_link(cert, issuer, issuer_name, scope, revs, at, now, cache)
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
