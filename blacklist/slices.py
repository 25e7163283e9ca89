"""A big write in slices, so that a serving thread of the same process runs between them
(issue #15: ``workers = 1``, where the writer thread shares the GIL with the asyncio loop
that answers CheckCard).

py-lmdb's ``putmulti`` and pyroaring's union are long C calls made with the GIL held: one of
100,000 items keeps every other thread of the process waiting for tens of milliseconds,
whatever ``sys.setswitchinterval`` says (the interpreter can only hand the GIL over between
bytecodes). Cut into slices of :data:`APPLY_SLICE` items, with ``time.sleep(0)`` between
them (it releases the GIL, so a thread waiting for it takes it now rather than after the
switch interval), a waiting check waits for one slice at most.

The slices are of one call's work only: every slice of ``putmulti`` writes into the same
write transaction, so the delta is still committed all or nothing (py-lmdb docs; tests/
test_crash.py), and the index's slices leave it exactly as one ``add_many`` would
(tests/test_apply_slices.py checks both at the slice boundaries).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from blacklist.filters.roaring_index import FingerprintIndex

APPLY_SLICE = 10_000  # items per C call: ~a few ms of putmulti on these machines


def _yield_gil() -> None:
    time.sleep(0)


def put_in_slices(
    cursor: Any,
    keys: Sequence[bytes],
    values: Sequence[bytes],
    size: int = APPLY_SLICE,
    overwrite: bool = True,
) -> None:
    """``cursor.putmulti(zip(keys, values))`` in slices of ``size`` items, in order, all
    in the cursor's transaction."""
    if size < 1:
        raise ValueError(f"slice size must be >= 1, got {size}")
    if len(keys) != len(values):
        raise ValueError(f"{len(keys)} keys but {len(values)} values")
    for start in range(0, len(keys), size):
        if start:
            _yield_gil()
        stop = start + size
        cursor.putmulti(zip(keys[start:stop], values[start:stop], strict=True), overwrite=overwrite)


def add_in_slices(
    index: FingerprintIndex, fps: NDArray[np.uint32], size: int = APPLY_SLICE
) -> None:
    """``index.add_many(fps)`` in slices of ``size``: the same bitmaps and counts (a
    fingerprint repeated across slices is counted as held when its next slice comes)."""
    if size < 1:
        raise ValueError(f"slice size must be >= 1, got {size}")
    for start in range(0, len(fps), size):
        if start:
            _yield_gil()
        index.add_many(fps[start : start + size])
