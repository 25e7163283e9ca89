"""The two signed objects of the trust hierarchy, key certificates and key revocations, as
fields (and the binary layout's body): what :mod:`blacklist.certs` issues and decodes, and
what :mod:`blacklist.x509certs` encodes as X.509. It imports neither encoding, so that both
can build on it (tests/test_layout.py: no import circles).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar, Literal, Protocol

from blacklist.binary import Writer
from blacklist.errors import BlacklistError
from blacklist.signing import KEY_ID_LENGTH, TrustedKey, key_id_of, suite

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


Form = Literal["x509", "binary"]


class _Verifier(Protocol):
    @property
    def suite_id(self) -> int: ...

    def verify(self, message: bytes, signature: bytes) -> bool: ...

    def verify_body(self, body: bytes, signature: bytes) -> bool: ...


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
        """The record's identity among those a node holds (stores, caches): SHA-256 of
        the body, whatever the issuer's suite."""
        return hashlib.sha256(self.body).digest()

    @property
    def signed_message(self) -> bytes:
        """What an Ed25519 issuer's ``sign`` is given: SHA-256 of the body (an SM2 issuer's
        is SM3 of it, :meth:`SigningKey.sign_body`)."""
        return self.digest

    def verified_by(self, key: _Verifier) -> bool:
        """Whether ``key`` signed this record: its suite's digest of the body (the binary
        layout does not name the issuer's suite, so the key's is tried)."""
        return key.verify_body(self.body, self.signature)

    def to_bytes(self) -> bytes:  # the binary layout; X.509 records override it
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
    min_serial: ClassVar[int] = 0
    max_serial: ClassVar[int] = _U64_MAX  # the binary layout's u64

    def __post_init__(self) -> None:
        _check_int("serial", self.serial, self.min_serial, self.max_serial)
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


def verified_by(record: Certificate | KeyRevocation, key: _Verifier) -> bool:
    """Whether ``key`` signed ``record``, over what the record's encoding signs (and, for
    X.509, in the suite the record names)."""
    return record.verified_by(key)
