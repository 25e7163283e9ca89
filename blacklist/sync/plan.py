"""Sync decisions as pure functions over values (h11-style: no sockets, no store).

The upstream answers a child's head per publisher with one of: nothing (the child is current
or ahead), the consecutive deltas after the child's head, or "take a snapshot" — whenever it
cannot prove the chain from the child's head to its own (history compacted away, a fork) or
the deltas would cost more bytes than the snapshot (clubcard/CRLite rule: can't prove
continuity → full filter). The child, in turn, pushes up what the upstream lacks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from blacklist.delta import FeedHead


@dataclass(frozen=True, slots=True)
class RetainedDelta:
    """What planning needs to know of one retained delta (not its bytes)."""

    version: int
    prev_digest: bytes
    size: int


@dataclass(frozen=True, slots=True)
class FeedHistory:
    """One publisher's feed as a node can serve it."""

    head: FeedHead
    retained: Mapping[int, RetainedDelta]  # version → info
    snapshot_version: int | None = None  # the stored snapshot's version, if any
    snapshot_size: int | None = None


@dataclass(frozen=True, slots=True)
class SendDeltas:
    publisher: str
    first: int
    last: int  # inclusive

    def versions(self) -> range:
        return range(self.first, self.last + 1)


@dataclass(frozen=True, slots=True)
class SendSnapshot:
    publisher: str
    reason: str  # "compacted", "fork", "smaller", "bootstrap"


@dataclass(frozen=True, slots=True)
class Unavailable:
    """The child is behind, but this node can prove neither deltas nor a snapshot for it."""

    publisher: str
    reason: str


Action = SendDeltas | SendSnapshot | Unavailable | None


def _snapshot_or_unavailable(history: FeedHistory, child: FeedHead, reason: str) -> Action:
    snap = history.snapshot_version
    if snap is not None and snap > child.version:
        return SendSnapshot(child.publisher, reason)
    return Unavailable(child.publisher, reason)


def plan_feed(history: FeedHistory, child: FeedHead | None) -> Action:
    """What the upstream sends for one publisher, given the child's head (None: never had it)."""
    head = history.head
    child = child or FeedHead.genesis(head.publisher)
    if child.publisher != head.publisher:
        raise ValueError(f"child head is for {child.publisher}, history for {head.publisher}")
    if child.version > head.version:
        return None  # the child is ahead: it pushes up
    if child.version == head.version:
        if child.digest == head.digest:
            return None
        return _snapshot_or_unavailable(history, child, "fork")
    needed = range(child.version + 1, head.version + 1)
    if not all(v in history.retained for v in needed):
        reason = "bootstrap" if child.version == 0 else "compacted"
        return _snapshot_or_unavailable(history, child, reason)
    if history.retained[child.version + 1].prev_digest != child.digest:
        return _snapshot_or_unavailable(history, child, "fork")
    size = sum(history.retained[v].size for v in needed)
    snap = history.snapshot_version
    if (
        snap is not None
        and history.snapshot_size is not None
        and snap > child.version
        and size > history.snapshot_size
    ):
        return SendSnapshot(head.publisher, "smaller")
    return SendDeltas(head.publisher, needed.start, needed.stop - 1)


def plan_updates(
    histories: Mapping[str, FeedHistory], child_heads: Mapping[str, FeedHead]
) -> dict[str, SendDeltas | SendSnapshot | Unavailable]:
    """Per publisher this node holds, what to send the child (publishers needing nothing
    are left out)."""
    plan: dict[str, SendDeltas | SendSnapshot | Unavailable] = {}
    for publisher, history in sorted(histories.items()):
        action = plan_feed(history, child_heads.get(publisher))
        if action is not None:
            plan[publisher] = action
    return plan


def plan_push(
    local: Mapping[str, FeedHistory], upstream_heads: Mapping[str, FeedHead]
) -> dict[str, SendDeltas | SendSnapshot]:
    """What to push up, for feeds where the upstream is behind this node: the retained
    deltas after the upstream's head, or, where those are gone (or cost more), this node's
    snapshot, as a child is answered going down. This node may be the feed's only way up
    (a city's feed reaches the rest of the country through its province alone), so an
    upstream that fell further behind than the retained history must still be brought
    up to date, else it, and everything above it, would stay behind forever."""
    plan: dict[str, SendDeltas | SendSnapshot] = {}
    for publisher, history in sorted(local.items()):
        up = upstream_heads.get(publisher) or FeedHead.genesis(publisher)
        action = plan_feed(history, up)
        if isinstance(action, SendDeltas | SendSnapshot):
            plan[publisher] = action
    return plan


def retention_cut(history: FeedHistory, max_count: int, snapshot_factor: float = 2.0) -> list[int]:
    """Versions of retained deltas to delete: keep the most recent ones while there are at
    most ``max_count`` and their bytes stay within ``snapshot_factor`` × the snapshot's size
    (whichever limit comes first). Deltas after the stored snapshot are kept even past the
    limits, since a child bootstrapped from that snapshot needs them to reach the head; with
    no snapshot nothing is cut, or a new child could never bootstrap."""
    versions = sorted(history.retained, reverse=True)
    budget = history.snapshot_size * snapshot_factor if history.snapshot_size is not None else None
    floor = history.snapshot_version or 0
    kept = 0
    total = 0
    cut = []
    for v in versions:
        size = history.retained[v].size
        over = kept >= max_count or (budget is not None and total + size > budget)
        if over and v <= floor:
            cut.append(v)
            continue
        kept += 1
        total += size
    return sorted(cut)


def should_snapshot(history: FeedHistory, max_count: int) -> bool:
    """Whether the publisher should sign a fresh snapshot of its head: when it has none, or
    the deltas since the last one outweigh it or approach the retention count (so that
    retention can always cut back to a snapshot a child can start from)."""
    if history.head.version == 0:
        return False
    if history.snapshot_version is None or history.snapshot_size is None:
        return True
    since = [d for v, d in history.retained.items() if v > history.snapshot_version]
    return sum(d.size for d in since) > history.snapshot_size or len(since) >= max(
        1, max_count // 2
    )
