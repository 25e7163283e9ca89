"""The in-memory membership filter in front of the store: a roaring bitmap of fingerprints.

A card's fingerprint is the top ``width`` bits of XXH64 of its canonical id (see
fingerprint.py). Absent fingerprint → the card is certainly not revoked, answered without
touching LMDB. Present → maybe revoked, confirmed in LMDB. So the index may hold false
positives, never false negatives.

Two revoked cards can share a fingerprint. Clearing the bit when one of them is reinstated
would hide the other, so fingerprints held by more than one entry are counted in a small
side table (at 10M entries and 32 bits, about 12,000 such pairs); a bit is cleared only when
its last holder goes.

Density: width is chosen so that an entry shares its 65,536-value roaring container with
hundreds of others (about 2^8 fingerprints of space per entry). Array containers then cost
2 bytes per entry plus a few bytes per container, at a false-positive rate near 1/256.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray
from pyroaring import BitMap

from blacklist.errors import StoreError
from blacklist.filters.fingerprint import MAX_WIDTH, MIN_WIDTH

# Fingerprint space per entry, as a power of two (see the module docstring).
SPARSITY_BITS = 8
MIN_AUTO_WIDTH = 16

_HEADER = struct.Struct(">4sBQQI")  # magic, width, generation, entries, collision count
_MAGIC = b"FPX1"


def width_for(entries: int) -> int:
    """The fingerprint width that keeps the bitmap dense for about ``entries`` entries."""
    return max(MIN_AUTO_WIDTH, min(MAX_WIDTH, max(entries, 1).bit_length() + SPARSITY_BITS))


class FingerprintIndex:
    def __init__(self, width: int) -> None:
        if not MIN_WIDTH <= width <= MAX_WIDTH:
            raise ValueError(f"fingerprint width {width} is outside {MIN_WIDTH}..{MAX_WIDTH}")
        self.width = width
        self.bitmap = BitMap()
        # fingerprint → number of entries holding it beyond the first
        self._extra: dict[int, int] = {}
        self._entries = 0

    def __len__(self) -> int:
        """Entries represented (counting each holder of a shared fingerprint)."""
        return self._entries

    def __contains__(self, fp: int) -> bool:
        return fp in self.bitmap

    def add(self, fp: int) -> None:
        if fp in self.bitmap:
            self._extra[fp] = self._extra.get(fp, 0) + 1
        else:
            self.bitmap.add(fp)
        self._entries += 1

    def remove(self, fp: int) -> None:
        """Forget one holder of ``fp``. The caller guarantees such an entry existed."""
        extra = self._extra.get(fp)
        if extra is None:
            if fp not in self.bitmap:
                raise StoreError(f"fingerprint {fp} removed but not present: index out of sync")
            self.bitmap.remove(fp)
        elif extra == 1:
            del self._extra[fp]
        else:
            self._extra[fp] = extra - 1
        self._entries -= 1

    def add_many(self, fps: NDArray[np.uint32]) -> None:
        """Add a batch: one bitmap union for the new fingerprints; counting only where a
        fingerprint repeats within the batch or is already held."""
        if len(fps) == 0:
            return
        uniq, counts = np.unique(fps, return_counts=True)
        batch = BitMap(uniq)
        already = batch & self.bitmap
        self.bitmap |= batch
        for fp in already:
            self._extra[fp] = self._extra.get(fp, 0) + 1
        for fp, c in zip(uniq[counts > 1].tolist(), counts[counts > 1].tolist(), strict=True):
            self._extra[fp] = self._extra.get(fp, 0) + c - 1
        self._entries += len(fps)

    def remove_many(self, fps: Iterable[int]) -> None:
        for fp in fps:
            self.remove(int(fp))

    def shared_fingerprints(self) -> int:
        return len(self._extra)

    def memory_bytes(self) -> int:
        """Bytes held: the bitmap's serialized size (≈ its container memory) plus the side
        table at ~100 bytes per shared fingerprint (dict slot and two small ints)."""
        return len(self.bitmap.serialize()) + 100 * len(self._extra)

    # Persisted copy: header, then the side table as pairs, then the roaring serialization.
    def to_bytes(self, generation: int) -> bytes:
        extra = np.array(sorted(self._extra.items()), dtype=np.uint32).reshape(-1, 2)
        header = _HEADER.pack(_MAGIC, self.width, generation, self._entries, len(extra))
        return header + extra.astype(">u4").tobytes() + self.bitmap.serialize()

    @classmethod
    def from_bytes(cls, data: bytes) -> tuple[FingerprintIndex, int]:
        """Load a persisted copy; returns it with the store generation it was saved at."""
        if len(data) < _HEADER.size:
            raise StoreError("persisted index is truncated")
        magic, width, generation, entries, nextra = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise StoreError("persisted index has a bad magic")
        start = _HEADER.size
        end = start + 8 * nextra
        if len(data) < end:
            raise StoreError("persisted index side table is truncated")
        index = cls(width)
        pairs = np.frombuffer(data[start:end], dtype=">u4").reshape(-1, 2)
        index._extra = {int(a): int(b) for a, b in pairs.tolist()}
        try:
            index.bitmap = BitMap.deserialize(data[end:])
        except Exception as exc:  # pyroaring raises ValueError or MemoryError on junk
            raise StoreError(f"persisted index bitmap does not deserialize: {exc}") from exc
        index._entries = entries
        if len(index.bitmap) + sum(index._extra.values()) != entries:
            raise StoreError("persisted index counts do not add up")
        return index, generation
