"""The binary layout of key certificates and revocations (issue #5), still decoded so that
every record already held in stores, feeds and configs stays valid (issue #14 writes X.509,
:mod:`blacklist.x509certs`). The objects and their encoding are :mod:`blacklist.certs`.

Certificate (every integer big-endian)::

    field          encoding                  meaning
    magic          4 bytes  b"KCRT"          what this is; see "domain separation" below
    format         u8       1                version of this layout
    serial         u64                       the issuer's number for this certificate
    publisher      u32                       subject's 6-digit publisher code as an integer
    suite          u8                        subject key's signing suite (1 = Ed25519)
    public         u8 length + bytes         subject's raw public key (1..255 bytes)
    prefixes       u8 count + count × (u8 length + ASCII digits)
                                             scope: 1..255 prefixes of 1..6 digits, sorted,
                                             no duplicates (never "": only the pinned root
                                             has the national scope)
    not_before     i64                       unix seconds, inclusive
    not_after      i64                       unix seconds, inclusive (not_before <= not_after)
    issuer_key_id  8 bytes                   key id (signing.key_id_of) of the certifier
    -- end of body --
    signature      uvarint length + bytes    the issuer's signature over its suite's digest
                                             of the body (SHA-256 or SM3, signing.py)

Key revocation::

    magic          4 bytes  b"KREV"
    format         u8       1 or 2
    serial         u64                       the certifier's number for this revocation
    issuer_key_id  8 bytes                   the certifier's key id (who signs this)
    revoked_key_id 8 bytes                   the key it revokes
    effective_at   i64                       unix seconds; the key is void from this time on
    reason         u8                        RevocationReason
    -- format 2 only --
    last_version   u64                       the last version of the revoked key's feed it
                                             may stand behind (issue #11)
    has_digest     u8       0 or 1
    last_digest    32 bytes (if has_digest)  that version's head digest
    -- end of body --
    signature      uvarint length + bytes    the certifier's signature over its suite's
                                             digest of the body

Format 1 (no ``last_version``) is still written for a revocation without a version bound,
so every record already held in stores and configs keeps its bytes, digest and signature;
it bounds the key by time alone. Format 2 bounds it by version too: nothing the key signs
past ``last_version`` is accepted, whatever ``issued_at`` it claims (a date is the signer's
word, a version is the feed's position), see :mod:`blacklist.trust`. A rotation (reason
SUPERSEDED) is the same record.

Canonical form: the constructors sort and deduplicate prefixes, and decoding re-encodes the
result and refuses bytes that differ (an unsorted prefix list, a non-minimal varint), so one
certificate has exactly one encoding. Decoding checks every length and raises
:class:`~blacklist.errors.CodecError` on anything else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from blacklist.binary import Reader
from blacklist.certmodel import (
    CERT_MAGIC,
    DIGEST_LENGTH,
    FORMAT_VERSION,
    MAX_SIGNATURE,
    REVOCATION_BOUNDED_FORMAT,
    REVOCATION_MAGIC,
    Certificate,
    KeyRevocation,
    RevocationReason,
)
from blacklist.errors import CodecError
from blacklist.signing import KEY_ID_LENGTH


def _start(
    data: bytes, magic: bytes, what: str, formats: tuple[int, ...] = (FORMAT_VERSION,)
) -> tuple[Reader, int]:
    r = Reader(bytes(data), what)
    if r.raw(len(magic), "magic") != magic:
        raise CodecError(f"not a {what} (bad magic)")
    version = r.u8("format")
    if version not in formats:
        raise CodecError(f"{what}: unknown format version {version}")
    return r, version


def _read_prefix(r: Reader, i: int) -> str:
    raw = r.raw(r.u8(f"prefix {i} length"), f"prefix {i}")
    if not raw.isdigit():  # bytes.isdigit: ASCII digits only
        raise CodecError(f"certificate: prefix {i} {raw!r} is not ASCII digits")
    return raw.decode("ascii")


_Signed = TypeVar("_Signed", Certificate, KeyRevocation)


def _finish(r: Reader, data: bytes, what: str, build: Callable[[bytes], _Signed]) -> _Signed:
    """Read the signature, build the object from the fields read so far, and insist that the
    bytes were its one canonical encoding."""
    signature = r.blob("signature", limit=MAX_SIGNATURE)
    r.expect_end()
    try:
        item = build(signature)
    except ValueError as exc:  # CertificateFormatError, KeyFormatError
        raise CodecError(f"{what}: {exc}") from None
    if item.to_bytes() != bytes(data):
        raise CodecError(f"{what}: not in canonical form (unsorted or repeated prefixes?)")
    return item


def decode_binary_certificate(data: bytes) -> Certificate:
    """Parse one binary certificate. Raises CodecError on anything that is not exactly one."""
    what = "certificate"
    r, _ = _start(data, CERT_MAGIC, what)
    serial = r.u64("serial")
    publisher = r.u32("publisher")
    if publisher > 999_999:
        raise CodecError(f"{what}: publisher code {publisher} has more than 6 digits")
    suite_id = r.u8("suite")
    public = r.raw(r.u8("public key length"), "public key")
    prefixes = tuple(_read_prefix(r, i) for i in range(r.u8("prefix count")))
    not_before = r.i64("not_before")
    not_after = r.i64("not_after")
    issuer_key_id = r.raw(KEY_ID_LENGTH, "issuer key id")
    return _finish(
        r,
        data,
        what,
        lambda signature: Certificate(
            serial,
            f"{publisher:06d}",
            suite_id,
            public,
            prefixes,
            not_before,
            not_after,
            issuer_key_id,
            signature,
        ),
    )


def decode_binary_revocation(data: bytes) -> KeyRevocation:
    """Parse one binary key revocation. Raises CodecError on anything that is not exactly one."""
    what = "key revocation"
    r, version = _start(data, REVOCATION_MAGIC, what, (FORMAT_VERSION, REVOCATION_BOUNDED_FORMAT))
    serial = r.u64("serial")
    issuer_key_id = r.raw(KEY_ID_LENGTH, "issuer key id")
    revoked_key_id = r.raw(KEY_ID_LENGTH, "revoked key id")
    effective_at = r.i64("effective_at")
    code = r.u8("reason")
    try:
        reason = RevocationReason(code)
    except ValueError:
        raise CodecError(f"{what}: unknown revocation reason {code}") from None
    last_version: int | None = None
    last_digest: bytes | None = None
    if version == REVOCATION_BOUNDED_FORMAT:
        last_version = r.u64("last_version")
        has_digest = r.u8("has_digest")
        if has_digest > 1:
            raise CodecError(f"{what}: has_digest {has_digest} is not 0 or 1")
        if has_digest:
            last_digest = r.raw(DIGEST_LENGTH, "last digest")
    return _finish(
        r,
        data,
        what,
        lambda signature: KeyRevocation(
            serial,
            issuer_key_id,
            revoked_key_id,
            effective_at,
            reason,
            signature,
            last_version=last_version,
            last_digest=last_digest,
        ),
    )
