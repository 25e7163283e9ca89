"""Signing suites and keys.

Callers see :class:`SigningKey` (private, for an authority) and :class:`TrustedKey` (public,
with the publisher and region prefixes it may sign for). The algorithm sits behind
:class:`SigningSuite`, registered by a one-byte wire id; a suite is a signature algorithm
*and* the digest everything signed under it uses (issue #14):

    id  name      signature                               digest
    1   ed25519   Ed25519 (RFC 8032)                      SHA-256
    2   sm2-sm3   SM2 (GB/T 32918.2), SM3 in Z and e      SM3 (GB/T 32905)

A signer signs its suite's digest of a body (:meth:`SigningKey.sign_body`), and a body's
digest where it names a position in a feed (a delta's, a snapshot's) is the digest of the
suite its own header names, so one feed moves from Ed25519 to SM2 with an ordinary key
rotation and its hash chain goes on (see :mod:`blacklist.delta`).

SM2 keys carry a distinguishing identifier (GB/T 32918.2 §5.5); ``distid`` None means the
standard default ``1234567812345678``, the only one a certificate implies. Ed25519 keys have
none.

A key id is the first 8 bytes of the suite's digest of (suite id || raw public key): short
on the wire, and computed, never chosen, so two different keys cannot claim the same id by
accident.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from blacklist import sm2
from blacklist.errors import BlacklistError

KEY_ID_LENGTH = 8
DIGEST_LENGTH = 32  # every suite's digest (SHA-256, SM3)


class KeyFormatError(BlacklistError, ValueError):
    """A key is malformed or its suite is unknown."""


class SigningSuite(abc.ABC):
    suite_id: int
    name: str
    digest_name: str

    @abc.abstractmethod
    def generate_private(self) -> bytes: ...

    @abc.abstractmethod
    def public_from_private(self, private: bytes) -> bytes: ...

    @abc.abstractmethod
    def check_public(self, public: bytes) -> None:
        """KeyFormatError unless ``public`` is a valid public key of this suite."""

    @abc.abstractmethod
    def sign(self, private: bytes, message: bytes, distid: bytes | None = None) -> bytes: ...

    @abc.abstractmethod
    def verify(
        self, public: bytes, message: bytes, signature: bytes, distid: bytes | None = None
    ) -> bool: ...

    @abc.abstractmethod
    def digest(self, data: bytes) -> bytes:
        """The suite's 32-byte digest of ``data``."""

    def check_distid(self, distid: bytes | None) -> bytes | None:
        """The identifier in its one form (None for the suite's default); KeyFormatError if
        the suite takes none or this one is malformed."""
        if distid is not None:
            raise KeyFormatError(f"{self.name} keys take no distinguishing id")
        return None


class Ed25519Suite(SigningSuite):
    """Ed25519 (RFC 8032) through `cryptography`; raw 32-byte keys, 64-byte signatures."""

    suite_id = 1
    name = "ed25519"
    digest_name = "sha256"

    def generate_private(self) -> bytes:
        return Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def public_from_private(self, private: bytes) -> bytes:
        return (
            self._private(private)
            .public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )

    def check_public(self, public: bytes) -> None:
        try:
            Ed25519PublicKey.from_public_bytes(public)
        except ValueError as exc:
            raise KeyFormatError(f"not a raw Ed25519 public key ({len(public)} bytes)") from exc

    def sign(self, private: bytes, message: bytes, distid: bytes | None = None) -> bytes:
        self.check_distid(distid)
        return self._private(private).sign(message)

    def verify(
        self, public: bytes, message: bytes, signature: bytes, distid: bytes | None = None
    ) -> bool:
        if distid is not None:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def digest(self, data: bytes) -> bytes:
        return hashlib.sha256(data).digest()

    @staticmethod
    def _private(private: bytes) -> Ed25519PrivateKey:
        try:
            return Ed25519PrivateKey.from_private_bytes(private)
        except ValueError as exc:
            raise KeyFormatError(f"not a raw Ed25519 private key ({len(private)} bytes)") from exc


class Sm2Sm3Suite(SigningSuite):
    """SM2 over SM3 through Tongsuo (:mod:`blacklist.sm2`): 32-byte private scalars, 65-byte
    uncompressed public points, 64-byte ``r || s`` signatures; digests are SM3."""

    suite_id = 2
    name = "sm2-sm3"
    digest_name = "sm3"

    def generate_private(self) -> bytes:
        return sm2.generate_private()

    def public_from_private(self, private: bytes) -> bytes:
        try:
            return sm2.public_from_private(private)
        except sm2.Sm2Error as exc:
            raise KeyFormatError(str(exc)) from None

    def check_public(self, public: bytes) -> None:
        try:
            sm2.check_public(public)
        except sm2.Sm2Error as exc:
            raise KeyFormatError(str(exc)) from None

    def check_distid(self, distid: bytes | None) -> bytes | None:
        if distid is None or distid == sm2.DEFAULT_DISTID:
            return None
        try:
            return sm2.check_distid(distid)
        except sm2.Sm2Error as exc:
            raise KeyFormatError(str(exc)) from None

    def sign(self, private: bytes, message: bytes, distid: bytes | None = None) -> bytes:
        self.check_distid(distid)
        try:
            return sm2.sign(private, message, sm2.DEFAULT_DISTID if distid is None else distid)
        except sm2.Sm2Error as exc:
            raise KeyFormatError(str(exc)) from None

    def verify(
        self, public: bytes, message: bytes, signature: bytes, distid: bytes | None = None
    ) -> bool:
        return sm2.verify(
            public, message, signature, sm2.DEFAULT_DISTID if distid is None else distid
        )

    def digest(self, data: bytes) -> bytes:
        return sm2.sm3(data)


SUITES: dict[int, SigningSuite] = {s.suite_id: s for s in (Ed25519Suite(), Sm2Sm3Suite())}
SUITES_BY_NAME: dict[str, SigningSuite] = {s.name: s for s in SUITES.values()}


def suite(suite_id: int) -> SigningSuite:
    try:
        return SUITES[suite_id]
    except KeyError:
        raise KeyFormatError(f"unknown signing suite id {suite_id} (known: {_known()})") from None


def suite_named(name: str) -> SigningSuite:
    """The suite called ``name``; KeyFormatError naming it and the known ones otherwise."""
    try:
        return SUITES_BY_NAME[name]
    except KeyError:
        raise KeyFormatError(f"unknown signing suite {name!r} (known: {_known()})") from None


def _known() -> str:
    return ", ".join(f"{s.suite_id} {s.name}" for s in SUITES.values())


def digest_of(suite_id: int, data: bytes) -> bytes:
    """The digest of ``data`` in suite ``suite_id`` (SHA-256 for Ed25519, SM3 for SM2)."""
    return suite(suite_id).digest(data)


def key_id_of(suite_id: int, public: bytes) -> bytes:
    return digest_of(suite_id, bytes([suite_id]) + public)[:KEY_ID_LENGTH]


def _check_prefixes(prefixes: Iterable[str]) -> tuple[str, ...]:
    out = tuple(prefixes)
    for p in out:
        if not (p == "" or (p.isdigit() and p.isascii() and len(p) <= 6)):
            raise KeyFormatError(f"region prefix {p!r} must be 0–6 ASCII digits")
    return out


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """A public key this node accepts, with what it may sign: one publisher's feed, cards whose
    region code starts with one of ``prefixes``."""

    suite_id: int
    public: bytes
    publisher: str
    prefixes: tuple[str, ...]
    # The last feed version this key may stand behind (its certifier's revocation or
    # rotation names it, issue #11): nothing it signs beyond is accepted, whatever the date.
    # None: not bounded.
    max_version: int | None = None
    # The head digest that version must have, when the revocation names it (a thief racing
    # the authority to sign a different version ``max_version`` is then a fork). None: not
    # named.
    max_digest: bytes | None = None
    # SM2's distinguishing identifier, None for the default (see the module doc).
    distid: bytes | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "distid", suite(self.suite_id).check_distid(self.distid))
        object.__setattr__(self, "prefixes", _check_prefixes(self.prefixes))

    @property
    def key_id(self) -> bytes:
        return key_id_of(self.suite_id, self.public)

    def allows_region(self, region: str) -> bool:
        return region.startswith(self.prefixes)

    def digest(self, data: bytes) -> bytes:
        """This key's suite's digest of ``data``."""
        return digest_of(self.suite_id, data)

    def verify(self, message: bytes, signature: bytes) -> bool:
        return suite(self.suite_id).verify(self.public, message, signature, self.distid)

    def verify_body(self, body: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's over its suite's digest of ``body``."""
        return self.verify(self.digest(body), signature)


@dataclass(frozen=True, slots=True)
class SigningKey:
    """An authority's private key for its own feed."""

    suite_id: int
    private: bytes
    publisher: str
    prefixes: tuple[str, ...]
    distid: bytes | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "distid", suite(self.suite_id).check_distid(self.distid))

    @classmethod
    def generate(
        cls,
        publisher: str,
        prefixes: Iterable[str],
        suite_name: str = "ed25519",
        distid: bytes | None = None,
    ) -> SigningKey:
        s = suite_named(suite_name)
        return cls(s.suite_id, s.generate_private(), publisher, _check_prefixes(prefixes), distid)

    @property
    def public(self) -> bytes:
        return suite(self.suite_id).public_from_private(self.private)

    @property
    def key_id(self) -> bytes:
        return key_id_of(self.suite_id, self.public)

    @property
    def suite_name(self) -> str:
        return suite(self.suite_id).name

    def digest(self, data: bytes) -> bytes:
        """This key's suite's digest of ``data``."""
        return digest_of(self.suite_id, data)

    def sign(self, message: bytes) -> bytes:
        return suite(self.suite_id).sign(self.private, message, self.distid)

    def sign_body(self, body: bytes) -> bytes:
        """The signature over this key's suite's digest of ``body`` (what every signed
        object of the project carries)."""
        return self.sign(self.digest(body))

    def trusted(self) -> TrustedKey:
        return TrustedKey(
            self.suite_id, self.public, self.publisher, self.prefixes, distid=self.distid
        )


class Keyring(Mapping[bytes, TrustedKey]):
    """The trusted keys by key id. Immutable: build a new one to change it."""

    def __init__(self, keys: Iterable[TrustedKey] = ()) -> None:
        self._keys = {k.key_id: k for k in keys}

    def __getitem__(self, key_id: bytes) -> TrustedKey:
        return self._keys[key_id]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def publishers(self) -> dict[str, tuple[str, ...]]:
        """Publisher → the region prefixes its keys cover (for resolving a card's issuer)."""
        scopes: dict[str, set[str]] = {}
        for k in self._keys.values():
            scopes.setdefault(k.publisher, set()).update(k.prefixes)
        return {p: tuple(sorted(s)) for p, s in scopes.items()}
