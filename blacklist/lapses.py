"""The store's index of entries by end time, so that a node sweeps lapsed entries without
scanning every entry, and counts the ones lapsing soon (issue #17).

LMDB layout (database ``lapses``)::

    key    end time + 2**63 (u64, so that keys sort by time, negative ones too)
           + entry key (card key 18 + publisher u24)                              29 bytes
    value  empty

It is kept in step with ``entries`` in the same write transaction: a row exists exactly
for each stored entry that has an end time (store.py stages both). The sweep is by the
node's own clock only: no feed version, no network, so every node removes the same
entries at the same second, and a check answers by the clock whether or not the sweep
has run yet (blacklist/checker.py).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

from blacklist.records import value_end

LAPSES_DB = b"lapses"
_BIAS = 2**63
_TIME = struct.Struct(">Q")
_TIME_SIZE = _TIME.size


def lapse_key(end: int, entry_key: bytes) -> bytes:
    return _TIME.pack(end + _BIAS) + entry_key


def _time_prefix(t: int) -> bytes:
    """The smallest key of end time ``t`` (clamped to int64)."""
    return _TIME.pack(min(max(t, -_BIAS), _BIAS - 1) + _BIAS)


class Lapses:
    def __init__(self, env: Any) -> None:
        self.db = env.open_db(LAPSES_DB)

    def stage_put(self, txn: Any, entry_key: bytes, value: bytes) -> None:
        """Index a stored entry value (if it has an end time)."""
        end = value_end(value)
        if end is not None:
            txn.put(lapse_key(end, entry_key), b"", db=self.db)

    def stage_drop(self, txn: Any, entry_key: bytes, value: bytes) -> None:
        """Forget an entry value that is being overwritten or deleted."""
        end = value_end(value)
        if end is not None:
            txn.delete(lapse_key(end, entry_key), db=self.db)

    def due(self, txn: Any, now: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` (end time, entry key) with end time <= ``now``, oldest first."""
        out: list[tuple[int, bytes]] = []
        stop = _time_prefix(now + 1)
        for key in txn.cursor(db=self.db).iternext(values=False):
            if key >= stop or len(out) >= limit:
                break
            out.append((_TIME.unpack(key[:_TIME_SIZE])[0] - _BIAS, bytes(key[_TIME_SIZE:])))
        return out

    def between(self, txn: Any, start: int, end: int) -> Iterator[bytes]:
        """Entry keys whose end time is in [start, end)."""
        cursor = txn.cursor(db=self.db)
        stop = _time_prefix(end)
        if not cursor.set_range(_time_prefix(start)):
            return
        for key in cursor.iternext(values=False):
            if key >= stop:
                break
            yield bytes(key[_TIME_SIZE:])

    def count_between(self, txn: Any, start: int, end: int) -> int:
        return sum(1 for _ in self.between(txn, start, end))

    def next_end(self, txn: Any) -> int | None:
        """The earliest end time indexed, or None."""
        cursor = txn.cursor(db=self.db)
        if not cursor.first():
            return None
        return int(_TIME.unpack(cursor.key()[:_TIME_SIZE])[0] - _BIAS)
