"""Fixed-width bit packing of unsigned integers, vectorised with numpy.

Layout of a packed run of ``count`` values at ``width`` bits (0..64)::

    field    size                        meaning
    values   count * width bits          each value in exactly ``width`` bits, most significant
                                         bit first; value i starts at bit i * width
    padding  0..7 bits                   zero bits up to the next byte boundary

Bits are numbered from the most significant bit of byte 0 (``np.packbits``' default "big"
bit order), so a hex dump reads left to right. Width 0 packs to no bytes at all.

Several runs, each with its own width, may follow each other with no padding between them
(:func:`pack_runs`; Elias–Fano low bits use this, one run per card group). A single run is
:func:`pack_uints`.

Unpacking never trusts its input: the byte string must be exactly the packed size and the
padding bits must be zero, so each sequence of values has exactly one packed form (a signed
body must be canonical); anything else raises :class:`CodecError`.

Work is done in chunks of ``_CHUNK`` values so that temporaries stay a few MB however many
values there are (packing expands each value to 64 one-byte bits).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from blacklist.errors import CodecError

MAX_WIDTH = 64

# A multiple of 8, so that every full chunk of one fixed-width run packs to whole bytes.
_CHUNK = 1 << 16
_ALL_ONES = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
_COLUMNS = np.arange(64, dtype=np.int64)


def packed_size(count: int, width: int) -> int:
    """Bytes taken by ``count`` values of ``width`` bits (padded to a byte)."""
    return (count * width + 7) // 8


def pack_uints(values: NDArray[np.uint64], width: int) -> bytes:
    """Pack ``values`` at ``width`` bits each (see the module docstring).

    Raises ValueError if a value does not fit in ``width`` bits.
    """
    arr = _as_uint64(values)
    return pack_runs(arr, [len(arr)], [width])


def unpack_uints(
    data: bytes, count: int, width: int, field: str = "packed integers"
) -> NDArray[np.uint64]:
    """Inverse of :func:`pack_uints`. ``data`` must be exactly ``packed_size(count, width)``."""
    return unpack_runs(data, [count], [width], field)


def pack_runs(
    values: NDArray[np.uint64],
    lengths: Sequence[int] | ArrayLike,
    widths: Sequence[int] | ArrayLike,
) -> bytes:
    """Pack consecutive runs of ``values``: run k has ``lengths[k]`` values of ``widths[k]`` bits.

    The runs are concatenated bit after bit and only the end is padded to a byte.
    """
    arr = _as_uint64(values)
    run_len, run_width = _check_runs(lengths, widths)
    if int(run_len.sum()) != len(arr):
        raise ValueError(f"run lengths add up to {int(run_len.sum())}, not {len(arr)} values")
    elem_width = np.repeat(run_width, run_len)
    # Largest value each width holds; 64 is special-cased because 1 << 64 overflows uint64.
    limits = np.where(
        elem_width >= 64,
        _ALL_ONES,
        (np.uint64(1) << np.minimum(elem_width, 63).astype(np.uint64)) - np.uint64(1),
    )
    too_big = np.flatnonzero(arr > limits)
    if too_big.size:
        i = int(too_big[0])
        raise ValueError(f"value {int(arr[i])} at index {i} does not fit in {elem_width[i]} bits")

    pieces: list[bytes] = []
    carry = np.zeros(0, dtype=np.uint8)  # bits (one per byte) not yet making a whole byte
    for start in range(0, len(arr), _CHUNK):
        chunk = arr[start : start + _CHUNK]
        w = elem_width[start : start + _CHUNK]
        # Big-endian bytes then unpackbits: row i holds value i's 64 bits, MSB first.
        bits = np.unpackbits(chunk.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1)
        if int(w.min()) == int(w.max()):
            stream = bits[:, 64 - int(w[0]) :].reshape(-1)
        else:
            # Boolean indexing walks the matrix in row order: each value's low w bits in turn.
            stream = bits[_COLUMNS[None, :] >= (64 - w)[:, None]]
        if carry.size:
            stream = np.concatenate((carry, stream))
        whole = stream.size - stream.size % 8
        pieces.append(np.packbits(stream[:whole]).tobytes())
        carry = stream[whole:]
    pieces.append(np.packbits(carry).tobytes())  # packbits pads the last byte with zeros
    return b"".join(pieces)


def runs_packed_size(lengths: Sequence[int] | ArrayLike, widths: Sequence[int] | ArrayLike) -> int:
    """Bytes taken by :func:`pack_runs` output for these runs."""
    run_len, run_width = _check_runs(lengths, widths)
    return (int(np.dot(run_len, run_width)) + 7) // 8


def unpack_runs(
    data: bytes,
    lengths: Sequence[int] | ArrayLike,
    widths: Sequence[int] | ArrayLike,
    field: str = "packed integers",
) -> NDArray[np.uint64]:
    """Inverse of :func:`pack_runs`. Raises CodecError (naming ``field``) on a wrong length
    or non-zero padding bits."""
    run_len, run_width = _check_runs(lengths, widths)
    total_bits = int(np.dot(run_len, run_width))
    if len(data) != (total_bits + 7) // 8:
        raise CodecError(
            f"{field}: {len(data)} bytes, expected {(total_bits + 7) // 8} "
            f"for {total_bits} bits of packed values"
        )
    spare = -total_bits % 8
    if spare and data[-1] & ((1 << spare) - 1):
        raise CodecError(f"{field}: padding bits after the last value are not zero")
    count = int(run_len.sum())
    out = np.zeros(count, dtype=np.uint64)
    if total_bits == 0:
        return out

    # Nine zero bytes of slack: a value starting in the last byte still reads 9 whole bytes.
    buf = np.frombuffer(bytes(data) + bytes(9), dtype=np.uint8)
    # A big-endian 64-bit word starting at *every* byte offset (an overlapping, unaligned view;
    # numpy copes). Gathering from it reads each value's window without a per-bit expansion.
    words: NDArray[np.uint64] = np.ndarray(
        shape=(len(data) + 1,), dtype=">u8", buffer=buf, strides=(1,)
    )
    run_end = np.cumsum(run_len)
    run_start = run_end - run_len
    run_bit_start = np.cumsum(run_len * run_width) - run_len * run_width
    for start in range(0, count, _CHUNK):
        idx = np.arange(start, min(count, start + _CHUNK), dtype=np.int64)
        run = np.searchsorted(run_end, idx, side="right")
        w = run_width[run]
        offset = run_bit_start[run] + (idx - run_start[run]) * w
        byte = offset >> 3
        skip = (offset & 7).astype(np.uint64)
        # The value lies in the 72 bits of bytes byte..byte+8: drop `skip` leading bits, then
        # keep the top w bits. Shifts stay below 64 except 64 - 0 (handled by the where).
        window = (words[byte].astype(np.uint64) << skip) | (
            buf[byte + 8].astype(np.uint64) >> (np.uint64(8) - skip)
        )
        wu = w.astype(np.uint64)
        out[start : start + len(idx)] = np.where(
            wu == 0, np.uint64(0), window >> (np.uint64(64) - np.maximum(wu, np.uint64(1)))
        )
    return out


def _as_uint64(values: ArrayLike) -> NDArray[np.uint64]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D array of values, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if arr.dtype.kind == "i" and int(arr.min()) < 0:
        raise ValueError(f"cannot pack negative value {int(arr.min())}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"expected unsigned integers, got dtype {arr.dtype}")
    return arr.astype(np.uint64, copy=False)


def _check_runs(
    lengths: Sequence[int] | ArrayLike, widths: Sequence[int] | ArrayLike
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    run_len = np.asarray(lengths, dtype=np.int64).reshape(-1)
    run_width = np.asarray(widths, dtype=np.int64).reshape(-1)
    if run_len.shape != run_width.shape:
        raise ValueError(f"{len(run_len)} run lengths but {len(run_width)} widths")
    if run_len.size and int(run_len.min()) < 0:
        raise ValueError(f"negative run length {int(run_len.min())}")
    if run_width.size and not (int(run_width.min()) >= 0 and int(run_width.max()) <= MAX_WIDTH):
        bad = int(run_width[(run_width < 0) | (run_width > MAX_WIDTH)][0])
        raise ValueError(f"bit width {bad} is outside 0..{MAX_WIDTH}")
    return run_len, run_width
