"""The expiry section of a signed body: the end times of entries that lapse by themselves.

A temporary loss (临时挂失) lapses after a fixed period unless a later delta extends it, makes
it a formal loss or removes it (issue #17). Most entries have no end time, and a body that
has none does not carry this section at all (delta.py flags it in the sections byte), so
every body written before end times existed keeps its bytes, digest and signature.

Layout, for the body's main entry block of n entries (delta adds, snapshot entries)::

    field        encoding        meaning
    count        uvarint         k, the entries with an end time, 1..n
    positions    Elias–Fano      only when k < n: their row indices in the block, strictly
                                 ascending (eliasfano.py, one run); when k = n, every row
    min lapse    uvarint         the smallest end time - effective time, at least 1
    lapse unit   uvarint         u, the greatest common divisor of (lapse - min lapse) over
                                 the rows; 1 when every lapse is the same
    lapse width  u8              lw = bit_length((max lapse - min lapse) / u), 0..64
    lapses       ceil(k*lw/8) B  (lapse - min lapse) / u of each, in row order (bitpack.py)

Why lapses and not end times: an office gives every temporary loss the same period, so a
delta of 100,000 of them, whatever their effective times, has one lapse and lw = 0 — the
whole section costs a few bytes (bench/test_core.py, ``test_delta_size_expiry``). Why the
unit: periods are whole days (7–15 by city), so a delta mixing cities' periods stores each
as a few bits of days, not 20 bits of seconds.

An end time is after its effective time (a lapse of at least 1 s): an entry that is over
before it begins has no meaning, and the unsigned lapse keeps one encoding per set of
end times. The writer refuses anything else (ValueError) and the reader refuses what the
writer would not produce (CodecError): k = 0, positions not strictly ascending or not
below n, a non-minimal width, a min lapse that is not the minimum, a unit that is not the
greatest common divisor, padded varints, an end time past int64. Every count is checked against the bytes left before it sizes anything.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from blacklist.binary import Reader, Writer
from blacklist.bitpack import pack_uints, packed_size, unpack_uints
from blacklist.eliasfano import read_sequence, write_sequence
from blacklist.entryblock import EntryColumns
from blacklist.errors import CodecError

NO_END = 0  # the end-time column's value for an entry that does not lapse
_INT64_MAX = 2**63 - 1
_MAX_WIDTH = 64


def has_end_times(entries: EntryColumns) -> bool:
    return bool(len(entries)) and bool(entries.ends.any())


def lapses(entries: EntryColumns) -> tuple[NDArray[np.intp], NDArray[np.uint64]]:
    """Rows with an end time and their lapse (end - effective time, exact in uint64).
    ValueError for an end time that is not after its effective time."""
    rows = np.flatnonzero(entries.ends != NO_END)
    ends, times = entries.ends[rows], entries.time[rows]
    bad = np.flatnonzero(ends <= times)
    if bad.size:
        i = int(rows[bad[0]])
        raise ValueError(
            f"row {i} ({entries.cards.card_id(i)}): end time {int(entries.ends[i])} is not "
            f"after its effective time {int(entries.time[i])}"
        )
    # ends > times, so the wrapped uint64 difference is the exact positive lapse.
    return rows.astype(np.intp), ends.view(np.uint64) - times.view(np.uint64)


def write_expiry(w: Writer, entries: EntryColumns) -> None:
    """Append the section for ``entries`` (which must have at least one end time)."""
    rows, spans = lapses(entries)
    k = len(rows)
    if not k:
        raise ValueError("no end times: the expiry section is written only when there are")
    w.uvarint(k)
    if k < len(entries):
        write_sequence(w, rows.astype(np.uint64))
    low = int(spans.min())
    offsets = spans - np.uint64(low)
    unit = int(np.gcd.reduce(offsets)) or 1
    scaled = offsets // np.uint64(unit)
    width = int(scaled.max()).bit_length()
    w.uvarint(low)
    w.uvarint(unit)
    w.u8(width)
    w.raw(pack_uints(scaled, width))


def read_expiry(r: Reader, entries: EntryColumns) -> EntryColumns:
    """``entries`` with the end times of the section at ``r``. Raises CodecError."""
    n = len(entries)
    k = _uvarint(r, "expiry count", n)
    if k == 0:
        raise CodecError("the expiry section is flagged but empty")
    if k < n:
        positions = read_sequence(r, k)
        if k > 1 and bool((positions[1:] == positions[:-1]).any()):
            raise CodecError("expiry positions repeat a row")
        if int(positions[-1]) >= n:
            raise CodecError(f"expiry position {int(positions[-1])} is not below {n} entries")
        rows = positions.astype(np.intp)
    else:
        rows = np.arange(n, dtype=np.intp)
    low = _uvarint(r, "min lapse", 2**64 - 1)
    if low == 0:
        raise CodecError("min lapse 0: an end time must be after its effective time")
    unit = _uvarint(r, "lapse unit", 2**64 - 1)
    if unit == 0:
        raise CodecError("lapse unit 0")
    width = r.u8("lapse width")
    if width > _MAX_WIDTH:
        raise CodecError(f"lapse width {width} exceeds {_MAX_WIDTH}")
    offsets = unpack_uints(r.raw(packed_size(k, width), "lapses"), k, width, "lapses")
    if int(offsets.min()) != 0:
        raise CodecError(f"min lapse {low} is not the smallest lapse")
    top = int(offsets.max())
    if width != top.bit_length():
        raise CodecError(f"lapse width {width} is not the minimal {top.bit_length()}")
    divisor = int(np.gcd.reduce(offsets))
    if divisor != (1 if top else 0) or (not top and unit != 1):
        raise CodecError(f"lapse unit {unit} is not the greatest common divisor of the lapses")
    if low + unit * top > 2**64 - 1:
        raise CodecError(f"lapse {low} + {unit} * {top} overflows 64 bits")
    spans = offsets * np.uint64(unit) + np.uint64(low)
    times = entries.time[rows]
    # The end time must fit int64: lapse <= INT64_MAX - time (exact in uint64).
    room = np.uint64(_INT64_MAX) - times.view(np.uint64)
    over = np.flatnonzero(spans > room)
    if over.size:
        i = int(rows[over[0]])
        raise CodecError(f"row {i}: effective time + lapse overflows int64")
    ends = np.zeros(n, dtype=np.int64)
    ends[rows] = (times.view(np.uint64) + spans).view(np.int64)
    return entries.with_expires(ends)


def _uvarint(r: Reader, field: str, limit: int) -> int:
    """A minimally encoded uvarint (one encoding per value; see entryblock._uvarint)."""
    start = r.pos
    value = r.uvarint(field, limit)
    if r.pos - start != max(1, -(-value.bit_length() // 7)):
        raise CodecError(f"{field}: varint {value} is not minimally encoded")
    return value
