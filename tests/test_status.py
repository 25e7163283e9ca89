"""node/cli/status.py's pure part: the table and the verdict from nodes' Status answers."""

from __future__ import annotations

import pytest

from node.cli.status import (
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_UNREACHABLE,
    FeedCopy,
    NodeView,
    Problem,
    Unreachable,
    assess,
    format_age,
    render,
    view_of,
)
from node.gen.blacklist.v1 import admin_pb2, types_pb2

D1, D2, D3 = b"\x11" * 32, b"\x22" * 32, b"\x33" * 32
CITY, PROVINCE, MINISTRY = "10.0.0.3:50051", "10.0.0.2:50051", "10.0.0.1:50051"


def node(address: str, role: str, region: str, own: str, **feeds: FeedCopy) -> NodeView:
    return NodeView(address, role, region, own, {k.removeprefix("f"): v for k, v in feeds.items()})


def copy(version: int, digest: bytes = D1, age: float = 1.0) -> FeedCopy:
    return FeedCopy(version, digest, age)


def federation(**overrides: FeedCopy) -> list[NodeView]:
    """City 440100 and province 440000 under the ministry, all holding both feeds."""
    city = {"f440000": copy(3, D2), "f440100": copy(7), **overrides}
    return [
        node(CITY, "city", "440100", "440100", **city),
        node(PROVINCE, "province", "440000", "440000", f440000=copy(3, D2), f440100=copy(7)),
        node(MINISTRY, "ministry", "000000", "", f440000=copy(3, D2), f440100=copy(7)),
    ]


def test_identical_heads_are_ok() -> None:
    report = assess(federation())
    assert report.findings == ()
    assert report.exit_code == EXIT_OK
    assert [r.publisher for r in report.rows] == ["440000", "440100"]
    assert not any(r.diverged or r.stale for r in report.rows)
    text = render(report)
    assert "OK: 2 feed(s) identical on 3 node(s), none stale" in text
    assert "v7 11111111" in text


def test_a_node_behind_is_divergence() -> None:
    report = assess(federation(f440100=copy(6, D3)))
    assert report.exit_code == EXIT_PROBLEM
    [finding] = report.findings
    assert (finding.problem, finding.feed) == (Problem.DIVERGED, "440100")
    assert finding.detail == (
        f"feed 440100: v7 11111111 at {PROVINCE}, {MINISTRY}; v6 33333333 at {CITY}"
    )
    row = report.rows[1]
    assert row.diverged
    city_cell = row.cells[0]
    assert city_cell is not None and city_cell.behind and city_cell.own
    assert "v6 33333333   1s =<" in render(report)


def test_same_version_other_digest_is_a_fork() -> None:
    report = assess(federation(f440100=copy(7, D3)))
    [finding] = report.findings
    assert "two digests at v7: a fork" in finding.detail
    cell = report.rows[1].cells[0]
    assert cell is not None and cell.fork and not cell.behind
    assert report.exit_code == EXIT_PROBLEM


def test_a_feed_missing_on_one_node_is_divergence() -> None:
    nodes = federation()
    nodes[0] = node(CITY, "city", "440100", "440100", f440100=copy(7))
    report = assess(nodes)
    [finding] = report.findings
    assert (
        finding.detail == f"feed 440000: v3 22222222 at {PROVINCE}, {MINISTRY}; missing at {CITY}"
    )
    assert report.rows[0].cells[0] is not None and report.rows[0].cells[0].copy is None


def test_stale_copies_but_not_own_feeds() -> None:
    """Signed freshness reaches the ministry too (head statements go up), so its copies
    are judged like any node's; a node's own feed is not."""
    old = 301.0
    nodes = [
        node(CITY, "city", "440100", "440100", f440000=copy(3, D2, old), f440100=copy(7, age=old)),
        node(PROVINCE, "province", "440000", "440000", f440000=copy(3, D2, old), f440100=copy(7)),
        node(
            MINISTRY, "ministry", "000000", "", f440000=copy(3, D2, old), f440100=copy(7, age=old)
        ),
    ]
    report = assess(nodes, stale_after=300)
    assert [(f.problem, f.feed, f.address) for f in report.findings] == [
        (Problem.STALE, "440000", CITY),
        (Problem.STALE, "440000", MINISTRY),
        (Problem.STALE, "440100", MINISTRY),
    ]
    assert "last known current 5m ago (more than 300 s)" in report.findings[0].detail
    assert report.exit_code == EXIT_PROBLEM
    assert report.rows[0].stale and not report.rows[0].diverged
    assert "STALE" in render(report)
    assert assess(nodes, stale_after=302).exit_code == EXIT_OK


def test_an_unreachable_node_wins_the_exit_code_and_the_rest_is_still_judged() -> None:
    nodes: list[NodeView | Unreachable] = [*federation(f440100=copy(6))]
    nodes[1] = Unreachable(PROVINCE, "UNAVAILABLE: failed to connect to all addresses")
    report = assess(nodes)
    assert [f.problem for f in report.findings] == [Problem.UNREACHABLE, Problem.DIVERGED]
    assert report.exit_code == EXIT_UNREACHABLE
    assert all(row.cells[1] is None for row in report.rows)
    text = render(report)
    assert f"UNREACHABLE: {PROVINCE}: UNAVAILABLE: failed to connect" in text
    assert "unreachable" in text.splitlines()[1]  # under the node's address
    assert "PROBLEM: 1 feed(s) diverged, 1 node(s) unreachable" in text


def test_a_refusing_node_is_refused_not_unreachable() -> None:
    nodes: list[NodeView | Unreachable] = [*federation()]
    why = "refused by x (PERMISSION_DENIED): role 'terminal' may not call Admin/Status"
    nodes[2] = Unreachable(MINISTRY, why, refused=True)
    report = assess(nodes)
    assert [f.problem for f in report.findings] == [Problem.REFUSED]
    assert report.exit_code == EXIT_UNREACHABLE  # it could not be read either way
    text = render(report)
    assert f"REFUSED: {MINISTRY}: {why}" in text and "UNREACHABLE" not in text
    assert text.splitlines()[1].split()[-1] == "refused"  # under the node's address
    assert "PROBLEM: 1 node(s) refused" in text


def test_nothing_reachable() -> None:
    report = assess([Unreachable(CITY, "DEADLINE_EXCEEDED: Deadline Exceeded")])
    assert report.exit_code == EXIT_UNREACHABLE
    assert "(no feeds on any reachable node)" in render(report)


def test_columns_line_up() -> None:
    nodes = federation(f440100=copy(12345, age=90000))
    lines = render(assess(nodes)).splitlines()
    columns = [lines[0].index(n.address) for n in nodes]
    for line in lines[2:4]:  # the two feed rows
        for at in columns:
            assert line[at - 2 : at] == "  " and line[at] == "v", (line, at)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (119.9, "119s"), (120, "2m"), (7199, "119m"), (7200, "2h"), (172800, "2d")],
)
def test_ages(seconds: float, text: str) -> None:
    assert format_age(seconds) == text


def test_view_of_a_status_response() -> None:
    response = admin_pb2.StatusResponse(
        role="city",
        region="440100",
        publisher="440100",
        feeds=[
            types_pb2.FeedInfo(publisher="440100", version=4, digest=D1, age_seconds=2.5, entries=9)
        ],
    )
    assert view_of(CITY, response) == NodeView(
        CITY, "city", "440100", "440100", {"440100": FeedCopy(4, D1, 2.5, 9)}
    )
