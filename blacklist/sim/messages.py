"""The sync messages the simulated nodes exchange, one class per message of
``proto/blacklist/v1/sync.proto``, each with its encoded size.

Sizes follow the protobuf encoding by the rules of :mod:`blacklist.sync.budget` (a tag
byte, the varint of the length, the bytes; varints for integers). They leave out what a
real link adds below gRPC (HTTP/2 frames, TLS records, TCP/IP headers), which the report
says. ``session`` ties an answer or a pushed event to the client session that asked, as
one gRPC channel does: an answer for a session that ended is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from blacklist.delta import FeedHead
from blacklist.sync.budget import field_size, varint_size


def _int_field(value: int) -> int:
    return 1 + varint_size(value) if value else 0


def head_size(head: FeedHead) -> int:
    """One ``Head`` message (publisher, version, digest) as a field of its parent: a
    6-byte publisher and a 32-byte digest fields (8 + 34 bytes) and the version's varint."""
    v = head.version
    inner = 42 + (1 + varint_size(v) if v else 0)
    return 2 + inner  # the inner length is below 128: one tag byte, one length byte


def heads_size(heads: Mapping[str, FeedHead]) -> int:
    return sum(head_size(h) for h in heads.values())


@dataclass(frozen=True, slots=True)
class GetUpdates:
    session: int
    heads: Mapping[str, FeedHead]
    node: str
    request: int = 0  # the call's id: its answer carries it (one answer per call, as gRPC)

    @property
    def size(self) -> int:
        return heads_size(self.heads) + field_size(len(self.node)) + _int_field(16 << 20)


@dataclass(frozen=True, slots=True)
class FeedUpdate:
    publisher: str
    upstream_version: int
    deltas: Sequence[bytes] = ()
    take_snapshot: bool = False

    @property
    def size(self) -> int:
        inner = field_size(6) + _int_field(self.upstream_version)
        inner += sum(field_size(len(d)) for d in self.deltas) + (2 if self.take_snapshot else 0)
        return field_size(inner)


@dataclass(frozen=True, slots=True)
class Updates:
    session: int
    heads: Mapping[str, FeedHead]
    updates: Sequence[FeedUpdate]
    statements: Sequence[bytes]
    request: int = 0
    size: int = field(init=False)

    def __post_init__(self) -> None:
        size = heads_size(self.heads) + sum(u.size for u in self.updates)
        size += sum(field_size(len(s)) for s in self.statements) + _int_field(16 << 20)
        object.__setattr__(self, "size", size)

    def parts(self) -> list[tuple[str, int]]:
        """The answer's bytes by what they carry (the deltas, the rest)."""
        deltas = sum(field_size(len(d)) for u in self.updates for d in u.deltas)
        return [
            ("deltas in pull answers", deltas),
            ("heads and statements in pull answers", self.size - deltas),
        ]


@dataclass(frozen=True, slots=True)
class Subscribe:
    session: int
    node: str

    @property
    def size(self) -> int:
        return field_size(len(self.node)) + _int_field(16 << 20)


@dataclass(frozen=True, slots=True)
class Event:
    """One SubscribeEvent: a delta or a head statement pushed down the stream."""

    session: int
    delta: bytes | None = None
    statement: bytes | None = None

    @property
    def size(self) -> int:
        return field_size(len(self.delta or self.statement or b""))

    def parts(self) -> list[tuple[str, int]]:
        return [("pushed deltas" if self.delta is not None else "pushed statements", self.size)]


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The upstream's process died: the child's channel breaks (a TCP reset)."""

    session: int
    size: int = 0


@dataclass(frozen=True, slots=True)
class PushDeltas:
    node: str
    deltas: Sequence[bytes]

    @property
    def size(self) -> int:
        return sum(field_size(len(d)) for d in self.deltas) + field_size(len(self.node))


@dataclass(frozen=True, slots=True)
class PushStatements:
    node: str
    statements: Sequence[bytes]

    @property
    def size(self) -> int:
        return sum(field_size(len(s)) for s in self.statements) + field_size(len(self.node))


@dataclass(frozen=True, slots=True)
class GetSnapshot:
    session: int
    publisher: str
    request: int = 0

    @property
    def size(self) -> int:
        return field_size(6) + _int_field(16 << 20)


def _snapshot_transfer_size(data: bytes, chunk: int = 1 << 20) -> int:
    """A manifest (publisher, version, sizes, one xxh64 per chunk) and the chunks."""
    chunks = max(1, -(-len(data) // chunk))
    manifest = field_size(6) + 3 * 9 + chunks * 9
    return field_size(manifest) + len(data) + chunks * (1 + varint_size(min(chunk, len(data))))


@dataclass(frozen=True, slots=True)
class SnapshotData:
    """GetSnapshot's answer: the manifest and chunks, or NOT_FOUND (``data`` None)."""

    session: int
    publisher: str
    data: bytes | None
    request: int = 0

    @property
    def size(self) -> int:
        return _snapshot_transfer_size(self.data) if self.data is not None else 16


@dataclass(frozen=True, slots=True)
class PushSnapshot:
    node: str
    data: bytes

    @property
    def size(self) -> int:
        return _snapshot_transfer_size(self.data)


@dataclass(frozen=True, slots=True)
class Refused:
    """A call to a node whose process is down: the connection is refused."""

    session: int
    request: int = 0
    size: int = 0


_KIND = {
    "GetUpdates": "pull requests (heads)",
    "PushDeltas": "deltas pushed up",
    "PushStatements": "statements pushed up",
    "SnapshotData": "snapshots",
    "PushSnapshot": "snapshots",
}


def parts(message: object) -> list[tuple[str, int]]:
    """A message's bytes by what they carry, for the report's breakdown."""
    split = getattr(message, "parts", None)
    if split is not None:
        out: list[tuple[str, int]] = split()
        return out
    name = type(message).__name__
    return [(_KIND.get(name, "other"), int(getattr(message, "size", 0)))]


Message = (
    GetUpdates
    | Updates
    | Subscribe
    | Event
    | StreamEnd
    | PushDeltas
    | PushStatements
    | GetSnapshot
    | SnapshotData
    | PushSnapshot
    | Refused
)
