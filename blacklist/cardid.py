"""Card identification codes (卡识别码): parsing, the canonical form and the binary key.

Layout of the 32 ASCII characters read from the chip::

    RRRRRR MMMMMMMMMM SSSSSSSSSSSSSSSS
    region middle     serial
    6 digits, the issuing region's division code (first two: a province-level code)
    10 letters or digits, normally "D156000005"
    16 hex digits, varying per card

The canonical form is the upper-case text. The binary key (18 bytes) is what the store
indexes; it sorts by region first so that a region prefix is one contiguous key range::

    offset size  field
    0      3     region code as an unsigned big-endian integer (0..999999)
    3      7     middle part as a base-36 number (0-9 = 0..9, A-Z = 10..35), big-endian
    10     8     serial as an unsigned big-endian 64-bit integer

Every valid id round-trips exactly through the key, whatever its middle part.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from blacklist.errors import CardIdError
from blacklist.regions import PROVINCE_PREFIXES

CARD_ID_LENGTH = 32
KEY_LENGTH = 18
STANDARD_MIDDLE = "D156000005"
_BASE36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_HEX = frozenset("0123456789abcdefABCDEF")


def _province_alternation() -> bytes:
    return b"(?:" + b"|".join(b"%02d" % p for p in sorted(PROVINCE_PREFIXES)) + b")"


# One compiled pattern does the whole validation on the fast path; the slow path below
# only runs to explain a failure.
_CARD_RE = re.compile(_province_alternation() + rb"[0-9]{4}[0-9A-Za-z]{10}[0-9A-Fa-f]{16}")


def canonical_bytes(value: object) -> bytes:
    """Validate a card id and return its canonical upper-case ASCII bytes.

    This is the hot path of every check: one encode, one regex, one upper().
    """
    try:
        raw: bytes = value.encode("ascii")  # type: ignore[attr-defined]
    except (AttributeError, UnicodeEncodeError):
        raise diagnose(value) from None
    if _CARD_RE.fullmatch(raw) is None:
        raise diagnose(value)
    return raw.upper()


def diagnose(value: object, index: int | None = None) -> CardIdError:
    """Explain why ``value`` is not a valid card id (the first problem found)."""
    if not isinstance(value, str):
        return CardIdError(f"expected a string, got {type(value).__name__}", value, index)
    if not value.isascii():
        return CardIdError("contains non-ASCII characters", value, index)
    if any(c.isspace() for c in value):
        return CardIdError("contains whitespace", value, index)
    if len(value) != CARD_ID_LENGTH:
        return CardIdError(
            f"wrong length {len(value)}, expected {CARD_ID_LENGTH} characters", value, index
        )
    region, middle, serial = value[:6], value[6:16], value[16:]
    if not region.isdigit():
        return CardIdError(f"region code {region!r} is not 6 digits", value, index)
    if int(region[:2]) not in PROVINCE_PREFIXES:
        return CardIdError(
            f"impossible region {region!r}: {region[:2]!r} is not a province-level code",
            value,
            index,
        )
    if not middle.isalnum():
        return CardIdError(f"middle part {middle!r} is not 10 letters or digits", value, index)
    if not set(serial) <= _HEX:
        return CardIdError(f"serial {serial!r} is not 16 hex digits", value, index)
    return CardIdError("does not match the card id layout", value, index)


@dataclass(frozen=True, slots=True)
class CardId:
    """A valid card id in canonical (upper-case) form."""

    text: str

    @classmethod
    def parse(cls, value: object) -> CardId:
        return cls(canonical_bytes(value).decode("ascii"))

    @classmethod
    def from_key(cls, key: bytes) -> CardId:
        return cls(key_to_text(key))

    @property
    def region(self) -> str:
        return self.text[:6]

    @property
    def middle(self) -> str:
        return self.text[6:16]

    @property
    def serial(self) -> int:
        return int(self.text[16:], 16)

    @property
    def key(self) -> bytes:
        return text_to_key(self.text)

    def __str__(self) -> str:
        return self.text


_KEY = struct.Struct(">I7sQ")


def text_to_key(canonical: str | bytes) -> bytes:
    """Binary key of an already-validated canonical card id."""
    return (
        int(canonical[:6]).to_bytes(3, "big")
        + int(canonical[6:16], 36).to_bytes(7, "big")
        + int(canonical[16:], 16).to_bytes(8, "big")
    )


def key_to_text(key: bytes) -> str:
    """Canonical text of a binary key (the inverse of :func:`text_to_key`)."""
    if len(key) != KEY_LENGTH:
        raise CardIdError(f"binary key has {len(key)} bytes, expected {KEY_LENGTH}", key)
    region = int.from_bytes(key[0:3], "big")
    middle = int.from_bytes(key[3:10], "big")
    serial = int.from_bytes(key[10:18], "big")
    if region > 999_999 or middle >= 36**10:
        raise CardIdError("binary key out of range", key)
    digits = []
    for _ in range(10):
        middle, d = divmod(middle, 36)
        digits.append(_BASE36[d])
    return f"{region:06d}{''.join(reversed(digits))}{serial:016X}"


def region_key_range(prefix: str) -> tuple[bytes, bytes]:
    """[start, stop) of binary keys whose region code starts with ``prefix`` (0–6 digits)."""
    if not prefix.isdigit() and prefix != "":
        raise ValueError(f"region prefix {prefix!r} is not digits")
    if len(prefix) > 6:
        raise ValueError(f"region prefix {prefix!r} is longer than 6 digits")
    pad = 6 - len(prefix)
    low = int(prefix or "0") * 10**pad
    high = low + 10**pad
    return low.to_bytes(3, "big"), high.to_bytes(3, "big")
