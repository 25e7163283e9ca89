"""Decoding the X.509 key certificates and key revocation CRLs of
:mod:`blacklist.x509certs` (whose docstring is the profile).

Parsing is `cryptography`'s (strict DER); the subject public key of a suite it does not
know (SM2) and the private extensions are read with :mod:`blacklist.der`. Refused
(:class:`~blacklist.errors.CodecError`): more than :data:`MAX_DER_BYTES`, an unknown
critical extension (RFC 5280 §4.2), no critical scope (or key revocation detail), a subject
key identifier that is not the key's, two different signature algorithms inside and
outside the TBS, a signature with unused bits, a serial that is not positive, a CRL with
other than one entry. The bytes received are kept (what the issuer signed): a certificate a
CA tool wrote with another name layout or more non-critical extensions is the same
certificate to the rules. Nothing is verified here.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID

from blacklist import der
from blacklist.certmodel import DIGEST_LENGTH, CertificateFormatError, RevocationReason
from blacklist.errors import CodecError
from blacklist.signing import KEY_ID_LENGTH
from blacklist.x509certs import (
    KEY_REVOCATION_OID,
    KNOWN_CRITICAL,
    SCOPE_OID,
    X509Certificate,
    X509Revocation,
    signature_from_x509,
    suite_of,
)

MAX_DER_BYTES = 8192  # far above the ~450 bytes of ours; bounds what is parsed


def _outer(data: bytes, what: str) -> tuple[bytes, list[tuple[int, bytes, bytes]]]:
    """The TBS's elements, checking the outer signature algorithm is the TBS's."""
    if len(data) > MAX_DER_BYTES:
        raise CodecError(f"{what}: {len(data)} bytes, more than {MAX_DER_BYTES}")
    parts = der.elements(der.read_one(data, der.SEQUENCE, what))
    if len(parts) != 3 or parts[0][0] != der.SEQUENCE or parts[2][0] != der.BIT_STRING:
        raise CodecError(f"{what}: not a signed SEQUENCE of three parts")
    if parts[2][1][:1] != b"\x00":  # signatures are whole bytes: no unused bits
        raise CodecError(f"{what}: the signature BIT STRING has unused bits")
    tbs = parts[0][2]
    fields = der.elements(parts[0][1])
    inner = fields[2 if fields and fields[0][0] == 0xA0 else 1][2] if len(fields) > 2 else b""
    if inner != parts[1][2]:
        raise CodecError(f"{what}: the signature algorithm differs inside and outside the TBS")
    return tbs, fields


def _publisher(name: x509.Name) -> str:
    cns = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else ""


def _extensions(exts: x509.Extensions, what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for ext in exts:
        key = ext.oid.dotted_string
        if ext.critical and key not in KNOWN_CRITICAL | {KEY_REVOCATION_OID}:
            raise CodecError(f"{what}: unknown critical extension {key} (RFC 5280 §4.2)")
        out[key] = ext
    return out


def _numeric(tag: int, content: bytes, what: str) -> str:
    if tag != der.NUMERIC_STRING or not content.isdigit():
        raise CodecError(f"{what}: expected a NumericString of digits, got {content!r:.20}")
    return content.decode("ascii")


def _scope(ext: Any, what: str) -> tuple[str, tuple[str, ...]]:
    if ext is None or not ext.critical:
        raise CodecError(f"{what}: no critical region scope extension {SCOPE_OID}")
    parts = der.elements(der.read_one(ext.value.value, der.SEQUENCE, what))
    if len(parts) != 2 or parts[1][0] != der.SEQUENCE:
        raise CodecError(f"{what}: the region scope is not (publisher, prefixes)")
    publisher = _numeric(parts[0][0], parts[0][1], what)
    prefixes = tuple(_numeric(t, c, what) for t, c, _ in der.elements(parts[1][1]))
    return publisher, prefixes


def _key_ids(exts: dict[str, Any], what: str) -> tuple[bytes, bytes | None]:
    aki = exts.get(ExtensionOID.AUTHORITY_KEY_IDENTIFIER.dotted_string)
    ski = exts.get(ExtensionOID.SUBJECT_KEY_IDENTIFIER.dotted_string)
    issuer_id = None if aki is None else aki.value.key_identifier
    if issuer_id is None or len(issuer_id) != KEY_ID_LENGTH:
        raise CodecError(f"{what}: needs an {KEY_ID_LENGTH}-byte authority key identifier")
    return issuer_id, None if ski is None else ski.value.digest


def _build(what: str, make: Callable[[], Any], tbs: bytes, data: bytes) -> Any:
    try:
        item = make()
    except (ValueError, OverflowError) as exc:  # CertificateFormatError, KeyFormatError
        raise CodecError(f"{what}: {exc}") from None
    object.__setattr__(item, "_received", (tbs, bytes(data)))
    return item


def decode_x509_certificate(data: bytes) -> X509Certificate:
    """Parse one X.509 certificate of the key hierarchy. Raises CodecError."""
    what = "X.509 certificate"
    tbs, fields = _outer(bytes(data), what)
    serial = fields[1][1] if len(fields) > 1 and fields[1][0] == der.INTEGER else b""
    if int.from_bytes(serial, "big", signed=True) <= 0:
        raise CodecError(f"{what}: the serial number is not positive (RFC 5280 §4.1.2.2)")
    try:
        with warnings.catch_warnings():
            # A non-positive serial inside an extension (the AKI's authorityCertSerialNumber)
            # warns before the profile refuses it below; the certificate's own is checked above.
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            cert = x509.load_der_x509_certificate(bytes(data))
            exts = _extensions(cert.extensions, what)
    except Exception as exc:  # ValueError, InvalidVersion, ...: whatever it cannot parse
        raise CodecError(f"{what}: {exc}") from None
    if cert.version != x509.Version.v3 or len(fields) < 7:
        raise CodecError(f"{what}: not a version 3 certificate")
    spki = der.elements(fields[6][1])
    if len(spki) != 2 or spki[1][0] != der.BIT_STRING or spki[1][1][:1] != b"\x00":
        raise CodecError(f"{what}: malformed subject public key")
    suite_id = suite_of(spki[0][2], "key")
    public = spki[1][1][1:]
    issuer_suite = suite_of(fields[2][2], "signature")
    publisher, prefixes = _scope(exts.get(SCOPE_OID), what)
    issuer_id, subject_id = _key_ids(exts, what)

    def make() -> X509Certificate:
        out = X509Certificate(
            cert.serial_number, publisher, suite_id, public, prefixes,
            int(cert.not_valid_before_utc.timestamp()), int(cert.not_valid_after_utc.timestamp()),
            issuer_id, signature_from_x509(issuer_suite, cert.signature),
            issuer_publisher=_publisher(cert.issuer), issuer_suite_id=issuer_suite,
        )  # fmt: skip
        if subject_id is not None and subject_id != out.key_id:
            raise CertificateFormatError(
                f"subject key identifier {subject_id.hex()} is not the key's id {out.key_id.hex()}"
            )
        return out

    return _build(what, make, tbs, data)  # type: ignore[no-any-return]


def _detail(ext: Any, what: str) -> tuple[bytes, int | None, bytes | None]:
    if ext is None or not ext.critical:
        raise CodecError(f"{what}: no critical key revocation extension {KEY_REVOCATION_OID}")
    parts = der.elements(der.read_one(ext.value.value, der.SEQUENCE, what))
    if not parts or parts[0][0] != der.OCTET_STRING:
        raise CodecError(f"{what}: the key revocation detail does not start with the key id")
    last_version: int | None = None
    last_digest: bytes | None = None
    rest = [(t, c) for t, c, _ in parts[1:]]
    if rest and rest[0][0] == 0x80:
        last_version = der.read_integer(rest.pop(0)[1], what)
    if rest and rest[0][0] == 0x81 and len(rest[0][1]) == DIGEST_LENGTH:
        last_digest = rest.pop(0)[1]
    if rest:
        raise CodecError(f"{what}: unexpected fields in the key revocation detail")
    return parts[0][1], last_version, last_digest


def decode_x509_revocation(data: bytes) -> X509Revocation:
    """Parse one key revocation CRL (exactly one entry). Raises CodecError."""
    what = "X.509 key revocation CRL"
    tbs, fields = _outer(bytes(data), what)
    try:
        crl = x509.load_der_x509_crl(bytes(data))
        exts = _extensions(crl.extensions, what)
        entries = list(crl)
        if len(entries) != 1:
            raise CodecError(f"{what}: {len(entries)} entries, a key revocation has one")
        entry = entries[0]
        entry_exts = _extensions(entry.extensions, what)
    except CodecError:
        raise
    except Exception as exc:  # ValueError and the like: whatever it cannot parse
        raise CodecError(f"{what}: {exc}") from None
    issuer_id, _ = _key_ids(exts, what)
    number = exts.get(ExtensionOID.CRL_NUMBER.dotted_string)
    if number is None:
        raise CodecError(f"{what}: no CRL number (the revocation's serial)")
    reason_ext = entry_exts.get(CRLEntryExtensionOID.CRL_REASON.dotted_string)
    code = None if reason_ext is None else _REASON_CODES_BY_FLAG.get(reason_ext.value.reason)
    if code is None:
        raise CodecError(f"{what}: reason must be keyCompromise, superseded or cessation")
    revoked, last_version, last_digest = _detail(entry_exts.get(KEY_REVOCATION_OID), what)
    effective_at = int(entry.revocation_date_utc.timestamp())
    issuer_suite = suite_of(fields[1][2], "signature")

    def make() -> X509Revocation:
        return X509Revocation(
            number.value.crl_number, issuer_id, revoked, effective_at, code,
            signature_from_x509(issuer_suite, crl.signature),
            last_version=last_version, last_digest=last_digest,
            issuer_publisher=_publisher(crl.issuer), issuer_suite_id=issuer_suite,
            certificate_serial=entry.serial_number,
        )  # fmt: skip

    return _build(what, make, tbs, data)  # type: ignore[no-any-return]


_REASON_CODES_BY_FLAG = {
    x509.ReasonFlags.key_compromise: RevocationReason.COMPROMISED,
    x509.ReasonFlags.superseded: RevocationReason.SUPERSEDED,
    x509.ReasonFlags.cessation_of_operation: RevocationReason.RETIRED,
}


def is_der(data: bytes) -> bool:
    """Whether ``data`` looks like DER (a SEQUENCE) rather than the binary KCRT/KREV."""
    return data[:1] == bytes([der.SEQUENCE])


def decode_x509_record(data: bytes) -> X509Certificate | X509Revocation:
    """A certificate or a CRL, told apart by the TBS's first element: a certificate's is
    the [0] version tag, a CRL's the version INTEGER."""
    _, fields = _outer(bytes(data), "X.509 trust record")
    if fields and fields[0][0] == 0xA0:
        return decode_x509_certificate(data)
    return decode_x509_revocation(data)
