"""Reading a store: what a check, a feed's head and the entry listings need, and nothing that
writes. The writer (store.py) and the followers of other processes (follower.py) are both
readers; the check path (checker.py) knows a store only through this class.

**The read transaction a check uses.** Every thread that checks keeps one LMDB read
transaction open (:meth:`StoreReader.current_txn`) and reuses it until the store moves: a
hit then costs one point ``get`` in it, not the opening of a transaction and a cursor. The
store moves when ``epoch`` does — the writer bumps it after each commit, a follower after each
catch-up (follower.py renews the transaction itself before every check, since another
process writes) — and the next call of that thread then ends the old transaction and begins
a new one, on the newest snapshot. py-lmdb keeps an ended read transaction's LMDB handle as
the environment's spare and renews it on the next ``begin`` (``mdb_txn_reset`` /
``mdb_txn_renew``), so renewing costs no new reader slot.

A hit is confirmed with a point ``get`` of ``card key + publisher`` in that transaction
(checker.py), falling back to :meth:`StoreReader.find_live`'s walk of the card's key range
only when the answering publisher holds no live entry.

The rule it keeps: a revocation committed, and its ``epoch`` bumped, before a check starts
is seen by that check (DESIGN §4). What it costs: a thread that stops checking keeps its
snapshot until it checks again, and LMDB cannot reuse pages freed after that snapshot, so
the file grows by what is written meanwhile (py-lmdb docs: long-lived readers block page
reuse); a pool of N threads pins at most N snapshots.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from blacklist.cardid import KEY_LENGTH, region_key_range
from blacklist.clock import Clock
from blacklist.columns import CardColumns, EntryColumns
from blacklist.entry import Entry
from blacklist.feedhead import FeedHead
from blacklist.filters.roaring_index import FingerprintIndex, width_for
from blacklist.psamlist import PsamList
from blacklist.records import (
    FeedState,
    _pub3,
    decode_entry,
    lapsed_value,
    unpack_values,
)
from blacklist.storeschema import (
    ENTRIES_DB,
    FEEDS_DB,
    META_DB,
    REGIONS_DB,
    read_generation,
)


class _ThreadTxn(threading.local):
    """One thread's long-lived read transaction and the store ``epoch`` it was begun at."""

    txn: Any = None
    epoch = -1


class StoreReader:
    """The reads of one store environment. Subclasses open the environment and keep the
    in-memory state (``index``, ``feeds``, ``psams``, ``generation``, ``epoch``) current."""

    index: FingerprintIndex
    psams: PsamList

    def __init__(self, path: Path, env: Any, clock: Clock, fingerprint_width: int | None) -> None:
        self.path = path
        self.env = env
        self._clock = clock
        self._fixed_width = fingerprint_width  # tests: narrow, so that cards collide
        self._entries = env.open_db(ENTRIES_DB)
        self.entries_db = self._entries  # the check path's point get reads it (checker.py)
        self._feeds_db = env.open_db(FEEDS_DB)
        self._regions_db = env.open_db(REGIONS_DB)
        self._meta = env.open_db(META_DB)
        self.generation = -1
        # In-memory change counter (applies, touches, index rebuilds, catch-ups): readers
        # such as the checker drop their caches, and renew their transactions, when it moves.
        self.epoch = 0
        self.feeds: dict[str, FeedState] = {}
        self._feed_regions: dict[str, set[int]] = {}
        self._thread = _ThreadTxn()

    # ------------------------------------------------------------------ transactions
    def read_txn(self) -> Any:
        """A new read transaction (a context manager), on the newest snapshot."""
        return self.env.begin()

    def current_txn(self) -> Any:
        """This thread's long-lived read transaction, renewed if the store moved since it
        was begun (module doc). Never use it across threads, nor after :meth:`close`."""
        local = self._thread
        if local.epoch == self.epoch and local.txn is not None:
            return local.txn
        return self.renew_txn()

    def renew_txn(self) -> Any:
        """End this thread's read transaction and begin it again on the newest snapshot."""
        local = self._thread
        # The epoch is read before the begin: should it move meanwhile, the next call
        # renews again rather than keep a snapshot older than the epoch it is filed under.
        epoch = self.epoch
        old, local.txn = local.txn, None
        if old is not None:
            old.abort()
        local.txn = self.env.begin()
        local.epoch = epoch
        return local.txn

    def adopt_txn(self) -> None:
        """File this thread's transaction under the current epoch: a follower that has just
        caught its index up to exactly that transaction's snapshot (follower.py)."""
        self._thread.epoch = self.epoch

    def release_txn(self) -> None:
        """End this thread's read transaction (a thread that stops checking, or shutdown)."""
        local = self._thread
        old, local.txn = local.txn, None
        if old is not None:
            old.abort()

    # ------------------------------------------------------------------ counts and heads
    def entry_count(self) -> int:
        with self.env.begin() as txn:
            return int(txn.stat(self._entries)["entries"])

    def _wanted_width(self, entries: int) -> int:
        return self._fixed_width if self._fixed_width is not None else width_for(entries)

    def head(self, publisher: str) -> FeedHead:
        feed = self.feeds.get(publisher)
        return feed.head if feed else FeedHead.genesis(publisher)

    def heads(self) -> dict[str, FeedHead]:
        return {p: f.head for p, f in self.feeds.items()}

    def feed_in(self, txn: Any, publisher: str) -> FeedState | None:
        """One feed's head as of the read transaction ``txn`` (a check reports the feed
        version of the very snapshot it read its entries from, not the in-memory one)."""
        raw = txn.get(_pub3(publisher), None, self._feeds_db)
        return FeedState.unpack(publisher, bytes(raw)) if raw is not None else None

    def generation_in(self, txn: Any) -> int:
        """The store generation as of ``txn`` (bumped by every write transaction)."""
        return read_generation(self.path, txn, self._meta)

    # ------------------------------------------------------------------ entries
    def lookup(self, card_key: bytes, txn: Any = None) -> Entry | None:
        """The entry for an 18-byte card key (the first publisher's, if several hold one)."""
        if txn is None:
            with self.env.begin(buffers=False) as own:
                return self._lookup(own, card_key)
        return self._lookup(txn, card_key)

    def _lookup(self, txn: Any, card_key: bytes) -> Entry | None:
        found = self.find_live(card_key, txn, self._clock())
        return decode_entry(*found) if found else None

    def find_live(self, card_key: bytes, txn: Any, now: float) -> tuple[bytes, bytes] | None:
        """The raw (key, value) of the first entry for a card that is not over by ``now``
        (issue #17: a lapsed entry answers as absent whether or not the sweep removed it)."""
        found = self.find(card_key, txn)
        if found is None or not lapsed_value(found[1], now):
            return found
        # The first publisher's entry is over: another publisher's may not be (rare).
        cursor = txn.cursor(db=self._entries)
        cursor.set_range(found[0])
        for key, value in cursor.iternext():
            if key[:KEY_LENGTH] != card_key:
                return None
            if not lapsed_value(value, now):
                return key, value
        return None

    def find(self, card_key: bytes, txn: Any) -> tuple[bytes, bytes] | None:
        """The raw (key, value) of the first entry for an 18-byte card key, if any."""
        cursor = txn.cursor(db=self._entries)
        if cursor.set_range(card_key):
            key = cursor.key()
            if key[:KEY_LENGTH] == card_key:
                return key, cursor.value()
        return None

    def lookup_all(self, card_key: bytes) -> list[Entry]:
        """Every publisher's entry for one card."""
        out = []
        with self.env.begin() as txn:
            cursor = txn.cursor(db=self._entries)
            if cursor.set_range(card_key):
                now = self._clock()
                for key, value in cursor:
                    if key[:KEY_LENGTH] != card_key:
                        break
                    if not lapsed_value(value, now):
                        out.append(decode_entry(key, value))
        return out

    def iter_entries(self, prefix: str = "", start_after: bytes | None = None) -> Iterator[Entry]:
        """Entries whose region starts with ``prefix``, in key order, from after a stored key."""
        low, high = region_key_range(prefix)
        start = start_after + b"\x00" if start_after else low
        now = self._clock()
        with self.env.begin() as txn:
            cursor = txn.cursor(db=self._entries)
            if not cursor.set_range(max(start, low)):
                return
            for key, value in cursor:
                if key[:3] >= high:
                    break
                if not lapsed_value(value, now):
                    yield decode_entry(key, value)

    def feed_entries(self, publisher: str) -> tuple[EntryColumns, NDArray[np.uint64]]:
        """All entries of one publisher as columns (for building its snapshot), without the
        ones that are over by this store's clock."""
        pub = _pub3(publisher)
        keys: list[bytes] = []
        values: list[bytes] = []
        now = self._clock()
        with self.env.begin() as txn:
            for key, value in self._publisher_items(txn, publisher):
                if key[KEY_LENGTH:] == pub and not lapsed_value(value, now):
                    keys.append(key[:KEY_LENGTH])
                    values.append(value)
        rows = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(-1, KEY_LENGTH)
        reason, time, version, ends = unpack_values(values)
        return EntryColumns(CardColumns.from_keys(rows), reason, time, ends), version

    def _publisher_items(self, txn: Any, publisher: str) -> Iterator[tuple[bytes, bytes]]:
        cursor = txn.cursor(db=self._entries)
        for region in sorted(self._feed_regions.get(publisher, ())):
            start = region.to_bytes(3, "big")
            if not cursor.set_range(start):
                continue
            for key, value in cursor:
                if key[:3] != start:
                    break
                yield key, value
