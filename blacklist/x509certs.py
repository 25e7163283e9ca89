"""Key certificates as X.509 v3 certificates and key revocations as one-entry X.509 v2 CRLs
(RFC 5280), so that a CA tool can issue them and `openssl x509|crl -text` can show them
(issue #14). The trust rules do not change: :mod:`blacklist.chainverify` enforces scope,
delegation, validity and revocation itself, as RPKI relying parties do (RFC 6487 §7).

Certificate profile (RFC 5280 §4.1; for SM2 the GM/T 0015 profile: SM2 key, SM2-with-SM3)::

    version               v3
    serialNumber          the issuer's number (positive, at most 20 octets)
    signature             the issuer's suite: Ed25519 (RFC 8410, 1.3.101.112) or
                          SM2-with-SM3 (1.2.156.10197.1.501, GM/T 0006)
    issuer, subject       CN = the certifier's / the subject's 6-digit publisher code
    validity              not_before, not_after (UTCTime through 2049, RFC 5280 §4.1.2.5)
    subjectPublicKeyInfo  Ed25519 raw key, or id-ecPublicKey with the sm2 curve
                          (1.2.156.10197.1.301) and the uncompressed point
    extensions
      basicConstraints    critical, cA TRUE (every key may certify its own rotation)
      keyUsage            critical, digitalSignature keyCertSign cRLSign
      subjectKeyId        the subject's project key id (8 bytes, signing.key_id_of)
      authorityKeyId      keyIdentifier = the issuer's key id (what chains are built by)
      regionScope         critical, private: RegionScope below

    RegionScope ::= SEQUENCE {                    -- OID SCOPE_OID
        publisher  NumericString (SIZE (6)),      -- the feed the key may sign
        prefixes   SEQUENCE SIZE (1..255) OF NumericString (SIZE (1..6)) }  -- sorted

The scope is RFC 3779's pattern (IP resources in RFC 6487 certificates): a resource set in a
critical extension, and a child's set must lie within its issuer's. It is critical so that
a verifier that does not know it refuses the certificate (RFC 5280 §4.2) rather than
reading it as unlimited; `openssl verify` therefore needs ``-ignore_critical``, and prints
the scope's digits under the OID with ``x509 -text``. The OIDs are under 2.25 (ITU-T X.667:
a UUID arc anyone may use without registration); a ministry arc would replace them.

Key revocation: a CRL of the certifier with one entry (RFC 5280 §5)::

    version v2; signature, issuer as above; thisUpdate = effective_at;
    nextUpdate 9999-12-31T23:59:59Z (a key revocation never lapses)
    crlExtensions: authorityKeyId (the certifier's key id), cRLNumber = the serial
    revokedCertificates: one entry
      userCertificate     serial of the revoked key's certificate (0: none named)
      revocationDate      effective_at
      reasonCode          keyCompromise | superseded | cessationOfOperation
      keyRevocation       critical, private: KeyRevocationDetail

    KeyRevocationDetail ::= SEQUENCE {            -- OID KEY_REVOCATION_OID
        revokedKeyId  OCTET STRING (SIZE (8)),    -- the key, whatever certificate names it
        lastVersion   [0] IMPLICIT INTEGER OPTIONAL,               -- issue #11 bound
        lastDigest    [1] IMPLICIT OCTET STRING (SIZE (32)) OPTIONAL }

It is critical because it widens the entry from one certificate to the key (RFC 5280 §5.3:
a client that cannot process it must not use the CRL).

Signing: the issuer signs the DER TBSCertificate / TBSCertList itself, as X.509 defines
(Ed25519 over the message; SM2 over SM3 of Z ‖ message, with the default distinguishing
id). Every other message a key signs (deltas, binary certificates, head statements) is a
32-byte digest, and a TBS is a DER SEQUENCE of over 100 bytes, so no signature made for one
can be presented as one for another. A record's ``digest`` (its identity in stores and
caches) is the issuer suite's hash of the TBS: SHA-256, or SM3 under SM2.

Decoding is :mod:`blacklist.x509decode`.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID

from blacklist import der, sm2
from blacklist.certmodel import (
    Certificate,
    CertificateFormatError,
    KeyRevocation,
    RevocationReason,
    SubjectKey,
)
from blacklist.errors import CodecError
from blacklist.regions import MINISTRY_CODE, PROVINCE_PREFIXES
from blacklist.signing import SUITES_BY_NAME, KeyFormatError, SigningKey, suite

_ARC = "2.25.173713548307910393563413707428439674538"
SCOPE_OID = f"{_ARC}.1"
KEY_REVOCATION_OID = f"{_ARC}.2"
MAX_X509_SERIAL = 2**159 - 1  # RFC 5280 §4.1.2.2: positive, at most 20 octets

_CN = "2.5.4.3"
_NO_EXPIRY = der.time_range()[1]  # RFC 5280 §4.1.2.5's 99991231235959Z
# keyUsage bits 0 (digitalSignature), 5 (keyCertSign), 6 (cRLSign): one unused bit (X.690
# §11.2.2, trailing zero bits dropped).
_KEY_USAGE = der.tlv(der.BIT_STRING, b"\x01\x86")
_REASON_CODES = {
    RevocationReason.COMPROMISED: 1,  # keyCompromise (RFC 5280 §5.3.1)
    RevocationReason.SUPERSEDED: 4,  # superseded
    RevocationReason.RETIRED: 5,  # cessationOfOperation
}
KNOWN_CRITICAL = {
    ExtensionOID.BASIC_CONSTRAINTS.dotted_string,
    ExtensionOID.KEY_USAGE.dotted_string,
    SCOPE_OID,
}


@dataclass(frozen=True)
class _Algorithms:
    signature: bytes  # AlgorithmIdentifier of a signature
    key: bytes  # AlgorithmIdentifier in SubjectPublicKeyInfo
    digest: Callable[[bytes], bytes]


# By suite name; the ids come from blacklist.signing, so a suite this build lacks is unknown.
_ALGORITHMS = {
    "ed25519": _Algorithms(
        der.seq(der.oid("1.3.101.112")),
        der.seq(der.oid("1.3.101.112")),
        lambda data: hashlib.sha256(data).digest(),
    ),
    "sm2-sm3": _Algorithms(
        der.seq(der.oid("1.2.156.10197.1.501")),
        der.seq(der.oid("1.2.840.10045.2.1"), der.oid("1.2.156.10197.1.301")),
        sm2.sm3,
    ),
}


def _algorithms(suite_id: int) -> _Algorithms:
    name = suite(suite_id).name
    try:
        return _ALGORITHMS[name]
    except KeyError:
        raise KeyFormatError(f"signing suite {name} has no X.509 algorithm") from None


def suite_of(algorithm: bytes, field: str) -> int:
    for name, algs in _ALGORITHMS.items():
        if getattr(algs, field) == algorithm and name in SUITES_BY_NAME:
            return SUITES_BY_NAME[name].suite_id
    raise CodecError(f"X.509: unknown {field} algorithm {algorithm.hex()}")


def signature_to_x509(suite_id: int, signature: bytes) -> bytes:
    """The signature as X.509 carries it: Ed25519's 64 bytes as they are (RFC 8410), SM2's
    ``r || s`` as the DER SEQUENCE of two INTEGERs (GM/T 0009 §7.3)."""
    if suite(suite_id).name != "sm2-sm3" or not signature:
        return signature
    try:
        return sm2.to_der(signature)
    except sm2.Sm2Error as exc:
        raise CertificateFormatError(str(exc)) from None


def signature_from_x509(suite_id: int, signature: bytes) -> bytes:
    """The inverse of :func:`signature_to_x509` (CodecError if it is not one)."""
    if suite(suite_id).name != "sm2-sm3":
        return signature
    try:
        return sm2.from_der(signature)
    except sm2.Sm2Error as exc:
        raise CodecError(f"X.509: SM2 signature: {exc}") from None


def _name(publisher: str) -> bytes:
    return der.seq(der.set_of(der.seq(der.oid(_CN), der.utf8(publisher))))


def _extension(oid: str, value: bytes, critical: bool = False) -> bytes:
    return der.seq(der.oid(oid), *([der.boolean(True)] if critical else []), der.octets(value))


def _aki(key_id: bytes) -> bytes:
    return _extension(
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER.dotted_string,
        der.seq(der.context(0, key_id, constructed=False)),
    )


def _time(name: str, unix: int) -> bytes:
    try:
        return der.time_value(unix)
    except ValueError as exc:
        raise CertificateFormatError(f"{name}: {exc}") from None


class _Received:
    """The bytes a decoded record arrived as (what its issuer signed), kept beside the
    fields; a record built from fields (or dataclasses.replace'd) encodes itself."""

    _received: tuple[bytes, bytes] | None = None  # (tbs, whole record)
    issuer_suite_id: int
    signature: bytes

    def _encode_tbs(self) -> bytes:
        raise NotImplementedError

    def _with_signature(self, tbs: bytes) -> bytes:
        raise NotImplementedError

    @cached_property
    def tbs(self) -> bytes:
        return self._received[0] if self._received else self._encode_tbs()

    @property
    def body(self) -> bytes:
        return self.tbs

    @property
    def signed_message(self) -> bytes:
        return self.tbs

    @cached_property
    def digest(self) -> bytes:
        return _algorithms(self.issuer_suite_id).digest(self.tbs)

    def to_bytes(self) -> bytes:
        return self._received[1] if self._received else self._with_signature(self.tbs)

    def verified_by(self, key: Any) -> bool:
        """Whether ``key`` signed the TBS, in the suite the record names (X.509 signs the
        TBS itself: Ed25519 over it, SM2 over SM3 of Z and it)."""
        return bool(key.suite_id == self.issuer_suite_id and key.verify(self.tbs, self.signature))

    def _signed(self, tbs: bytes, signature: bytes) -> bytes:
        alg = _algorithms(self.issuer_suite_id).signature
        return der.seq(tbs, alg, der.bits(signature_to_x509(self.issuer_suite_id, signature)))


@dataclass(frozen=True)
class X509Certificate(_Received, Certificate):
    """A :class:`~blacklist.certs.Certificate` in the X.509 profile above."""

    issuer_publisher: str = MINISTRY_CODE
    issuer_suite_id: int = 1
    min_serial: ClassVar[int] = 1  # RFC 5280 §4.1.2.2: positive
    max_serial: ClassVar[int] = MAX_X509_SERIAL

    def _encode_tbs(self) -> bytes:
        algs, issuer_algs = _algorithms(self.suite_id), _algorithms(self.issuer_suite_id)
        scope = der.seq(der.numeric(self.publisher), der.seq(*map(der.numeric, self.prefixes)))
        extensions = [
            _extension(ExtensionOID.BASIC_CONSTRAINTS.dotted_string, der.seq(der.boolean(True)), True),
            _extension(ExtensionOID.KEY_USAGE.dotted_string, _KEY_USAGE, True),
            _extension(ExtensionOID.SUBJECT_KEY_IDENTIFIER.dotted_string, der.octets(self.key_id)),
            _aki(self.issuer_key_id),
            _extension(SCOPE_OID, scope, True),
        ]  # fmt: skip
        return der.seq(
            der.context(0, der.integer(2)),
            der.integer(self.serial),
            issuer_algs.signature,
            _name(self.issuer_publisher),
            der.seq(_time("not_before", self.not_before), _time("not_after", self.not_after)),
            _name(self.publisher),
            der.seq(algs.key, der.bits(self.public)),
            der.context(3, der.seq(*extensions)),
        )

    def _with_signature(self, tbs: bytes) -> bytes:
        return self._signed(tbs, self.signature)


@dataclass(frozen=True)
class X509Revocation(_Received, KeyRevocation):
    """A :class:`~blacklist.certs.KeyRevocation` as a one-entry CRL of its certifier."""

    issuer_publisher: str = MINISTRY_CODE
    issuer_suite_id: int = 1
    certificate_serial: int = 0

    def _encode_tbs(self) -> bytes:
        detail = [der.octets(self.revoked_key_id)]
        if self.last_version is not None:
            detail.append(der.tlv(0x80, der.integer(self.last_version)[2:]))
        if self.last_digest is not None:
            detail.append(der.context(1, self.last_digest, constructed=False))
        entry_extensions = der.seq(
            _extension(
                CRLEntryExtensionOID.CRL_REASON.dotted_string,
                der.tlv(0x0A, bytes([_REASON_CODES[self.reason]])),  # ENUMERATED
            ),
            _extension(KEY_REVOCATION_OID, der.seq(*detail), True),
        )
        entry = der.seq(
            der.integer(self.certificate_serial),
            _time("effective_at", self.effective_at),
            entry_extensions,
        )
        crl_extensions = der.seq(
            _aki(self.issuer_key_id),
            _extension(ExtensionOID.CRL_NUMBER.dotted_string, der.integer(self.serial)),
        )
        return der.seq(
            der.integer(1),
            _algorithms(self.issuer_suite_id).signature,
            _name(self.issuer_publisher),
            _time("effective_at", self.effective_at),
            der.time_value(_NO_EXPIRY),
            der.seq(entry),
            der.context(0, crl_extensions),
        )

    def _with_signature(self, tbs: bytes) -> bytes:
        return self._signed(tbs, self.signature)


def issue_x509_certificate(
    issuer: SigningKey,
    subject: SubjectKey,
    prefixes: Iterable[str],
    not_before: int,
    not_after: int,
    serial: int,
) -> X509Certificate:
    """:func:`blacklist.certs.issue_certificate` in the X.509 profile."""
    unsigned = X509Certificate(
        serial, subject.publisher, subject.suite_id, subject.public, tuple(prefixes),
        not_before, not_after, issuer.key_id, b"",
        issuer_publisher=issuer.publisher, issuer_suite_id=issuer.suite_id,
    )  # fmt: skip
    return dataclasses.replace(unsigned, signature=issuer.sign(unsigned.tbs))


def issue_x509_revocation(
    issuer: SigningKey,
    revoked_key_id: bytes,
    effective_at: int,
    reason: RevocationReason,
    serial: int,
    *,
    last_version: int | None = None,
    last_digest: bytes | None = None,
    certificate_serial: int = 0,
) -> X509Revocation:
    """:func:`blacklist.certs.issue_revocation` as a one-entry CRL; ``certificate_serial``
    names the revoked key's certificate (the key is revoked whatever certificate names it)."""
    unsigned = X509Revocation(
        serial, issuer.key_id, revoked_key_id, effective_at, reason, b"",
        last_version=last_version, last_digest=last_digest,
        issuer_publisher=issuer.publisher, issuer_suite_id=issuer.suite_id,
        certificate_serial=certificate_serial,
    )  # fmt: skip
    return dataclasses.replace(unsigned, signature=issuer.sign(unsigned.tbs))


def self_signed_root(
    root: SigningKey, not_before: int, not_after: int, serial: int = 1
) -> X509Certificate:
    """The ministry root key's self-signed certificate, for CA tools (`openssl verify
    -CAfile root.crt`): national scope (every province prefix). Nodes pin the root's public
    key, not this certificate, and chain building drops self-issued certificates."""
    if root.publisher != MINISTRY_CODE:
        raise CertificateFormatError(
            f"a root key publishes for {MINISTRY_CODE}, not {root.publisher}"
        )
    provinces = [f"{p:02d}" for p in sorted(PROVINCE_PREFIXES)]
    return issue_x509_certificate(root, root, provinces, not_before, not_after, serial)


def to_pem(record: X509Certificate | X509Revocation) -> bytes:
    """RFC 7468 text: what `openssl x509|crl` read by default."""
    label = "CERTIFICATE" if isinstance(record, X509Certificate) else "X509 CRL"
    text = base64.encodebytes(record.to_bytes()).decode("ascii").replace("\n", "")
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""]).encode()


def from_pem(data: bytes) -> bytes:
    """The DER inside RFC 7468 text; bytes that are not PEM are returned as they are."""
    if not data.lstrip().startswith(b"-----BEGIN "):
        return data
    lines = data.strip().splitlines()
    if not lines[-1].startswith(b"-----END "):
        raise CodecError("PEM: no -----END line")
    try:
        return base64.b64decode(b"".join(lines[1:-1]), validate=True)
    except ValueError as exc:
        raise CodecError(f"PEM: {exc}") from None
