"""A snapshot in chunks, in either direction (GetSnapshot down, PushSnapshot up): the
manifest a sender writes and the checks a receiver makes, with no sockets.

A transfer is a manifest (publisher, version, total_bytes, chunk_bytes and the xxh64 of
every chunk), then the chunks in order. The receiver trusts nothing in the manifest beyond
its own limits: ``total_bytes`` must be within its configured ``max_snapshot_bytes`` before
a single chunk is taken, ``chunk_bytes`` within its message limit, the checksum count must
match ``total_bytes / chunk_bytes``, and every chunk must have exactly its expected length
and checksum. Only a complete transfer yields bytes, which are then verified as a signed
snapshot like any other (the checksums are transport integrity; the signature covers the
content end to end).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import xxhash

from blacklist.errors import BlacklistError, shown
from blacklist.sync.budget import chunk_count, chunk_ranges


class SnapshotCorrupt(BlacklistError):
    """A chunked transfer that does not check out: a bad checksum, a chunk too long or too
    short, chunks missing or extra, or a manifest that contradicts itself."""

    cause: ClassVar[str] = "snapshot_checksum"


class SnapshotTooLarge(BlacklistError):
    """A manifest announcing more bytes than this node accepts (``max_snapshot_bytes``)."""

    cause: ClassVar[str] = "snapshot_too_large"


@dataclass(frozen=True, slots=True)
class Manifest:
    publisher: str
    version: int
    total_bytes: int
    chunk_bytes: int
    checksums: Sequence[int]


def split_snapshot(
    publisher: str, version: int, data: bytes, chunk: int
) -> tuple[Manifest, list[bytes]]:
    """The manifest and chunks that send ``data`` in ``chunk``-byte parts."""
    parts = [data[r.start : r.stop] for r in chunk_ranges(len(data), chunk)]
    checksums = [xxhash.xxh64_intdigest(p) for p in parts]
    return Manifest(publisher, version, len(data), chunk, checksums), parts


class SnapshotAssembly:
    """Receive one chunked snapshot: :meth:`add` each chunk, then :meth:`finish`. Raises
    SnapshotTooLarge at construction for a manifest over ``max_total``, SnapshotCorrupt for
    any other fault, as soon as it shows."""

    def __init__(self, manifest: Manifest, *, max_total: int, max_chunk: int) -> None:
        who = f"snapshot of {shown(manifest.publisher)} v{manifest.version}"
        self._who = who
        if manifest.total_bytes > max_total:
            raise SnapshotTooLarge(
                f"{who}: the manifest announces {manifest.total_bytes} bytes, over this "
                f"node's max_snapshot_bytes of {max_total}"
            )
        if manifest.total_bytes == 0:
            raise SnapshotCorrupt(f"{who}: the manifest announces an empty snapshot")
        if not 1 <= manifest.chunk_bytes <= max_chunk:
            raise SnapshotCorrupt(
                f"{who}: chunk_bytes {manifest.chunk_bytes} is outside 1..{max_chunk}"
            )
        expected = chunk_count(manifest.total_bytes, manifest.chunk_bytes)
        if len(manifest.checksums) != expected:
            raise SnapshotCorrupt(
                f"{who}: {len(manifest.checksums)} checksums for {expected} chunks of "
                f"{manifest.chunk_bytes} bytes in {manifest.total_bytes}"
            )
        self.manifest = manifest
        self._ranges = chunk_ranges(manifest.total_bytes, manifest.chunk_bytes)
        self._parts: list[bytes] = []

    @property
    def received(self) -> int:
        return len(self._parts)

    def add(self, chunk: bytes) -> None:
        i = len(self._parts)
        if i >= len(self._ranges):
            raise SnapshotCorrupt(f"{self._who}: chunk {i} beyond the manifest's {i} chunks")
        want = len(self._ranges[i])
        if len(chunk) != want:
            raise SnapshotCorrupt(f"{self._who}: chunk {i} has {len(chunk)} bytes, not {want}")
        if xxhash.xxh64_intdigest(chunk) != self.manifest.checksums[i]:
            raise SnapshotCorrupt(f"{self._who}: chunk {i} fails its checksum")
        self._parts.append(bytes(chunk))

    def finish(self) -> bytes:
        if len(self._parts) != len(self._ranges):
            raise SnapshotCorrupt(
                f"{self._who}: truncated transfer, {len(self._parts)} of {len(self._ranges)} chunks"
            )
        return b"".join(self._parts)


async def assemble(parts: AsyncIterator[Any], *, max_total: int, max_chunk: int) -> bytes:
    """One chunked snapshot from ``parts`` (protobuf SnapshotParts: a manifest, then
    chunks), checked as it arrives: SnapshotTooLarge right after the manifest,
    SnapshotCorrupt at the first bad part, the snapshot's bytes once complete. Shared by
    every receiver: a node's PushSnapshot (up), a node's and an edge replica's GetSnapshot
    (down)."""
    assembly: SnapshotAssembly | None = None
    async for part in parts:
        if part.HasField("manifest"):
            if assembly is not None:
                raise SnapshotCorrupt("a second manifest in one snapshot transfer")
            m = part.manifest
            manifest = Manifest(
                m.publisher, m.version, m.total_bytes, m.chunk_bytes, list(m.chunk_xxh64)
            )
            assembly = SnapshotAssembly(manifest, max_total=max_total, max_chunk=max_chunk)
        elif assembly is None:
            raise SnapshotCorrupt("a snapshot chunk before the manifest")
        else:
            assembly.add(part.chunk)
    if assembly is None:
        raise SnapshotCorrupt("a snapshot transfer without a manifest")
    return assembly.finish()
