"""How much fits in one message: the size decisions of sync, as pure functions over sizes.

Every sync message has a ceiling (issue #11, "every transfer is bounded and resumable in
both directions"): the receiver's configured ``max_message_bytes``, which a child states in
its requests (GetUpdatesRequest.max_response_bytes, GetSnapshotRequest.max_part_bytes) and
an upstream in its answers (GetUpdatesResponse.max_push_bytes). The sender fills a message
up to that ceiling and never past it; what does not fit goes in the next message.

Sizes are those of the protobuf encoding (gRPC's ``max_*_message_length`` limits apply to
the serialized message, without gRPC's own 5-byte prefix). Every field sync fills is a
length-delimited field with a number below 16, so it costs one tag byte, the varint of its
length, and its bytes (protobuf encoding spec, "Length-Delimited Records"). Nested messages
grow their parent's length prefix as they grow; :func:`grow` accounts for that exactly.

A single delta too large for any message at the ceiling cannot travel as a delta. Then the
feed moves by its snapshot, which travels in chunks of any total size, when that snapshot
covers the delta's version; else the sender says so (``TooLarge``) and the receiver waits
for the snapshot the authority signs after such a delta (blacklist/sync/plan.py
``should_snapshot``: a delta larger than the snapshot triggers one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# gRPC's default receive limit: what a peer that states no limit can take.
GRPC_DEFAULT_LIMIT = 4 << 20
# The smallest ceiling a node may configure or a peer may state: room for the heads of a
# few hundred feeds beside one delta (a GetUpdates answer always carries every head).
MIN_MESSAGE_BYTES = 64 << 10
# The encoded size of one uint64 varint at most (a chunk checksum in the manifest).
MAX_VARINT = 10


@dataclass(frozen=True)
class TransferLimits:
    """A follower's sync size limits (node/config.py, blacklist/edge): the one message
    limit, the chunk size of its snapshot transfers, and the largest snapshot it takes."""

    max_message_bytes: int = 16 << 20
    snapshot_chunk_bytes: int = 1 << 20
    max_snapshot_bytes: int = 1 << 30

    @classmethod
    def of(cls, config: Any) -> TransferLimits:
        return cls(config.max_message_bytes, config.snapshot_chunk_bytes, config.max_snapshot_bytes)


def message_options(limit: int) -> list[tuple[str, int]]:
    """gRPC channel/server options that hold it to one message limit both ways (the names
    are gRPC's core channel arguments; plain tuples, so no gRPC import here)."""
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
    ]


class TransferTooLarge(ValueError):
    """Something that cannot be sent within a size limit (the message names both)."""


def varint_size(value: int) -> int:
    """Bytes of ``value`` as a protobuf varint."""
    if value < 0:
        raise ValueError(f"a varint length cannot be negative: {value}")
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


def field_size(payload: int) -> int:
    """Bytes of one length-delimited field (number < 16) carrying ``payload`` bytes."""
    return 1 + varint_size(payload) + payload


def grow(length: int, payload: int) -> tuple[int, int]:
    """A nested message of ``length`` bytes gains a ``payload``-byte field: its new length,
    and how many bytes the whole encoding (the nested message's own field in its parent,
    prefix included) grows by."""
    grown = length + field_size(payload)
    return grown, field_size(grown) - field_size(length)


def effective_limit(stated: int, own: int) -> int:
    """The ceiling of a message to a peer that stated ``stated`` (0: nothing stated, so
    gRPC's default) from a node whose own send limit is ``own``."""
    return min(stated or GRPC_DEFAULT_LIMIT, own)


# ------------------------------------------------------------------ GetUpdates going down
@dataclass(frozen=True, slots=True)
class FeedFill:
    """One feed of a GetUpdates answer, as the filler sees it."""

    empty_length: int  # the FeedUpdate's encoded length with no deltas in it
    sizes: Sequence[int]  # the deltas it could send, in order (consecutive versions)


def fill_updates(limit: int, base: int, feeds: Sequence[FeedFill]) -> list[int]:
    """How many leading deltas of each feed go in one answer of at most ``limit`` bytes,
    given ``base``, the answer's encoded size with every FeedUpdate present and empty.

    Feeds are filled in order; a feed stops at its first delta that does not fit (its
    deltas must be consecutive), and later feeds may still use the room left. A feed with
    zero deltas sent because of an earlier feed catches up on the next pull.
    """
    if base > limit:
        raise TransferTooLarge(
            f"an answer without any delta already needs {base} bytes, over the {limit}-byte limit"
        )
    used = base
    counts = []
    for feed in feeds:
        length = feed.empty_length
        n = 0
        for size in feed.sizes:
            grown, extra = grow(length, size)
            if used + extra > limit:
                break
            used += extra
            length = grown
            n += 1
        counts.append(n)
    return counts


# A flag on a FeedUpdate (take_snapshot, or too_large_version: a tag and a varint) costs at
# most 11 bytes, and may lengthen the FeedUpdate's own length prefix by one.
FLAG_RESERVE = 1 + MAX_VARINT + 1


def oversize_first(limit: int, base: int, feeds: Sequence[FeedFill]) -> list[bool]:
    """Per feed, whether its first delta cannot travel in any answer: it does not fit even
    alone, with room kept for a flag on every feed (so that setting the flags this answers
    for cannot push a delta that was found to fit out of the answer)."""
    reserved = base + FLAG_RESERVE * len(feeds)
    return [bool(f.sizes) and reserved + grow(f.empty_length, f.sizes[0])[1] > limit for f in feeds]


# ------------------------------------------------------------------ PushDeltas going up
# PushDeltasRequest: field 1 the deltas, field 2 the node's region code (6 digits).
PUSH_NODE_FIELD = field_size(6)


def split_push(sizes: Sequence[int], limit: int, fixed: int = PUSH_NODE_FIELD) -> list[range]:
    """The deltas of one push (``sizes`` in order) as consecutive batches, each one
    PushDeltasRequest of at most ``limit`` bytes (``fixed``: the request's other fields).
    A delta that cannot fit even alone is left out: the batches skip its index, and
    :func:`oversize` names it. Order is kept, so an upstream never sees a later delta of a
    feed before an earlier one of the same batch sequence."""
    batches: list[range] = []
    start = None
    used = fixed
    for i, size in enumerate(sizes):
        cost = field_size(size)
        if fixed + cost > limit:  # never fits: close the batch before it, skip it
            if start is not None:
                batches.append(range(start, i))
            start, used = None, fixed
            continue
        if start is not None and used + cost > limit:
            batches.append(range(start, i))
            start, used = None, fixed
        if start is None:
            start = i
        used += cost
    if start is not None:
        batches.append(range(start, len(sizes)))
    return batches


def oversize(sizes: Sequence[int], limit: int, fixed: int = PUSH_NODE_FIELD) -> list[int]:
    """Indexes of the deltas that no PushDeltasRequest of ``limit`` bytes can carry."""
    return [i for i, size in enumerate(sizes) if fixed + field_size(size) > limit]


@dataclass(frozen=True, slots=True)
class PushPlan:
    """How one feed's deltas ``first``.. go up: ``batches`` of versions (inclusive pairs),
    one PushDeltas each; or the feed's snapshot instead (``snapshot``), when a delta that no
    request can carry is covered by it; ``too_large`` names such a delta the snapshot does
    not cover yet (the deltas before it still go)."""

    batches: tuple[tuple[int, int], ...] = ()
    snapshot: bool = False
    too_large: int | None = None


def plan_push_batches(
    first: int, sizes: Sequence[int], limit: int, snapshot_version: int | None
) -> PushPlan:
    """Split the push of deltas ``first``, ``first + 1``, ... (``sizes`` in order) into
    requests of at most ``limit`` bytes."""
    big = oversize(sizes, limit)
    if big:
        version = first + big[0]
        if snapshot_version is not None and snapshot_version >= version:
            return PushPlan(snapshot=True)
        sizes = sizes[: big[0]]
    batches = tuple((first + r.start, first + r.stop - 1) for r in split_push(sizes, limit))
    return PushPlan(batches, too_large=first + big[0] if big else None)


# ------------------------------------------------------------------ snapshots in chunks
# SnapshotManifest's fields besides the checksums, at their largest: publisher (6 digits),
# version, total_bytes and chunk_bytes as varints.
_MANIFEST_FIXED = field_size(6) + 3 * (1 + MAX_VARINT)


def manifest_size(chunks: int) -> int:
    """An upper bound of the encoded SnapshotPart that carries the manifest of ``chunks``
    chunks (checksums packed, each at most a 10-byte varint)."""
    inner = _MANIFEST_FIXED + (field_size(MAX_VARINT * chunks) if chunks else 0)
    return field_size(inner)


def max_chunks(limit: int) -> int:
    """The most chunks whose manifest stays within ``limit`` bytes."""
    chunks = max(0, (limit - manifest_size(0)) // MAX_VARINT)
    while chunks and manifest_size(chunks) > limit:
        chunks -= 1
    return chunks


def chunk_payload_limit(limit: int) -> int:
    """The largest chunk whose SnapshotPart stays within ``limit`` bytes."""
    payload = limit - 1 - varint_size(limit)
    while field_size(payload) > limit:
        payload -= 1
    return payload


def chunk_count(total: int, chunk: int) -> int:
    return -(-total // chunk) if total else 0


def chunk_size(total: int, preferred: int, limit: int) -> int:
    """The chunk size for sending ``total`` bytes in parts of at most ``limit`` bytes:
    ``preferred`` if its parts fit, else the largest that does; TransferTooLarge if even
    then the manifest (one checksum per chunk) would not fit."""
    chunk = max(1, min(preferred, chunk_payload_limit(limit)))
    if manifest_size(chunk_count(total, chunk)) > limit:
        raise TransferTooLarge(
            f"a {total}-byte snapshot in {chunk}-byte chunks needs a manifest of up to "
            f"{manifest_size(chunk_count(total, chunk))} bytes, over the {limit}-byte limit"
        )
    return chunk


def chunk_ranges(total: int, chunk: int) -> list[range]:
    """Byte ranges of the chunks of a ``total``-byte transfer (the last may be short)."""
    return [range(i, min(i + chunk, total)) for i in range(0, total, chunk)]
