"""Sync planning, pure: one test per decision, no sockets."""

from __future__ import annotations

from blacklist.delta import FeedHead
from blacklist.sync.plan import (
    FeedHistory,
    RetainedDelta,
    SendDeltas,
    SendSnapshot,
    Unavailable,
    plan_feed,
    plan_push,
    plan_updates,
    retention_cut,
    should_snapshot,
)

P = "440100"


def digest(v: int) -> bytes:
    return bytes([v % 256]) * 32


def history(
    first: int, last: int, snap: int | None = None, size: int = 100, snap_size: int = 1000
) -> FeedHistory:
    retained = {
        v: RetainedDelta(v, digest(v - 1) if v > 1 else bytes(32), size)
        for v in range(first, last + 1)
    }
    return FeedHistory(
        FeedHead(P, last, digest(last)), retained, snap, snap_size if snap is not None else None
    )


def head(v: int, d: bytes | None = None) -> FeedHead:
    return FeedHead(P, v, digest(v) if d is None else d) if v else FeedHead.genesis(P)


def test_current_child_needs_nothing() -> None:
    assert plan_feed(history(1, 5), head(5)) is None


def test_child_ahead_needs_nothing() -> None:
    assert plan_feed(history(1, 5), head(7)) is None


def test_behind_gets_consecutive_deltas() -> None:
    assert plan_feed(history(1, 5), head(2)) == SendDeltas(P, 3, 5)
    assert plan_feed(history(1, 5), None) == SendDeltas(P, 1, 5)


def test_compacted_history_means_snapshot() -> None:
    assert plan_feed(history(4, 9, snap=6), head(2)) == SendSnapshot(P, "compacted")
    assert plan_feed(history(4, 9, snap=6), None) == SendSnapshot(P, "bootstrap")


def test_compacted_without_snapshot_is_unavailable() -> None:
    assert plan_feed(history(4, 9), head(2)) == Unavailable(P, "compacted")


def test_fork_at_same_version_means_snapshot() -> None:
    assert plan_feed(history(1, 5, snap=3), head(5, b"\x09" * 32)) == Unavailable(P, "fork")
    assert plan_feed(history(1, 5, snap=5), head(4, b"\x09" * 32)) == SendSnapshot(P, "fork")


def test_deltas_larger_than_snapshot_mean_snapshot() -> None:
    h = history(1, 30, snap=25, size=100, snap_size=500)
    assert plan_feed(h, head(10)) == SendSnapshot(P, "smaller")
    assert plan_feed(h, head(27)) == SendDeltas(P, 28, 30)


def test_plan_updates_lists_only_work() -> None:
    other = FeedHistory(FeedHead("440300", 1, digest(1)), {1: RetainedDelta(1, bytes(32), 10)})
    plan = plan_updates({P: history(1, 5), "440300": other}, {P: head(5)})
    assert plan == {"440300": SendDeltas("440300", 1, 1)}


def test_plan_push_sends_what_upstream_lacks() -> None:
    assert plan_push({P: history(1, 5)}, {P: head(3)}) == {P: SendDeltas(P, 4, 5)}
    assert plan_push({P: history(1, 5)}, {P: head(5)}) == {}
    assert plan_push({P: history(3, 5)}, {}) == {}  # cannot prove 1..2: upstream snapshots


def test_plan_push_sends_the_snapshot_when_the_deltas_are_gone() -> None:
    # The upstream fell behind further than this node's retained history (it may be the
    # feed's only way up): the snapshot brings it back, the deltas after follow.
    assert plan_push({P: history(6, 10, snap=8)}, {P: head(2)}) == {P: SendSnapshot(P, "compacted")}
    assert plan_push({P: history(9, 10, snap=8)}, {P: head(8)}) == {P: SendDeltas(P, 9, 10)}


def test_retention_keeps_count_and_size_limits() -> None:
    assert retention_cut(history(1, 10, snap=10), max_count=4) == [1, 2, 3, 4, 5, 6]
    # 2 x 1000 bytes of snapshot = 20 deltas of 100 bytes at most
    assert retention_cut(history(1, 30, snap=30), max_count=100) == list(range(1, 11))


def test_retention_never_cuts_what_a_snapshot_child_needs() -> None:
    assert retention_cut(history(1, 10, snap=3), max_count=2) == [1, 2, 3]
    assert retention_cut(history(1, 10), max_count=2) == []  # no snapshot: keep all


def test_snapshot_policy() -> None:
    assert should_snapshot(history(1, 1), max_count=100)
    assert not should_snapshot(history(1, 5, snap=5), max_count=100)
    assert should_snapshot(history(1, 20, snap=5, size=100, snap_size=1000), max_count=100)
    assert should_snapshot(history(1, 9, snap=5), max_count=8)
