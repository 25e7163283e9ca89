"""Creating a store's schema, and migrating an older store to it, at the writer's open.

Each step is idempotent: the schema record moves only after a step is complete, so a run
killed half-way starts the same step over at the next open.
"""

from __future__ import annotations

from typing import Any

from blacklist.audit import AuditLog
from blacklist.errors import StoreError
from blacklist.reasoncounts import BUILT, ReasonCounts
from blacklist.storeschema import (
    GENERATION_KEY,
    MIGRATES_FROM,
    SCHEMA_KEY,
    SCHEMA_VERSION,
    U32,
    U64,
    Progress,
    stored_schema,
)


def prepare_schema(
    path: object, env: Any, meta: Any, audit: AuditLog, progress: Progress | None
) -> None:
    """Create the schema of a new store, or migrate an older one to it; refuse any other."""
    with env.begin(write=True) as txn:
        found = stored_schema(txn, meta)
        if found is None:
            txn.put(SCHEMA_KEY, U32.pack(SCHEMA_VERSION), db=meta)
            txn.put(GENERATION_KEY, U64.pack(0), db=meta)
            txn.put(BUILT, b"", db=meta)
            return
    if found == SCHEMA_VERSION:
        return
    if found not in MIGRATES_FROM:
        raise StoreError(
            f"{path}: store schema {found}, this code reads schema {SCHEMA_VERSION} "
            f"and migrates schemas {', '.join(map(str, MIGRATES_FROM))}; move the data "
            "directory aside and let the node bootstrap from its upstream"
        )
    # Schema 2 → 3: index the audit log once (idempotent, see the module doc).
    if found == 2:
        audit.build_index(progress)
    # Schema 3 → 4: no entry of an older store has an end time, and a 17-byte value
    # still reads as one without; the (empty) lapses database is opened by the store.
    with env.begin(write=True) as txn:
        txn.put(SCHEMA_KEY, U32.pack(SCHEMA_VERSION), db=meta)


def count_reasons(env: Any, entries: Any, meta: Any, counts: ReasonCounts) -> None:
    """Count entries by reason once for a store from before the counts (one scan, in one
    write transaction: a run killed half-way counts again at the next open)."""
    with env.begin(write=True) as txn:
        if txn.get(BUILT, db=meta) is None:
            counts.build(txn, entries, meta)
    counts.load()
