"""One simulated node: a real store, the node's decisions, a simulated transport.

What the node does (``node/ingest.py``, ``node/sync_client.py``, ``node/sync_service.py``,
``node/head_signer.py``) is done here in the same order with the same library calls;
only the awaits became callbacks on the virtual clock:

* **ingest** (the hub): ``store.apply`` (acceptance, :func:`accept_signed`) and
  :func:`outcome_of`; an applied delta goes to every subscriber and, unless it came from
  the upstream, up; BEHIND pulls now; REJECTED is counted by cause.
* **serving children**: GetUpdates answers with :func:`plan_updates`, filled to the
  child's limit by :func:`fill_updates`, with every head statement held; Subscribe
  registers the child's session; pushes up are ingested as a child's.
* **the session** to the first upstream that answers (failing over down the list): pull,
  subscribe, pull every ``sync_interval`` and on a gap, push up the uplink queue and
  what :func:`plan_push` finds the upstream lacks; a timeout, a refused call or a broken
  stream ends it, and the next starts after the node's exponential backoff with jitter.
* **the authority**: publishes through :class:`~blacklist.authority.Authority` (its own
  delta through acceptance too), signs a head statement every ``statement_interval`` and
  after each publication.

A crash closes LMDB without saving the index (what ``kill -9`` leaves) and forgets every
queue, session and subscriber; what was committed stays, and a restart reopens the same
directory (the real recovery path: the index is rebuilt when its file is older).
"""

from __future__ import annotations

import contextlib
import enum
import random
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from blacklist.authority import Authority, Revocation
from blacklist.checker import Checker
from blacklist.delta import Delta, FeedHead, Kind
from blacklist.rejections import DeltaRejected
from blacklist.signing import SigningKey, TrustedKey
from blacklist.sim.events import Scheduler, Timer
from blacklist.sim.messages import (
    Event,
    GetSnapshot,
    GetUpdates,
    Message,
    PushDeltas,
    PushSnapshot,
    PushStatements,
    Refused,
    SnapshotData,
    StreamEnd,
    Subscribe,
    Updates,
)
from blacklist.sim.serving import answer_updates, decoded_statement, kind_and_publisher
from blacklist.store import RevocationStore
from blacklist.sync.budget import plan_push_batches
from blacklist.sync.freshness import (
    DEFAULT_MAX_SKEW,
    TAMPERING_CAUSES,
    HeadStatement,
    StatementRejected,
    plan_statement_push,
)
from blacklist.sync.ingest import Outcome, outcome_of
from blacklist.sync.plan import SendSnapshot, plan_push

BACKOFF_START = 0.2  # node/sync_client.py
BACKOFF_MAX = 10.0
UPLINK_BATCH = 100


class Died(Exception):
    """The node was killed in the middle of handling a message (see ``die_after_commit``)."""


class Source(enum.Enum):
    UPSTREAM = "upstream"
    CHILD = "child"
    LOCAL = "local"


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """The node's sync settings (node/config.py names), as the simulation sets them."""

    sync_interval: float = 5.0
    statement_interval: float = 60.0
    statement_after_publish: bool = True
    first_statement: float = 0.0  # seconds after start (the node signs one at once)
    request_timeout: float = 30.0
    retain_deltas: int = 1000
    max_message_bytes: int = 16 << 20
    map_size: int = 64 << 20


class Host(Protocol):
    """What a node needs of the simulated world."""

    scheduler: Scheduler

    @property
    def keys(self) -> Mapping[bytes, TrustedKey]: ...

    def send(self, src: str, dst: str, message: Message, *, request: bool = False) -> None: ...

    def applied(
        self, node: str, publisher: str, before: int, after: int, snapshot: bool
    ) -> None: ...

    def refused(self, node: str, outcome: Outcome, cause: str, data: bytes) -> None: ...


@dataclass(slots=True)
class Session:
    id: int
    upstream: str
    connected: bool = False
    pulling: bool = False
    pull_again: bool = False
    snapshots_waiting: int = 0
    behind: bool = False
    before: dict[str, FeedHead] | None = None
    timeout: Timer | None = None
    pull_timer: Timer | None = None
    calls: dict[int, str] = field(default_factory=dict)  # calls not answered yet → what

    def answered(self, request: int) -> bool:
        """Whether an answer is for a call of this session still waiting (and forget it)."""
        return self.calls.pop(request, None) is not None


class SimNode:
    def __init__(
        self,
        host: Host,
        code: str,
        tier: str,
        upstreams: Sequence[str],
        key: SigningKey | None,
        path: Path,
        config: NodeConfig,
        rng: random.Random,
    ) -> None:
        self.host = host
        self.code = code
        self.tier = tier
        self.upstreams = list(upstreams)
        self.key = key
        self.path = path
        self.config = config
        self.rng = rng
        self.store: RevocationStore | None = None
        self.authority: Authority | None = None
        self.checker: Checker | None = None
        self.up = False
        self.incarnation = 0
        self.session: Session | None = None
        self._sessions = 0
        self._calls = 0
        self._attempt = 0
        self._upstream_index = 0
        self.subscribers: dict[str, int] = {}  # child → its session id
        self.uplink: list[bytes] = []
        self.statements_up: dict[str, HeadStatement] = {}
        self._statement_timer: Timer | None = None
        self.snapshots_received = 0
        # Killed right after its next commit, before sending anything on: the window in
        # which a relay holds what its children and upstream have not seen.
        self.die_after_commit = False
        self.snapshots_sent = 0
        self.pulls = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Open the store (the same directory after a crash) and start syncing."""
        if self.up:
            return
        self.incarnation += 1
        sched = self.host.scheduler
        self.store = RevocationStore(
            self.path,
            clock=sched.clock,
            map_size=self.config.map_size,
            retain_deltas=self.config.retain_deltas,
        )
        self.checker = Checker(self.store, self.host.keys, clock=sched.clock)
        if self.key is not None:
            self.authority = Authority(self.store, self.key, self.host.keys, clock=sched.clock)
            self._schedule_statement(self.config.first_statement)
        self.up = True
        if self.upstreams:
            self._connect()

    def crash(self, *, clean: bool = False) -> None:
        """Stop the process: ``clean`` is SIGTERM (the index saved), else ``kill -9``.
        Queues, sessions and subscribers are lost; committed LMDB state is not."""
        if not self.up:
            return
        assert self.store is not None
        self.up = False
        self.incarnation += 1
        for child, session in sorted(self.subscribers.items()):
            self.host.send(self.code, child, StreamEnd(session))
        self.subscribers.clear()
        self.uplink.clear()
        self.statements_up.clear()
        self._end_session()
        if self._statement_timer is not None:
            self._statement_timer.cancel()
        self.store.close(save_index=clean)
        self.store = self.authority = self.checker = None

    def wipe(self) -> None:
        """Lose the data directory (a new disk): the next start bootstraps from empty."""
        if self.up:
            raise RuntimeError(f"node {self.code} must be stopped before its data is wiped")
        shutil.rmtree(self.path, ignore_errors=True)

    def _later(self, delay: float, fn: object, *args: object) -> Timer:
        incarnation = self.incarnation

        def run() -> None:
            if self.incarnation == incarnation and self.up:
                fn(*args)  # type: ignore[operator]

        return self.host.scheduler.after(delay, run)

    # ------------------------------------------------------------------ ingest (the hub)
    def ingest(self, data: bytes, source: Source) -> Outcome:
        assert self.store is not None
        kind, publisher = kind_and_publisher(data)
        before = self.store.head(publisher).version if publisher else 0
        try:
            result = self.store.apply(data, self.host.keys)
        except DeltaRejected as exc:
            outcome = outcome_of(exc)
            self.host.refused(self.code, outcome, exc.cause, data)
            if outcome is Outcome.BEHIND:
                self.pull()
            return outcome
        self.host.applied(
            self.code, result.publisher, before, result.version, kind is Kind.SNAPSHOT
        )
        if self.die_after_commit:
            self.die_after_commit = False
            self.crash()
            raise Died(self.code)
        if kind is Kind.DELTA:
            self.fan_out(data, source)
        return Outcome.APPLIED

    def fan_out(self, data: bytes, source: Source) -> None:
        for child, session in list(self.subscribers.items()):
            self.host.send(self.code, child, Event(session, delta=data))
        if source is not Source.UPSTREAM and self.upstreams:
            self.uplink.append(data)
            self._flush_uplink()

    def accept_statements(self, items: Sequence[bytes], source: Source) -> None:
        assert self.store is not None
        statements = []
        for item in items:
            if self.store.statements.holds(item):
                continue
            try:
                statements.append(decoded_statement(item))
            except StatementRejected as exc:
                self.host.refused(self.code, Outcome.REJECTED, exc.cause, item)
        if not statements:
            return
        results = self.store.accept_statements(
            statements, self.host.keys, self.host.scheduler.now, DEFAULT_MAX_SKEW
        )
        for r in results:
            if r.rejection is not None:
                # A late copy or a clock ahead is ordinary; only the tampering causes alarm
                # (node/ingest.py logs those as warnings).
                cause = r.rejection.cause
                outcome = Outcome.REJECTED if cause in TAMPERING_CAUSES else Outcome.STALE
                self.host.refused(self.code, outcome, cause, r.statement.to_bytes())
            elif not r.duplicate:
                data = r.statement.to_bytes()
                for child, session in list(self.subscribers.items()):
                    self.host.send(self.code, child, Event(session, statement=data))
                if source is not Source.UPSTREAM and self.upstreams:
                    self.statements_up[r.statement.publisher] = r.statement
        self._flush_statements()

    # ------------------------------------------------------------------ the authority
    def publish(
        self, revocations: Sequence[Revocation], reinstatements: Sequence[str]
    ) -> Delta | None:
        """The Admin call: sign and apply the next delta, send it on, keep a snapshot if the
        policy asks, then sign a head statement."""
        if not self.up or self.authority is None:
            return None
        delta, _ = self.authority.publish(revocations, reinstatements, snapshot=False)
        if delta is None:
            return None
        if self.die_after_commit:  # signed and committed here, sent nowhere yet
            self.die_after_commit = False
            self.crash()
            return delta
        self.fan_out(delta.to_bytes(), Source.LOCAL)
        self.authority.maybe_snapshot()
        if self.config.statement_after_publish:
            self._schedule_statement(0.0)
        return delta

    def _schedule_statement(self, delay: float) -> None:
        if self._statement_timer is not None:
            self._statement_timer.cancel()
        self._statement_timer = self._later(delay, self._sign_statement)

    def _sign_statement(self) -> None:
        assert self.authority is not None
        self.accept_statements([self.authority.head_statement().to_bytes()], Source.LOCAL)
        self._schedule_statement(self.config.statement_interval)

    # ------------------------------------------------------------------ the session
    def _connect(self) -> None:
        self._sessions += 1
        upstream = self.upstreams[self._upstream_index % len(self.upstreams)]
        self.session = Session(self._sessions, upstream)
        self.pull()

    def _end_session(self) -> None:
        s = self.session
        if s is None:
            return
        for timer in (s.timeout, s.pull_timer):
            if timer is not None:
                timer.cancel()
        self.session = None

    def _fail(self, session: int) -> None:
        s = self.session
        if s is None or s.id != session:
            return
        self._end_session()
        self._upstream_index += 1  # fail over to the next upstream
        self._attempt += 1
        delay = min(BACKOFF_MAX, BACKOFF_START * 2 ** min(self._attempt, 10))
        self._later(delay * self.rng.uniform(0.5, 1.5), self._connect)

    def _call_id(self, what: str) -> int:
        s = self.session
        assert s is not None
        self._calls += 1
        s.calls[self._calls] = what
        return self._calls

    def _request(self, message: GetUpdates | GetSnapshot) -> None:
        s = self.session
        assert s is not None
        if s.timeout is not None:
            s.timeout.cancel()
        s.timeout = self._later(self.config.request_timeout, self._fail, s.id)
        self.host.send(self.code, s.upstream, message, request=True)

    def pull(self) -> None:
        """GetUpdates now (or as soon as the round in flight is done)."""
        s = self.session
        if s is None or not self.up:
            return
        if s.pulling:
            s.pull_again = True
            return
        assert self.store is not None
        s.pulling, s.pull_again, s.behind = True, False, False
        s.before = self.store.heads()
        self.pulls += 1
        self._request(GetUpdates(s.id, s.before, self.code, self._call_id("GetUpdates")))

    def _on_updates(self, src: str, m: Updates) -> None:
        s = self.session
        if s is None or s.id != m.session or src != s.upstream or not s.answered(m.request):
            return
        assert self.store is not None
        if s.timeout is not None:
            s.timeout.cancel()
            s.timeout = None
        first = not s.connected
        for update in m.updates:
            if update.take_snapshot:
                s.snapshots_waiting += 1
                call = self._call_id("GetSnapshot")
                self._request(GetSnapshot(s.id, update.publisher, call))
            for data in update.deltas:
                self.ingest(data, Source.UPSTREAM)
            if self.store.head(update.publisher).version < update.upstream_version:
                s.behind = True
        self.accept_statements(m.statements, Source.UPSTREAM)
        theirs = {}
        for data in m.statements:
            try:
                st = decoded_statement(data)
            except StatementRejected:
                continue
            theirs[st.publisher] = st
        missing = plan_statement_push(self.store.statements.all(), theirs)
        if missing:
            self.host.send(
                self.code, s.upstream, PushStatements(self.code, [x.to_bytes() for x in missing])
            )
        self._push(dict(m.heads))
        if first:
            s.connected = True
            self._attempt = 0
            self.host.send(self.code, s.upstream, Subscribe(s.id, self.code))
            self._flush_uplink()
            self._flush_statements()
        if s.snapshots_waiting == 0:
            self._pull_done()

    def _on_snapshot(self, m: SnapshotData) -> None:
        s = self.session
        if s is None or s.id != m.session or not s.answered(m.request):
            return
        if m.data is None:
            self._fail(s.id)  # NOT_FOUND ends the node's session too
            return
        s.snapshots_waiting -= 1
        if s.snapshots_waiting == 0 and s.timeout is not None:
            s.timeout.cancel()
            s.timeout = None
        if self.ingest(m.data, Source.UPSTREAM) is Outcome.APPLIED:
            self.snapshots_received += 1
        if s.snapshots_waiting == 0:
            self._pull_done()

    def _pull_done(self) -> None:
        s = self.session
        assert s is not None and self.store is not None
        s.pulling = False
        moved = self.store.heads() != s.before
        if (s.behind and moved) or s.pull_again:
            self.pull()
            return
        if s.pull_timer is not None:
            s.pull_timer.cancel()
        s.pull_timer = self._later(self.config.sync_interval, self.pull)

    def _push(self, upstream_heads: dict[str, FeedHead]) -> None:
        s = self.session
        assert s is not None and self.store is not None
        histories = self.store.histories()
        limit = self.config.max_message_bytes
        for publisher, action in plan_push(histories, upstream_heads).items():
            if isinstance(action, SendSnapshot):
                self._push_snapshot(publisher)
                continue
            history = histories[publisher]
            sizes = [history.retained[v].size for v in action.versions()]
            batches = plan_push_batches(action.first, sizes, limit, history.snapshot_version)
            if batches.snapshot:
                self._push_snapshot(publisher)
                continue
            for first, last in batches.batches:
                deltas = self.store.archive.deltas(publisher, first, last)
                self.host.send(self.code, s.upstream, PushDeltas(self.code, deltas))

    def _push_snapshot(self, publisher: str) -> None:
        s = self.session
        assert s is not None and self.store is not None
        data = self.store.archive.snapshot(publisher)
        if data is not None:
            self.snapshots_sent += 1
            self.host.send(self.code, s.upstream, PushSnapshot(self.code, data))

    def _flush_uplink(self) -> None:
        s = self.session
        if s is None or not s.connected:
            return  # kept until a session is up (the hub's queue outlives sessions)
        while self.uplink:
            batch, self.uplink = self.uplink[:UPLINK_BATCH], self.uplink[UPLINK_BATCH:]
            self.host.send(self.code, s.upstream, PushDeltas(self.code, batch))

    def _flush_statements(self) -> None:
        s = self.session
        if s is None or not s.connected or not self.statements_up:
            return
        out = [st.to_bytes() for _, st in sorted(self.statements_up.items())]
        self.statements_up.clear()
        self.host.send(self.code, s.upstream, PushStatements(self.code, out))

    # ------------------------------------------------------------------ serving children
    # ------------------------------------------------------------------ the wire
    def receive(self, src: str, m: Message) -> None:
        if not self.up:
            return
        # Died: the process is gone, and the rest of this message with it.
        with contextlib.suppress(Died):
            self._dispatch(src, m)

    def _dispatch(self, src: str, m: Message) -> None:
        if isinstance(m, GetUpdates):
            assert self.store is not None
            answer = answer_updates(self.store, m, self.config.max_message_bytes)
            self.host.send(self.code, src, answer)
        elif isinstance(m, Subscribe):
            self.subscribers[src] = m.session
        elif isinstance(m, PushDeltas):
            for data in m.deltas:
                self.ingest(data, Source.CHILD)
        elif isinstance(m, PushStatements):
            self.accept_statements(m.statements, Source.CHILD)
        elif isinstance(m, GetSnapshot):
            assert self.store is not None
            held = self.store.archive.snapshot(m.publisher)
            if held is not None:
                self.snapshots_sent += 1
            self.host.send(self.code, src, SnapshotData(m.session, m.publisher, held, m.request))
        elif isinstance(m, PushSnapshot):
            if self.ingest(m.data, Source.CHILD) is Outcome.APPLIED:
                self.snapshots_received += 1
        elif isinstance(m, Updates):
            self._on_updates(src, m)
        elif isinstance(m, SnapshotData):
            self._on_snapshot(m)
        elif isinstance(m, Event):
            self._on_event(src, m)
        elif isinstance(m, Refused):
            if self.session is not None and self.session.answered(m.request):
                self._fail(m.session)
        elif isinstance(m, StreamEnd):
            self._fail(m.session)

    def _on_event(self, src: str, m: Event) -> None:
        s = self.session
        if s is None or s.id != m.session or src != s.upstream or not s.connected:
            return  # a stream of a session that ended
        if m.delta is not None:
            self.ingest(m.delta, Source.UPSTREAM)
        elif m.statement is not None:
            self.accept_statements([m.statement], Source.UPSTREAM)


__all__ = ["Host", "NodeConfig", "SimNode", "Source"]
