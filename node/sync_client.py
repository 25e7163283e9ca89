"""The child side of sync: keep this node's copy of every feed current from its upstream.

One session at a time with the first upstream that answers (failing over down the list:
a city to its province, the province's standby, or the ministry). A session pulls at once,
then holds the Subscribe stream (the fast path), pulls again every ``interval`` (the
fallback, and the cure for anything a stream missed) and pushes up whatever this node
applied that did not come from the upstream. Any failure ends the session; the next starts
after an exponential backoff with jitter, so that children of a restarted upstream do not
all return at the same instant.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

import grpc
import xxhash

from blacklist.clock import Clock
from blacklist.errors import BlacklistError
from blacklist.rejections import DeltaRejected
from blacklist.store import RevocationStore
from blacklist.sync.plan import SendSnapshot, plan_push
from node.gen.blacklist.v1 import sync_pb2, sync_pb2_grpc
from node.hub import FeedHub, Source
from node.metrics import NodeMetrics
from node.sync_service import head_messages, heads_from

log = logging.getLogger("node.sync")
BACKOFF_START = 0.2
BACKOFF_MAX = 10.0
# A PushDeltas request must stay under the upstream's 16 MiB message limit (node/server.py).
MAX_PUSH_BYTES = 15 << 20


class SnapshotCorrupt(BlacklistError):
    cause = "snapshot_checksum"


class SyncClient:
    def __init__(
        self,
        *,
        region: str,
        upstreams: list[str],
        interval: float,
        store: RevocationStore,
        hub: FeedHub,
        metrics: NodeMetrics,
        clock: Clock,
        subscribe: bool = True,
        rng: random.Random | None = None,
        credentials: Any = None,
    ) -> None:
        # grpc.ChannelCredentials of this node's certificate (mutual TLS), or None: plaintext.
        self._credentials = credentials
        self._use_push = subscribe
        self._region = region
        self._upstreams = upstreams
        self._interval = interval
        self._store = store
        self._hub = hub
        self._metrics = metrics
        self._clock = clock
        self._rng = rng or random.Random()
        self._stopped = asyncio.Event()
        # Held while a delta pushed down the Subscribe stream is applied: a pull waits for
        # it before reading its heads, or it would ask from the older head and receive the
        # same delta a second time (the whole delta again on the wire).
        self._applying_pushed = asyncio.Lock()
        self.connected_to: str | None = None
        for up in upstreams:
            metrics.upstream_up.labels(up).set(0)

    async def run(self) -> None:
        attempt = 0
        index = 0
        while not self._stopped.is_set():
            upstream = self._upstreams[index % len(self._upstreams)]
            try:
                await self._session(upstream)
                attempt = 0
            except (TimeoutError, grpc.aio.AioRpcError, OSError, BlacklistError) as exc:
                log.warning("sync with %s failed: %s", upstream, _describe(exc))
                index += 1  # fail over to the next upstream
                attempt += 1
            finally:
                self._metrics.upstream_up.labels(upstream).set(0)
                self.connected_to = None
            if self._stopped.is_set():
                break
            delay = min(BACKOFF_MAX, BACKOFF_START * 2 ** min(attempt, 10))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), delay * self._rng.uniform(0.5, 1.5))

    async def stop(self) -> None:
        self._stopped.set()

    async def _session(self, upstream: str) -> None:
        channel = (
            grpc.aio.secure_channel(upstream, self._credentials)
            if self._credentials is not None
            else grpc.aio.insecure_channel(upstream)
        )
        async with channel:
            stub = sync_pb2_grpc.SyncStub(channel)  # type: ignore[no-untyped-call]
            await self.pull(stub)
            log.info("syncing from %s", upstream)
            self.connected_to = upstream
            self._metrics.upstream_up.labels(upstream).set(1)
            tasks = [
                asyncio.create_task(self._subscribe(stub) if self._use_push else _forever()),
                asyncio.create_task(self._pull_loop(stub)),
                asyncio.create_task(self._push_loop(stub)),
                asyncio.create_task(self._stopped.wait()),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # re-raise the failure that ended the session
                if not self._stopped.is_set():
                    raise OSError("subscription ended by the upstream")
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def pull(self, stub: Any) -> None:
        """One GetUpdates round: apply what the upstream has, then push up what it lacks.
        Repeats while the upstream says there is more (its answer has a size budget)."""
        for _ in range(1000):
            async with self._applying_pushed:
                request = sync_pb2.GetUpdatesRequest(
                    heads=head_messages(self._store.heads()), node=self._region
                )
            response = await stub.GetUpdates(request, timeout=30)
            more = False
            for update in response.updates:
                if update.take_snapshot:
                    await self._fetch_snapshot(stub, update.publisher)
                for data in update.deltas:
                    self._metrics.sync_received_bytes.inc(len(data))
                    with contextlib.suppress(DeltaRejected):  # counted by the hub
                        await self._hub.apply(data, Source.UPSTREAM)
                if self._store.head(update.publisher).version < update.upstream_version:
                    more = more or bool(update.deltas)
            upstream_heads = heads_from(response.heads)
            current = self._after_pull(upstream_heads)
            now = self._clock()
            await self._hub.write(self._store.touch_feeds, current, now)
            self._metrics.sync_last_success.set(now)
            await self._push(stub, upstream_heads)
            if not more:
                return

    def _after_pull(self, upstream_heads: dict[str, Any]) -> list[str]:

        current = []
        for publisher, head in upstream_heads.items():
            mine = self._store.head(publisher)
            self._metrics.sync_lag.labels(publisher).set(max(0, head.version - mine.version))
            if mine.version >= head.version and publisher in self._store.feeds:
                current.append(publisher)
        return current

    async def _push(self, stub: Any, upstream_heads: dict[str, Any]) -> None:
        plan = plan_push(self._store.histories(), upstream_heads)
        for action in plan.values():
            if isinstance(action, SendSnapshot):
                # The upstream applies a pushed snapshot like a pulled one; the deltas
                # after it follow on the next pull.
                snapshot = self._store.archive.snapshot(action.publisher)
                if snapshot is None:
                    continue
                if len(snapshot) > MAX_PUSH_BYTES:
                    log.warning(
                        "cannot push the %d-byte snapshot of %s up: over the %d-byte limit",
                        len(snapshot),
                        action.publisher,
                        MAX_PUSH_BYTES,
                    )
                    continue
                await self._send_up(stub, [snapshot])
                continue
            deltas = self._store.archive.deltas(action.publisher, action.first, action.last)
            await self._send_up(stub, deltas)

    async def _send_up(self, stub: Any, deltas: list[bytes]) -> None:
        response = await stub.PushDeltas(
            sync_pb2.PushDeltasRequest(deltas=deltas, node=self._region), timeout=30
        )
        for problem in response.rejected:
            log.warning("upstream refused a delta we pushed: %s", problem)

    async def _subscribe(self, stub: Any) -> None:
        async for event in stub.Subscribe(sync_pb2.SubscribeRequest(node=self._region)):
            self._metrics.sync_received_bytes.inc(len(event.delta))
            with contextlib.suppress(DeltaRejected):
                async with self._applying_pushed:
                    await self._hub.apply(event.delta, Source.UPSTREAM)

    async def _pull_loop(self, stub: Any) -> None:
        while True:
            gap = self._hub.gap_detected
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(gap.wait(), self._interval)
            gap.clear()
            await self.pull(stub)

    async def _push_loop(self, stub: Any) -> None:
        while True:
            batch = [await self._hub.uplink.get()]
            while not self._hub.uplink.empty() and len(batch) < 100:
                batch.append(self._hub.uplink.get_nowait())
            await self._send_up(stub, batch)

    async def _fetch_snapshot(self, stub: Any, publisher: str) -> None:
        manifest = None
        parts: list[bytes] = []
        async for part in stub.GetSnapshot(sync_pb2.GetSnapshotRequest(publisher=publisher)):
            if part.HasField("manifest"):
                manifest = part.manifest
                continue
            if manifest is None:
                raise SnapshotCorrupt(f"snapshot of {publisher}: chunk before the manifest")
            i = len(parts)
            if i >= len(manifest.chunk_xxh64) or (
                xxhash.xxh64_intdigest(part.chunk) != manifest.chunk_xxh64[i]
            ):
                self._metrics.rejected.labels(SnapshotCorrupt.cause).inc()
                self._metrics.snapshot_transfers.labels("received", "corrupt").inc()
                raise SnapshotCorrupt(f"snapshot of {publisher}: chunk {i} fails its checksum")
            parts.append(part.chunk)
        data = b"".join(parts)
        if manifest is None or len(data) != manifest.total_bytes:
            self._metrics.rejected.labels(SnapshotCorrupt.cause).inc()
            self._metrics.snapshot_transfers.labels("received", "corrupt").inc()
            raise SnapshotCorrupt(f"snapshot of {publisher}: truncated transfer")
        self._metrics.sync_received_bytes.inc(len(data))
        try:
            await self._hub.apply(data, Source.UPSTREAM)
        except DeltaRejected:
            self._metrics.snapshot_transfers.labels("received", "rejected").inc()
            raise
        self._metrics.snapshot_transfers.labels("received", "ok").inc()
        log.info("bootstrapped %s from a snapshot (%d bytes)", publisher, len(data))


async def _forever() -> None:
    await asyncio.Event().wait()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"
