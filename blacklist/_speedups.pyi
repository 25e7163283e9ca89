# Type stub for the C extension built from _speedups.c (wrapped by blacklist/fastpath.py).

from collections.abc import Container
from typing import Any, TypeVar

_V = TypeVar("_V")

def probe_in(
    card_id: object, views: dict[bytes, _V], provinces: bytes, index: tuple[Any, int], /
) -> tuple[_V | None, bytes, bool]:
    """probe() and the test of the fingerprint in index (bitmap, shift)."""

def probe(
    card_id: object, views: dict[bytes, _V], provinces: bytes, /
) -> tuple[_V | None, bytes, int]:
    """Validate a card id; return ``(views.get(canon[:6]), canon, xxh64(canon))``.

    Raises a bare ValueError for a malformed id (the caller explains it with ``diagnose``)
    and TypeError if ``views`` is not a dict or ``provinces`` not a 100-byte table.
    """

def members(container: Container[int], fingerprints: Any, /) -> list[int]:
    """Indices i with fingerprints[i] in container (fingerprints: a uint32 buffer)."""

def scan(
    card_ids: object, provinces: bytes, shift: int, container: Container[int], /
) -> tuple[bytes, bytes, list[int]]:
    """Validate, canonicalise, locate and probe a batch; ValueError(index) for a bad id."""

def card_key(canon: bytes, /) -> bytes:
    """The 18-byte binary key of a canonical id (cardid.text_to_key, in C)."""

def key_fingerprints(keys: Any, shift: int, /) -> bytes:
    """Native uint32 fingerprints of n concatenated 18-byte keys."""

def roaring_members(bitmap: object, fingerprints: Any, /) -> list[int]:
    """Indices i with fingerprints[i] in a pyroaring BitMap, read in place (raw_pointer)."""

def scan_packed(
    packed: bytes, provinces: bytes, shift: int, bitmap: object, in_place: bool, /
) -> tuple[bytes, bytes, list[int], list[int]]:
    """A packed batch in one pass: (canon of the valid rows, their regions, hits, bad)."""
