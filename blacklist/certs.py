"""Key certificates and key revocations: the signed objects of the trust hierarchy, issued
and decoded (the fields are :mod:`blacklist.certmodel`, re-exported here).

The ministry root key (pinned in every node's config, see :mod:`blacklist.trust`) certifies
province keys, a province certifies its cities' keys, and a certifier can revoke a key it
certified as of a time (DESIGN §6). Whether a chain of them is acceptable is
:mod:`blacklist.trust`.

Two encodings of the same two objects (issue #14):

* X.509 (:mod:`blacklist.x509certs`): an X.509 v3 certificate with the region scope in a
  critical private extension, and a one-entry CRL of the certifier for a key revocation. What
  the CLI and :func:`issue_certificate` / :func:`issue_revocation` write now, so that a CA
  tool can issue and inspect them. X.509 name constraints (RFC 5280 §4.2.1.10) cannot say
  "any region code that starts with 4401", hence the private extension (the RFC 3779 way).
* The binary layout of issue #5 (:mod:`blacklist.certs_binary`, magic ``KCRT`` / ``KREV``):
  still decoded and verified, never re-signed, so every certificate and revocation already
  in stores, feeds and configs keeps its bytes, digest and signature and stays valid until
  it expires. Nothing new is written in it except by ``form="binary"`` (tests).

Suites (issue #14): a record is signed by its *issuer's* suite (an Ed25519 root certifying
an SM2 province signs with Ed25519; an SM2 province certifying its cities with SM2), so a
hierarchy moves suite by suite through ordinary rotations. A binary record is signed over
the issuer suite's digest of its body (SHA-256 or SM3); an X.509 one over its TBS, as X.509
defines. A record's ``digest`` is only its identity among the records a node holds. A
certificate names no SM2 distinguishing id: the subject's is the default (GM/T 0009 §10),
and :func:`issue_certificate` refuses a key with another.

:func:`decode_trust_record` tells them apart by the first byte (a DER SEQUENCE is 0x30, the
magics start with ``K``). The rules (:mod:`blacklist.chainverify`) see only the fields.

Domain separation: a province key signs both its feed's deltas and its cities' certificates.
A binary record is signed over its suite's digest of a body starting with the ASCII magic (first byte
0x4B), a delta over its suite's digest of a body starting with its kind byte (1 or 2, see
:mod:`blacklist.delta`), an X.509 record over its DER TBS (see :mod:`blacklist.x509certs`),
so a signature made for one kind of message can never be presented as one for another.
Decoding raises :class:`~blacklist.errors.CodecError` and verifies nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from blacklist import certs_binary, x509certs, x509decode
from blacklist.certmodel import (
    CERT_MAGIC,
    DIGEST_LENGTH,
    FORMAT_VERSION,
    MAX_PREFIX_DIGITS,
    MAX_PREFIXES,
    MAX_PUBLIC_KEY,
    MAX_SIGNATURE,
    REVOCATION_BOUNDED_FORMAT,
    REVOCATION_MAGIC,
    Certificate,
    CertificateFormatError,
    Form,
    KeyRevocation,
    RevocationReason,
    SubjectKey,
    canonical_prefixes,
    verified_by,
)
from blacklist.signing import SigningKey

# The model is re-exported: callers import it from here.
__all__ = [
    "CERT_MAGIC",
    "DIGEST_LENGTH",
    "FORMAT_VERSION",
    "MAX_PREFIXES",
    "MAX_PREFIX_DIGITS",
    "MAX_PUBLIC_KEY",
    "MAX_SIGNATURE",
    "REVOCATION_BOUNDED_FORMAT",
    "REVOCATION_MAGIC",
    "Certificate",
    "CertificateFormatError",
    "Form",
    "KeyRevocation",
    "RevocationReason",
    "SubjectKey",
    "canonical_prefixes",
    "decode_certificate",
    "decode_revocation",
    "decode_trust_record",
    "issue_certificate",
    "issue_revocation",
    "verified_by",
]


def issue_certificate(
    issuer: SigningKey,
    subject: SubjectKey,
    prefixes: Iterable[str],
    not_before: int,
    not_after: int,
    serial: int,
    *,
    form: Form = "x509",
) -> Certificate:
    """Certify ``subject``'s public key for its publisher and ``prefixes`` (any order), as an
    X.509 certificate (``form="binary"``: the issue #5 layout, for tests of old records).

    Nothing here checks that the scope is the issuer's to give: a verifier does that
    (:func:`blacklist.trust.verify_chain`), because it must not trust the issuer's word.
    """
    distid = getattr(subject, "distid", None)
    if distid is not None:
        raise CertificateFormatError(
            f"a certificate names no SM2 distinguishing id, so the subject's must be the "
            f"default, not {distid!r:.40}"
        )
    if form == "x509":
        return x509certs.issue_x509_certificate(
            issuer, subject, prefixes, not_before, not_after, serial
        )
    unsigned = Certificate(
        serial,
        subject.publisher,
        subject.suite_id,
        subject.public,
        tuple(prefixes),
        not_before,
        not_after,
        issuer.key_id,
        b"",
    )
    return dataclasses.replace(unsigned, signature=issuer.sign_body(unsigned.body))


def issue_revocation(
    issuer: SigningKey,
    revoked_key_id: bytes,
    effective_at: int,
    reason: RevocationReason,
    serial: int,
    *,
    last_version: int | None = None,
    last_digest: bytes | None = None,
    certificate_serial: int = 0,
    form: Form = "x509",
) -> KeyRevocation:
    """Revoke a key this issuer certified, as of ``effective_at``; with ``last_version``,
    also past that version of the key's feed (the head it stood behind when revoked). As a
    one-entry X.509 CRL naming ``certificate_serial`` (the revoked key's certificate; 0: not
    named), or with ``form="binary"`` in the issue #5 layout."""
    if form == "x509":
        return x509certs.issue_x509_revocation(
            issuer, revoked_key_id, effective_at, reason, serial,
            last_version=last_version, last_digest=last_digest,
            certificate_serial=certificate_serial,
        )  # fmt: skip
    unsigned = KeyRevocation(
        serial,
        issuer.key_id,
        revoked_key_id,
        effective_at,
        reason,
        b"",
        last_version=last_version,
        last_digest=last_digest,
    )
    return dataclasses.replace(unsigned, signature=issuer.sign_body(unsigned.body))


def decode_certificate(data: bytes) -> Certificate:
    """Parse one certificate, X.509 or binary. Raises CodecError on anything else."""
    if x509decode.is_der(data):
        return x509decode.decode_x509_certificate(data)
    return certs_binary.decode_binary_certificate(data)


def decode_revocation(data: bytes) -> KeyRevocation:
    """Parse one key revocation, an X.509 CRL or binary. Raises CodecError on anything else."""
    if x509decode.is_der(data):
        return x509decode.decode_x509_revocation(data)
    return certs_binary.decode_binary_revocation(data)


def decode_trust_record(data: bytes) -> Certificate | KeyRevocation:
    """A certificate or a key revocation (the trust section of a feed carries both, see
    :mod:`blacklist.delta`): X.509 or binary, and which of the two by its structure/magic."""
    if x509decode.is_der(data):
        return x509decode.decode_x509_record(data)
    if data[: len(REVOCATION_MAGIC)] == REVOCATION_MAGIC:
        return decode_revocation(data)
    return decode_certificate(data)
