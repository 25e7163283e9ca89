"""Card ids and revocation entries as numpy columns: what a delta's blocks encode
(:mod:`blacklist.entryblock`) and what the store, the PSAM list and the authority pass
around. Apart from the block codec so that a reader of the store can use them without
importing it; ``entryblock.py`` re-exports both classes.

Cards are three columns (see cardid.py): region (0..999999), middle (the 10-character part
as a base-36 number, below 36**10) and serial (any 64-bit value).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from blacklist.cardid import KEY_LENGTH, key_to_text

MAX_REGION = 999_999
MIDDLE_LIMIT = 36**10  # ten base-36 characters
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1


@dataclass(frozen=True, eq=False)
class CardColumns:
    """Card ids as columns; row i is one card. Values are range-checked on construction,
    so a CardColumns always holds valid binary keys (it may hold them in any order)."""

    region: NDArray[np.uint32]
    middle: NDArray[np.uint64]
    serial: NDArray[np.uint64]

    def __post_init__(self) -> None:
        region = _column("region", self.region, np.dtype(np.uint32), MAX_REGION)
        middle = _column("middle", self.middle, np.dtype(np.uint64), MIDDLE_LIMIT - 1)
        serial = _column("serial", self.serial, np.dtype(np.uint64), UINT64_MAX)
        if not len(region) == len(middle) == len(serial):
            raise ValueError(
                f"column lengths differ: region {len(region)}, middle {len(middle)}, "
                f"serial {len(serial)}"
            )
        object.__setattr__(self, "region", region)
        object.__setattr__(self, "middle", middle)
        object.__setattr__(self, "serial", serial)

    @classmethod
    def empty(cls) -> CardColumns:
        return cls(np.zeros(0, np.uint32), np.zeros(0, np.uint64), np.zeros(0, np.uint64))

    @classmethod
    def from_keys(cls, rows: NDArray[np.uint8]) -> CardColumns:
        """Columns of binary keys (cardid.py layout), given as an (n, 18) uint8 array."""
        keys = np.asarray(rows, dtype=np.uint8).reshape(-1, KEY_LENGTH)
        region3 = np.zeros((len(keys), 4), dtype=np.uint8)
        region3[:, 1:] = keys[:, 0:3]
        region = region3.view(">u4").reshape(-1).astype(np.uint32)
        middle8 = np.zeros((len(keys), 8), dtype=np.uint8)
        middle8[:, 1:] = keys[:, 3:10]
        middle = middle8.view(">u8").reshape(-1).astype(np.uint64)
        serial = np.ascontiguousarray(keys[:, 10:18]).view(">u8").reshape(-1).astype(np.uint64)
        return cls(region, middle, serial)

    @classmethod
    def concatenate(cls, parts: Iterable[CardColumns]) -> CardColumns:
        items = list(parts)
        if not items:
            return cls.empty()
        return cls(
            np.concatenate([p.region for p in items]),
            np.concatenate([p.middle for p in items]),
            np.concatenate([p.serial for p in items]),
        )

    def __len__(self) -> int:
        return len(self.serial)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CardColumns):
            return NotImplemented
        return (
            np.array_equal(self.region, other.region)
            and np.array_equal(self.middle, other.middle)
            and np.array_equal(self.serial, other.serial)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable arrays inside

    def key(self, i: int) -> bytes:
        """The 18-byte binary key of row i."""
        return (
            int(self.region[i]).to_bytes(3, "big")
            + int(self.middle[i]).to_bytes(7, "big")
            + int(self.serial[i]).to_bytes(8, "big")
        )

    def card_id(self, i: int) -> str:
        """The canonical text of row i."""
        return key_to_text(self.key(i))

    def sort_order(self) -> NDArray[np.intp]:
        """Row order by (region, middle, serial); stable, so equal cards keep their order."""
        return np.lexsort((self.serial, self.middle, self.region)).astype(np.intp)

    def sorted(self) -> CardColumns:
        return self.take(self.sort_order())

    def take(self, indices: ArrayLike) -> CardColumns:
        idx = np.asarray(indices, dtype=np.intp)
        return CardColumns(self.region[idx], self.middle[idx], self.serial[idx])

    def is_sorted(self) -> bool:
        """Rows in (region, middle, serial) order; equal neighbours (duplicates) allowed."""
        return first_unsorted(self) is None

    def first_duplicate(self) -> str | None:
        """The card id of the first card that appears twice (sorting first if needed)."""
        cards = self if self.is_sorted() else self.sorted()
        same = (
            (cards.region[1:] == cards.region[:-1])
            & (cards.middle[1:] == cards.middle[:-1])
            & (cards.serial[1:] == cards.serial[:-1])
        )
        hits = np.flatnonzero(same)
        return cards.card_id(int(hits[0])) if hits.size else None


@dataclass(frozen=True, eq=False)
class EntryColumns:
    """Revocation entries as columns: the card, its reason code, effective time and end
    time (``expires``: unix seconds, 0 for an entry without one; issue #17). The block
    itself carries no end times: a body's expiry section does (expiry.py)."""

    cards: CardColumns
    reason: NDArray[np.uint8]
    time: NDArray[np.int64]
    expires: NDArray[np.int64] | None = None

    def __post_init__(self) -> None:
        reason = _column("reason", self.reason, np.dtype(np.uint8), 255)
        time = _column("time", self.time, np.dtype(np.int64), INT64_MAX)
        if self.expires is None:
            expires = np.zeros(len(time), dtype=np.int64)
        else:
            expires = _column("expires", self.expires, np.dtype(np.int64), INT64_MAX)
        if not len(self.cards) == len(reason) == len(time) == len(expires):
            raise ValueError(
                f"column lengths differ: cards {len(self.cards)}, reason {len(reason)}, "
                f"time {len(time)}, expires {len(expires)}"
            )
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "time", time)
        object.__setattr__(self, "expires", expires)

    @property
    def ends(self) -> NDArray[np.int64]:
        """The end-time column (0: none), typed as always present."""
        assert self.expires is not None  # set by __post_init__
        return self.expires

    def with_expires(self, expires: ArrayLike) -> EntryColumns:
        return EntryColumns(self.cards, self.reason, self.time, np.asarray(expires, np.int64))

    @classmethod
    def empty(cls) -> EntryColumns:
        return cls(CardColumns.empty(), np.zeros(0, np.uint8), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.cards)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EntryColumns):
            return NotImplemented
        return (
            self.cards == other.cards
            and np.array_equal(self.reason, other.reason)
            and np.array_equal(self.time, other.time)
            and np.array_equal(self.ends, other.ends)
        )

    __hash__ = None  # type: ignore[assignment]

    def sort_order(self) -> NDArray[np.intp]:
        return self.cards.sort_order()

    def sorted(self) -> EntryColumns:
        return self.take(self.sort_order())

    def take(self, indices: ArrayLike) -> EntryColumns:
        idx = np.asarray(indices, dtype=np.intp)
        return EntryColumns(self.cards.take(idx), self.reason[idx], self.time[idx], self.ends[idx])


def first_unsorted(cards: CardColumns) -> int | None:
    """Index of the first row that sorts before its predecessor, or None."""
    if len(cards) < 2:
        return None
    r0, r1 = cards.region[:-1], cards.region[1:]
    m0, m1 = cards.middle[:-1], cards.middle[1:]
    s0, s1 = cards.serial[:-1], cards.serial[1:]
    before = (r1 < r0) | ((r1 == r0) & ((m1 < m0) | ((m1 == m0) & (s1 < s0))))
    hits = np.flatnonzero(before)
    return int(hits[0]) + 1 if hits.size else None


def _column(name: str, values: Any, dtype: np.dtype[Any], maximum: int) -> NDArray[Any]:
    """``values`` as a 1-D array of ``dtype``, refusing anything out of 0..maximum (or, for
    signed columns, out of the dtype's range) instead of letting astype wrap it."""
    if isinstance(values, np.ndarray):
        arr: NDArray[Any] = values
    else:
        try:
            arr = np.array(values, dtype=dtype)
        except OverflowError as exc:
            raise ValueError(f"{name} column: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} column must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=dtype)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} column must hold integers, got dtype {arr.dtype}")
    if arr.dtype == dtype and dtype.kind == "i":
        return arr
    low = int(arr.min())
    high = int(arr.max())
    minimum = int(np.iinfo(dtype).min)
    if low < minimum or high > maximum:
        bad = low if low < minimum else high
        raise ValueError(f"{name} {bad} is outside {minimum}..{maximum}")
    return arr.astype(dtype, copy=False)
