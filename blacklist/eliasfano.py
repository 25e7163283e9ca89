"""Elias–Fano coding of non-decreasing runs of unsigned 64-bit integers.

Elias, "Efficient storage and retrieval by content and address of static files" (1974);
Fano (1971); the form used here is the one in Vigna, "Quasi-succinct indices" (WSDM 2013).

A run of n values v_0 <= ... <= v_{n-1} with maximum m is stored with a low width

    l = floor(log2((m + 1) / n)), or 0 if (m + 1) / n < 2, and at most 63:

each value's low l bits at fixed width, and its high part ``v_i >> l`` in unary: the run's high
vector has a one at bit ``(v_i >> l) + i`` for every i (so equal values are simply adjacent
ones and duplicates survive). The vector is ``(m >> l) + n`` bits long, and because l is
chosen as above, ``m >> l < 2n``: a run costs under l + 3 bits a value, within about 2 bits
of the information-theoretic minimum for n sorted values below m + 1.

l is capped at 63 because the formula only gives 64 for a single value 2**64 - 1, and
shifting a uint64 by 64 is undefined in C (and numpy); the cap costs one bit.

Layout of G runs (the caller supplies the run lengths, e.g. from entryblock's group
headers)::

    field        size                         meaning
    low widths   G bytes                      l of each run (0..63)
    low bits     ceil(sum(n_g * l_g) / 8) B   every value's low l_g bits, run after run, with
                                              no padding between runs (bitpack.pack_runs)
    high length  uvarint                      byte length of the high bits, at most
                                              ceil(3 * sum(n_g) / 8)
    high bits    high length bytes            the runs' high vectors one after another, MSB
                                              first, no padding between runs; the last byte
                                              holds the last one, then zero bits

Run g's high vector ends at its n_g-th one, so the next run's vector starts right after it.

Decoding accepts only what the encoder produces: the low width must be the one the formula
gives for the decoded maximum, values must be non-decreasing within a run, the high bits
must hold exactly sum(n_g) ones and no spare byte. So each sequence has exactly one encoding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from blacklist.binary import Reader, Writer
from blacklist.bitpack import pack_runs, runs_packed_size, unpack_runs
from blacklist.errors import CodecError

MAX_LOW_WIDTH = 63

_ONE = np.uint64(1)
_ALL_ONES = np.uint64(0xFFFF_FFFF_FFFF_FFFF)


def low_widths(maxima: NDArray[np.uint64], sizes: NDArray[np.int64]) -> NDArray[np.int64]:
    """The low width l of runs with these maxima and lengths (see the module docstring)."""
    m = np.asarray(maxima, dtype=np.uint64)
    n = np.asarray(sizes, dtype=np.int64).astype(np.uint64)
    if m.size == 0:
        return np.zeros(0, dtype=np.int64)
    # q = floor((m + 1) / n) without computing m + 1, which overflows for m = 2**64 - 1.
    q = m // n + (m % n == n - _ONE).astype(np.uint64)
    # The only overflow left: n = 1, m = 2**64 - 1 gives q = 2**64 (wrapped to 0); l is 63.
    wrapped = (n == _ONE) & (m == _ALL_ONES)
    widths = np.clip(_bit_length(q) - 1, 0, MAX_LOW_WIDTH)
    widths[wrapped] = MAX_LOW_WIDTH
    return widths


def write_sequence(w: Writer, values: NDArray[np.uint64]) -> None:
    """One run (its length is the caller's to record)."""
    write_runs(w, values, [len(values)] if len(values) else [])


def read_sequence(r: Reader, count: int) -> NDArray[np.uint64]:
    return read_runs(r, [count] if count else [])


def write_runs(w: Writer, values: NDArray[np.uint64], sizes: Sequence[int] | ArrayLike) -> None:
    """Encode consecutive runs of ``values`` (run g: the next ``sizes[g]`` values, each run
    non-decreasing, every size at least 1). Raises ValueError on input breaking that."""
    v = np.asarray(values)
    if v.dtype != np.uint64 or v.ndim != 1:
        raise TypeError(f"expected a 1-D uint64 array, got {v.dtype} with shape {v.shape}")
    size = _check_sizes(sizes)
    n = len(v)
    if int(size.sum()) != n:
        raise ValueError(f"run sizes add up to {int(size.sum())}, not {n} values")
    end = np.cumsum(size)
    start = end - size
    if n > 1:
        drops = v[1:] < v[:-1]
        drops[end[:-1] - 1] = False  # a run may start below the previous run's end
        if drops.any():
            i = int(np.flatnonzero(drops)[0]) + 1
            raise ValueError(f"values decrease within a run at index {i}")

    maxima = v[end - 1] if n else np.zeros(0, dtype=np.uint64)
    width = low_widths(maxima, size)
    w.raw(width.astype(np.uint8).tobytes())

    elem_width = np.repeat(width, size).astype(np.uint64)
    w.raw(pack_runs(v & ((_ONE << elem_width) - _ONE), size, width))

    # With l canonical, v >> l < 2n, so int64 holds the high parts and positions comfortably.
    high = (v >> elem_width).astype(np.int64)
    run_bits = (maxima >> width.astype(np.uint64)).astype(np.int64) + size
    run_bit_start = np.cumsum(run_bits) - run_bits
    local = np.arange(n, dtype=np.int64) - np.repeat(start, size)
    bits = np.zeros(int(run_bits.sum()), dtype=np.uint8)
    bits[high + local + np.repeat(run_bit_start, size)] = 1
    high_bytes = np.packbits(bits).tobytes()
    w.uvarint(len(high_bytes))
    w.raw(high_bytes)


def read_runs(
    r: Reader, sizes: Sequence[int] | ArrayLike, field: str = "serial"
) -> NDArray[np.uint64]:
    """Decode runs written by :func:`write_runs`; the run sizes come from the caller (who has
    checked them against the input length). Raises CodecError naming ``field``."""
    size = _check_sizes(sizes)
    n = int(size.sum())
    groups = len(size)
    if n > 8 * r.remaining:  # every value has a one in the high bits
        raise CodecError(f"{field}: {n} values need at least {n} bits, {r.remaining} bytes left")
    width = np.frombuffer(r.raw(groups, f"{field} low widths"), dtype=np.uint8).astype(np.int64)
    if groups and int(width.max()) > MAX_LOW_WIDTH:
        g = int(np.argmax(width))
        raise CodecError(f"{field} low width {int(width[g])} of group {g} exceeds {MAX_LOW_WIDTH}")
    low_data = r.raw(runs_packed_size(size, width), f"{field} low bits")
    low = unpack_runs(low_data, size, width, f"{field} low bits")

    high_len = _minimal_uvarint(r, f"{field} high length", limit=(3 * n + 7) // 8)
    high_data = r.raw(high_len, f"{field} high bits")
    ones = np.flatnonzero(np.unpackbits(np.frombuffer(high_data, dtype=np.uint8)))
    if len(ones) != n:
        raise CodecError(f"{field} high bits hold {len(ones)} ones, expected {n}")
    if n and int(ones[-1]) // 8 != high_len - 1:
        raise CodecError(f"{field} high bits: {high_len - 1 - int(ones[-1]) // 8} spare bytes")
    if n == 0:
        if high_len:
            raise CodecError(f"{field} high bits: {high_len} bytes for no values")
        return np.zeros(0, dtype=np.uint64)

    end = np.cumsum(size)
    start = end - size
    # Run g's vector starts just after run g-1's last one.
    run_bit_start = np.concatenate(([0], ones[end[:-1] - 1] + 1))
    local = np.arange(n, dtype=np.int64) - np.repeat(start, size)
    high = ones - np.repeat(run_bit_start, size) - local  # >= 0, non-decreasing in a run

    # high << l must not lose bits; compare each run's largest high part with what fits.
    fits = _ALL_ONES >> width.astype(np.uint64)
    over = np.flatnonzero(high[end - 1].astype(np.uint64) > fits)
    if over.size:
        raise CodecError(f"{field} group {int(over[0])}: high part overflows 64 bits")
    elem_width = np.repeat(width, size).astype(np.uint64)
    values: NDArray[np.uint64] = (high.astype(np.uint64) << elem_width) | low

    # Equal high parts with decreasing low bits would decode to a decreasing run.
    if n > 1:
        drops = values[1:] < values[:-1]
        drops[end[:-1] - 1] = False
        if drops.any():
            i = int(np.flatnonzero(drops)[0]) + 1
            raise CodecError(f"{field} values decrease within a group at index {i}")
    wrong = np.flatnonzero(low_widths(values[end - 1], size) != width)
    if wrong.size:
        g = int(wrong[0])
        raise CodecError(
            f"{field} low width {int(width[g])} of group {g} is not the canonical "
            f"{int(low_widths(values[end[g] - 1 : end[g]], size[g : g + 1])[0])}"
        )
    return values


def _minimal_uvarint(r: Reader, field: str, limit: int) -> int:
    """Reader.uvarint that also refuses padded forms (0x80 0x00 for 0): binary.Reader accepts
    them, and a signed body must have one encoding. Same check as entryblock's."""
    start = r.pos
    value = r.uvarint(field, limit)
    if r.pos - start != max(1, -(-value.bit_length() // 7)):
        raise CodecError(f"{field}: varint {value} is not minimally encoded")
    return value


def _check_sizes(sizes: Sequence[int] | ArrayLike) -> NDArray[np.int64]:
    size = np.asarray(sizes, dtype=np.int64).reshape(-1)
    if size.size and int(size.min()) < 1:
        raise ValueError(f"run size {int(size.min())} is not positive")
    return size


def _bit_length(x: NDArray[np.uint64]) -> NDArray[np.int64]:
    """Vectorised int.bit_length for uint64 (exact; float log2 rounds near powers of two)."""
    x = x.copy()
    length = np.zeros(x.shape, dtype=np.int64)
    for step in (32, 16, 8, 4, 2, 1):
        big = (x >> np.uint64(step)) != 0
        length += big * step
        x = np.where(big, x >> np.uint64(step), x)
    result: NDArray[np.int64] = length + (x != 0)
    return result
