"""The packed form of a batch check: many card ids in one ``bytes`` value, read in C.

Layout (``BatchCheckRequest.packed_ids``, proto/blacklist/v1/card_status.proto)::

    offset   size  field
    32 * i   32    card id i: the 32 ASCII characters of the card identification code
                   (blacklist/cardid.py), either case, no separator, no padding

so ``n`` ids are exactly ``32 * n`` bytes and id ``i`` is ``packed[32*i : 32*i+32]``.

Why the text and not the 18-byte binary key: the text is what a terminal reads off the
chip, so a gateway packs ids without converting them, the node checks the very characters
a terminal would have sent one by one (the same rules, the same causes for a bad one), and
the fingerprint is hashed from the canonical text anyway (filters/fingerprint.py). The
binary key would save 14 bytes an id on the wire and hide a malformed id's cause.

Why packed at all: 1,000 ``repeated string`` ids cost gRPC 1,000 Python ``str`` objects to
receive before the handler runs. One ``bytes`` field is one object; the C pass
(``_speedups.scan_packed``) validates, upper-cases, hashes and probes the whole batch with
no Python object per id, and the bitmap is read in place (pyroaring's ``raw_pointer``).

A malformed id does not fail the batch: every one is reported, by index, with its cause
(:func:`explain_row`, the same wording as a single check's INVALID_ARGUMENT), and the valid
ids of the same batch are answered. Limits: the length must be a multiple of 32 and the
batch at most the node's ``max_batch`` ids (:func:`packed_count`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from pyroaring import BitMap

from blacklist.cardid import CARD_ID_LENGTH, canonical_bytes, diagnose
from blacklist.checkresult import BatchResult
from blacklist.errors import CardIdError
from blacklist.fastpath import _PROVINCES, python_members
from blacklist.filters.fingerprint import fingerprint_shift, fingerprints

PACKED_ROW: Final = CARD_ID_LENGTH  # bytes per id in a packed batch


class PackedBatchError(ValueError):
    """A packed batch malformed as a whole: empty, cut short, or over the limit."""


def packed_count(packed: bytes, limit: int) -> int:
    """The number of ids in ``packed``; raises PackedBatchError unless it holds 1..limit
    whole ids."""
    size = len(packed)
    if size == 0:
        raise PackedBatchError("empty batch: send at least one card id")
    if size % PACKED_ROW:
        raise PackedBatchError(
            f"packed_ids has {size} bytes, not a multiple of {PACKED_ROW}: id {size // PACKED_ROW}"
            f" is cut short after {size % PACKED_ROW} bytes"
        )
    count = size // PACKED_ROW
    if count > limit:
        raise PackedBatchError(
            f"batch of {count} card ids ({size} bytes) exceeds the limit of {limit} per call"
        )
    return count


def explain_row(row: bytes, index: int) -> CardIdError:
    """Why row ``index`` of a packed batch is not a card id (blacklist.cardid.diagnose on
    its characters; a byte >= 0x80 reads as a non-ASCII character)."""
    return diagnose(row.decode("latin-1"), index)


@dataclass(frozen=True, slots=True)
class PackedScan:
    """The front half of a packed check. ``matrix`` and ``regions`` hold the valid ids only,
    in request order; ``hits`` index those rows; ``bad`` are request indices."""

    matrix: NDArray[np.uint8]  # (valid, 32) canonical upper-case text
    regions: NDArray[np.uint32]
    hits: list[int]
    bad: list[int]

    def positions(self) -> NDArray[np.intp] | None:
        """Request index of each valid row (None: no id was malformed, row i is index i)."""
        if not self.bad:
            return None
        return np.delete(np.arange(len(self.matrix) + len(self.bad)), self.bad)


@dataclass(frozen=True, slots=True)
class PackedResult:
    """Answers for a packed batch (Checker.check_packed): ``batch`` answers its valid ids
    in request order, row ``r`` being request index ``positions[r]`` (``r`` itself when
    ``positions`` is None); every malformed id is in ``malformed``, by request index."""

    batch: BatchResult
    positions: NDArray[np.intp] | None
    malformed: dict[int, CardIdError]

    def index_of(self, rows: NDArray[np.intp]) -> NDArray[np.intp]:
        return rows if self.positions is None else self.positions[rows]


def python_scan_packed(packed: bytes, width: int, container: Any) -> PackedScan:
    """Pure-Python :func:`scan_packed`: the fallback when the C extension is not built."""
    rows, bad = [], []
    for i in range(len(packed) // PACKED_ROW):
        raw = packed[PACKED_ROW * i : PACKED_ROW * (i + 1)]
        try:
            rows.append(canonical_bytes(raw.decode("latin-1")))
        except CardIdError:
            bad.append(i)
    matrix = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(-1, PACKED_ROW)
    regions = np.array([int(r[:6]) for r in rows], dtype=np.uint32)
    hits = python_members(container, fingerprints(matrix, width)) if rows else []
    return PackedScan(matrix, regions, hits, bad)


def _speedups_scan_packed(packed: bytes, width: int, container: Any) -> PackedScan:
    """Validate, canonicalise, hash and probe a packed batch in one C pass."""
    in_place = IN_PLACE and type(container) is BitMap
    canon, regions, hits, bad = _c_scan_packed(
        packed, _PROVINCES, fingerprint_shift(width), container, in_place
    )
    valid = len(packed) // PACKED_ROW - len(bad)
    matrix = np.frombuffer(canon, dtype=np.uint8)[: valid * PACKED_ROW].reshape(-1, PACKED_ROW)
    return PackedScan(matrix, np.frombuffer(regions, dtype=np.uint32)[:valid], hits, bad)


def _in_place_agrees() -> bool:
    """Whether the C code reads this pyroaring's bitmaps right: one of every container kind
    (array, bitset, run, shared) probed both ways, at and around each container's edges and
    a sample of the values held."""
    held = BitMap(range(0, 1 << 16, 7), copy_on_write=True)  # bitset (9,363 values)
    held.update(range(3 << 16, (3 << 16) + 2000, 5))  # array
    held.add_range(5 << 16, (5 << 16) + 40_000)  # run
    held.run_optimize()
    shared = held.copy()  # copy on write: the copy's containers are shared
    shared.add(9 << 16)
    edges = [0, 1 << 16, 3 << 16, (3 << 16) + 1995, 5 << 16, (5 << 16) + 40_000, 9 << 16]
    sample = [*edges, *shared[::53]]  # ~1,000 held values; each with its two neighbours
    values = np.array(
        sorted({v + d for v in sample for d in (-1, 0, 1) if v + d >= 0}), dtype=np.uint32
    )
    try:
        for bitmap in (held, shared):
            expected = [i for i, v in enumerate(values.tolist()) if v in bitmap]
            if _c_roaring_members(bitmap, values) != expected:
                return False
    except TypeError:
        return False
    return True


try:
    from blacklist._speedups import roaring_members as _c_roaring_members
    from blacklist._speedups import scan_packed as _c_scan_packed
except ImportError:  # not compiled, or an older build of it: the fallback takes over
    HAVE_PACKED_SPEEDUPS = False
    IN_PLACE = False
else:
    HAVE_PACKED_SPEEDUPS = True
    # Read the bitmap in place only if this pyroaring's layout is the one the C code knows,
    # and only under a GIL: pyroaring never releases it, so holding it is what keeps the
    # writer thread's updates of the bitmap out of a read (a free-threaded build has none).
    IN_PLACE = _in_place_agrees() and getattr(sys, "_is_gil_enabled", lambda: True)()

ScanPackedFn = Callable[[bytes, int, Any], PackedScan]
scan_packed: ScanPackedFn = _speedups_scan_packed if HAVE_PACKED_SPEEDUPS else python_scan_packed
