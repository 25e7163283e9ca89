"""Answering "is this card still valid?" — the hot path of every node.

Like CRLite's query side, this is small and separate from the builder: parse the id, look
the fingerprint up in the in-memory bitmap, and only when it is there read LMDB to confirm.
The answer is one of four statuses, never a bool, and carries the freshness of the feed it
came from.

An entry that lapses (a temporary loss, issue #17) answers REVOKED, with its end time, while
the checker's clock is before the end time and as absent from that second on, whether or not
the sweep has removed it yet: the LMDB read that confirms a hit skips lapsed entries
(:meth:`StoreReader.find_live`). The index keeps a lapsed entry's fingerprint until the
sweep's commit, so the rule "no false negative" is untouched; a stale one costs a read.

Results for the common case (card fine, issuer known) are built once per publisher and
reused until the store changes, so a miss costs a regex, a hash, a bitmap probe and two dict
lookups.

Two rules hold by construction (issue #11 items 9 and 10):

* **Fail closed.** A fingerprint hit is *unconfirmed* until the LMDB read has answered: a
  found entry makes it REVOKED, and only an explicit "no such entry" makes it the feed's
  NOT_REVOKED. A read that raises ends the call with :class:`CheckUnavailable` (an error
  status at the gRPC edge, never an answer), and a batch result refuses to exist while any
  id is still unconfirmed.
* **One snapshot per answer.** The feed version and age an answer reports come from the
  same LMDB read transaction as the entries that confirmed it; a batch takes that
  transaction before it probes the index (fingerprints of a write enter the index before
  its commit, so the index then covers everything the snapshot holds) and runs again if the
  store's in-memory state moved during the call (the writer removes fingerprints only after
  a commit, and bumps ``epoch`` first).

**A hit costs a point read.** The transaction is the thread's long-lived one
(:meth:`StoreReader.current_txn`, renewed when ``epoch`` moves), and the entry is first read
with one ``get`` of the key of the publisher that answers for the card's region
(:meth:`Checker._hit`); feed heads read from one snapshot are kept for as
long as the thread reads that snapshot. Those caches are per thread, like the transaction,
so two threads on two snapshots never mix their answers.

This module is the check path's whole import: the index, the card-id parser, the publisher
directory and LMDB reads (storereader.py), nothing that writes, decodes deltas or verifies
signatures (tests/test_check_wing.py enforces it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import lmdb
import numpy as np
from numpy.typing import NDArray

from blacklist.cardbatch import keys_from_matrix
from blacklist.cardid import KEY_LENGTH, diagnose
from blacklist.checkresult import BatchResult as BatchResult
from blacklist.checkresult import CheckResult as CheckResult
from blacklist.checkresult import CheckStatus as CheckStatus
from blacklist.clock import Clock, system_clock
from blacklist.entry import Entry
from blacklist.errors import CheckUnavailable
from blacklist.fastpath import PROVINCES, IndexState, card_key, probe_in, scan
from blacklist.filters.fingerprint import fingerprint_shift
from blacklist.packed import PackedResult, PackedScan, explain_row, scan_packed
from blacklist.psam import canonical_psam, psam_key
from blacklist.publishers import PublisherDirectory
from blacklist.records import VALUE_LENGTH, FeedState, _pub3, _publisher_text, lapsed_value
from blacklist.storereader import StoreReader

if TYPE_CHECKING:
    from blacklist.signing import TrustedKey

# A batch id whose fingerprint hit is not yet confirmed by LMDB (not a CheckStatus: it must
# never reach an answer; BatchResult refuses it).
UNCONFIRMED = 0
# A batch runs again when the writer moved the index under it; after this many tries (a
# storm of writes) it fails closed rather than answer from a state it cannot pin down.
MAX_TRIES = 8


def _refuse_unconfirmed(statuses: NDArray[np.uint8], hits: list[int]) -> None:
    """No batch answer while one of its fingerprint hits is unconfirmed (fail closed)."""
    left = np.flatnonzero(statuses[hits] == UNCONFIRMED)
    if len(left):
        first = hits[int(left[0])]
        raise CheckUnavailable(f"batch id {first}: its fingerprint hit was never confirmed")


# (width, bitmap) -> (canonical matrix, region codes, fingerprint hits): a batch's front half
Scanner = Callable[[int, Any], tuple[NDArray[np.uint8], NDArray[np.uint32], list[int]]]


class _Snapshot:
    """What one thread has read from one LMDB snapshot: the feed heads and the not-revoked
    answers built from them, reused for every read of that same snapshot."""

    __slots__ = ("answers", "feeds", "id", "resets", "slots", "txn")

    def __init__(self, txn: Any, resets: int) -> None:
        self.txn = txn
        self.id = txn.id()
        self.resets = resets
        self.feeds: dict[str, FeedState | None] = {}
        self.answers: dict[str | None, CheckResult] = {}
        self.slots: tuple[list[CheckResult], NDArray[np.uint8]] | None = None


class _PerThread(threading.local):
    snapshot: _Snapshot | None = None


class Checker:
    def __init__(
        self,
        store: StoreReader,
        keys: Mapping[bytes, TrustedKey],
        *,
        clock: Clock = system_clock,
    ) -> None:
        self._store = store
        self._clock = clock
        self._directory = PublisherDirectory.from_keys(keys)
        self._codes: dict[str, bytes] = {}  # publisher → its u24 code, the key suffix
        self._entries_db = store.entries_db
        self._resets = 0
        self._local = _PerThread()
        self._clear_region_slots()
        self._reset()

    def set_keys(self, keys: Mapping[bytes, TrustedKey]) -> None:
        self._directory = PublisherDirectory.from_keys(keys)
        self._clear_region_slots()
        self._epoch = -1

    def _clear_region_slots(self) -> None:
        # Region code → small publisher slot, for check_many: one numpy gather per batch
        # instead of a sort. It depends only on the keys, so it survives store changes.
        self._region_slot = np.full(1_000_000, -1, dtype=np.int16)
        self._slot_publishers: list[str | None] = []
        self._slot_of: dict[str | None, int] = {}

    def _reset(self) -> None:
        """Forget cached answers after the store or the keys changed."""
        index = self._store.index
        self._bitmap = index.bitmap
        self._width = index.width
        # The fingerprint rule (filters/fingerprint.py): its shift, for the C probe.
        self._shift = fingerprint_shift(index.width)
        self._index: IndexState = (index.bitmap, self._shift)
        self._views: dict[bytes, CheckResult] = {}
        self._resets += 1  # every thread's snapshot caches are stale (see _in_txn)
        self._by_publisher: dict[str | None, CheckResult] = {}
        self._epoch = self._store.epoch

    def _feed_answer(self, publisher: str | None) -> CheckResult:
        cached = self._by_publisher.get(publisher)
        if cached is not None:
            return cached
        if publisher is None:
            answer = CheckResult(CheckStatus.UNKNOWN_ISSUER, None, 0, None, None, self._clock)
        else:
            feed = self._store.feeds.get(publisher)
            if feed is None:
                answer = CheckResult(CheckStatus.NO_DATA, publisher, 0, None, None, self._clock)
            else:
                answer = self._fresh(CheckStatus.NOT_REVOKED, feed, None)
        self._by_publisher[publisher] = answer
        return answer

    def _fresh(self, status: CheckStatus, feed: FeedState, entry: Entry | None) -> CheckResult:
        return CheckResult(
            status, feed.publisher, feed.version, float(feed.checked_at), entry, self._clock
        )

    def _view(self, region: bytes) -> CheckResult:
        publisher = self._directory.publisher_of(region.decode("ascii"))
        self._learn_code(publisher)
        answer = self._feed_answer(publisher)
        self._views[region] = answer
        return answer

    def _learn_code(self, publisher: str | None) -> None:
        """Remember a publisher's u24 code, the suffix of its entries' keys (a hit's point
        get reads ``card key + code``); None, for no publisher, stays unknown."""
        if publisher is not None and publisher not in self._codes:
            self._codes[publisher] = _pub3(publisher)

    # ------------------------------------------------------------------ one snapshot
    def _in_txn(self, txn: Any) -> _Snapshot:
        """Start answering from read transaction ``txn``. LMDB names a read transaction's
        snapshot by the write transaction it sees (``mdb_txn_id``), so the feed heads and
        answers read from one snapshot are reused for every later read of the same one, by
        this thread (another thread may be on another snapshot)."""
        snap = self._local.snapshot
        if snap is not None and snap.txn is txn and snap.resets == self._resets:
            return snap
        if snap is None or snap.resets != self._resets or snap.id != txn.id():
            snap = self._local.snapshot = _Snapshot(txn, self._resets)
        snap.txn = txn
        return snap

    def _feed_in(self, snap: _Snapshot, publisher: str) -> FeedState | None:
        try:
            return snap.feeds[publisher]
        except KeyError:
            feed = snap.feeds[publisher] = self._store.feed_in(snap.txn, publisher)
            return feed

    def _answer_in(self, snap: _Snapshot, publisher: str | None) -> CheckResult:
        """The not-revoked answer for ``publisher``'s cards as of ``snap``."""
        cached = snap.answers.get(publisher)
        if cached is not None:
            return cached
        feed = self._feed_in(snap, publisher) if publisher is not None else None
        if publisher is None:
            answer = CheckResult(CheckStatus.UNKNOWN_ISSUER, None, 0, None, None, self._clock)
        elif feed is None:
            answer = CheckResult(CheckStatus.NO_DATA, publisher, 0, None, None, self._clock)
        else:
            answer = self._fresh(CheckStatus.NOT_REVOKED, feed, None)
        snap.answers[publisher] = answer
        return answer

    def _slot_answers_in(self, snap: _Snapshot) -> tuple[list[CheckResult], NDArray[np.uint8]]:
        """Every publisher slot's answer as of ``snap``, and their statuses (check_many)."""
        slots = snap.slots
        if slots is None or len(slots[0]) != len(self._slot_publishers):
            answers = [self._answer_in(snap, p) for p in self._slot_publishers]
            slots = snap.slots = (answers, np.array([a.status for a in answers], np.uint8))
        return slots

    def _hit(
        self, txn: Any, snap: _Snapshot, key: bytes, publisher: str | None, canon: bytes
    ) -> CheckResult | None:
        """The REVOKED answer for a fingerprint hit on 18-byte card ``key`` as of ``txn``, or
        None when LMDB refutes it. First one point ``get`` of the key of the publisher that
        answers for the card's region; only when that publisher holds no live entry — a
        false positive, or another publisher's entry under overlapping scopes — a walk of
        the card's key range (StoreReader.find_live), so no publisher's entry is missed."""
        code = self._codes.get(publisher) if publisher is not None else None
        if code is not None:
            stored = key + code
            value = txn.get(stored, None, self._entries_db)  # positional: keywords cost
            if value is not None and (
                len(value) == VALUE_LENGTH or not lapsed_value(value, self._clock())
            ):
                return self._revoked(snap, publisher, stored, value, canon)
        found = self._store.find_live(key, txn, self._clock())
        if found is None:
            return None
        return self._revoked(snap, _publisher_text(found[0][KEY_LENGTH:]), *found, canon)

    def _revoked(
        self, snap: _Snapshot, publisher: str | None, key: bytes, value: bytes, canon: bytes
    ) -> CheckResult:
        """The REVOKED answer for a stored entry, with the feed version of the same snapshot;
        the entry itself is decoded only when asked for (CheckResult.entry)."""
        assert publisher is not None  # an entry's key always ends with a publisher
        try:
            feed = snap.feeds[publisher]
        except KeyError:
            feed = self._feed_in(snap, publisher)
        raw = (key, value, canon)
        if feed is None:  # entries exist only under a feed; be safe rather than crash
            return CheckResult(CheckStatus.REVOKED, publisher, 0, None, None, self._clock, raw)
        return CheckResult(
            CheckStatus.REVOKED,
            publisher,
            feed.head.version,
            feed.checked_at,
            None,
            self._clock,
            raw,
        )

    def _batch_txn(self) -> Any:
        """The read transaction a batch answers from, taken before it probes the index: the
        thread's long-lived one. A follower renews it and catches its index up to exactly
        that snapshot first (blacklist/follower.py); the writer's own index needs nothing."""
        return self._store.current_txn()

    def psam_denial(self, psam_id: str) -> Entry | None:
        """The deny entry of a PSAM, or None if it may be used (DESIGN §6: a terminal
        presenting a denied PSAM is refused). Raises PsamIdError for a malformed id."""
        return self._store.psams.lookup(psam_key(canonical_psam(psam_id)))

    def check(self, card_id: str, tries: int = MAX_TRIES) -> CheckResult:
        """The status of one card. Raises CardIdError for a malformed id, CheckUnavailable
        when it cannot be confirmed."""
        store = self._store
        if self._epoch != store.epoch:
            self._reset()
        epoch = self._epoch
        # One C call validates, canonicalises, hashes, probes the index and finds the
        # region's cached answer.
        view: CheckResult | None
        try:
            view, canon, hit = probe_in(card_id, self._views, PROVINCES, self._index)
        except ValueError:  # malformed: the message does not depend on the path that ran
            raise diagnose(card_id) from None
        if view is None:
            view = self._view(canon[:6])
        if hit:
            return self._confirm(canon, view.publisher)
        # A miss is the cached answer, as of the feeds the index covered all along; unless
        # the writer removed fingerprints meanwhile (it bumps epoch first): ask again.
        if store.epoch == epoch:
            return view
        if tries <= 1:
            raise CheckUnavailable(f"the store changed under {MAX_TRIES} tries to check a card")
        return self.check(card_id, tries - 1)

    def _confirm(self, canon: bytes, publisher: str | None) -> CheckResult:
        """A fingerprint hit, settled by LMDB in the thread's read transaction, which also
        gives the feed version reported."""
        try:
            txn = self._store.current_txn()
            snap = self._in_txn(txn)
            found = self._hit(txn, snap, card_key(canon), publisher, canon)
        except lmdb.Error as exc:
            raise CheckUnavailable(f"confirming a fingerprint hit in LMDB failed: {exc}") from exc
        return found if found is not None else self._answer_in(snap, publisher)

    def check_many(self, card_ids: Sequence[str]) -> BatchResult:
        """Statuses of many cards at once: parsing and hashing are vectorised over the batch,
        and only bitmap hits cost per-card work. Raises CardIdError naming the first bad id,
        CheckUnavailable when the batch cannot be confirmed."""
        return self._batch(lambda width, bitmap: scan(card_ids, width, bitmap))

    def check_packed(self, packed: bytes) -> PackedResult:
        """Statuses of a packed batch (``len(packed)`` a multiple of 32; blacklist/packed.py):
        parsed, hashed and probed in one C pass. A malformed id does not fail the batch: it
        is reported with its cause, and the others are answered. Raises CheckUnavailable
        when the batch cannot be confirmed."""
        scans: list[PackedScan] = []

        def scanner(width: int, bitmap: Any) -> tuple[Any, Any, list[int]]:
            scans.append(found := scan_packed(packed, width, bitmap))
            return found.matrix, found.regions, found.hits

        batch = self._batch(scanner)
        found = scans[-1]
        malformed = {i: explain_row(packed[32 * i : 32 * i + 32], i) for i in found.bad}
        return PackedResult(batch, found.positions(), malformed)

    def _batch(self, scanner: Scanner) -> BatchResult:
        for _ in range(MAX_TRIES):
            try:
                txn = self._batch_txn()
                if self._epoch != self._store.epoch:
                    self._reset()
                epoch = self._epoch
                result = self._check_many_in(txn, scanner)
            except lmdb.Error as exc:
                raise CheckUnavailable(
                    f"reading a batch's entries from LMDB failed: {exc}"
                ) from exc
            if self._store.epoch == epoch:
                return result
        raise CheckUnavailable(f"the store changed under {MAX_TRIES} tries to check a batch")

    def _check_many_in(self, txn: Any, scanner: Scanner) -> BatchResult:
        snap = self._in_txn(txn)
        matrix, regions, hits = scanner(self._width, self._bitmap)
        feed_of = self._slots(regions)
        feeds, slot_status = self._slot_answers_in(snap)
        statuses = slot_status[feed_of]
        revoked: dict[int, CheckResult] = {}
        if hits:
            # Every hit is unconfirmed until LMDB has answered for it, one way or the other.
            base = statuses[hits]
            statuses[hits] = UNCONFIRMED
            keys = keys_from_matrix(matrix[hits]).tobytes()
            for n, i in enumerate(hits):
                publisher = feeds[int(feed_of[i])].publisher
                key = keys[18 * n : 18 * n + 18]
                found = self._hit(txn, snap, key, publisher, matrix[i].tobytes())
                if found is not None:
                    revoked[i] = found
                    statuses[i] = CheckStatus.REVOKED
                else:  # LMDB refutes the fingerprint: the feed's own answer
                    statuses[i] = base[n]
            _refuse_unconfirmed(statuses, hits)
        return BatchResult(statuses, feed_of, feeds, revoked)

    def _slots(self, codes: NDArray[np.uint32]) -> NDArray[np.intp]:
        slots = self._region_slot[codes]
        if (slots < 0).any():
            for code in np.unique(codes[slots < 0]).tolist():
                publisher = self._directory.publisher_of(f"{code:06d}")
                slot = self._slot_of.get(publisher)
                self._learn_code(publisher)
                if slot is None:
                    slot = self._slot_of[publisher] = len(self._slot_publishers)
                    self._slot_publishers.append(publisher)
                self._region_slot[code] = slot
            slots = self._region_slot[codes]
        return slots.astype(np.intp)
