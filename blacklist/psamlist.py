"""The PSAM deny list a node holds: every publisher's denied PSAMs, durable and in memory.

LMDB database (opened by the store, written inside its delta and snapshot transactions, so
a PSAM change commits or vanishes together with the card changes of the same delta)::

    psams   key   PSAM key (11, see psam.py) + publisher code (u24)        14 bytes
            value reason u8, effective time i64, version u64 (as entries)  17 bytes

The whole list also lives in a dict: it is small (thousands of modules, not millions of
cards) and every ``CheckCard`` that presents a PSAM asks it, so a lookup must not open a
transaction. The dict changes only after the commit (``stage_*`` return the callback).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from blacklist.columns import CardColumns, EntryColumns
from blacklist.entry import Entry, Reason
from blacklist.psam import PSAM_KEY_LENGTH, column_key, psam_text
from blacklist.records import _ENTRY, _pub3

PSAMS_DB = b"psams"

# psam key → publisher → entry (its card_id field holds the PSAM id)
Denials = dict[bytes, dict[str, Entry]]


def _entry(key: bytes, publisher: str, value: bytes) -> Entry:
    reason, time, version = _ENTRY.unpack(value)
    return Entry(psam_text(key), Reason(reason), time, publisher, version)


class PsamList:
    def __init__(self, env: Any, txn: Any = None) -> None:
        """``txn``: read the rows in this read transaction (a follower catching up reads
        every table of one snapshot), else in one of its own."""
        self.env = env
        self.db = env.open_db(PSAMS_DB)
        self._denied: Denials = {}
        if txn is None:
            with env.begin() as own:
                self._load(own)
        else:
            self._load(txn)

    def _load(self, txn: Any) -> None:
        for key, value in txn.cursor(db=self.db):
            psam, pub = key[:PSAM_KEY_LENGTH], f"{int.from_bytes(key[-3:], 'big'):06d}"
            self._denied.setdefault(psam, {})[pub] = _entry(psam, pub, value)

    def __len__(self) -> int:
        return sum(len(v) for v in self._denied.values())

    def lookup(self, key: bytes) -> Entry | None:
        """The denial of an 11-byte PSAM key (the lowest publisher's, if several), or None."""
        found = self._denied.get(key)
        if not found:
            return None
        return found[min(found)]

    def held_by(self, key: bytes, publisher: str) -> Entry | None:
        """One publisher's denial of an 11-byte PSAM key, or None."""
        return self._denied.get(key, {}).get(publisher)

    def feed_psams(self, publisher: str) -> tuple[EntryColumns, NDArray[np.uint64]]:
        """One publisher's denied PSAMs as columns (for its snapshot)."""
        rows = [(k, e) for k, by in self._denied.items() for p, e in by.items() if p == publisher]
        cards = CardColumns(
            np.array([int.from_bytes(k[:3], "big") for k, _ in rows], dtype=np.uint32),
            np.zeros(len(rows), dtype=np.uint64),
            np.array([int.from_bytes(k[3:], "big") for k, _ in rows], dtype=np.uint64),
        )
        entries = EntryColumns(
            cards,
            np.array([e.reason for _, e in rows], dtype=np.uint8),
            np.array([e.effective_time for _, e in rows], dtype=np.int64),
        )
        return entries, np.array([e.version for _, e in rows], dtype=np.uint64)

    def stage_delta(
        self,
        txn: Any,
        publisher: str,
        adds: EntryColumns,
        removes: CardColumns,
        version: int,
    ) -> tuple[Callable[[], None], int, int]:
        """Write a delta's PSAM changes in ``txn``; return (apply in memory after the commit,
        PSAMs added or changed, PSAMs removed)."""
        pub = _pub3(publisher)
        new = self._put(txn, publisher, adds, np.full(len(adds), version, dtype=np.uint64))
        gone = [column_key(removes, i) for i in range(len(removes))]
        removed = [k for k in gone if txn.delete(k + pub, db=self.db)]

        def done() -> None:
            for key, entry in new:
                self._denied.setdefault(key, {})[publisher] = entry
            for key in removed:
                self._drop(key, publisher)

        return done, len(new), len(removed)

    def stage_snapshot(
        self,
        txn: Any,
        publisher: str,
        entries: EntryColumns,
        versions: NDArray[np.uint64],
    ) -> Callable[[], None]:
        """Replace one publisher's PSAM denials in ``txn`` with a snapshot's."""
        pub = _pub3(publisher)
        old = [k for k, by in self._denied.items() if publisher in by]
        for key in old:
            txn.delete(key + pub, db=self.db)
        new = self._put(txn, publisher, entries, versions)

        def done() -> None:
            for key in old:
                self._drop(key, publisher)
            for key, entry in new:
                self._denied.setdefault(key, {})[publisher] = entry

        return done

    def _put(
        self, txn: Any, publisher: str, entries: EntryColumns, versions: NDArray[np.uint64]
    ) -> list[tuple[bytes, Entry]]:
        """Write denials in ``txn``; return them (key, entry) for the dict after the commit."""
        pub = _pub3(publisher)
        out = []
        for i in range(len(entries)):
            key = column_key(entries.cards, i)
            entry = Entry(
                psam_text(key),
                Reason(int(entries.reason[i])),
                int(entries.time[i]),
                publisher,
                int(versions[i]),
            )
            txn.put(
                key + pub,
                _ENTRY.pack(entry.reason, entry.effective_time, entry.version),
                db=self.db,
            )
            out.append((key, entry))
        return out

    def _drop(self, key: bytes, publisher: str) -> None:
        by = self._denied.get(key)
        if by is not None:
            by.pop(publisher, None)
            if not by:
                del self._denied[key]
