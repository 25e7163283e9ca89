"""Key certificates and key revocations: small signed binary messages for the trust hierarchy.

The ministry root key (pinned in every node's config, see :mod:`blacklist.trust`) certifies
province keys, a province certifies its cities' keys, and a certifier can revoke a key it
certified as of a time (DESIGN §6). This module holds only the two signed objects, their
binary layouts and signing; whether a chain of them is acceptable is :mod:`blacklist.trust`.

Why not X.509: what a key may sign for is a set of region-code *prefixes* ("44", "4401").
X.509 name constraints (RFC 5280 §4.2.1.10) constrain subject *names* — DNS names, e-mail
addresses, IP ranges, directory names matched RDN by RDN — and none of those forms can say
"any region code that starts with 4401". We would have to carry the scope in a private
extension that every verifier must understand anyway (and a verifier that ignores it
silently grants everything), on top of a DER parser's attack surface. Our own messages are
~150 bytes, have exactly one encoding, and reuse the bounds-checked :mod:`blacklist.wire`.

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

Suites (issue #14): what a record is signed over is the digest of its *issuer's* suite
(an Ed25519 root certifying an SM2 province signs SHA-256 of the body; an SM2 province
certifying its cities signs SM3), so a hierarchy moves suite by suite through ordinary
rotations. A record's ``digest`` property, SHA-256 of its body, is only its identity among
the records a node holds (deduplication, the per-feed count) and never signed. A certificate
names no SM2 distinguishing id: the subject's is the default (GM/T 0009 §10), and
:func:`issue_certificate` refuses a key with another.

Domain separation: a province key signs both its feed's deltas and its cities' certificates,
always over its suite's digest of a body. A delta body starts with its kind byte (1 or 2, see
:mod:`blacklist.delta`); these bodies start with the ASCII magic (first byte 0x4B), so a
signature made for one kind of message can never be presented as one for another.

Canonical form: the constructors sort and deduplicate prefixes, and decoding re-encodes the
result and refuses bytes that differ (an unsorted prefix list, a non-minimal varint), so one
certificate has exactly one encoding. Decoding checks every length, raises
:class:`~blacklist.errors.CodecError` on anything else, and verifies nothing.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol, TypeVar

from blacklist.errors import BlacklistError, CodecError
from blacklist.signing import KEY_ID_LENGTH, SigningKey, TrustedKey, key_id_of, suite
from blacklist.wire import Reader, Writer

CERT_MAGIC = b"KCRT"
REVOCATION_MAGIC = b"KREV"
FORMAT_VERSION = 1  # certificates, and revocations without a version bound
REVOCATION_BOUNDED_FORMAT = 2  # revocations naming the last version (and digest)
DIGEST_LENGTH = 32
MAX_SIGNATURE = 1024
MAX_PUBLIC_KEY = 255
MAX_PREFIXES = 255
MAX_PREFIX_DIGITS = 6
_U64_MAX = 2**64 - 1
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


class CertificateFormatError(BlacklistError, ValueError):
    """A certificate or revocation field is out of range (raised when building one)."""


class SubjectKey(Protocol):
    """What a certificate needs to know about its subject: a :class:`~blacklist.signing.
    TrustedKey` or a :class:`~blacklist.signing.SigningKey` both qualify."""

    @property
    def suite_id(self) -> int: ...
    @property
    def public(self) -> bytes: ...
    @property
    def publisher(self) -> str: ...


class RevocationReason(enum.IntEnum):
    COMPROMISED = 1  # the private key leaked (or may have): revoke as of the suspected time
    SUPERSEDED = 2  # rotated to a new key in the ordinary course
    RETIRED = 3  # the authority stops publishing under this key


def _check_int(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CertificateFormatError(f"{name} {value!r} is not an integer in {low}..{high}")


def _check_bytes(name: str, value: bytes, low: int, high: int) -> None:
    if not isinstance(value, bytes) or not low <= len(value) <= high:
        raise CertificateFormatError(f"{name} must be {low}..{high} bytes, got {value!r:.40}")


def _check_publisher(publisher: str) -> None:
    if not (
        isinstance(publisher, str)
        and len(publisher) == 6
        and publisher.isascii()
        and publisher.isdigit()
    ):
        raise CertificateFormatError(f"publisher {publisher!r} is not a 6-digit code")


def canonical_prefixes(prefixes: Iterable[str]) -> tuple[str, ...]:
    """Sorted, without duplicates; each 1–6 ASCII digits. Raises CertificateFormatError."""
    out = tuple(sorted(set(prefixes)))
    for p in out:
        if not (
            isinstance(p, str) and 1 <= len(p) <= MAX_PREFIX_DIGITS and p.isascii() and p.isdigit()
        ):
            raise CertificateFormatError(f"region prefix {p!r} must be 1–6 ASCII digits")
    if not 1 <= len(out) <= MAX_PREFIXES:
        raise CertificateFormatError(f"a certificate needs 1..{MAX_PREFIXES} prefixes, got {out}")
    return out


class _SignedBody:
    """What certificates and revocations share: a body, and the issuer's signature over
    its suite's digest of it, sent as the body followed by the length-prefixed signature."""

    signature: bytes

    @property
    def body(self) -> bytes:  # each message defines its own layout
        raise NotImplementedError

    @property
    def digest(self) -> bytes:
        """The record's identity among those a node holds: SHA-256 of the body, whatever
        the issuer's suite (what the issuer signs is :meth:`SigningKey.sign_body`'s)."""
        return hashlib.sha256(self.body).digest()

    def to_bytes(self) -> bytes:
        w = Writer()
        w.raw(self.body)
        w.blob(self.signature)
        return w.getvalue()


@dataclass(frozen=True)
class Certificate(_SignedBody):
    """The issuer's signed statement: this public key publishes for ``publisher`` and may
    sign (and certify) regions under ``prefixes`` between ``not_before`` and ``not_after``."""

    serial: int
    publisher: str
    suite_id: int
    public: bytes = field(repr=False)
    prefixes: tuple[str, ...]
    not_before: int
    not_after: int
    issuer_key_id: bytes
    signature: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_int("serial", self.serial, 0, _U64_MAX)
        _check_publisher(self.publisher)
        _check_int("suite id", self.suite_id, 0, 255)
        suite(self.suite_id)  # KeyFormatError (a ValueError) for an unknown suite
        _check_bytes("public key", self.public, 1, MAX_PUBLIC_KEY)
        object.__setattr__(self, "prefixes", canonical_prefixes(self.prefixes))
        _check_int("not_before", self.not_before, _I64_MIN, _I64_MAX)
        _check_int("not_after", self.not_after, _I64_MIN, _I64_MAX)
        if self.not_before > self.not_after:
            raise CertificateFormatError(
                f"not_before {self.not_before} is after not_after {self.not_after}"
            )
        _check_bytes("issuer key id", self.issuer_key_id, KEY_ID_LENGTH, KEY_ID_LENGTH)
        _check_bytes("signature", self.signature, 0, MAX_SIGNATURE)

    @cached_property
    def key_id(self) -> bytes:
        """The subject key's id (cached: chain building looks it up for every record)."""
        return key_id_of(self.suite_id, self.public)

    @property
    def label(self) -> str:
        """How errors name this certificate: subject publisher and serial."""
        return f"certificate {self.publisher}#{self.serial}"

    def trusted(self) -> TrustedKey:
        """The subject key with what this certificate grants (not verified here)."""
        return TrustedKey(self.suite_id, self.public, self.publisher, self.prefixes)

    @cached_property
    def body(self) -> bytes:
        w = Writer()
        w.raw(CERT_MAGIC)
        w.u8(FORMAT_VERSION)
        w.u64(self.serial)
        w.u32(int(self.publisher))
        w.u8(self.suite_id)
        w.u8(len(self.public))
        w.raw(self.public)
        w.u8(len(self.prefixes))
        for p in self.prefixes:
            w.u8(len(p))
            w.raw(p.encode("ascii"))
        w.i64(self.not_before)
        w.i64(self.not_after)
        w.raw(self.issuer_key_id)
        return w.getvalue()


@dataclass(frozen=True)
class KeyRevocation(_SignedBody):
    """The certifier's signed statement: key ``revoked_key_id`` is void from ``effective_at``,
    and (when ``last_version`` is set) stands behind no version of its feed past
    ``last_version`` — whose head digest is ``last_digest``, when given."""

    serial: int
    issuer_key_id: bytes
    revoked_key_id: bytes
    effective_at: int
    reason: RevocationReason
    signature: bytes = field(repr=False)
    last_version: int | None = None
    last_digest: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _check_int("serial", self.serial, 0, _U64_MAX)
        _check_bytes("issuer key id", self.issuer_key_id, KEY_ID_LENGTH, KEY_ID_LENGTH)
        _check_bytes("revoked key id", self.revoked_key_id, KEY_ID_LENGTH, KEY_ID_LENGTH)
        _check_int("effective_at", self.effective_at, _I64_MIN, _I64_MAX)
        try:
            object.__setattr__(self, "reason", RevocationReason(self.reason))
        except ValueError:
            raise CertificateFormatError(f"unknown revocation reason {self.reason!r}") from None
        _check_bytes("signature", self.signature, 0, MAX_SIGNATURE)
        if self.last_version is not None:
            _check_int("last_version", self.last_version, 0, _U64_MAX)
        if self.last_digest is not None:
            if self.last_version is None:
                raise CertificateFormatError("last_digest needs last_version (whose digest it is)")
            _check_bytes("last digest", self.last_digest, DIGEST_LENGTH, DIGEST_LENGTH)

    @property
    def format(self) -> int:
        return FORMAT_VERSION if self.last_version is None else REVOCATION_BOUNDED_FORMAT

    @property
    def label(self) -> str:
        bound = "" if self.last_version is None else f" after v{self.last_version}"
        return (
            f"revocation #{self.serial} of key {self.revoked_key_id.hex()}{bound} "
            f"by {self.issuer_key_id.hex()}"
        )

    @cached_property
    def body(self) -> bytes:
        w = Writer()
        w.raw(REVOCATION_MAGIC)
        w.u8(self.format)
        w.u64(self.serial)
        w.raw(self.issuer_key_id)
        w.raw(self.revoked_key_id)
        w.i64(self.effective_at)
        w.u8(self.reason)
        if self.last_version is not None:
            w.u64(self.last_version)
            w.u8(0 if self.last_digest is None else 1)
            if self.last_digest is not None:
                w.raw(self.last_digest)
        return w.getvalue()


def issue_certificate(
    issuer: SigningKey,
    subject: SubjectKey,
    prefixes: Iterable[str],
    not_before: int,
    not_after: int,
    serial: int,
) -> Certificate:
    """Certify ``subject``'s public key for its publisher and ``prefixes`` (any order).

    Nothing here checks that the scope is the issuer's to give: a verifier does that
    (:func:`blacklist.trust.verify_chain`), because it must not trust the issuer's word.
    """
    distid = getattr(subject, "distid", None)
    if distid is not None:
        raise CertificateFormatError(
            f"a certificate names no SM2 distinguishing id, so the subject's must be the "
            f"default, not {distid!r:.40}"
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
) -> KeyRevocation:
    """Revoke a key this issuer certified, as of ``effective_at``; with ``last_version``,
    also past that version of the key's feed (the head it stood behind when revoked)."""
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


def decode_certificate(data: bytes) -> Certificate:
    """Parse one certificate. Raises CodecError on anything that is not exactly one."""
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


def decode_revocation(data: bytes) -> KeyRevocation:
    """Parse one key revocation. Raises CodecError on anything that is not exactly one."""
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


def decode_trust_record(data: bytes) -> Certificate | KeyRevocation:
    """A certificate or a key revocation, told apart by its magic (the trust section of a
    feed carries both, see :mod:`blacklist.delta`)."""
    if data[: len(REVOCATION_MAGIC)] == REVOCATION_MAGIC:
        return decode_revocation(data)
    return decode_certificate(data)
