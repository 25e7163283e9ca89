"""Between the library's values and the protobuf messages of blacklist.v1: what more than
one service sends (entries, feed freshness, card statuses)."""

from __future__ import annotations

from typing import Any

from blacklist.checker import CheckStatus
from blacklist.entry import Entry
from blacklist.store import FeedState
from node.gen.blacklist.v1 import types_pb2

Context = Any  # grpc.aio.ServicerContext (grpc ships no type stubs)
STATUS = {s: types_pb2.CardStatusCode.Value(s.name) for s in CheckStatus}


def enum_value(value: int) -> Any:
    """A protobuf enum field takes the plain int (the generated stubs only name the enum)."""
    return int(value)


def feed_info(feed: FeedState, now: float) -> types_pb2.FeedInfo:
    return types_pb2.FeedInfo(
        publisher=feed.publisher,
        version=feed.version,
        digest=feed.head.digest,
        age_seconds=max(0.0, now - feed.checked_at),
        entries=feed.entries,
        issued_at=feed.issued_at,
    )


def entry_message(entry: Entry) -> types_pb2.Entry:
    return types_pb2.Entry(
        card_id=entry.card_id,
        reason=enum_value(entry.reason),
        effective_time=entry.effective_time,
        publisher=entry.publisher,
        version=entry.version,
        expires_at=entry.expires_at or 0,
    )
