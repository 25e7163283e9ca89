"""A read-only view of a store that another process writes: the serving side of
``workers = N`` (node/workers/pool.py).

One process (the writer) applies deltas to the LMDB environment with a
:class:`~blacklist.store.RevocationStore`; worker processes open the same environment
read-only and answer checks from it. LMDB gives every read transaction a consistent
snapshot, so a worker can never see half of a delta (py-lmdb docs: readers never block the
writer and see only committed transactions). What a worker must keep in step itself is its
in-memory state: the fingerprint index, the feed heads, the PSAM deny list and the trust
records.

The rule (DESIGN §4: no false negatives from the index) becomes: *never answer from an
index older than the LMDB state being read*. :meth:`StoreFollower.refresh` runs before
every check. It reads the store's ``generation`` (meta DB, bumped by every write
transaction; about a microsecond in a read transaction) and, when it moved, catches up in
one read transaction:

* for every feed whose head moved, the fingerprints of the adds of the retained deltas in
  between are added to the index, after checking that they chain from the head the index
  covers to the stored head (each delta names its predecessor's digest);
* when that chain cannot be proved (deltas pruned, a snapshot replaced the feed, a fork),
  the fingerprints of all of that feed's stored entries are added instead (STYLE.md, after
  crlite: "can't prove continuity" means "snapshot");
* fingerprints are never removed. A stale one costs a false positive, which the LMDB read
  refutes; a missing one would be a false negative. When stale fingerprints outgrow
  ``stale_fraction`` of the entries, or the entries outgrow the index's width, the index is
  rebuilt from LMDB: in a background thread, swapped in (and caught up from the heads it
  was built at) by the next refresh after it is done.

A check linearises at the generation read: a revocation committed before it is seen; one
committed during it may or may not be, exactly as for a check that arrived a moment
earlier.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
from numpy.typing import NDArray

from blacklist.archive import Archive
from blacklist.audit import AuditLog
from blacklist.cardbatch import keys_from_columns
from blacklist.cardid import KEY_LENGTH
from blacklist.checker import MAX_TRIES, Checker, CheckResult
from blacklist.clock import Clock, system_clock
from blacklist.columns import CardColumns
from blacklist.deltadecode import decode_delta
from blacklist.entry import Entry
from blacklist.errors import CheckUnavailable, StoreError
from blacklist.fastpath import key_fingerprints
from blacklist.feedhead import FeedHead
from blacklist.filters.roaring_index import SPARSITY_BITS, FingerprintIndex
from blacklist.psamlist import PsamList
from blacklist.records import FeedState, _pub3
from blacklist.signing import TrustedKey
from blacklist.storeindex import build_index, saved_index
from blacklist.storereader import StoreReader
from blacklist.storeschema import DEFAULT_MAP_SIZE, U64, check_schema, open_env
from blacklist.trustrecords import TrustRecords

DEFAULT_STALE_FRACTION = 0.25  # rebuild once stale fingerprints reach 25% of the entries
DEFAULT_STALE_FLOOR = 4096  # ... but never for fewer than this many

_EMPTY = np.zeros(0, dtype=np.uint32)


class ReadOnlyStore(StoreError):
    """A write was attempted through a follower; only the writer process writes."""


class _Built:
    """An index built in one read transaction, with the heads and generation it covers."""

    __slots__ = ("generation", "heads", "index")

    def __init__(self, index: FingerprintIndex, heads: dict[str, FeedHead], generation: int):
        self.index = index
        self.heads = heads
        self.generation = generation


class StoreFollower(StoreReader):
    """A read-only :class:`~blacklist.storereader.StoreReader` kept current by
    :meth:`refresh`.

    ``env``: an environment already open in this process (py-lmdb allows one handle per
    path and process; tests follow a writer in the same process this way). Otherwise the
    environment is opened read-only here, which must happen after any fork (py-lmdb docs).
    ``background``: rebuild the index in a thread (True) or inline in :meth:`refresh`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        env: Any = None,
        clock: Clock = system_clock,
        map_size: int = DEFAULT_MAP_SIZE,
        stale_fraction: float = DEFAULT_STALE_FRACTION,
        stale_floor: int = DEFAULT_STALE_FLOOR,
        background: bool = True,
        fingerprint_width: int | None = None,
    ) -> None:
        self._own_env = env is None
        if env is None:
            env = open_env(path, map_size, readonly=True)
        super().__init__(Path(path), env, clock, fingerprint_width)
        self._deltas_db = env.open_db(b"deltas")
        self.audit = AuditLog(env)
        self.psams = PsamList(env)
        self.trust = TrustRecords(env)
        self.trust_version = 0  # moves when the trust records read from LMDB changed
        self.stale_fraction = stale_fraction
        self.stale_floor = stale_floor
        self.background = background
        self.rebuilds = 0
        self._stale = 0
        self._rebuilding: threading.Thread | None = None
        self._rebuilt: _Built | None = None
        self._covered: dict[str, FeedHead] = {}
        self._refresh_lock = threading.Lock()
        with self.env.begin() as txn:
            check_schema(self.path, txn, self._meta)
            generation = self.generation_in(txn)
            self._install(self._open_built(txn, generation))
            self._catch_up(txn, generation)

    @property
    def archive(self) -> Archive:
        raise ReadOnlyStore("a follower serves checks; the writer process serves history")

    # ------------------------------------------------------------------ opening
    def _open_built(self, txn: Any, generation: int) -> _Built:
        """The index the writer saved, if it is of exactly this state; else built now."""
        entries = int(txn.stat(self._entries)["entries"])
        index = saved_index(self.path, generation, self._wanted_width(entries), entries)
        if index is not None:
            return _Built(index, _read_heads(txn, self._feeds_db), generation)
        return self._build(txn)

    def _build(self, txn: Any) -> _Built:
        """Every fingerprint from the stored keys of ``txn``'s snapshot (vectorised)."""
        width = self._wanted_width(int(txn.stat(self._entries)["entries"]))
        index = build_index(txn, self._entries, width)
        return _Built(index, _read_heads(txn, self._feeds_db), self.generation_in(txn))

    def _install(self, built: _Built) -> None:
        self.index = built.index
        self._covered = built.heads
        self._stale = 0
        self.rebuilds += 1
        self.epoch += 1

    # ------------------------------------------------------------------ following
    def refresh(self, txn: Any = None) -> bool:
        """Catch up with the writer if the stored generation moved (or a rebuilt index is
        ready); True if anything changed. Call before answering from the index. ``txn``:
        catch up to exactly that read transaction's snapshot (a batch then reads its
        entries and heads from the same one), else to a new one.

        Threads may share a follower: one catches up at a time, and a thread whose
        snapshot is older than the one caught up with changes nothing (the index, which
        only grows between rebuilds, already covers it)."""
        with self._refresh_lock:
            return self._refresh(txn)

    def _refresh(self, txn: Any) -> bool:
        rebuilt = None
        thread = self._rebuilding
        if thread is not None and not thread.is_alive():  # done (or failed: retried later)
            rebuilt, self._rebuilt, self._rebuilding = self._rebuilt, None, None
            if rebuilt is not None:
                self._install(rebuilt)
        if txn is None:
            with self.env.begin() as own:
                return self._refresh_in(own, rebuilt is not None)
        return self._refresh_in(txn, rebuilt is not None)

    def _refresh_in(self, txn: Any, rebuilt: bool) -> bool:
        generation = self.generation_in(txn)
        if generation <= self.generation and not rebuilt:
            return False
        self._catch_up(txn, generation)
        return True

    def _catch_up(self, txn: Any, generation: int) -> None:
        feeds = {
            f"{int.from_bytes(k, 'big'):06d}": v
            for k, v in txn.cursor(db=self._feeds_db).iternext()
        }
        states = {pub: FeedState.unpack(pub, raw) for pub, raw in feeds.items()}
        regions: dict[str, set[int]] = {}
        for key in txn.cursor(db=self._regions_db).iternext(values=False):
            pub = f"{int.from_bytes(key[:3], 'big'):06d}"
            regions.setdefault(pub, set()).add(int.from_bytes(key[3:], "big"))
        # Which regions each feed has entries in (only ever grows): read by the loop below.
        self._feed_regions = regions
        parts: list[NDArray[np.uint32]] = []
        moved = False
        stale = 0
        for pub, state in states.items():
            covered = self._covered.get(pub)
            if covered == state.head:
                # The head stood still but entries went: the writer's sweep of lapsed
                # entries (issue #17). Their fingerprints stay here (stale, never a false
                # negative) until a rebuild, which counting them brings about.
                held = self.feeds.get(pub)
                stale += max(0, held.entries - state.entries) if held else 0
                continue
            moved = True
            fps, gone = self._fingerprints_since(txn, pub, covered, state)
            parts.append(fps)
            stale += gone
        psams, trust = self.psams, self.trust
        if moved:
            # Small tables (thousands of rows): re-read whole rather than followed, from the
            # same snapshot as the heads.
            psams, trust = PsamList(self.env, txn), TrustRecords(self.env, txn)
        # Everything that can fail (LMDB reads, decoding) is done: only now does the
        # follower's state move, all of it. A catch-up that raised changed nothing, so the
        # next one starts from the same covered heads and re-reads the PSAM deny list too
        # (a half-done catch-up that kept the old deny list would admit a denied PSAM).
        if parts:
            self.index.add_many(np.concatenate(parts))  # extra fingerprints are harmless
        self._stale += stale
        self._covered = {pub: state.head for pub, state in states.items()}
        self.feeds = states
        if trust is not self.trust and trust.records() != self.trust.records():
            self.trust_version += 1
        self.psams, self.trust = psams, trust
        self.generation = generation
        self.epoch += 1
        self._maybe_rebuild(txn, sum(s.entries for s in states.values()))

    def _fingerprints_since(
        self, txn: Any, publisher: str, covered: FeedHead | None, state: FeedState
    ) -> tuple[NDArray[np.uint32], int]:
        """Fingerprints the index lacks for one feed that moved from ``covered`` to
        ``state``, and how many index holders that leaves without an entry (stale)."""
        pub = _pub3(publisher)
        if covered is not None and covered.version < state.version:
            digest, parts, removed = covered.digest, [], 0
            for version in range(covered.version + 1, state.version + 1):
                raw = txn.get(pub + U64.pack(version), db=self._deltas_db)
                if raw is None:
                    break
                delta = decode_delta(bytes(raw))
                if delta.prev_digest != digest:
                    break
                digest = delta.digest
                parts.append(self._card_fingerprints(delta.adds.cards))
                removed += len(delta.removes)
            else:
                if digest == state.head.digest:
                    return (np.concatenate(parts) if parts else _EMPTY), removed
        # No provable chain of retained deltas: take the feed's stored entries whole.
        keys = [k[:KEY_LENGTH] for k, _ in self._publisher_items(txn, publisher) if k[-3:] == pub]
        if not keys:
            return _EMPTY, 0
        rows = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(-1, KEY_LENGTH)
        held = self.feeds.get(publisher)
        return key_fingerprints(rows, self.index.width), held.entries if held else 0

    def _card_fingerprints(self, cards: CardColumns) -> NDArray[np.uint32]:
        if len(cards) == 0:
            return _EMPTY
        rows = keys_from_columns(cards.region, cards.middle, cards.serial)
        return key_fingerprints(rows, self.index.width)

    def _maybe_rebuild(self, txn: Any, entries: int) -> None:
        too_stale = self._stale > max(self.stale_floor, self.stale_fraction * entries)
        width = self.index.width
        too_dense = (
            self._fixed_width is None and width < 32 and entries > 1 << (width - SPARSITY_BITS + 1)
        )
        if not (too_stale or too_dense) or self._rebuilding is not None:
            return
        if not self.background:
            self._install(self._build(txn))  # covers exactly this txn's heads
            return
        self._rebuilding = threading.Thread(
            target=self._rebuild_in_background, name="index-rebuild", daemon=True
        )
        self._rebuilding.start()

    def _rebuild_in_background(self) -> None:
        with self.env.begin() as txn:
            self._rebuilt = self._build(txn)

    def wait_for_rebuild(self) -> None:
        """Block until a background rebuild (if any) has finished (tests, shutdown)."""
        thread = self._rebuilding
        if thread is not None:
            thread.join()

    @property
    def stale(self) -> int:
        """Index holders that may have no entry any more (reset by each rebuild)."""
        return self._stale

    # ------------------------------------------------------------------ never writing
    def _refuse(self, *_: object, **__: object) -> Any:
        raise ReadOnlyStore(f"{self.path}: this process follows the store; it does not write")

    apply = apply_delta = apply_snapshot = _refuse
    accept_statements = keep_snapshot = save_index = sweep = _refuse

    def rebuild_index(self, width: int | None = None) -> FingerprintIndex:
        with self.env.begin() as txn:
            built = self._build(txn)
            self._install(built)
            self._catch_up(txn, self.generation_in(txn))
        return self.index

    def close(self, save_index: bool = False) -> None:
        """Never saves the index (the writer owns the file); closes only an own env."""
        self.wait_for_rebuild()
        if self._own_env:
            self.env.close()


def _read_heads(txn: Any, feeds_db: Any) -> dict[str, FeedHead]:
    heads = {}
    for key, raw in txn.cursor(db=feeds_db).iternext():
        pub = f"{int.from_bytes(key, 'big'):06d}"
        heads[pub] = FeedState.unpack(pub, raw).head
    return heads


class FollowingChecker(Checker):
    """A :class:`Checker` over a :class:`StoreFollower` that catches up before each answer.

    ``keys_for`` turns the trust records read from LMDB into the trusted keys (the node's
    config does this, node/config.py); it is called when those records change.
    """

    def __init__(
        self,
        follower: StoreFollower,
        keys: Mapping[bytes, TrustedKey],
        *,
        keys_for: Callable[[list[bytes]], Mapping[bytes, TrustedKey]] | None = None,
        clock: Clock = system_clock,
    ) -> None:
        super().__init__(follower, keys, clock=clock)
        self.follower = follower
        self._keys_for = keys_for
        self._trust_version = follower.trust_version

    def _follow(self) -> Any:
        """Renew this thread's read transaction to the newest snapshot and catch the index
        up to exactly it (another process writes, so only a new snapshot shows its
        commits); the thread's reads then use that transaction until the next call."""
        follower = self.follower
        try:
            txn = follower.renew_txn()
            moved = follower.refresh(txn)
        except lmdb.Error as exc:  # fail closed: no answer from a state not caught up with
            raise CheckUnavailable(f"catching up with the store failed: {exc}") from exc
        follower.adopt_txn()
        if moved and follower.trust_version != self._trust_version:
            self._trust_version = follower.trust_version
            if self._keys_for is not None:
                self.set_keys(self._keys_for(follower.trust.records()))
        return txn

    def _batch_txn(self) -> Any:
        return self._follow()  # the index covers exactly the batch's snapshot

    def psam_denial(self, psam_id: str) -> Entry | None:
        self._follow()
        return super().psam_denial(psam_id)

    def check(self, card_id: str, tries: int = MAX_TRIES) -> CheckResult:
        self._follow()
        return super().check(card_id, tries)
