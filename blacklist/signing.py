"""Signing suites and keys.

Callers see :class:`SigningKey` (private, for an authority) and :class:`TrustedKey` (public,
with the publisher and region prefixes it may sign for). The algorithm sits behind
:class:`SigningSuite`, registered by a one-byte wire id, so that an SM2/SM3 suite (GB/T 32918,
GB/T 32905) can be added without touching feeds, the store or sync.

A key id is the first 8 bytes of SHA-256(suite id || raw public key): short on the wire, and
computed, never chosen, so two different keys cannot claim the same id by accident.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from blacklist.errors import BlacklistError

KEY_ID_LENGTH = 8


class KeyFormatError(BlacklistError, ValueError):
    """A key is malformed or its suite is unknown."""


class SigningSuite(abc.ABC):
    suite_id: int
    name: str

    @abc.abstractmethod
    def generate_private(self) -> bytes: ...

    @abc.abstractmethod
    def public_from_private(self, private: bytes) -> bytes: ...

    @abc.abstractmethod
    def sign(self, private: bytes, message: bytes) -> bytes: ...

    @abc.abstractmethod
    def verify(self, public: bytes, message: bytes, signature: bytes) -> bool: ...


class Ed25519Suite(SigningSuite):
    """Ed25519 (RFC 8032) through `cryptography`; raw 32-byte keys, 64-byte signatures."""

    suite_id = 1
    name = "ed25519"

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

    def sign(self, private: bytes, message: bytes) -> bytes:
        return self._private(private).sign(message)

    def verify(self, public: bytes, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    @staticmethod
    def _private(private: bytes) -> Ed25519PrivateKey:
        try:
            return Ed25519PrivateKey.from_private_bytes(private)
        except ValueError as exc:
            raise KeyFormatError(f"not a raw Ed25519 private key ({len(private)} bytes)") from exc


SUITES: dict[int, SigningSuite] = {s.suite_id: s for s in (Ed25519Suite(),)}
SUITES_BY_NAME: dict[str, SigningSuite] = {s.name: s for s in SUITES.values()}


def suite(suite_id: int) -> SigningSuite:
    try:
        return SUITES[suite_id]
    except KeyError:
        raise KeyFormatError(f"unknown signing suite id {suite_id}") from None


def key_id_of(suite_id: int, public: bytes) -> bytes:
    return hashlib.sha256(bytes([suite_id]) + public).digest()[:KEY_ID_LENGTH]


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

    def __post_init__(self) -> None:
        suite(self.suite_id)
        object.__setattr__(self, "prefixes", _check_prefixes(self.prefixes))

    @property
    def key_id(self) -> bytes:
        return key_id_of(self.suite_id, self.public)

    def allows_region(self, region: str) -> bool:
        return region.startswith(self.prefixes)

    def verify(self, message: bytes, signature: bytes) -> bool:
        return suite(self.suite_id).verify(self.public, message, signature)


@dataclass(frozen=True, slots=True)
class SigningKey:
    """An authority's private key for its own feed."""

    suite_id: int
    private: bytes
    publisher: str
    prefixes: tuple[str, ...]

    @classmethod
    def generate(
        cls, publisher: str, prefixes: Iterable[str], suite_name: str = "ed25519"
    ) -> SigningKey:
        s = SUITES_BY_NAME[suite_name]
        return cls(s.suite_id, s.generate_private(), publisher, _check_prefixes(prefixes))

    @property
    def public(self) -> bytes:
        return suite(self.suite_id).public_from_private(self.private)

    @property
    def key_id(self) -> bytes:
        return key_id_of(self.suite_id, self.public)

    def sign(self, message: bytes) -> bytes:
        return suite(self.suite_id).sign(self.private, message)

    def trusted(self) -> TrustedKey:
        return TrustedKey(self.suite_id, self.public, self.publisher, self.prefixes)


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
