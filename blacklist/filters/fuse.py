"""Binary fuse 8 filters (Graf & Lemire, "Binary Fuse Filters: Fast and Smaller Than Xor
Filters", ACM JEA 27, 2022): an immutable set of 64-bit keys in about 9 bits per key, with
no false negatives and a false-positive rate of 2**-8 (0.39%).

Built here from the paper (section 3, algorithms 1–3), with our own round-based peeling in
numpy; no code of the authors' C library is used. The reference reader in
``reader/offline_filter.c`` implements :func:`mix64` and :meth:`FuseFilter.contains_hash`
exactly as below; the two must agree on every key (``tests/test_offline_filter_c.py``).

**Query.** A filter is an array ``F`` of ``array_length`` bytes, split into segments of
``segment_length`` (a power of two) bytes; ``segment_count_length`` is
``segment_count * segment_length``. For a 64-bit key ``k``::

    h  = mix64(k + seed)                       (mod 2**64)
    h0 = (h * segment_count_length) >> 64      (the high 64 bits of the 128-bit product)
    h1 = (h0 + segment_length) ^ ((h >> 18) & (segment_length - 1))
    h2 = (h0 + 2 * segment_length) ^ (h & (segment_length - 1))
    fp = (h ^ (h >> 32)) & 0xFF
    k is (maybe) a member  iff  fp == F[h0] ^ F[h1] ^ F[h2]

so the three bytes lie in three consecutive segments (the "fuse" layout that lets it be
smaller than an xor filter's 1.23 n). ``mix64`` is MurmurHash3's 64-bit finaliser.
``segment_count_length`` is below 2**32, so the product's high half is computable with
32-bit pieces (no 128-bit type needed in C, none exists in numpy).

**Build.** Every key is an edge of a 3-hypergraph on the ``array_length`` positions. A
position that exactly one remaining key maps to can be given that key's byte last; peel
such keys off until none remain, then assign in reverse peel order. The paper peels one
key at a time from a stack; we peel *rounds*: every position whose count is 1 at the start
of a round is peeled together. That is sound because a position of count 1 holds only its
key, so no two keys of a round share their chosen position, and no key of a round has
another key's chosen position among its own (it would then count 2): the assignments of one
round are independent and run as one vectorised step. If peeling stalls (a 2-core in the
hypergraph; rare at these sizes) the build retries with the next seed.

Seeds are a fixed sequence, so the same keys always give the same bytes: an exporter that
rebuilds an unchanged partition reproduces it exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import numpy as np
from numpy.typing import NDArray

ARITY: Final = 3
FINGERPRINT_BITS: Final = 8
FALSE_POSITIVE_RATE: Final = 2.0**-FINGERPRINT_BITS
MAX_SEGMENT_LENGTH: Final = 1 << 18  # the paper's cap for 3-wise filters
MAX_ATTEMPTS: Final = 64
MAX_KEYS: Final = 200_000_000  # segment_count_length must stay below 2**32

_M64 = (1 << 64) - 1
_MIX1 = 0xFF51AFD7ED558CCD
_MIX2 = 0xC4CEB9FE1A85EC53
# Seed i of a build: splitmix64's increment times (i + 1), so that seeds differ in all bits.
_SEED_STEP = 0x9E3779B97F4A7C15


class FilterBuildError(ValueError):
    """The keys cannot be built into a filter (too many, or peeling failed at every seed)."""


def mix64(h: int) -> int:
    """MurmurHash3's fmix64 over a Python int (mod 2**64)."""
    h &= _M64
    h ^= h >> 33
    h = (h * _MIX1) & _M64
    h ^= h >> 33
    h = (h * _MIX2) & _M64
    h ^= h >> 33
    return h


def _u64(value: int) -> NDArray[np.uint64]:
    return np.array(value & _M64, dtype=np.uint64)


_C_MIX1, _C_MIX2 = _u64(_MIX1), _u64(_MIX2)
_C_33, _C_32, _C_18 = _u64(33), _u64(32), _u64(18)
_C_LOW32 = _u64(0xFFFFFFFF)


def mix64_array(keys: NDArray[np.uint64], seed: int) -> NDArray[np.uint64]:
    """:func:`mix64` of ``keys + seed`` for every key (numpy uint64 arithmetic wraps)."""
    h = keys + _u64(seed)
    h ^= h >> _C_33
    h *= _C_MIX1
    h ^= h >> _C_33
    h *= _C_MIX2
    h ^= h >> _C_33
    return h


def _mulhi32(h: NDArray[np.uint64], m: int) -> NDArray[np.uint64]:
    """``(h * m) >> 64`` for ``m < 2**32``, from 32-bit halves (no overflow: see module)."""
    mm = _u64(m)
    hi = (h >> _C_32) * mm
    lo = (h & _C_LOW32) * mm
    return (hi + (lo >> _C_32)) >> _C_32


@dataclass(frozen=True)
class FuseLayout:
    """The shape of one filter: everything a reader needs besides the seed and the bytes."""

    segment_length: int
    segment_count: int

    @property
    def segment_count_length(self) -> int:
        return self.segment_count * self.segment_length

    @property
    def array_length(self) -> int:
        return (self.segment_count + ARITY - 1) * self.segment_length

    @classmethod
    def for_size(cls, n: int, stretch: float = 1.0) -> FuseLayout:
        """The paper's sizing for ``n`` keys (section 5: segment length
        2**floor(log_3.33(n) + 2.25), capped; array 1.125 n or more for small n),
        ``stretch`` times larger after a failed build of a small set."""
        if n <= 1:
            return cls(4, 1)
        segment_length = min(
            MAX_SEGMENT_LENGTH, 1 << math.floor(math.log(n) / math.log(3.33) + 2.25)
        )
        size_factor = max(1.125, 0.875 + 0.25 * math.log(1_000_000) / math.log(n))
        capacity = round(n * size_factor * stretch)
        segments = max(1, -(-capacity // segment_length) - (ARITY - 1))
        return cls(segment_length, segments)


def _positions(
    hashes: NDArray[np.uint64], layout: FuseLayout
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    mask = _u64(layout.segment_length - 1)
    h0 = _mulhi32(hashes, layout.segment_count_length)
    h1 = (h0 + _u64(layout.segment_length)) ^ ((hashes >> _C_18) & mask)
    h2 = (h0 + _u64(2 * layout.segment_length)) ^ (hashes & mask)
    return h0.astype(np.int64), h1.astype(np.int64), h2.astype(np.int64)


def _fingerprints(hashes: NDArray[np.uint64]) -> NDArray[np.uint8]:
    return ((hashes ^ (hashes >> _C_32)) & _u64(0xFF)).astype(np.uint8)


def seed_of(attempt: int) -> int:
    return (_SEED_STEP * (attempt + 1)) & _M64


@dataclass(frozen=True)
class FuseFilter:
    """An immutable binary fuse 8 filter over 64-bit keys."""

    seed: int
    layout: FuseLayout
    fingerprints: bytes = field(repr=False)  # array_length bytes
    size: int  # keys it was built from (distinct)

    def __post_init__(self) -> None:
        if len(self.fingerprints) != self.layout.array_length:
            raise ValueError(
                f"a filter of layout {self.layout} has {self.layout.array_length} bytes, "
                f"got {len(self.fingerprints)}"
            )

    @property
    def bits_per_entry(self) -> float:
        return 8.0 * len(self.fingerprints) / self.size if self.size else 0.0

    def contains_hash(self, key: int) -> bool:
        """Whether ``key`` may be a member (False: certainly not)."""
        if self.size == 0:
            return False
        h = mix64(key + self.seed)
        layout = self.layout
        mask = layout.segment_length - 1
        h0 = (h * layout.segment_count_length) >> 64
        h1 = (h0 + layout.segment_length) ^ ((h >> 18) & mask)
        h2 = (h0 + 2 * layout.segment_length) ^ (h & mask)
        f = self.fingerprints
        return (h ^ (h >> 32)) & 0xFF == f[h0] ^ f[h1] ^ f[h2]

    def contains_many(self, keys: NDArray[np.uint64]) -> NDArray[np.bool_]:
        """:meth:`contains_hash` of every key, vectorised."""
        if self.size == 0:
            return np.zeros(len(keys), dtype=np.bool_)
        hashes = mix64_array(np.asarray(keys, dtype=np.uint64), self.seed)
        h0, h1, h2 = _positions(hashes, self.layout)
        f = np.frombuffer(self.fingerprints, dtype=np.uint8)
        out: NDArray[np.bool_] = _fingerprints(hashes) == (f[h0] ^ f[h1] ^ f[h2])
        return out


def _distinct(keys: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """The distinct keys, sorted (np.unique's hash path was 10x slower than a sort here)."""
    ordered = np.sort(keys)
    if len(ordered) < 2:
        return ordered
    keep = np.empty(len(ordered), dtype=np.bool_)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    out: NDArray[np.uint64] = ordered[keep]
    return out


def build(keys: NDArray[np.uint64]) -> FuseFilter:
    """A filter holding every key of ``keys`` (duplicates are dropped first)."""
    unique = _distinct(np.asarray(keys, dtype=np.uint64))
    n = len(unique)
    if n > MAX_KEYS:
        raise FilterBuildError(f"{n} keys; a filter holds at most {MAX_KEYS}")
    if n == 0:
        layout = FuseLayout.for_size(0)
        return FuseFilter(seed_of(0), layout, bytes(layout.array_length), 0)
    stretch = 1.0
    for attempt in range(MAX_ATTEMPTS):
        layout = FuseLayout.for_size(n, stretch)
        seed = seed_of(attempt)
        table = _try_build(unique, seed, layout)
        if table is not None:
            return FuseFilter(seed, layout, table.tobytes(), n)
        if n < 10_000:
            # Small graphs stall more often at the paper's sizes; a few bytes more fixes it.
            stretch *= 1.1
    raise FilterBuildError(f"peeling failed for {n} keys at {MAX_ATTEMPTS} seeds")


def _try_build(keys: NDArray[np.uint64], seed: int, layout: FuseLayout) -> NDArray[np.uint8] | None:
    n = len(keys)
    length = layout.array_length
    hashes = mix64_array(keys, seed)
    h0, h1, h2 = _positions(hashes, layout)
    del hashes
    every = np.concatenate((h0, h1, h2))
    index = np.arange(n, dtype=np.int64)
    count = np.bincount(every, minlength=length).astype(np.int64)
    # XOR of the indices of the keys at each position: at count 1 it *is* the key's index.
    held = np.zeros(length, dtype=np.int64)
    np.bitwise_xor.at(held, every, np.concatenate((index, index, index)))
    del every
    rounds: list[tuple[NDArray[np.int64], NDArray[np.int64]]] = []
    peeled = 0
    # Stamps for deduplicating in O(m) without sorting (np.unique's cost dominated builds):
    # write each item's index at its slot; an item is kept where its own index survived.
    key_stamp = np.empty(n, dtype=np.int64)
    slot_stamp = np.empty(length, dtype=np.int64)
    frontier = np.flatnonzero(count == 1)
    while frontier.size:
        keys_here = held[frontier]
        # A key alone at two of its positions appears twice: keep one position for it.
        order = np.arange(len(keys_here), dtype=np.int64)
        key_stamp[keys_here] = order
        once = key_stamp[keys_here] == order
        keys_here, chosen = keys_here[once], frontier[once]
        rounds.append((keys_here, chosen))
        peeled += len(keys_here)
        touched = np.concatenate((h0[keys_here], h1[keys_here], h2[keys_here]))
        np.subtract.at(count, touched, 1)
        np.bitwise_xor.at(held, touched, np.concatenate((keys_here, keys_here, keys_here)))
        touched = touched[count[touched] == 1]
        order = np.arange(len(touched), dtype=np.int64)
        slot_stamp[touched] = order
        frontier = touched[slot_stamp[touched] == order]
    if peeled != n:
        return None
    table = np.zeros(length, dtype=np.uint8)
    fps = _fingerprints(mix64_array(keys, seed))
    for keys_here, chosen in reversed(rounds):
        # table[chosen] is still 0, so it may stand among the three terms.
        table[chosen] = (
            fps[keys_here] ^ table[h0[keys_here]] ^ table[h1[keys_here]] ^ (table[h2[keys_here]])
        )
    return table
