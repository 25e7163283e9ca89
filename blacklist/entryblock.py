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
varints (binary.Reader accepts 0x80 0x00 for 0; ``_uvarint`` here does not). Duplicate cards
are encoded faithfully, adjacent in the order the caller gave them, so acceptance can
reject them.

Hostile input: every count, width and length is checked against the bytes that remain
before anything is allocated from it, so random bytes end in a CodecError naming the field.
A card costs at least one bit (its Elias–Fano high bit), so n <= 8 * remaining bytes.
Bytes after the block are the caller's (it calls ``Reader.expect_end``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from blacklist.binary import Reader, Writer
from blacklist.bitpack import pack_uints, packed_size, unpack_uints
from blacklist.columns import INT64_MAX, MAX_REGION, MIDDLE_LIMIT, UINT64_MAX, first_unsorted
from blacklist.columns import CardColumns as CardColumns
from blacklist.columns import EntryColumns as EntryColumns
from blacklist.eliasfano import read_runs, write_runs
from blacklist.errors import CodecError

MAX_ENTRIES = 100_000_000
MAX_REASON_WIDTH = 8
MAX_TIME_WIDTH = 64
_INT64_MIN = -(2**63)
_MIN_GROUP_HEADER = 3  # three one-byte varints


# ---------------------------------------------------------------------------------- writing


def write_cards(w: Writer, cards: CardColumns) -> None:
    """Append a card block. ``cards`` must be sorted (``cards.sorted()``), else ValueError."""
    n = len(cards)
    if n > MAX_ENTRIES:
        raise ValueError(f"{n} cards exceed the block limit {MAX_ENTRIES}")
    bad = first_unsorted(cards)
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
    if not _INT64_MIN <= min_time <= INT64_MAX:
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
    if min_time + max_delta > INT64_MAX:
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


def _uvarint(r: Reader, field: str, limit: int = UINT64_MAX) -> int:
    """Reader.uvarint that also refuses padded forms (0x80 0x00 for 0): binary.Reader accepts
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
