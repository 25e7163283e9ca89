"""A large audit log written straight into a node's store, for the ListAudit benchmark
(bench/test_audit.py) and the scan test (tests/test_audit_index.py): as many records as a
busy authority's Admin calls leave in years, without making those calls one by one."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

from blacklist.audit import AuditAction, AuditChange
from blacklist.entry import Reason
from blacklist.store import RevocationStore

CHUNK = 10_000  # records per write transaction (one "second" of the log each)
START = 1_700_000_000


@dataclass(frozen=True)
class AuditLogFixture:
    records: int
    subject: str  # the card with many records among them
    subject_records: int
    first: int  # unix seconds of the first and the last record
    last: int


def fill_audit_log(
    path: str | os.PathLike[str],
    records: int,
    subject: str,
    every: int,
    *,
    map_size: int = 1 << 32,
    seed: int = 11,
) -> AuditLogFixture:
    """Append ``records`` Revoke records to the store at ``path``, every ``every``-th one of
    ``subject``, the others of random cards of region 440100."""
    rng = random.Random(seed)
    store = RevocationStore(path, map_size=map_size)
    try:
        written = mine = 0
        when = START
        while written < records:
            n = min(CHUNK, records - written)
            changes = []
            for i in range(written, written + n):
                if i % every == 0:
                    changes.append(AuditChange(subject, int(Reason.LOSS)))
                    mine += 1
                else:
                    card = f"440100D156000005{rng.getrandbits(64):016X}"
                    changes.append(AuditChange(card, int(Reason.LOSS)))
            store.audit.record(
                AuditAction.REVOKE,
                changes,
                operator="operator:440100:bulk",
                feed_version=1 + written // CHUNK,
                when=when,
            )
            written += n
            when += 1
    finally:
        store.close(save_index=False)
    return AuditLogFixture(records, subject, mine, START, when - 1)
