"""The durable truth of a node: the writer of the LMDB store, and the fingerprint index
kept in step with it. The layout is storeschema.py's; reads are storereader.py's (this class
is a reader too); creating and migrating the schema is storemigrate.py's; saving and
reopening the index is storeindex.py's.

Each delta is applied in one write transaction: entries, PSAM denials, trust records, feed
head, retained delta and generation together (py-lmdb docs: all or nothing; a killed process
leaves the last committed state). Fingerprints of new entries enter the index *before* the
commit and those of removed entries leave it *after*, and ``epoch`` moves between the two,
so a concurrent check can see a false positive (which LMDB then refutes) but never a false
negative. A big write goes into that one transaction, and into the index, in slices
(blacklist/slices.py), so that a serving thread of this process runs between them; the
index's slices all land before the commit, so a check that sees a slice missing also sees
the transaction uncommitted.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from blacklist.archive import Archive
from blacklist.audit import AuditLog
from blacklist.cardbatch import keys_from_columns
from blacklist.cardid import KEY_LENGTH
from blacklist.clock import Clock, system_clock
from blacklist.columns import CardColumns, EntryColumns
from blacklist.delta import Delta, FeedHead, Snapshot
from blacklist.fastpath import key_fingerprints, members
from blacklist.filters.roaring_index import SPARSITY_BITS, FingerprintIndex, width_for
from blacklist.headstatements import HeadStatements
from blacklist.lapses import Lapses
from blacklist.psamlist import PsamList
from blacklist.reasoncounts import ReasonCounts, tally, tally_reasons
from blacklist.records import (
    ApplyResult,
    FeedState,
    _abort_on_error,
    _pub3,
    _rows,
    decode_entry,
    pack_values,
)
from blacklist.rejections import MalformedDelta
from blacklist.signing import TrustedKey
from blacklist.slices import APPLY_SLICE, add_in_slices, put_in_slices
from blacklist.storefeeds import FeedKeeping
from blacklist.storeindex import INDEX_FILE, build_index, save_index, saved_index
from blacklist.storemigrate import count_reasons, prepare_schema
from blacklist.storereader import StoreReader
from blacklist.storeschema import (
    DEFAULT_MAP_SIZE,
    GENERATION_KEY,
    MIGRATES_FROM,
    SCHEMA_VERSION,
    U64,
    Progress,
    open_env,
    read_generation,
)
from blacklist.sweep import Sweeping
from blacklist.sync.accept import (
    AcceptPolicy,
    accept_delta,
    accept_signed,
    accept_snapshot,
)
from blacklist.trustrecords import TrustRecords

DEFAULT_RETAIN_DELTAS = 1000


class RevocationStore(StoreReader, Sweeping, FeedKeeping):
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock = system_clock,
        map_size: int = DEFAULT_MAP_SIZE,
        fingerprint_width: int | None = None,
        retain_deltas: int = DEFAULT_RETAIN_DELTAS,
        progress: Progress | None = None,
        migrate_progress: Progress | None = None,
        acceptance: AcceptPolicy | None = None,
        apply_slice: int = APPLY_SLICE,
    ) -> None:
        if retain_deltas < 0:
            raise ValueError(f"retain_deltas must be >= 0, got {retain_deltas}")
        if apply_slice < 1:
            raise ValueError(f"apply_slice must be >= 1, got {apply_slice}")
        self._slice = apply_slice  # items per C call of a big write (blacklist/slices.py)
        where = Path(path)
        where.mkdir(parents=True, exist_ok=True)
        super().__init__(where, open_env(where, map_size, readonly=False), clock, fingerprint_width)
        self._retain = retain_deltas
        self._progress = progress
        # The node's bounds on signers' claims (skew, version ceiling, decode limits); the
        # clock fills in ``now`` at every write.
        self._acceptance = acceptance or AcceptPolicy()
        self.archive = Archive(self.env, retain_deltas)
        self.audit = AuditLog(self.env)
        self.psams = PsamList(self.env)
        self.trust = TrustRecords(self.env)
        self.statements = HeadStatements(self.env)
        self.lapses = Lapses(self.env)
        self.reason_counts = ReasonCounts(self.env)
        prepare_schema(self.path, self.env, self._meta, self.audit, migrate_progress)
        count_reasons(self.env, self._entries, self._meta, self.reason_counts)
        self._load_state()
        self.index = self._open_index()

    def _load_state(self) -> None:
        with self.env.begin() as txn:
            self.generation = read_generation(self.path, txn, self._meta)
            for key, value in txn.cursor(db=self._feeds_db):
                pub = f"{int.from_bytes(key, 'big'):06d}"
                self.feeds[pub] = FeedState.unpack(pub, value)
            for key in txn.cursor(db=self._regions_db).iternext(values=False):
                pub = f"{int.from_bytes(key[:3], 'big'):06d}"
                self._feed_regions.setdefault(pub, set()).add(int.from_bytes(key[3:], "big"))

    def _open_index(self) -> FingerprintIndex:
        entries = self.entry_count()
        width = self._wanted_width(entries)
        saved = saved_index(self.path, self.generation, width, entries)
        return saved if saved is not None else self.rebuild_index(width)

    def rebuild_index(self, width: int | None = None) -> FingerprintIndex:
        """Recompute every fingerprint from the stored keys (vectorised, in chunks)."""
        with self.env.begin() as txn:
            wanted = width or self._wanted_width(int(txn.stat(self._entries)["entries"]))
            self.index = build_index(txn, self._entries, wanted, self._progress)
        self.epoch += 1
        return self.index

    def save_index(self) -> None:
        """Persist the index beside LMDB (atomic rename), tagged with the store generation."""
        save_index(self.path, self.index, self.generation)

    def close(self, save_index: bool = True) -> None:
        if save_index:
            self.save_index()
        self.env.close()

    def __enter__(self) -> RevocationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writing
    def apply(
        self, data: bytes | Delta | Snapshot, keys: Mapping[bytes, TrustedKey]
    ) -> ApplyResult:
        """Verify and apply a signed delta or snapshot; raises DeltaRejected, changing nothing.
        Bytes are verified before their body is decoded (:func:`accept_signed`)."""
        if isinstance(data, Snapshot):
            return self.apply_snapshot(data, keys)
        if isinstance(data, Delta):
            return self.apply_delta(data, keys)
        accepted = accept_signed(bytes(data), self.position, keys, self.policy())
        if isinstance(accepted.item, Snapshot):
            return self._write_snapshot(accepted.item, accepted.head)
        return self._write_delta(accepted.item, accepted.head, None)

    def apply_delta(
        self,
        delta: Delta,
        keys: Mapping[bytes, TrustedKey],
        *,
        also: Callable[[Any], object] | None = None,
    ) -> ApplyResult:
        """Verify and apply ``delta`` in one write transaction; ``also(txn)`` writes more in
        that same transaction (the audit records of the call that made the delta)."""
        new_head = accept_delta(self.position(delta.publisher), delta, keys, self.policy())
        return self._write_delta(delta, new_head, also)

    def _write_delta(
        self, delta: Delta, new_head: FeedHead, also: Callable[[Any], object] | None
    ) -> ApplyResult:
        adds, removes = delta.adds, delta.removes
        self._plan_width(len(self.index) + len(adds))
        pub = _pub3(delta.publisher)
        add_keys, add_fps = self._keys_and_fps(adds.cards, pub)
        add_vals = self._values(adds, np.full(len(adds), delta.version, dtype=np.uint64))
        del_keys, del_fps = self._keys_and_fps(removes, pub)
        new_regions = self._new_regions(delta.publisher, adds.cards)
        now = int(self._clock())
        previous = self.feeds.get(delta.publisher)

        txn = self.env.begin(write=True)
        with _abort_on_error(txn):
            cursor = txn.cursor(db=self._entries)
            # getmulti/putmulti loop in C; the keys arrive sorted (a block's order is the
            # key order), which keeps LMDB's page writes sequential.
            counted: Counter[tuple[bytes, int]] = Counter()
            held = dict(cursor.getmulti(del_keys)) if del_keys else {}
            tally(held.values(), pub, -1, counted)
            for key, value in held.items():
                txn.delete(key, db=self._entries)
                self.lapses.stage_drop(txn, key, value)
            gone_fps = del_fps[[k in held for k in del_keys]] if held else del_fps[:0]
            # Only a card whose fingerprint the index holds can be stored already (the index
            # holds every stored key's: module doc), so a new card costs no LMDB read.
            maybe = self._maybe_held(add_fps)
            existing = dict(cursor.getmulti([add_keys[i] for i in maybe])) if maybe else {}
            tally(existing.values(), pub, -1, counted)
            tally_reasons(adds.reason, pub, 1, counted)
            counts_done = self.reason_counts.stage(txn, counted)
            for key, value in existing.items():
                self.lapses.stage_drop(txn, key, value)
            put_in_slices(cursor, add_keys, add_vals, self._slice)
            self._index_lapses(txn, adds, add_keys, add_vals)
            new_fps = add_fps
            if existing:
                fresh_rows = np.ones(len(add_keys), dtype=bool)
                fresh_rows[[i for i in maybe if add_keys[i] in existing]] = False
                new_fps = add_fps[fresh_rows]
            count = (previous.entries if previous else 0) + len(new_fps) - len(gone_fps)
            issued = delta.header.issued_at
            fresh = self._fresh_after(previous, new_head, issued)
            feed = FeedState(new_head, count, delta.header.key_id, issued, now, fresh)
            self._write_feed(txn, feed, new_regions)
            psams_done, denied, lifted = self.psams.stage_delta(
                txn, delta.publisher, delta.psam_adds, delta.psam_removes, delta.version
            )
            trust_done, new_records = self.trust.stage(txn, delta.publisher, delta.trust)
            if also is not None:
                also(txn)
            archived = self.archive.add_delta(txn, delta, new_head) if self._retain else None
            self._commit_with_index(txn, new_fps)
        if archived:
            archived()
        psams_done()
        trust_done()
        counts_done()
        self._after_commit(feed, new_regions, gone_fps)
        return ApplyResult(
            delta.publisher,
            delta.version,
            len(new_fps),
            len(existing),
            len(gone_fps),
            len(del_keys) - len(gone_fps),
            denied,
            lifted,
            new_records,
        )

    def apply_snapshot(self, snapshot: Snapshot, keys: Mapping[bytes, TrustedKey]) -> ApplyResult:
        """Replace one publisher's whole entry set with a verified snapshot, atomically."""
        new_head = accept_snapshot(self.position(snapshot.publisher), snapshot, keys, self.policy())
        return self._write_snapshot(snapshot, new_head)

    def _write_snapshot(self, snapshot: Snapshot, new_head: FeedHead) -> ApplyResult:
        previous = self.feeds.get(snapshot.publisher)
        self._plan_width(
            len(self.index) + len(snapshot.entries) - (previous.entries if previous else 0)
        )
        pub = _pub3(snapshot.publisher)
        entries = snapshot.entries
        add_keys, add_fps = self._keys_and_fps(entries.cards, pub)
        add_vals = self._values(entries, snapshot.versions)
        new_regions = self._new_regions(snapshot.publisher, entries.cards)
        now = int(self._clock())
        gone_fps = np.zeros(0, dtype=np.uint32)
        txn = self.env.begin(write=True)
        with _abort_on_error(txn):
            old = [
                (k, v) for k, v in self._publisher_items(txn, snapshot.publisher) if k[-3:] == pub
            ]
            counted: Counter[tuple[bytes, int]] = Counter()
            tally((v for _, v in old), pub, -1, counted)
            tally(add_vals, pub, 1, counted)
            counts_done = self.reason_counts.stage(txn, counted)
            if old:
                rows = np.frombuffer(b"".join(k[:KEY_LENGTH] for k, _ in old), np.uint8)
                gone_fps = key_fingerprints(rows.reshape(-1, KEY_LENGTH), self.index.width)
                for key, value in old:
                    txn.delete(key, db=self._entries)
                    self.lapses.stage_drop(txn, key, value)
            put_in_slices(txn.cursor(db=self._entries), add_keys, add_vals, self._slice)
            self._index_lapses(txn, entries, add_keys, add_vals)
            issued = snapshot.header.issued_at
            fresh = self._fresh_after(self.feeds.get(snapshot.publisher), new_head, issued)
            feed = FeedState(new_head, len(add_keys), snapshot.header.key_id, issued, now, fresh)
            self._write_feed(txn, feed, new_regions)
            psams_done = self.psams.stage_snapshot(
                txn, snapshot.publisher, snapshot.psams, snapshot.psam_versions
            )
            trust_done, new_records = self.trust.stage(txn, snapshot.publisher, snapshot.trust)
            # History before a snapshot is not this node's to serve any more; the snapshot is.
            archived = self.archive.replace_with_snapshot(txn, snapshot, snapshot.to_bytes())
            self._commit_with_index(txn, add_fps)
        archived()
        psams_done()
        trust_done()
        counts_done()
        self._after_commit(feed, new_regions, gone_fps)
        return ApplyResult(
            snapshot.publisher,
            snapshot.version,
            len(add_keys),
            0,
            len(old),
            0,
            len(snapshot.psams),
            0,
            new_records,
        )

    # ------------------------------------------------------------------ helpers
    def _keys_and_fps(
        self, cards: CardColumns, pub: bytes
    ) -> tuple[list[bytes], NDArray[np.uint32]]:
        n = len(cards)
        if n == 0:
            return [], np.zeros(0, dtype=np.uint32)
        rows = keys_from_columns(cards.region, cards.middle, cards.serial)
        full = np.empty((n, KEY_LENGTH + 3), dtype=np.uint8)
        full[:, :KEY_LENGTH] = rows
        full[:, KEY_LENGTH:] = np.frombuffer(pub, dtype=np.uint8)
        return _rows(full), key_fingerprints(rows, self.index.width)

    @staticmethod
    def _values(entries: EntryColumns, versions: NDArray[np.uint64]) -> list[bytes]:
        return pack_values(entries.reason, entries.time, versions, entries.ends)

    def _index_lapses(
        self, txn: Any, entries: EntryColumns, keys: list[bytes], values: list[bytes]
    ) -> None:
        for i in np.flatnonzero(entries.ends).tolist():
            self.lapses.stage_put(txn, keys[i], values[i])

    def _new_regions(self, publisher: str, cards: CardColumns) -> set[int]:
        known = self._feed_regions.get(publisher, set())
        return {r for r in np.unique(cards.region).tolist() if r not in known}

    def _write_feed(self, txn: Any, feed: FeedState, new_regions: set[int]) -> None:
        pub = _pub3(feed.publisher)
        txn.put(pub, feed.pack(), db=self._feeds_db)
        for region in new_regions:
            txn.put(pub + region.to_bytes(3, "big"), b"", db=self._regions_db)

    def _bump_generation(self, txn: Any) -> None:
        txn.put(GENERATION_KEY, U64.pack(self.generation + 1), db=self._meta)

    def _commit_with_index(self, txn: Any, new_fps: NDArray[np.uint32]) -> None:
        """Commit ``txn`` with the new fingerprints already in the index (see module doc)."""
        self._bump_generation(txn)
        add_in_slices(self.index, new_fps, self._slice)
        try:
            txn.commit()
        except BaseException:
            self.index.remove_many(new_fps.tolist())
            raise
        # The snapshot moved: a check from now on renews its thread's read transaction and
        # so confirms hits against this commit, even before the in-memory state below
        # follows (_after_commit bumps the epoch again, for the caches built from it).
        self.epoch += 1

    def _after_commit(
        self, feed: FeedState, new_regions: set[int], gone_fps: NDArray[np.uint32]
    ) -> None:
        self.generation += 1
        self.epoch += 1
        self.index.remove_many(gone_fps.tolist())
        self.feeds[feed.publisher] = feed
        self._feed_regions.setdefault(feed.publisher, set()).update(new_regions)

    def _maybe_held(self, fps: NDArray[np.uint32]) -> list[int]:
        """Rows of ``fps`` whose fingerprint is in the index: the only ones that may be held
        (the membership loop in C, blacklist/fastpath.py)."""
        if len(fps) == 0 or not self.index.bitmap:
            return []
        return members(self.index.bitmap, fps)

    def _plan_width(self, entries: int) -> None:
        """Before a write that brings the store to about ``entries``: rebuild at a wider
        fingerprint once entries have doubled past the density plan (amortised O(1))."""
        width = self.index.width
        if self._fixed_width is None and width < 32 and entries > 1 << (width - SPARSITY_BITS + 1):
            self.rebuild_index(width_for(entries))


def open_store(path: str | os.PathLike[str], **kwargs: Any) -> RevocationStore:
    return RevocationStore(path, **kwargs)


__all__ = [
    "DEFAULT_MAP_SIZE",
    "INDEX_FILE",
    "MIGRATES_FROM",
    "SCHEMA_VERSION",
    "ApplyResult",
    "FeedState",
    "MalformedDelta",
    "RevocationStore",
    "StoreReader",
    "decode_entry",
    "open_store",
]
