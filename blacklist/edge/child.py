"""The child side of the Sync API, read-only: take what an upstream offers, verified by the
follower's own acceptance (it never trusts the upstream), and nothing more.

Shared by every follower: a node (node/sync_client.py adds what it pushes up) and an edge
replica (blacklist/edge/replica.py). What the follower does with the bytes is its
:class:`Follower`: apply a delta or snapshot through ``RevocationStore.apply`` and keep head
statements through ``RevocationStore.accept_statements`` (blacklist/sync/accept.py,
freshness.py), on its writer thread, counting what it refuses.

A session (:func:`follow`) with the first upstream that answers, failing over down the
list: a pull at once, then the Subscribe stream (the fast path) and a pull every
``interval`` or as soon as a gap shows (the fallback). Any failure ends the session; the
next starts after an exponential backoff with jitter, so that the children of a restarted
upstream do not all return at the same instant.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Protocol

import grpc

from blacklist.delta import FeedHead
from blacklist.errors import BlacklistError
from blacklist.rejections import DeltaRejected
from blacklist.sync.budget import TransferLimits, message_options
from blacklist.sync.head_statement import MalformedStatement, decode_statement
from node.gen.blacklist.v1 import sync_pb2

log = logging.getLogger("blacklist.sync.child")
BACKOFF_START = 0.2
BACKOFF_MAX = 10.0
CALL_TIMEOUT = 30.0  # one GetUpdates answer (its size is bounded by the stated limit)
# What ends a session with an upstream (and moves on to the next one).
SESSION_ERRORS = (TimeoutError, grpc.aio.AioRpcError, OSError, BlacklistError)


class Follower(Protocol):
    """Where a child puts what it receives (a node's hub, an edge replica's writer)."""

    def heads(self) -> dict[str, FeedHead]: ...

    def head(self, publisher: str) -> FeedHead: ...

    async def apply(self, data: bytes) -> None:
        """Verify and apply a signed delta or snapshot; raise DeltaRejected (counted) when
        refused or behind, return when applied or already held."""

    async def accept_statements(self, statements: list[bytes]) -> None:
        """Verify and keep the newer of these signed head statements (never raises)."""

    async def receive_snapshot(self, parts: AsyncIterator[Any]) -> bytes:
        """One chunked snapshot transfer, checked (blacklist/sync/chunks.py ``assemble``)."""

    def received(self, nbytes: int, what: str) -> None:
        """Count bytes received: ``what`` is "delta" or "snapshot"."""

    def snapshot_applied(self, ok: bool) -> None: ...

    def too_large(self, publisher: str, version: int) -> None:
        """The upstream cannot send this version in an answer within our limit."""


def open_channel(upstream: str, credentials: Any, limit: int) -> Any:
    """A grpc.aio channel to ``upstream`` (mutual TLS when ``credentials`` is given),
    held to ``limit`` bytes per message both ways."""
    options = message_options(limit)
    if credentials is not None:
        return grpc.aio.secure_channel(upstream, credentials, options=options)
    return grpc.aio.insecure_channel(upstream, options=options)


def head_messages(heads: dict[str, FeedHead]) -> list[sync_pb2.Head]:
    return [
        sync_pb2.Head(publisher=p, version=h.version, digest=h.digest)
        for p, h in sorted(heads.items())
    ]


class ChildSync:
    """Pull, snapshot and subscribe for one follower, one upstream stub at a time."""

    def __init__(
        self,
        follower: Follower,
        *,
        node: str,
        limits: TransferLimits,
        interval: float,
        gap: asyncio.Event,
        after_pull: Callable[[Any, Any], Awaitable[None]] | None = None,
    ) -> None:
        self._follower = follower
        self._node = node  # how this child names itself to the upstream (logs only)
        self._limits = limits
        self._interval = interval
        self._gap = gap  # set by the follower on a version gap: pull now
        self._after_pull = after_pull  # (stub, response): what a node does after each round
        # Held while a delta pushed down the Subscribe stream is applied: a pull waits for
        # it before reading its heads, or it would ask from the older head and receive the
        # same delta a second time (the whole delta again on the wire).
        self.applying_pushed = asyncio.Lock()
        # Set once a pull round ends with no feed behind the upstream's (unsigned) word:
        # bootstrapped, for a replica's readiness (blacklist/sync/readiness.py).
        self.caught_up = False

    async def pull(self, stub: Any) -> None:
        """GetUpdates rounds. Each answer fits the limit this child states, so a long
        backlog takes several rounds: ask again while some feed is still behind and the
        last round moved at least one head (no progress, e.g. a delta too large for any
        answer, waits for the next scheduled pull instead of spinning)."""
        follower = self._follower
        while True:
            async with self.applying_pushed:
                before = follower.heads()
                request = sync_pb2.GetUpdatesRequest(
                    heads=head_messages(before),
                    node=self._node,
                    max_response_bytes=self._limits.max_message_bytes,
                )
            response = await stub.GetUpdates(request, timeout=CALL_TIMEOUT)
            behind = False
            for update in response.updates:
                if update.take_snapshot:
                    await self.fetch_snapshot(stub, update.publisher)
                for data in update.deltas:
                    follower.received(len(data), "delta")
                    with contextlib.suppress(DeltaRejected):  # counted by the follower
                        await follower.apply(data)
                if update.too_large_version:
                    follower.too_large(update.publisher, update.too_large_version)
                if follower.head(update.publisher).version < update.upstream_version:
                    behind = True
            # Freshness comes only from the signed statements (and the deltas themselves),
            # never from the upstream's unsigned heads: a relay that withholds deltas
            # cannot make a frozen feed look current (blacklist/sync/freshness.py).
            if response.head_statements:
                await follower.accept_statements(list(response.head_statements))
            if self._after_pull is not None:
                await self._after_pull(stub, response)
            if not behind:
                self.caught_up = True
            if not behind or follower.heads() == before:
                return

    async def fetch_snapshot(self, stub: Any, publisher: str) -> None:
        request = sync_pb2.GetSnapshotRequest(
            publisher=publisher, max_part_bytes=self._limits.max_message_bytes
        )
        call = stub.GetSnapshot(request)
        try:
            data = await self._follower.receive_snapshot(call)
        finally:
            cancel = getattr(call, "cancel", None)
            if cancel is not None:
                cancel()  # a refused manifest: stop the rest of the transfer at once
        self._follower.received(len(data), "snapshot")
        try:
            await self._follower.apply(data)
        except DeltaRejected:
            self._follower.snapshot_applied(False)
            raise
        self._follower.snapshot_applied(True)
        log.info("bootstrapped %s from a snapshot (%d bytes)", publisher, len(data))

    async def subscribe(self, stub: Any) -> None:
        request = sync_pb2.SubscribeRequest(
            node=self._node, max_event_bytes=self._limits.max_message_bytes
        )
        async for event in stub.Subscribe(request):
            if event.head_statement:
                await self._follower.accept_statements([event.head_statement])
                self._pull_if_ahead(event.head_statement)
                continue
            self._follower.received(len(event.delta), "delta")
            with contextlib.suppress(DeltaRejected):
                async with self.applying_pushed:
                    await self._follower.apply(event.delta)

    def _pull_if_ahead(self, statement: bytes) -> None:
        """A pushed head statement ahead of this child's head means it missed a delta that
        no later push will repair: one published between its first pull and the moment the
        upstream registered its Subscribe, or a feed the upstream took by snapshot (which
        is not pushed). Pull now rather than at the next scheduled pull (found by the
        simulator, blacklist/sim). The statement's claim only triggers a pull, whose
        answers are verified as any: a forged one costs one GetUpdates."""
        with contextlib.suppress(MalformedStatement):
            claim = decode_statement(statement)
            if claim.version > self._follower.head(claim.publisher).version:
                self._gap.set()

    async def pull_loop(self, stub: Any) -> None:
        while True:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that
            # lands as the gap is set, and this loop would then outlive its session.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._gap.wait()
            self._gap.clear()
            await self.pull(stub)


async def hold(stopped: asyncio.Event, *jobs: Coroutine[Any, Any, None]) -> None:
    """Run a session's jobs until one ends or ``stopped`` is set: a job's failure is
    raised, a job that ends while not stopped means the upstream hung up (OSError)."""
    tasks: list[asyncio.Task[Any]] = [asyncio.create_task(job) for job in jobs]
    tasks.append(asyncio.create_task(stopped.wait()))
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # re-raise the failure that ended the session
        if not stopped.is_set():
            raise OSError("subscription ended by the upstream")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def forever() -> None:
    await asyncio.Event().wait()


async def follow(
    upstreams: list[str],
    session: Callable[[str], Awaitable[None]],
    stopped: asyncio.Event,
    *,
    ended: Callable[[str], None] = lambda upstream: None,
    rng: random.Random | None = None,
) -> None:
    """Run ``session(upstream)`` until ``stopped``, failing over to the next upstream after
    each failure, with exponential backoff and jitter; ``ended(upstream)`` after each."""
    rng = rng or random.Random()
    attempt = 0
    index = 0
    while not stopped.is_set():
        upstream = upstreams[index % len(upstreams)]
        try:
            await session(upstream)
            attempt = 0
        except SESSION_ERRORS as exc:
            log.warning("sync with %s failed: %s", upstream, describe(exc))
            index += 1  # fail over to the next upstream
            attempt += 1
        finally:
            ended(upstream)
        if stopped.is_set():
            break
        delay = min(BACKOFF_MAX, BACKOFF_START * 2 ** min(attempt, 10))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stopped.wait(), delay * rng.uniform(0.5, 1.5))


def describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"
