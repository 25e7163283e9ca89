"""The store's LMDB environment: its databases, its schema version, and how to open it.

LMDB layout (one environment, named databases, all integers big-endian)::

    entries   key   card key (18, see cardid.py) + publisher code (u24)        21 bytes
              value reason u8, effective time i64, version u64                   17 bytes
                    then, for an entry that lapses, its end time i64               25 bytes
                    (records.py)
    lapses    the entries that have an end time, by end time (lapses.py)
    reason_counts   entries per publisher and reason (reasoncounts.py)
    feeds     key   publisher code (u24)
              value see records.FeedState
    regions   key   publisher code (u24) + region code (u24), value empty
              (which regions a publisher has entries in, so a snapshot can replace
              that publisher's entries by scanning only those key ranges)
    deltas, snapshots   retained signed deltas and the latest snapshot per feed (archive.py)
    audit     who revoked or reinstated which card, when (audit.py)
    audit_card, audit_psam   the audit log indexed by card / PSAM (audit.py)
    psams     the PSAM deny list, every publisher's (psamlist.py)
    trust     certificates and key revocations that came with feeds (trustrecords.py)
    statements  the newest verified head statement per publisher (headstatements.py)
    meta      b"schema" → u32, b"generation" → u64 (bumped by every write transaction)

A card key is followed by the publisher so that two publishers with overlapping scopes can
each hold an entry for the same card; a lookup reads the key range of the card, or first the
one key of the publisher that answers for the card's region (storereader.py).

Who opens it: the writer (store.py, which also creates and migrates: storemigrate.py) and
any number of read-only followers in other processes (follower.py). Both check the schema
and read the generation here, so the two cannot disagree on what a store looks like.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import Any

import lmdb

from blacklist.errors import StoreError

# 2: deltas carry PSAM and trust sections (delta.py); 3: the audit log's card and PSAM
# indexes (audit.py); 4: entries may carry an end time (records.py) and the lapses index
# (lapses.py). Schema 2 and 3 stores are migrated at open (storemigrate.py); older ones are
# refused.
SCHEMA_VERSION = 4
MIGRATES_FROM = (2, 3)
DEFAULT_MAP_SIZE = 1 << 36  # 64 GiB of address space; the file grows only as used
MAX_DBS = 24
# Readers (threads holding a read transaction, across all processes) the lock file has
# slots for: every checking thread keeps one (storereader.py), plus the writer's own.
MAX_READERS = 512

ENTRIES_DB = b"entries"
FEEDS_DB = b"feeds"
REGIONS_DB = b"regions"
META_DB = b"meta"
SCHEMA_KEY = b"schema"
GENERATION_KEY = b"generation"

Progress = Callable[[int, int], None]  # (done, total) of a long step at open

U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")


def open_env(path: str | os.PathLike[str], map_size: int, *, readonly: bool) -> Any:
    """The store's environment. Read-only (a follower) never creates it, and must be opened
    after any fork (py-lmdb docs: an environment must not be used across fork)."""
    if readonly:
        return lmdb.open(
            str(path),
            map_size=map_size,
            max_dbs=MAX_DBS,
            readonly=True,
            lock=True,
            create=False,
            readahead=False,
            max_readers=MAX_READERS,
        )
    return lmdb.open(
        str(path), map_size=map_size, max_dbs=MAX_DBS, readahead=False, max_readers=MAX_READERS
    )


def stored_schema(txn: Any, meta: Any) -> int | None:
    """The schema version a store records (None: a new, empty environment)."""
    raw = txn.get(SCHEMA_KEY, db=meta)
    return None if raw is None else int(U32.unpack(raw)[0])


def check_schema(path: object, txn: Any, meta: Any) -> None:
    """Refuse a store this code cannot read as it is (what a read-only opener can do: it
    may not migrate; the writer migrates, storemigrate.py)."""
    found = stored_schema(txn, meta)
    if found != SCHEMA_VERSION:
        raise StoreError(
            f"{path}: store schema {'none' if found is None else found}, "
            f"this code reads schema {SCHEMA_VERSION}"
        )


def read_generation(path: object, txn: Any, meta: Any) -> int:
    """The store generation as of ``txn`` (bumped by every write transaction)."""
    raw = txn.get(GENERATION_KEY, db=meta)
    if raw is None:
        raise StoreError(f"{path}: store metadata has no generation record")
    return int(U64.unpack(raw)[0])
