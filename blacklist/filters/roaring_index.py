"""The in-memory membership filter in front of the store: a roaring bitmap of fingerprints.

A card's fingerprint is the top ``width`` bits of XXH64 of its canonical id (see
fingerprint.py). Absent fingerprint → the card is certainly not revoked, answered without
touching LMDB. Present → maybe revoked, confirmed in LMDB. So the index may hold false
positives, never false negatives.

Two revoked cards can share a fingerprint. Clearing the bit when one of them is reinstated
would hide the other, so fingerprints are reference-counted: ``shared`` (a second roaring
bitmap, 2 bytes each) marks those held by two or more entries, and a dict counts the rare
ones held by three or more. A bit is cleared only when its last holder goes. (At 10M entries
and 32 bits about 12,000 fingerprints are shared, a few by three.)

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

# magic, width, generation, entries, count of 3+ holders, shared bitmap bytes
_HEADER = struct.Struct(">4sBQQII")
_MAGIC = b"FPX2"


def width_for(entries: int) -> int:
    """The fingerprint width that keeps the bitmap dense for about ``entries`` entries."""
    return max(MIN_AUTO_WIDTH, min(MAX_WIDTH, max(entries, 1).bit_length() + SPARSITY_BITS))


class FingerprintIndex:
    def __init__(self, width: int) -> None:
        if not MIN_WIDTH <= width <= MAX_WIDTH:
            raise ValueError(f"fingerprint width {width} is outside {MIN_WIDTH}..{MAX_WIDTH}")
        self.width = width
        self.bitmap = BitMap()
        self.shared = BitMap()  # fingerprints held by 2+ entries
        self._extra: dict[int, int] = {}  # fingerprint → holders beyond 2 (3+ holders only)
        self._entries = 0

    def __len__(self) -> int:
        """Entries represented (counting each holder of a shared fingerprint)."""
        return self._entries

    def __contains__(self, fp: int) -> bool:
        return fp in self.bitmap

    def _one_more(self, fp: int) -> None:
        """Another holder for a fingerprint that is already in the bitmap."""
        if fp in self.shared:
            self._extra[fp] = self._extra.get(fp, 0) + 1
        else:
            self.shared.add(fp)

    def add(self, fp: int) -> None:
        if fp in self.bitmap:
            self._one_more(fp)
        else:
            self.bitmap.add(fp)
        self._entries += 1

    def remove(self, fp: int) -> None:
        """Forget one holder of ``fp``. The caller guarantees such an entry existed."""
        extra = self._extra.get(fp)
        if extra is not None:
            if extra == 1:
                del self._extra[fp]
            else:
                self._extra[fp] = extra - 1
        elif fp in self.shared:
            self.shared.remove(fp)
        elif fp in self.bitmap:
            self.bitmap.remove(fp)
        else:
            raise StoreError(f"fingerprint {fp} removed but not present: index out of sync")
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
            self._one_more(fp)
        for fp, c in zip(uniq[counts > 1].tolist(), counts[counts > 1].tolist(), strict=True):
            for _ in range(c - 1):
                self._one_more(fp)
        self._entries += len(fps)

    def remove_many(self, fps: Iterable[int]) -> None:
        for fp in fps:
            self.remove(int(fp))

    def shared_fingerprints(self) -> int:
        return len(self.shared)

    def memory_bytes(self) -> int:
        """Bytes held: both bitmaps' serialized sizes (≈ their container memory) plus the
        dict of 3+ holders at ~100 bytes an item (dict slot and two small ints)."""
        return len(self.bitmap.serialize()) + len(self.shared.serialize()) + 100 * len(self._extra)

    # Persisted copy: header, the 3+ holder pairs, the shared bitmap, the main bitmap.
    def to_bytes(self, generation: int) -> bytes:
        extra = np.array(sorted(self._extra.items()), dtype=np.uint32).reshape(-1, 2)
        shared = self.shared.serialize()
        header = _HEADER.pack(
            _MAGIC, self.width, generation, self._entries, len(extra), len(shared)
        )
        return header + extra.astype(">u4").tobytes() + shared + self.bitmap.serialize()

    @classmethod
    def from_bytes(cls, data: bytes) -> tuple[FingerprintIndex, int]:
        """Load a persisted copy; returns it with the store generation it was saved at."""
        if len(data) < _HEADER.size:
            raise StoreError("persisted index is truncated")
        magic, width, generation, entries, nextra, nshared = _HEADER.unpack_from(data)
        if magic != _MAGIC or not MIN_WIDTH <= width <= MAX_WIDTH:
            raise StoreError("persisted index has a bad magic or width")
        start = _HEADER.size
        mid = start + 8 * nextra
        end = mid + nshared
        if len(data) < end:
            raise StoreError("persisted index side tables are truncated")
        index = cls(width)
        pairs = np.frombuffer(data[start:mid], dtype=">u4").reshape(-1, 2)
        index._extra = {int(a): int(b) for a, b in pairs.tolist()}
        try:
            index.shared = BitMap.deserialize(data[mid:end])
            index.bitmap = BitMap.deserialize(data[end:])
        except Exception as exc:  # pyroaring raises ValueError or MemoryError on junk
            raise StoreError(f"persisted index bitmap does not deserialize: {exc}") from exc
        index._entries = entries
        held = len(index.bitmap) + len(index.shared) + sum(index._extra.values())
        if held != entries:
            raise StoreError("persisted index counts do not add up")
        return index, generation
