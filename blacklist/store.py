"""The durable truth of a node: LMDB, plus the fingerprint index kept in step with it.

LMDB layout (one environment, named databases, all integers big-endian)::

    entries   key   card key (18, see cardid.py) + publisher code (u24)        21 bytes
              value reason u8, effective time i64, version u64                   17 bytes
                    then, for an entry that lapses, its end time i64               25 bytes
    lapses    the entries that have an end time, by end time (lapses.py)
    reason_counts   entries per publisher and reason (reasoncounts.py)
    feeds     key   publisher code (u24)
              value see _FEED below
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
each hold an entry for the same card; a lookup reads the key range of the card.

Each delta is applied in one write transaction: entries, PSAM denials, trust records, feed
head, retained delta and generation together (py-lmdb docs: all or nothing; a killed process leaves the last
committed state). Fingerprints of new entries enter the index *before* the commit and those
of removed entries leave it *after*, so a concurrent check can see a false positive (which
LMDB then refutes) but never a false negative.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
from numpy.typing import NDArray

from blacklist.archive import Archive
from blacklist.audit import AuditLog
from blacklist.cardbatch import keys_from_columns
from blacklist.cardid import KEY_LENGTH, region_key_range
from blacklist.clock import Clock, system_clock
from blacklist.delta import Delta, FeedHead, Snapshot
from blacklist.deltadecode import open_envelope
from blacklist.entry import Entry
from blacklist.entryblock import CardColumns, EntryColumns
from blacklist.errors import StoreError
from blacklist.filters.roaring_index import SPARSITY_BITS, FingerprintIndex, width_for
from blacklist.headstatements import HeadStatements, StatementResult
from blacklist.lapses import Lapses
from blacklist.probe import key_fingerprints
from blacklist.psamlist import PsamList
from blacklist.reasoncounts import BUILT, ReasonCounts, tally
from blacklist.records import (
    ApplyResult,
    FeedState,
    _abort_on_error,
    _pub3,
    _rows,
    decode_entry,
    lapsed_value,
    pack_values,
    unpack_values,
)
from blacklist.rejections import MalformedDelta
from blacklist.signing import TrustedKey
from blacklist.sweep import Sweeping
from blacklist.sync.accept import (
    AcceptPolicy,
    FeedPosition,
    accept_current_snapshot,
    accept_delta,
    accept_signed,
    accept_snapshot,
)
from blacklist.sync.freshness import (
    FeedFreshness,
    HeadStatement,
    StatementRejected,
    accept_statement,
    fresh_after_apply,
)
from blacklist.sync.plan import FeedHistory
from blacklist.trustrecords import TrustRecords

# 2: deltas carry PSAM and trust sections (delta.py); 3: the audit log's card and PSAM
# indexes (audit.py); 4: entries may carry an end time (records.py) and the lapses index
# (lapses.py). Schema 2 and 3 stores are migrated at open; older ones are refused.
SCHEMA_VERSION = 4
MIGRATES_FROM = (2, 3)
DEFAULT_MAP_SIZE = 1 << 36  # 64 GiB of address space; the file grows only as used
DEFAULT_RETAIN_DELTAS = 1000
INDEX_FILE = "index.fpx"

_U64 = struct.Struct(">Q")
_REBUILD_CHUNK = 1 << 20

Progress = Callable[[int, int], None]  # (done, total) while rebuilding the index


class RevocationStore(Sweeping):
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
    ) -> None:
        if retain_deltas < 0:
            raise ValueError(f"retain_deltas must be >= 0, got {retain_deltas}")
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._fixed_width = fingerprint_width
        self._retain = retain_deltas
        self._progress = progress
        # The node's bounds on signers' claims (skew, version ceiling, decode limits); the
        # clock fills in ``now`` at every write.
        self._acceptance = acceptance or AcceptPolicy()
        self.env = lmdb.open(
            str(self.path), map_size=map_size, max_dbs=24, readahead=False, max_readers=512
        )
        self._entries = self.env.open_db(b"entries")
        self._feeds_db = self.env.open_db(b"feeds")
        self._regions_db = self.env.open_db(b"regions")
        self.archive = Archive(self.env, retain_deltas)
        self._meta = self.env.open_db(b"meta")
        self.audit = AuditLog(self.env)
        self.psams = PsamList(self.env)
        self.trust = TrustRecords(self.env)
        self.statements = HeadStatements(self.env)
        self.lapses = Lapses(self.env)
        self.reason_counts = ReasonCounts(self.env)
        self._check_schema(migrate_progress)
        self._count_reasons()
        self.generation = 0
        # In-memory change counter (applies, touches, index rebuilds): readers such as the
        # checker drop their caches when it moves.
        self.epoch = 0
        self.feeds: dict[str, FeedState] = {}
        self._feed_regions: dict[str, set[int]] = {}
        self._load_state()
        self.index = self._open_index()

    # ------------------------------------------------------------------ opening
    def _check_schema(self, progress: Progress | None) -> None:
        with self.env.begin(write=True) as txn:
            raw = txn.get(b"schema", db=self._meta)
            if raw is None:
                txn.put(b"schema", struct.pack(">I", SCHEMA_VERSION), db=self._meta)
                txn.put(b"generation", _U64.pack(0), db=self._meta)
                txn.put(BUILT, b"", db=self._meta)
                return
            found = struct.unpack(">I", raw)[0]
        if found == SCHEMA_VERSION:
            return
        if found not in MIGRATES_FROM:
            raise StoreError(
                f"{self.path}: store schema {found}, this code reads schema {SCHEMA_VERSION} "
                f"and migrates schemas {', '.join(map(str, MIGRATES_FROM))}; move the data "
                "directory aside and let the node bootstrap from its upstream"
            )
        # Schema 2 → 3: index the audit log once. The schema moves only after every record
        # is indexed, so a run killed half-way starts over at the next open (idempotent).
        if found == 2:
            self.audit.build_index(progress)
        # Schema 3 → 4: no entry of an older store has an end time, and a 17-byte value
        # still reads as one without; the (empty) lapses database was opened above.
        with self.env.begin(write=True) as txn:
            txn.put(b"schema", struct.pack(">I", SCHEMA_VERSION), db=self._meta)

    def _count_reasons(self) -> None:
        """Count entries by reason once for a store from before the counts (one scan, in
        one write transaction: a run killed half-way counts again at the next open)."""
        with self.env.begin(write=True) as txn:
            if txn.get(BUILT, db=self._meta) is None:
                self.reason_counts.build(txn, self._entries, self._meta)
        self.reason_counts.load()

    def _load_state(self) -> None:
        with self.env.begin() as txn:
            raw = txn.get(b"generation", db=self._meta)
            if raw is None:
                raise StoreError(f"{self.path}: store metadata has no generation record")
            self.generation = _U64.unpack(raw)[0]
            for key, value in txn.cursor(db=self._feeds_db):
                pub = f"{int.from_bytes(key, 'big'):06d}"
                self.feeds[pub] = FeedState.unpack(pub, value)
            for key in txn.cursor(db=self._regions_db).iternext(values=False):
                pub = f"{int.from_bytes(key[:3], 'big'):06d}"
                self._feed_regions.setdefault(pub, set()).add(int.from_bytes(key[3:], "big"))

    def entry_count(self) -> int:
        return self._stat_entries()

    def _stat_entries(self) -> int:
        with self.env.begin() as txn:
            return int(txn.stat(self._entries)["entries"])

    def _wanted_width(self, entries: int) -> int:
        return self._fixed_width if self._fixed_width is not None else width_for(entries)

    def _open_index(self) -> FingerprintIndex:
        entries = self._stat_entries()
        width = self._wanted_width(entries)
        saved = self.path / INDEX_FILE
        if saved.exists():
            try:
                index, generation = FingerprintIndex.from_bytes(saved.read_bytes())
            except StoreError:
                generation = -1  # unreadable: rebuild
            # A crash after the last save leaves an older generation: rebuild then.
            if generation == self.generation and index.width == width and len(index) == entries:
                return index
        return self.rebuild_index(width)

    def rebuild_index(self, width: int | None = None) -> FingerprintIndex:
        """Recompute every fingerprint from the stored keys (vectorised, in chunks)."""
        entries = self._stat_entries()
        index = FingerprintIndex(width or self._wanted_width(entries))
        done = 0
        with self.env.begin() as txn:
            keys = txn.cursor(db=self._entries).iternext(values=False)
            while True:
                chunk = [k[:KEY_LENGTH] for _, k in zip(range(_REBUILD_CHUNK), keys, strict=False)]
                if not chunk:
                    break
                rows = np.frombuffer(b"".join(chunk), dtype=np.uint8).reshape(-1, KEY_LENGTH)
                index.add_many(key_fingerprints(rows, index.width))
                done += len(chunk)
                if self._progress:
                    self._progress(done, entries)
        self.index = index
        self.epoch += 1
        return index

    def save_index(self) -> None:
        """Persist the index beside LMDB (atomic rename), tagged with the store generation."""
        target = self.path / INDEX_FILE
        tmp = target.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(self.index.to_bytes(self.generation))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)

    def close(self, save_index: bool = True) -> None:
        if save_index:
            self.save_index()
        self.env.close()

    def __enter__(self) -> RevocationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reading
    def head(self, publisher: str) -> FeedHead:
        feed = self.feeds.get(publisher)
        return feed.head if feed else FeedHead.genesis(publisher)

    def heads(self) -> dict[str, FeedHead]:
        return {p: f.head for p, f in self.feeds.items()}

    def position(self, publisher: str) -> FeedPosition:
        """What acceptance needs of a feed held here: head, its ``issued_at``, and the
        digests of retained older versions (to tell a copy from a fork)."""
        feed = self.feeds.get(publisher)
        if feed is None:
            return FeedPosition(FeedHead.genesis(publisher))

        def digest_at(version: int) -> bytes | None:
            data = self.archive.delta(publisher, version)
            return open_envelope(data).digest if data is not None else None

        return FeedPosition(feed.head, feed.issued_at, digest_at)

    def policy(self) -> AcceptPolicy:
        """The acceptance policy as of now, by this store's clock."""
        return dataclasses.replace(self._acceptance, now=int(self._clock()))

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

    def feed_in(self, txn: Any, publisher: str) -> FeedState | None:
        """One feed's head as of the read transaction ``txn`` (a check reports the feed
        version of the very snapshot it read its entries from, not the in-memory one)."""
        raw = txn.get(_pub3(publisher), db=self._feeds_db)
        return FeedState.unpack(publisher, bytes(raw)) if raw is not None else None

    def generation_in(self, txn: Any) -> int:
        """The store generation as of ``txn`` (bumped by every write transaction)."""
        raw = txn.get(b"generation", db=self._meta)
        if raw is None:
            raise StoreError(f"{self.path}: store metadata has no generation record")
        return int(_U64.unpack(raw)[0])

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

    def read_txn(self) -> Any:
        return self.env.begin()

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

    def retained_delta(self, publisher: str, version: int) -> bytes | None:
        return self.archive.delta(publisher, version)

    def retained_versions(self, publisher: str) -> list[int]:
        return self.archive.versions(publisher)

    def history(self, publisher: str) -> FeedHistory:
        return self.archive.history(publisher, self.head(publisher))

    def histories(self) -> dict[str, FeedHistory]:
        return {p: self.history(p) for p in self.feeds}

    def keep_snapshot(self, snapshot: Snapshot, keys: Mapping[bytes, TrustedKey]) -> None:
        """Store a snapshot of a feed's current head, to serve children (verified first)."""
        accept_current_snapshot(self.head(snapshot.publisher), snapshot, keys)
        txn = self.env.begin(write=True)
        with _abort_on_error(txn):
            archived = self.archive.keep_snapshot(txn, snapshot, snapshot.to_bytes())
            self._bump_generation(txn)
            txn.commit()
        archived()
        self.generation += 1
        self.epoch += 1

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
            existing = dict(cursor.getmulti(add_keys)) if add_keys else {}
            tally(existing.values(), pub, -1, counted)
            tally(add_vals, pub, 1, counted)
            counts_done = self.reason_counts.stage(txn, counted)
            for key, value in existing.items():
                self.lapses.stage_drop(txn, key, value)
            cursor.putmulti(zip(add_keys, add_vals, strict=True), overwrite=True)
            self._index_lapses(txn, adds, add_keys, add_vals)
            new_fps = add_fps[[k not in existing for k in add_keys]] if existing else add_fps
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
            txn.cursor(db=self._entries).putmulti(zip(add_keys, add_vals, strict=True))
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

    # ------------------------------------------------------------------ freshness
    def freshness(self, publisher: str) -> FeedFreshness:
        """What this node knows of a feed's freshness (blacklist/sync/freshness.py)."""
        feed = self.feeds.get(publisher)
        head = feed.head if feed else FeedHead.genesis(publisher)

        def digest_at(version: int) -> bytes | None:
            # The digest of version v is the previous-digest of the retained delta v + 1.
            after = self.archive.history(publisher, head).retained.get(version + 1)
            return after.prev_digest if after is not None else None

        return FeedFreshness(
            head,
            feed.issued_at if feed else 0,
            self.statements.newest(publisher),
            feed.checked_at if feed else 0,
            digest_at,
        )

    def accept_statements(
        self,
        statements: list[HeadStatement],
        keys: Mapping[bytes, TrustedKey],
        now: float,
        max_skew: int,
    ) -> list[StatementResult]:
        """Verify head statements and keep, in one write transaction, each that is newer than
        the one held, with the freshness it proves (a feed's ``checked_at``). Refused ones
        change nothing and come back with their rejection; duplicates with neither."""
        states: dict[str, FeedFreshness] = {}
        results: list[StatementResult] = []
        for statement in statements:
            state = states.get(statement.publisher) or self.freshness(statement.publisher)
            try:
                after = accept_statement(state, statement, keys, now, max_skew)
            except StatementRejected as exc:
                results.append(StatementResult(statement, rejection=exc))
                continue
            if after is state:
                results.append(StatementResult(statement))
                continue
            states[statement.publisher] = after
            results.append(StatementResult(statement, accepted=True))
        if not states:
            return results
        updated: list[FeedState] = []
        done = []
        with self.env.begin(write=True) as txn:
            for publisher, state in states.items():
                assert state.newest is not None
                done.append(self.statements.stage(txn, state.newest))
                feed = self.feeds.get(publisher)
                if feed is not None and state.fresh_as_of != feed.checked_at:
                    feed = dataclasses.replace(feed, checked_at=state.fresh_as_of)
                    self._write_feed(txn, feed, set())
                    updated.append(feed)
            self._bump_generation(txn)
        for remember in done:
            remember()
        for feed in updated:
            self.feeds[feed.publisher] = feed
        self.generation += 1
        self.epoch += 1
        return results

    def _fresh_after(self, previous: FeedState | None, head: FeedHead, issued_at: int) -> int:
        return fresh_after_apply(
            previous.checked_at if previous else 0,
            head,
            issued_at,
            self.statements.newest(head.publisher),
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
        txn.put(b"generation", _U64.pack(self.generation + 1), db=self._meta)

    def _commit_with_index(self, txn: Any, new_fps: NDArray[np.uint32]) -> None:
        """Commit ``txn`` with the new fingerprints already in the index (see module doc)."""
        self._bump_generation(txn)
        self.index.add_many(new_fps)
        try:
            txn.commit()
        except BaseException:
            self.index.remove_many(new_fps.tolist())
            raise

    def _after_commit(
        self, feed: FeedState, new_regions: set[int], gone_fps: NDArray[np.uint32]
    ) -> None:
        self.generation += 1
        self.epoch += 1
        self.index.remove_many(gone_fps.tolist())
        self.feeds[feed.publisher] = feed
        self._feed_regions.setdefault(feed.publisher, set()).update(new_regions)

    def _plan_width(self, entries: int) -> None:
        """Before a write that brings the store to about ``entries``: rebuild at a wider
        fingerprint once entries have doubled past the density plan (amortised O(1))."""
        width = self.index.width
        if self._fixed_width is None and width < 32 and entries > 1 << (width - SPARSITY_BITS + 1):
            self.rebuild_index(width_for(entries))


def open_store(path: str | os.PathLike[str], **kwargs: Any) -> RevocationStore:
    return RevocationStore(path, **kwargs)


__all__ = [
    "ApplyResult",
    "FeedState",
    "MalformedDelta",
    "RevocationStore",
    "decode_entry",
    "open_store",
]
