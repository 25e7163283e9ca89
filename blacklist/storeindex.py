"""The fingerprint index beside a store: built from the stored keys, saved to a file tagged
with the store generation it covers, and reopened from that file when it still fits.

File ``index.fpx`` in the store's directory (layout: filters/roaring_index.py), written by
the writer only (atomic rename after fsync), read at open by the writer and by followers.
A saved index is used only when it is of exactly the stored state: the same generation
(a crash after the last save leaves an older one), the width the entry count calls for,
and as many fingerprints as entries; otherwise the index is rebuilt from LMDB.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from blacklist.cardid import KEY_LENGTH
from blacklist.errors import StoreError
from blacklist.fastpath import key_fingerprints
from blacklist.filters.roaring_index import FingerprintIndex
from blacklist.storeschema import Progress

INDEX_FILE = "index.fpx"
_CHUNK = 1 << 20  # keys fingerprinted per numpy pass while building


def saved_index(path: Path, generation: int, width: int, entries: int) -> FingerprintIndex | None:
    """The index saved in store directory ``path`` if it is of exactly this state, else None
    (missing, unreadable, another generation, width or size)."""
    saved = path / INDEX_FILE
    if not saved.exists():
        return None
    try:
        index, at = FingerprintIndex.from_bytes(saved.read_bytes())
    except StoreError:
        return None  # unreadable: the caller rebuilds
    if at == generation and index.width == width and len(index) == entries:
        return index
    return None


def build_index(
    txn: Any, entries_db: Any, width: int, progress: Progress | None = None
) -> FingerprintIndex:
    """Every fingerprint of the stored keys of ``txn``'s snapshot (vectorised, in chunks)."""
    total = int(txn.stat(entries_db)["entries"])
    index = FingerprintIndex(width)
    done = 0
    keys = txn.cursor(db=entries_db).iternext(values=False)
    while True:
        chunk = [k[:KEY_LENGTH] for _, k in zip(range(_CHUNK), keys, strict=False)]
        if not chunk:
            break
        rows = np.frombuffer(b"".join(chunk), dtype=np.uint8).reshape(-1, KEY_LENGTH)
        index.add_many(key_fingerprints(rows, index.width))
        done += len(chunk)
        if progress:
            progress(done, total)
    return index


def save_index(path: Path, index: FingerprintIndex, generation: int) -> None:
    """Persist ``index`` in store directory ``path``, tagged with ``generation``."""
    target = path / INDEX_FILE
    tmp = target.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(index.to_bytes(generation))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
