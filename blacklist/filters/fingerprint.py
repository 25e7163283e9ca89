"""Card fingerprints: the top ``width`` bits of XXH64 (seed 0) of the canonical card id.

This module is the rule's one definition. Everything else that computes a fingerprint
takes it from here: the C loops of ``blacklist._speedups`` (``scan``, ``scan_packed``,
``key_fingerprints``) implement XXH64 and are handed :func:`fingerprint_shift` for the
width; the checker's inline probe shifts the C probe's digest by the same value.
tests/test_fingerprint_rule.py checks every C path against :func:`fingerprint`.

Why a fingerprint and not the id: the revocation index is a roaring bitmap, which stays
compact only while its values are dense 32-bit-or-narrower integers; a fingerprint is
exactly that. A fingerprint hit is only a candidate match, confirmed against the store.

Why a batch path: ``check_many`` hashes thousands of ids per call, and a Python loop over
``xxhash.xxh64_intdigest`` spends most of its time in the interpreter. :func:`xxh64_rows`
computes the same XXH64 in numpy over a whole ``(n, 32)`` matrix. The batch path must
match the scalar path bit for bit, or a card would be revoked on one path and not the
other; the tests compare them on random and extreme inputs.

XXH64 of a 32-byte input (xxHash specification, "XXH64 algorithm description"): the
input is exactly one 32-byte stripe, read as four little-endian 64-bit lanes::

    v1..v4 = seed+P1+P2, seed+P2, seed, seed-P1      accumulators
    round(acc, lane) = rotl(acc + lane*P2, 31) * P1  one round per lane
    h = rotl(v1,1) + rotl(v2,7) + rotl(v3,12) + rotl(v4,18)
    h = (h ^ round(0, v)) * P1 + P4                  merge, for v in v1..v4
    h += 32                                          the input length
    h ^= h>>33; h *= P2; h ^= h>>29; h *= P3; h ^= h>>32   avalanche

All arithmetic is modulo 2**64; numpy uint64 array arithmetic wraps without warnings.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import xxhash
from numpy.typing import NDArray

MIN_WIDTH: Final = 1
MAX_WIDTH: Final = 32
ROW_BYTES: Final = 32

_MASK64 = (1 << 64) - 1
_P1 = 0x9E3779B185EBCA87
_P2 = 0xC2B2AE3D27D4EB4F
_P3 = 0x165667B19E3779F9
_P4 = 0x85EBCA77C2B2AE63


def _u64(value: int) -> NDArray[np.uint64]:
    # 0-d arrays, not Python ints: numpy converts a large Python int operand on every
    # call, which roughly doubles the cost of an operation on a 1,000-row batch.
    return np.array(value & _MASK64, dtype=np.uint64)


_C_P1 = _u64(_P1)
_C_P2 = _u64(_P2)
_C_P3 = _u64(_P3)
_C_P4 = _u64(_P4)
_C_P4_PLUS_LEN = _u64(_P4 + ROW_BYTES)  # the last merge round and "h += 32" in one add
_C_29, _C_31, _C_32, _C_33 = _u64(29), _u64(31), _u64(32), _u64(33)
# Seed 0. Shapes (4, 1) broadcast along the row axis of the transposed lanes.
_INIT = np.array([[(_P1 + _P2) & _MASK64], [_P2], [0], [(-_P1) & _MASK64]], dtype=np.uint64)
_ROTL = np.array([[1], [7], [12], [18]], dtype=np.uint64)
_ROTR = np.uint64(64) - _ROTL

# Rows hashed per pass: big enough that per-call overhead vanishes, small enough that the
# temporaries (about 100 bytes a row) stay in cache and 10M rows never need gigabytes.
_CHUNK_ROWS = 1 << 14
# Below this many rows the vectorised path's fixed cost (about 35 numpy calls, ~35 µs)
# exceeds calling xxhash once a row (~0.16 µs), measured on the 2-core build machine.
_VECTORISE_FROM = 256

_mul = np.multiply
_add = np.add
_xor = np.bitwise_xor
_or = np.bitwise_or
_shl = np.left_shift
_shr = np.right_shift


def _check_matrix(matrix: NDArray[np.uint8]) -> NDArray[np.uint64]:
    """The ``(n, 4)`` little-endian lanes of a ``(n, 32)`` uint8 matrix."""
    if matrix.dtype != np.uint8 or matrix.ndim != 2 or matrix.shape[1] != ROW_BYTES:
        raise ValueError(
            f"expected an (n, {ROW_BYTES}) uint8 matrix, got shape {matrix.shape} {matrix.dtype}"
        )
    lanes: NDArray[np.uint64] = np.ascontiguousarray(matrix).view("<u8")
    return lanes


def _xxh64_chunk(lanes: NDArray[np.uint64], out: NDArray[np.uint64]) -> None:
    """XXH64 of each row of ``lanes`` (``(k, 4)``), written into ``out`` (``(k,)``).

    Works on the transposed ``(4, k)`` copy so every operation runs over contiguous
    memory with a scalar or per-row operand (a ``(4,)`` operand broadcast along each row
    makes numpy loop four elements at a time, several times slower). Every operation
    writes into an existing buffer: each one costs about a microsecond of overhead.
    """
    v = lanes.T.copy()
    t = np.empty_like(v)
    # One round per accumulator.
    _mul(v, _C_P2, out=v)
    _add(v, _INIT, out=v)
    _shr(v, _C_33, out=t)
    _shl(v, _C_31, out=v)
    _or(v, t, out=v)
    _mul(v, _C_P1, out=v)
    # round(0, v) for the merge rounds, computed for all four accumulators at once.
    w = _mul(v, _C_P2)
    _shr(w, _C_33, out=t)
    _shl(w, _C_31, out=w)
    _or(w, t, out=w)
    _mul(w, _C_P1, out=w)
    # h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18)
    _shr(v, _ROTR, out=t)
    _shl(v, _ROTL, out=v)
    _or(v, t, out=v)
    h = out
    _add(v[0], v[1], out=h)
    _add(h, v[2], out=h)
    _add(h, v[3], out=h)
    for i in range(4):
        _xor(h, w[i], out=h)
        _mul(h, _C_P1, out=h)
        _add(h, _C_P4 if i < 3 else _C_P4_PLUS_LEN, out=h)
    # Avalanche.
    s = t[0]
    _shr(h, _C_33, out=s)
    _xor(h, s, out=h)
    _mul(h, _C_P2, out=h)
    _shr(h, _C_29, out=s)
    _xor(h, s, out=h)
    _mul(h, _C_P3, out=h)
    _shr(h, _C_32, out=s)
    _xor(h, s, out=h)


def _xxh64_each(lanes: NDArray[np.uint64]) -> list[int]:
    """XXH64 of each row by calling xxhash once a row: the path for small batches."""
    data = lanes.tobytes()
    digest = xxhash.xxh64_intdigest
    return [digest(data[i : i + ROW_BYTES]) for i in range(0, len(data), ROW_BYTES)]


def xxh64_rows(matrix: NDArray[np.uint8]) -> NDArray[np.uint64]:
    """XXH64 (seed 0) of each row of an ``(n, 32)`` uint8 matrix.

    Row ``i`` of the result equals ``xxhash.xxh64_intdigest(matrix[i].tobytes())``.
    """
    lanes = _check_matrix(matrix)
    n = lanes.shape[0]
    if n < _VECTORISE_FROM:
        return np.array(_xxh64_each(lanes), dtype=np.uint64)
    out = np.empty(n, dtype=np.uint64)
    for start in range(0, n, _CHUNK_ROWS):
        stop = start + _CHUNK_ROWS
        _xxh64_chunk(lanes[start:stop], out[start:stop])
    return out


def _check_width(width: int) -> None:
    if not MIN_WIDTH <= width <= MAX_WIDTH:
        raise ValueError(f"fingerprint width {width!r} is outside {MIN_WIDTH}..{MAX_WIDTH}")


def fingerprint_shift(width: int) -> int:
    """How far right a card's 64-bit digest shifts to leave its ``width``-bit fingerprint
    (the C loops take the shift, not the width)."""
    _check_width(width)
    return 64 - width


def fingerprint(canonical: bytes, width: int) -> int:
    """The top ``width`` bits of XXH64 of a canonical (upper-case) card id."""
    digest: int = xxhash.xxh64_intdigest(canonical)
    return digest >> fingerprint_shift(width)


def fingerprints(matrix: NDArray[np.uint8], width: int) -> NDArray[np.uint32]:
    """:func:`fingerprint` of each row of an ``(n, 32)`` canonical matrix, as uint32."""
    shift = _u64(fingerprint_shift(width))
    lanes = _check_matrix(matrix)
    n = lanes.shape[0]
    if n < _VECTORISE_FROM:
        hashes = np.array(_xxh64_each(lanes), dtype=np.uint64)
        return (hashes >> shift).astype(np.uint32)
    out = np.empty(n, dtype=np.uint32)
    h = np.empty(min(n, _CHUNK_ROWS), dtype=np.uint64)
    for start in range(0, n, _CHUNK_ROWS):
        stop = min(start + _CHUNK_ROWS, n)
        part = h[: stop - start]
        _xxh64_chunk(lanes[start:stop], part)
        _shr(part, shift, out=part)
        # After the shift every value fits in 32 bits, so the cast is exact.
        out[start:stop] = part
    return out
