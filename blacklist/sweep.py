"""The sweep of lapsed entries (issue #17), as part of :class:`~blacklist.store.RevocationStore`.

An entry whose end time has passed is already answered as absent by every check (the LMDB
read that confirms a hit skips it: RevocationStore.find_live); the sweep frees its row, its
lapses and reason-count rows, and its fingerprint. By the node's clock alone (no feed
version, no network), so every node removes the same entries; the feed head does not move.
As for a delta's removes, fingerprints leave the index only after the commit (DESIGN §4: a
concurrent check may see a false positive, which LMDB refutes, never a false negative).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import numpy as np

from blacklist.cardid import KEY_LENGTH
from blacklist.clock import Clock
from blacklist.fastpath import key_fingerprints
from blacklist.filters.roaring_index import FingerprintIndex
from blacklist.lapses import Lapses, lapse_key
from blacklist.reasoncounts import ReasonCounts
from blacklist.records import FeedState, _abort_on_error, value_end

SWEEP_BATCH = 10_000  # lapsed entries removed per write transaction


class Sweeping:
    """The store's sweep; the attributes and methods below are RevocationStore's."""

    env: Any
    _entries: Any
    _clock: Clock
    lapses: Lapses
    reason_counts: ReasonCounts
    feeds: dict[str, FeedState]
    index: FingerprintIndex
    generation: int
    epoch: int

    def _write_feed(self, txn: Any, feed: FeedState, new_regions: set[int]) -> None:
        raise NotImplementedError

    def _bump_generation(self, txn: Any) -> None:
        raise NotImplementedError

    def sweep(self, now: int | None = None, limit: int = SWEEP_BATCH) -> int:
        """Remove up to ``limit`` entries over by ``now`` (this store's clock), in one write
        transaction; returns how many. By the clock alone (no feed version, no network), so
        every node removes the same entries; invisible to checks, which already answer a
        lapsed entry as absent, and its fingerprints leave the index only after the commit
        (no false negative, DESIGN §4)."""
        at = int(self._clock()) if now is None else now
        with self.env.begin() as peek:
            if not self.lapses.due(peek, at, 1):
                return 0
        txn = self.env.begin(write=True)
        with _abort_on_error(txn):
            due = self.lapses.due(txn, at, limit)
            per_feed: dict[str, int] = {}
            counted: Counter[tuple[bytes, int]] = Counter()
            gone_keys: list[bytes] = []
            for end, key in due:
                txn.delete(lapse_key(end, key), db=self.lapses.db)
                value = txn.get(key, db=self._entries)
                if value is None or value_end(value) != end:
                    continue  # a row the index should not have held: never a live entry
                txn.delete(key, db=self._entries)
                gone_keys.append(key)
                counted[(key[KEY_LENGTH:], value[0])] -= 1
                pub = f"{int.from_bytes(key[KEY_LENGTH:], 'big'):06d}"
                per_feed[pub] = per_feed.get(pub, 0) + 1
            feeds = []
            for pub, n in per_feed.items():
                feed = self.feeds[pub]
                feeds.append(dataclasses.replace(feed, entries=max(0, feed.entries - n)))
                self._write_feed(txn, feeds[-1], set())
            counts_done = self.reason_counts.stage(txn, counted)
            self._bump_generation(txn)
            txn.commit()
        counts_done()
        rows = np.frombuffer(b"".join(k[:KEY_LENGTH] for k in gone_keys), np.uint8)
        gone = key_fingerprints(rows.reshape(-1, KEY_LENGTH), self.index.width)
        self.generation += 1
        self.epoch += 1
        self.index.remove_many(gone.tolist())
        for feed in feeds:
            self.feeds[feed.publisher] = feed
        return len(due)  # rows handled (a stale one too), so sweep_all moves on

    def sweep_all(self, now: int | None = None) -> int:
        """Sweep in batches until nothing is over by ``now``; returns how many went."""
        at = int(self._clock()) if now is None else now
        total = 0
        while done := self.sweep(at):
            total += done
        return total

    def lapsing_between(self, start: int, end: int) -> int:
        """Entries whose end time is in [start, end) (the metrics' next-24-hours gauge)."""
        with self.env.begin() as txn:
            return self.lapses.count_between(txn, start, end)
