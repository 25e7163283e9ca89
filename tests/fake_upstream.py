"""A fake upstream for fault tests: a small grpc.aio Sync server, in the test process, that
offers one publisher's signed snapshot and can damage it in transit.

A real node configured with this server as its only upstream asks GetUpdates, is told to
take a snapshot (unless it already holds exactly the fake's head), and fetches GetSnapshot:
a manifest with the xxh64 of every *intact* chunk, then the chunks, damaged as ``mode``
says. The server runs on its own event loop in a daemon thread, so the (synchronous) test
can switch ``mode`` between transfers and read the counters::

    with FakeUpstream(snapshot_bytes, mode=Damage.TRUNCATED_CHUNK) as fake:
        node = start_node(NodeSpec(..., upstreams=(fake.address,)), directory)
        ...
        fake.mode = Damage.NONE  # the next retry gets the intact snapshot
"""

from __future__ import annotations

import asyncio
import enum
import threading
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Self

import grpc
import xxhash

from blacklist.deltadecode import decode_snapshot
from node.gen.blacklist.v1 import sync_pb2, sync_pb2_grpc


class Damage(enum.Enum):
    NONE = "none"  # the snapshot as signed
    TRUNCATED_CHUNK = "truncated_chunk"  # the last chunk loses its final bytes
    FLIPPED_BIT = "flipped_bit"  # one bit of the first chunk flipped
    MISSING_CHUNK = "missing_chunk"  # the stream ends one chunk early
    # Content damaged *before* chunking, with a manifest that matches the damaged bytes:
    # transport checksums pass, and only the snapshot's own signature can catch it.
    FORGED_CONTENT = "forged_content"


def flip_bit(data: bytes, offset: int, bit: int = 0) -> bytes:
    """``data`` with one bit flipped (offsets may be negative, from the end)."""
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


class FakeUpstream:
    def __init__(
        self, snapshot: bytes, *, chunk_bytes: int = 4096, mode: Damage = Damage.NONE
    ) -> None:
        item = decode_snapshot(snapshot)
        self.snapshot = snapshot
        self.publisher = item.publisher
        self.version = item.version
        self.digest = item.head_digest
        self.chunk_bytes = chunk_bytes
        if len(snapshot) <= 2 * chunk_bytes:
            raise ValueError(
                f"a {len(snapshot)}-byte snapshot in {chunk_bytes}-byte chunks has fewer than "
                "three chunks: damage to one of them would not be in the middle of a transfer"
            )
        self.mode = mode  # read on every GetSnapshot, so the test may change it at any time
        self.get_updates_calls = 0
        self.snapshot_calls: dict[Damage, int] = {d: 0 for d in Damage}
        self.address = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-upstream")
        self._server: Any = None

    # ------------------------------------------------------------------ life cycle
    def start(self) -> Self:
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.address = f"127.0.0.1:{port}"
        return self

    async def _start(self) -> int:
        self._server = grpc.aio.server()
        sync_pb2_grpc.add_SyncServicer_to_server(_Servicer(self), self._server)  # type: ignore[no-untyped-call]
        port = int(self._server.add_insecure_port("127.0.0.1:0"))
        await self._server.start()
        return port

    def close(self) -> None:
        if self._thread.is_alive():
            if self._server is not None:
                asyncio.run_coroutine_threadsafe(self._server.stop(0), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ what is served
    def transfer(self, mode: Damage) -> tuple[sync_pb2.SnapshotManifest, list[bytes]]:
        """The manifest and the chunks one GetSnapshot sends in ``mode``."""
        data = self.snapshot
        if mode is Damage.FORGED_CONTENT:
            data = flip_bit(data, -1)  # the signature's last byte
        size = self.chunk_bytes
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        manifest = sync_pb2.SnapshotManifest(
            publisher=self.publisher,
            version=self.version,
            total_bytes=len(data),
            chunk_bytes=size,
            chunk_xxh64=[xxhash.xxh64_intdigest(c) for c in chunks],
        )
        if mode is Damage.TRUNCATED_CHUNK:
            chunks[-1] = chunks[-1][: len(chunks[-1]) // 2]
        elif mode is Damage.FLIPPED_BIT:
            chunks[0] = flip_bit(chunks[0], len(chunks[0]) // 2, 3)
        elif mode is Damage.MISSING_CHUNK:
            chunks.pop()
        return manifest, chunks


class _Servicer(sync_pb2_grpc.SyncServicer):
    def __init__(self, fake: FakeUpstream) -> None:
        self._fake = fake

    async def GetUpdates(
        self, request: sync_pb2.GetUpdatesRequest, context: Any
    ) -> sync_pb2.GetUpdatesResponse:
        fake = self._fake
        fake.get_updates_calls += 1
        head = sync_pb2.Head(publisher=fake.publisher, version=fake.version, digest=fake.digest)
        response = sync_pb2.GetUpdatesResponse(heads=[head])
        child = {h.publisher: (h.version, h.digest) for h in request.heads}.get(fake.publisher)
        if child != (fake.version, fake.digest):
            response.updates.add(
                publisher=fake.publisher, take_snapshot=True, upstream_version=fake.version
            )
        return response

    async def GetSnapshot(
        self, request: sync_pb2.GetSnapshotRequest, context: Any
    ) -> AsyncIterator[sync_pb2.SnapshotPart]:
        fake = self._fake
        if request.publisher != fake.publisher:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no snapshot of {request.publisher}")
        mode = fake.mode
        fake.snapshot_calls[mode] += 1
        manifest, chunks = fake.transfer(mode)
        yield sync_pb2.SnapshotPart(manifest=manifest)
        for chunk in chunks:
            yield sync_pb2.SnapshotPart(chunk=chunk)

    async def PushDeltas(
        self, request: sync_pb2.PushDeltasRequest, context: Any
    ) -> sync_pb2.PushDeltasResponse:
        return sync_pb2.PushDeltasResponse()  # the fake holds nothing a child could add to

    async def Subscribe(
        self, request: sync_pb2.SubscribeRequest, context: Any
    ) -> AsyncIterator[sync_pb2.SubscribeEvent]:
        # Nothing new is ever published here: hold the stream open until the child leaves.
        await asyncio.Event().wait()
        yield sync_pb2.SubscribeEvent()
