"""The edge replica (DESIGN §6a): a node's follower embedded in a gateway's process.

It follows one of its ``upstreams`` (a city, a province or any replica; failing over down
the list) over the Sync API as a read-only child (blacklist/edge/child.py, the code a
node syncs with) and keeps its own LMDB store. Every delta, snapshot and head statement is
verified by the store's own acceptance (``RevocationStore.apply`` and
``accept_statements``: blacklist/sync/accept.py, ingest.py, freshness.py) against keys
built from the pinned root and the certificates that arrived in feeds, exactly as at a
node: the upstream is never trusted, and a refused item changes nothing.

Checks (:meth:`EdgeReplica.check`, :meth:`check_many`) run in the caller's thread, with no
network: the checker of blacklist/checker.py over the replica's store, one per calling
thread (its caches are not shared), so any number of threads may check at once while the
writer applies. When the link is lost the replica answers from its store with a feed age
that grows; ``max_feed_age`` turns answers older than that into STALE
(blacklist/edge/answer.py). A restart opens the store (and its saved index) and answers at
once, then resumes by deltas, or by snapshot when its upstream cannot prove continuity.

Threads: the caller's (checks), one writer (every LMDB write transaction; py-lmdb: a write
transaction stays on its thread), and one sync thread running an asyncio loop (gRPC).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from blacklist.certs import Certificate, KeyRevocation
from blacklist.checker import Checker, CheckResult
from blacklist.clock import Clock, system_clock
from blacklist.delta import FeedHead
from blacklist.edge.answer import NEVER, EdgeAnswer, EdgeBatch, StalePolicy, answer_of, batch_of
from blacklist.edge.child import ChildSync, follow, forever, hold, open_channel
from blacklist.edge.settings import EdgeCounters, EdgeTls
from blacklist.rejections import DeltaRejected
from blacklist.signing import Keyring, TrustedKey
from blacklist.store import FeedState, RevocationStore
from blacklist.sync.budget import TransferLimits, chunk_payload_limit
from blacklist.sync.chunks import SnapshotCorrupt, SnapshotTooLarge, assemble
from blacklist.sync.freshness import DEFAULT_MAX_SKEW, StatementRejected, decode_statement
from blacklist.sync.ingest import Outcome, outcome_of
from blacklist.trust import TrustAnchor
from blacklist.trustmaterial import TrustMaterial
from node.gen.blacklist.v1 import sync_pb2_grpc

log = logging.getLogger("blacklist.edge")
DEFAULT_MAP_SIZE = 64 << 30  # address space only: LMDB grows the file as it fills
ANSWER_CACHE = 4096  # fresh answers kept per feed answer object (see check)


class EdgeReplica:
    def __init__(
        self,
        store: RevocationStore,
        trust: TrustMaterial,
        upstreams: Sequence[str],
        *,
        credentials: Any = None,
        max_feed_age: float | None = None,
        sync_interval: float = 5.0,
        subscribe: bool = True,
        limits: TransferLimits | None = None,
        clock: Clock = system_clock,
        max_skew: int = DEFAULT_MAX_SKEW,
        trust_refresh_interval: float = 60.0,
    ) -> None:
        if not upstreams:
            raise ValueError("an edge replica needs at least one upstream (host:port)")
        self.store = store
        self.policy = StalePolicy(max_feed_age)
        self.counters = EdgeCounters()
        self.upstreams = list(upstreams)
        self.connected_to: str | None = None
        self._trust = trust
        self._credentials = credentials
        self._interval = sync_interval
        self._subscribe = subscribe
        self._limits = limits or TransferLimits()
        self._clock = clock
        self._max_skew = max_skew
        self._refresh = trust_refresh_interval
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-writer")
        self._seen_trust = store.trust.changes
        self.keys: Mapping[bytes, TrustedKey] = self._build_keys()
        self._local = threading.local()  # this thread's Checker (replaced when keys change)
        self._answers: dict[CheckResult, EdgeAnswer] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._synced = threading.Event()

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str],
        *,
        upstreams: Sequence[str],
        trust_anchor: TrustAnchor | None = None,
        certificate_chains: Iterable[Sequence[Certificate]] = (),
        key_revocations: Iterable[KeyRevocation] = (),
        trusted_keys: Iterable[TrustedKey] | None = None,
        tls: EdgeTls | None = None,
        max_feed_age: float | None = None,
        map_size: int = DEFAULT_MAP_SIZE,
        retain_deltas: int = 16,
        start: bool = True,
        **options: Any,
    ) -> EdgeReplica:
        """Open (or create) the replica's store in ``data_dir`` and start following.

        Trust: the pinned ministry root ``trust_anchor`` (with any configured
        ``certificate_chains`` and ``key_revocations``; the rest arrive in feeds), or bare
        ``trusted_keys`` (tests and plaintext demos). ``tls``: mutual TLS to the upstream.
        ``options`` go to the constructor (sync_interval, subscribe, limits, clock, ...).
        """
        if (trust_anchor is None) == (trusted_keys is None):
            raise ValueError("give the pinned trust_anchor, or trusted_keys, not both")
        material = (
            TrustMaterial(
                anchor=trust_anchor,
                chains=tuple(tuple(c) for c in certificate_chains),
                revocations=tuple(key_revocations),
            )
            if trust_anchor is not None
            else TrustMaterial(bare=Keyring(trusted_keys or ()))
        )
        clock = options.get("clock", system_clock)
        store = RevocationStore(
            data_dir, clock=clock, map_size=map_size, retain_deltas=retain_deltas
        )
        try:
            replica = cls(
                store,
                material,
                upstreams,
                credentials=tls.credentials() if tls is not None else None,
                max_feed_age=max_feed_age,
                **options,
            )
        except BaseException:
            store.close()
            raise
        if start:
            replica.start()
        return replica

    def start(self) -> None:
        """Start following the upstreams on the sync thread."""
        if self._thread is not None:
            raise RuntimeError("the replica is already following")
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(started,), name="edge-sync", daemon=True
        )
        self._thread.start()
        started.wait()

    def close(self) -> None:
        """Stop following, finish the write under way, close the store (saving the index)."""
        if self._thread is not None and self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(30)
        self._thread = None
        self._writer.shutdown(wait=True)
        self.store.close()

    def __enter__(self) -> EdgeReplica:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ checking
    def checker(self) -> Checker:
        """The calling thread's Checker over the replica's store, with the current keys
        (the four-way answers without the STALE policy; PSAM denials)."""
        local = self._local
        checker: Checker | None = getattr(local, "checker", None)
        if checker is None:
            checker = local.checker = Checker(self.store, self.keys, clock=self._clock)
        return checker

    def check(self, card_id: str) -> EdgeAnswer:
        """The status of one card, from this replica's store alone (no network). Raises
        CardIdError for a malformed id, CheckUnavailable when it cannot be confirmed."""
        try:
            checker = self._local.checker
        except AttributeError:
            checker = self.checker()
        result = checker.check(card_id)
        # A feed's "not revoked" answer is one object until the store moves: its wrapper
        # is built once and reused while it holds (a miss costs a dict lookup, and the
        # clock only under a max_feed_age policy: NEVER is one object, compared by identity).
        cached = self._answers.get(result)
        if cached is not None:
            until = cached.good_until
            if until is NEVER or self._clock() <= until:
                return cached
        answer = answer_of(result, self.policy, self._clock())
        if result.entry is None:
            if len(self._answers) >= ANSWER_CACHE:
                self._answers = {}
            self._answers[result] = answer
        return answer

    def check_many(self, card_ids: Sequence[str]) -> EdgeBatch:
        """Statuses of many cards at once (vectorised; see Checker.check_many)."""
        return batch_of(self.checker().check_many(card_ids), self.policy, self._clock())

    # ------------------------------------------------------------------ state
    @property
    def clock(self) -> Clock:
        return self._clock

    def feeds(self) -> dict[str, FeedState]:
        return dict(self.store.feeds)

    def feed_age(self, publisher: str) -> float | None:
        """Seconds since the newest signed time this copy of the feed satisfies."""
        feed = self.store.feeds.get(publisher)
        return None if feed is None else max(0.0, self._clock() - feed.checked_at)

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Block until the first complete pull from some upstream (True), or timeout."""
        return self._synced.wait(timeout)

    # ------------------------------------------------------------------ trust
    def _build_keys(self) -> Mapping[bytes, TrustedKey]:
        return self._trust.keys(self.store.trust.records(), int(self._clock()))

    def _refresh_keys(self, force: bool = False) -> None:
        """On the writer thread: new keys when new trust records landed (or ``force``:
        validity times move with the clock); checkers pick them up at their next call."""
        changes = self.store.trust.changes
        if not force and changes == self._seen_trust:
            return
        self._seen_trust = changes
        self.keys = self._build_keys()
        self._local = threading.local()
        self._answers = {}

    # ------------------------------------------------------------------ on the writer thread
    def _apply_sync(self, data: bytes) -> None:
        try:
            self.store.apply(data, self.keys)
        finally:
            self._refresh_keys()

    def _accept_sync(self, statements: list[Any]) -> list[Any]:
        return self.store.accept_statements(statements, self.keys, self._clock(), self._max_skew)

    def _housekeeping(self) -> None:
        self._refresh_keys(force=True)
        self.store.sweep_all()  # lapsed entries (issue #17); checks skip them meanwhile

    # ------------------------------------------------------------------ the sync thread
    def _run(self, started: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._stopped = asyncio.Event()
        started.set()
        try:
            loop.run_until_complete(self._main(self._stopped))
        finally:
            loop.close()

    async def _main(self, stopped: asyncio.Event) -> None:
        follower = _Follower(self)
        self._child = ChildSync(
            follower,
            node="edge",
            limits=self._limits,
            interval=self._interval,
            gap=follower.gap,
            after_pull=self._after_pull,
        )
        await hold(
            stopped,
            follow(self.upstreams, self._session, stopped, ended=self._ended),
            self._timer(stopped),
        )

    async def _timer(self, stopped: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), self._refresh)
            try:
                await loop.run_in_executor(self._writer, self._housekeeping)
            except Exception:  # a store failure: next time, never a dead loop
                log.exception("refreshing keys or sweeping lapsed entries failed")

    async def _session(self, upstream: str) -> None:
        async with open_channel(upstream, self._credentials, self._limits.max_message_bytes) as ch:
            stub = sync_pb2_grpc.SyncStub(ch)  # type: ignore[no-untyped-call]
            await self._child.pull(stub)
            log.info("edge replica following %s", upstream)
            self.connected_to = upstream
            self.counters.sessions += 1
            assert self._stopped is not None
            await hold(
                self._stopped,
                self._child.subscribe(stub) if self._subscribe else forever(),
                self._child.pull_loop(stub),
            )

    def _ended(self, upstream: str) -> None:
        self.connected_to = None

    async def _after_pull(self, stub: Any, response: Any) -> None:
        self.counters.last_pull = self._clock()
        self._synced.set()


class _Follower:
    """The replica's store as the child's follower (blacklist/edge/child.py Follower)."""

    def __init__(self, replica: EdgeReplica) -> None:
        self._replica = replica
        self._store = replica.store
        self._counters = replica.counters
        self.gap = asyncio.Event()

    def heads(self) -> dict[str, FeedHead]:
        return self._store.heads()

    def head(self, publisher: str) -> FeedHead:
        return self._store.head(publisher)

    async def _write(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._replica._writer, fn, *args)

    async def apply(self, data: bytes) -> None:
        try:
            await self._write(self._replica._apply_sync, data)
        except DeltaRejected as exc:
            outcome = outcome_of(exc)
            self._counters.deltas[outcome.value] += 1
            if outcome is Outcome.REJECTED:
                self._counters.rejected[exc.cause] += 1
                log.warning("refused a delta from the upstream: %s: %s", exc.cause, exc)
            elif outcome is Outcome.BEHIND:
                self.gap.set()
            else:
                return  # a copy of what is held, or older: nothing to do
            raise
        self._counters.deltas[Outcome.APPLIED.value] += 1

    async def accept_statements(self, statements: list[bytes]) -> None:
        decoded = []
        for data in statements:
            if self._store.statements.holds(data):
                self._counters.statements["duplicate"] += 1
                continue
            try:
                decoded.append(decode_statement(data))
            except StatementRejected as exc:
                self._counters.statements[exc.cause] += 1
        if not decoded:
            return
        for result in await self._write(self._replica._accept_sync, decoded):
            if result.rejection is not None:
                self._counters.statements[result.rejection.cause] += 1
                log.info("refused a head statement: %s", result.rejection)
            else:
                self._counters.statements["duplicate" if result.duplicate else "accepted"] += 1

    async def receive_snapshot(self, parts: AsyncIterator[Any]) -> bytes:
        limits = self._replica._limits
        try:
            return await assemble(
                parts,
                max_total=limits.max_snapshot_bytes,
                max_chunk=chunk_payload_limit(limits.max_message_bytes),
            )
        except SnapshotTooLarge:
            self._counters.snapshots["too_large"] += 1
            raise
        except SnapshotCorrupt:
            self._counters.snapshots["corrupt"] += 1
            raise

    def received(self, nbytes: int, what: str) -> None:
        self._counters.received_bytes[what] += nbytes

    def snapshot_applied(self, ok: bool) -> None:
        self._counters.snapshots["ok" if ok else "rejected"] += 1

    def too_large(self, publisher: str, version: int) -> None:
        log.warning(
            "%s v%d is too large for an answer: waiting for its snapshot", publisher, version
        )
