"""How many entries the store holds per publisher and reason, kept in step with ``entries``
in each write transaction, so that the metrics (issue #17: entries by reason) cost a dict
read at scrape time instead of a scan of millions of entries.

LMDB layout (database ``reason_counts``)::

    key    publisher code (u24) + reason (u8)      4 bytes
    value  count (u64)

A store that has no counts yet (opened before they existed) gets them from one scan at
open, like the audit index (store.py); the meta key ``reason_counts`` marks them built.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from blacklist.cardid import KEY_LENGTH
from blacklist.entry import Reason

COUNTS_DB = b"reason_counts"
BUILT = b"reason_counts"
_U64 = struct.Struct(">Q")

Key = tuple[bytes, int]  # (publisher code u24, reason)


class ReasonCounts:
    def __init__(self, env: Any) -> None:
        self.env = env
        self.db = env.open_db(COUNTS_DB)
        self._counts: dict[Key, int] = {}

    def load(self) -> None:
        with self.env.begin() as txn:
            self._counts = {
                (bytes(k[:3]), k[3]): _U64.unpack(v)[0]
                for k, v in txn.cursor(db=self.db).iternext()
            }

    def build(self, txn: Any, entries_db: Any, meta_db: Any) -> None:
        """Count every stored entry once (a store from before the counts), in ``txn``."""
        counts: Counter[Key] = Counter()
        for key, value in txn.cursor(db=entries_db).iternext():
            counts[(bytes(key[KEY_LENGTH:]), value[0])] += 1
        txn.drop(self.db, delete=False)
        for (pub, reason), n in counts.items():
            txn.put(pub + bytes([reason]), _U64.pack(n), db=self.db)
        txn.put(BUILT, b"", db=meta_db)

    def stage(self, txn: Any, change: Mapping[Key, int]) -> Callable[[], None]:
        """Write count changes in ``txn``; the returned callable updates memory after the
        commit (a refused write changes nothing)."""
        after = {}
        for key, delta in change.items():
            if not delta:
                continue
            n = max(0, self._counts.get(key, 0) + delta)
            after[key] = n
            row = key[0] + bytes([key[1]])
            if n:
                txn.put(row, _U64.pack(n), db=self.db)
            else:
                txn.delete(row, db=self.db)

        def done() -> None:
            for key, n in after.items():
                if n:
                    self._counts[key] = n
                else:
                    self._counts.pop(key, None)

        return done

    def by_reason(self) -> dict[Reason, int]:
        """Entries held per reason, all publishers."""
        out: dict[Reason, int] = dict.fromkeys(Reason, 0)
        for (_, reason), n in self._counts.items():
            if reason in Reason._value2member_map_:
                out[Reason(reason)] += n
        return out


def tally(values: Iterable[bytes], pub: bytes, sign: int, into: Counter[Key]) -> None:
    """Add ``sign`` per stored entry value (its first byte is the reason) of publisher ``pub``."""
    for value in values:
        into[(pub, value[0])] += sign


def tally_reasons(reasons: NDArray[np.uint8], pub: bytes, sign: int, into: Counter[Key]) -> None:
    """:func:`tally` for a column of reasons (the entries a delta adds), counted in numpy."""
    values, counts = np.unique(reasons, return_counts=True)
    for reason, n in zip(values.tolist(), counts.tolist(), strict=True):
        into[(pub, reason)] += sign * n
