"""The columnar encoding of the cards (removes) and entries (adds) inside a signed delta.

Cards are three columns (see cardid.py): region (0..999999), middle (the 10-character part
as a base-36 number, below 36**10) and serial (any 64-bit value). A block lists them sorted
by (region, middle, serial); rows sharing region and middle form a *group*, and a group's
serials are one Elias–Fano run (eliasfano.py), which is what makes a block small: one city's
100,000 random serials cost about 49.3 bits each; the floor, log2(C(2**64, n)) / n, is 48.8.

Card block (``write_cards`` / ``read_cards``; removes)::

    field           encoding       meaning
    count           uvarint        n, the number of cards (at most MAX_ENTRIES)
    groups          uvarint        G, the number of (region, middle) groups; 0 exactly when
                                   n = 0
    G group headers, in (region, middle) order:
      region delta  uvarint        region - the previous group's region (the first group:
                                   the region itself); the region must stay <= 999999
      middle        uvarint        region delta = 0 after the first group: middle - the
                                   previous group's middle, at least 1 (groups are distinct
                                   and in order); otherwise the middle itself; below 36**10
      size          uvarint        cards in the group, at least 1; the sizes add up to n
    serials         Elias–Fano     eliasfano.py layout, one run per group in header order

Entry block (``write_entries`` / ``read_entries``; adds) is a card block followed by::

    field           encoding       meaning
    min time        svarint        the smallest effective time (unix seconds); 0 if n = 0
    time width      u8             tw = bit_length(max time - min time), 0..64
    times           ceil(n*tw/8) B time - min time of each entry, in card order (bitpack.py)
    reason width    u8             rw = bit_length(max reason), 0..8
    reasons         ceil(n*rw/8) B each entry's reason code, in card order (bitpack.py)

Canonical form: a signed body must have exactly one encoding for one set of changes, so
the writer refuses unsorted input (ValueError; ``sorted()`` is the helper) and the reader
refuses anything the writer would not produce: non-minimal widths, a min time that is not
the minimum, non-zero padding bits, groups out of order, empty or duplicated, and padded
varints (wire.Reader accepts 0x80 0x00 for 0; ``_uvarint`` here does not). Duplicate cards
are encoded faithfully, adjacent in the order the caller gave them, so acceptance can
reject them.

Hostile input: every count, width and length is checked against the bytes that remain
before anything is allocated from it, so random bytes end in a CodecError naming the field.
A card costs at least one bit (its Elias–Fano high bit), so n <= 8 * remaining bytes.
Bytes after the block are the caller's (it calls ``Reader.expect_end``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from blacklist.bitpack import pack_uints, packed_size, unpack_uints
from blacklist.cardid import KEY_LENGTH, key_to_text
from blacklist.eliasfano import read_runs, write_runs
from blacklist.errors import CodecError
from blacklist.wire import Reader, Writer

MAX_ENTRIES = 100_000_000
MAX_REGION = 999_999
MIDDLE_LIMIT = 36**10  # ten base-36 characters
MAX_REASON_WIDTH = 8
MAX_TIME_WIDTH = 64
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1
_MIN_GROUP_HEADER = 3  # three one-byte varints


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
        serial = _column("serial", self.serial, np.dtype(np.uint64), _UINT64_MAX)
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
        return _first_unsorted(self) is None

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
        time = _column("time", self.time, np.dtype(np.int64), _INT64_MAX)
        if self.expires is None:
            expires = np.zeros(len(time), dtype=np.int64)
        else:
            expires = _column("expires", self.expires, np.dtype(np.int64), _INT64_MAX)
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


# ---------------------------------------------------------------------------------- writing


def write_cards(w: Writer, cards: CardColumns) -> None:
    """Append a card block. ``cards`` must be sorted (``cards.sorted()``), else ValueError."""
    n = len(cards)
    if n > MAX_ENTRIES:
        raise ValueError(f"{n} cards exceed the block limit {MAX_ENTRIES}")
    bad = _first_unsorted(cards)
    if bad is not None:
        raise ValueError(
            f"cards are not sorted by (region, middle, serial): row {bad} "
            f"({cards.card_id(bad)}) comes after {cards.card_id(bad - 1)}; use .sorted()"
        )
    starts = _group_starts(cards)
    sizes = np.diff(np.append(starts, n))
    w.uvarint(n)
    w.uvarint(len(starts))
    prev_region = 0
    prev_middle = 0
    first = True
    for region, middle, size in zip(
        cards.region[starts].tolist(),
        cards.middle[starts].tolist(),
        sizes.tolist(),
        strict=True,
    ):
        w.uvarint(region - prev_region)
        w.uvarint(middle - prev_middle if region == prev_region and not first else middle)
        w.uvarint(size)
        prev_region, prev_middle, first = region, middle, False
    write_runs(w, cards.serial, sizes)


def write_entries(w: Writer, entries: EntryColumns) -> None:
    """Append an entry block. ``entries`` must be sorted by card (``entries.sorted()``)."""
    write_cards(w, entries.cards)
    n = len(entries)
    if n:
        min_time = int(entries.time.min())
        # Two's-complement wrap-around gives the exact difference, which fits in 64 bits.
        deltas = entries.time.view(np.uint64) - np.uint64(min_time % 2**64)
        time_width = int(deltas.max()).bit_length()
        reason_width = int(entries.reason.max()).bit_length()
    else:
        min_time = time_width = reason_width = 0
        deltas = np.zeros(0, dtype=np.uint64)
    w.svarint(min_time)
    w.u8(time_width)
    w.raw(pack_uints(deltas, time_width))
    w.u8(reason_width)
    w.raw(pack_uints(entries.reason.astype(np.uint64), reason_width))


# ---------------------------------------------------------------------------------- reading


def read_cards(r: Reader, max_count: int = MAX_ENTRIES) -> CardColumns:
    """Read a card block. Raises CodecError (naming the field) on anything malformed."""
    n = _uvarint(r, "card count", limit=max_count)
    if n > 8 * r.remaining:
        raise CodecError(f"card count {n} needs at least {n} bits, only {r.remaining} bytes left")
    groups = _uvarint(r, "group count", limit=n)
    if n and not groups:
        raise CodecError(f"group count is 0 for {n} cards")
    if groups * _MIN_GROUP_HEADER > r.remaining:
        raise CodecError(f"group count {groups} needs more than the {r.remaining} bytes left")

    regions: list[int] = []
    middles: list[int] = []
    sizes: list[int] = []
    region = middle = total = 0
    for g in range(groups):
        region_delta = _uvarint(r, f"group {g} region delta", limit=MAX_REGION - region)
        region += region_delta
        if region_delta or g == 0:
            middle = _uvarint(r, f"group {g} middle", limit=MIDDLE_LIMIT - 1)
        else:
            step = _uvarint(r, f"group {g} middle delta", limit=MIDDLE_LIMIT - 1 - middle)
            if step == 0:
                raise CodecError(f"group {g} repeats the previous group's region and middle")
            middle += step
        size = _uvarint(r, f"group {g} size", limit=n - total)
        if size == 0:
            raise CodecError(f"group {g} is empty")
        total += size
        regions.append(region)
        middles.append(middle)
        sizes.append(size)
    if total != n:
        raise CodecError(f"group sizes add up to {total}, but the card count is {n}")

    serial = read_runs(r, sizes, "serial")
    return CardColumns(
        np.repeat(np.array(regions, dtype=np.uint32), sizes),
        np.repeat(np.array(middles, dtype=np.uint64), sizes),
        serial,
    )


def read_entries(r: Reader, max_count: int = MAX_ENTRIES) -> EntryColumns:
    """Read an entry block. Raises CodecError (naming the field) on anything malformed."""
    cards = read_cards(r, max_count)
    n = len(cards)
    times = _read_times(r, n)
    reasons = _read_reasons(r, n)
    return EntryColumns(cards, reasons, times)


def _read_times(r: Reader, n: int) -> NDArray[np.int64]:
    zigzag = _uvarint(r, "min time")  # zig-zag, as Writer.svarint
    min_time = (zigzag >> 1) if not zigzag & 1 else -((zigzag + 1) >> 1)
    if not _INT64_MIN <= min_time <= _INT64_MAX:
        raise CodecError(f"min time {min_time} is outside the int64 range")
    width = r.u8("time width")
    if width > MAX_TIME_WIDTH:
        raise CodecError(f"time width {width} exceeds {MAX_TIME_WIDTH}")
    deltas = unpack_uints(r.raw(packed_size(n, width), "times"), n, width, "times")
    if n == 0:
        if min_time or width:
            raise CodecError(
                f"empty entry block with min time {min_time} and time width {width} (must be 0)"
            )
        return np.zeros(0, dtype=np.int64)
    if int(deltas.min()) != 0:
        raise CodecError(f"min time {min_time} is not the smallest time")
    max_delta = int(deltas.max())
    if width != max_delta.bit_length():
        raise CodecError(f"time width {width} is not the minimal {max_delta.bit_length()}")
    if min_time + max_delta > _INT64_MAX:
        raise CodecError(f"time {min_time} + {max_delta} overflows int64")
    # Adding in uint64 wraps exactly as two's complement: the int64 view is the time.
    times: NDArray[np.int64] = (deltas + np.uint64(min_time % 2**64)).view(np.int64)
    return times


def _read_reasons(r: Reader, n: int) -> NDArray[np.uint8]:
    width = r.u8("reason width")
    if width > MAX_REASON_WIDTH:
        raise CodecError(f"reason width {width} exceeds {MAX_REASON_WIDTH}")
    reasons = unpack_uints(r.raw(packed_size(n, width), "reasons"), n, width, "reasons")
    top = int(reasons.max()) if n else 0
    if width != top.bit_length():
        raise CodecError(f"reason width {width} is not the minimal {top.bit_length()}")
    return reasons.astype(np.uint8)


# ---------------------------------------------------------------------------------- helpers


def _uvarint(r: Reader, field: str, limit: int = _UINT64_MAX) -> int:
    """Reader.uvarint that also refuses padded forms (0x80 0x00 for 0): wire.Reader accepts
    them, and a signed body must have exactly one encoding."""
    start = r.pos
    value = r.uvarint(field, limit)
    if r.pos - start != max(1, -(-value.bit_length() // 7)):
        raise CodecError(f"{field}: varint {value} is not minimally encoded")
    return value


def _group_starts(cards: CardColumns) -> NDArray[np.intp]:
    """Row index where each (region, middle) group of sorted ``cards`` begins."""
    if not len(cards):
        return np.zeros(0, dtype=np.intp)
    change = (cards.region[1:] != cards.region[:-1]) | (cards.middle[1:] != cards.middle[:-1])
    return np.concatenate(([0], np.flatnonzero(change) + 1)).astype(np.intp)


def _first_unsorted(cards: CardColumns) -> int | None:
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
