"""``python -m node status ADDR...``: every feed's head on every node, side by side.

It asks each node for ``Admin.Status`` and prints one row per feed (publisher) and one column
per node: the feed version, the first 8 hex digits of its head digest and its age there (how
long since the newest time the publisher signed at which its head was one that node holds:
a head statement or the head delta, blacklist/sync/freshness.py). Then it judges:

* **diverged**: the nodes do not hold the same head of a feed (another version, or the same
  version with another digest: a fork), or some hold it and others do not;
* **stale**: a node's copy is older than ``--stale-after`` seconds. Not judged for a node's
  own feed (its authority is the source). The ministry is judged like every node: head
  statements come up to it from the provinces and cities;
* **unreachable**: a node could not be reached (nothing listening, mutual TLS required and
  not offered, ...: node/cli/diagnose.py says which, and what to pass);
* **refused**: a node answered and refused the call (``PERMISSION_DENIED``: ``Admin.Status``
  takes an operator certificate).

Exit code: 0 all agree and are fresh; 1 a feed diverged or is stale; 3 a node is unreachable
or refused (whatever else); 2 bad usage. The judging (:func:`assess`) and the table (:func:`render`) are
pure functions of the answers, tested without sockets; only :func:`fetch` talks to nodes.
"""

from __future__ import annotations

import argparse
import enum
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import grpc

from node.cli.client import (
    ClientTls,
    UsageError,
    add_connection_options,
    add_federation_option,
    open_channel,
    resolve_node,
    tls_from_args,
)
from node.cli.diagnose import explain_error
from node.gen.blacklist.v1 import admin_pb2, admin_pb2_grpc
from node.tls import TlsError

# Far above the default sync_interval (5 s) and the sync client's longest backoff (10 s): a
# copy this old means pulls have been failing for minutes, not one missed round.
DEFAULT_STALE_AFTER = 300.0
DIGEST_PREFIX = 8  # hex digits shown
EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


# ---------------------------------------------------------------------------- values
@dataclass(frozen=True, slots=True)
class FeedCopy:
    """One node's copy of one feed (from FeedInfo)."""

    version: int
    digest: bytes
    age_seconds: float
    entries: int = 0


@dataclass(frozen=True)
class NodeView:
    address: str
    role: str
    region: str
    publisher: str  # the node's own feed, "" when it publishes nothing
    feeds: Mapping[str, FeedCopy] = field(default_factory=dict)


@dataclass(frozen=True)
class Unreachable:
    """A node that gave no answer: never reached, or (``refused``) it said no."""

    address: str
    reason: str
    refused: bool = False


Answer = NodeView | Unreachable


class Problem(enum.StrEnum):
    UNREACHABLE = "unreachable"
    REFUSED = "refused"
    DIVERGED = "diverged"
    STALE = "stale"


@dataclass(frozen=True)
class Finding:
    problem: Problem
    detail: str
    feed: str = ""
    address: str = ""


@dataclass(frozen=True)
class Cell:
    copy: FeedCopy | None  # None: the node does not hold the feed
    own: bool = False
    behind: bool = False  # an older version than the newest any node holds
    fork: bool = False  # the newest version, but another digest than the majority's
    stale: bool = False


@dataclass(frozen=True)
class FeedRow:
    publisher: str
    cells: tuple[Cell | None, ...]  # one per node, None for an unreachable node
    diverged: bool
    stale: bool


@dataclass(frozen=True)
class StatusReport:
    nodes: tuple[Answer, ...]
    rows: tuple[FeedRow, ...]
    findings: tuple[Finding, ...]
    stale_after: float

    @property
    def exit_code(self) -> int:
        problems = {f.problem for f in self.findings}
        if problems & {Problem.UNREACHABLE, Problem.REFUSED}:
            return EXIT_UNREACHABLE
        return EXIT_PROBLEM if problems else EXIT_OK


# ---------------------------------------------------------------------------- judging
def view_of(address: str, response: admin_pb2.StatusResponse) -> NodeView:
    return NodeView(
        address,
        response.role,
        response.region,
        response.publisher,
        {
            f.publisher: FeedCopy(f.version, bytes(f.digest), f.age_seconds, f.entries)
            for f in response.feeds
        },
    )


def _judged(node: NodeView, publisher: str) -> bool:
    """Whether a copy's age means anything (see the module docstring)."""
    return publisher != node.publisher


def _head(copy: FeedCopy) -> str:
    return f"v{copy.version} {copy.digest.hex()[:DIGEST_PREFIX]}"


def _row(
    publisher: str, nodes: Sequence[Answer], stale_after: float
) -> tuple[FeedRow, list[Finding]]:
    views = [n for n in nodes if isinstance(n, NodeView)]
    copies = {n.address: n.feeds.get(publisher) for n in views}
    held = [c for c in copies.values() if c is not None]
    newest = max(c.version for c in held)
    digests = [c.digest for c in held if c.version == newest]
    majority = max(set(digests), key=digests.count)
    heads: dict[tuple[int, bytes], list[str]] = {}
    missing = []
    for address, copy in copies.items():
        if copy is None:
            missing.append(address)
        else:
            heads.setdefault((copy.version, copy.digest), []).append(address)
    diverged = len(heads) > 1 or bool(missing)
    findings = []
    if diverged:
        parts = [
            f"v{v} {d.hex()[:DIGEST_PREFIX]} at {', '.join(where)}"
            for (v, d), where in sorted(heads.items(), key=lambda kv: (-kv[0][0], kv[1]))
        ]
        if missing:
            parts.append(f"missing at {', '.join(missing)}")
        if len({d for v, d in heads if v == newest}) > 1:
            parts.append(f"two digests at v{newest}: a fork")
        findings.append(
            Finding(Problem.DIVERGED, f"feed {publisher}: " + "; ".join(parts), publisher)
        )
    cells: list[Cell | None] = []
    any_stale = False
    for node in nodes:
        if not isinstance(node, NodeView):
            cells.append(None)
            continue
        copy = copies[node.address]
        if copy is None:
            cells.append(Cell(None))
            continue
        stale = _judged(node, publisher) and copy.age_seconds > stale_after
        if stale:
            any_stale = True
            findings.append(
                Finding(
                    Problem.STALE,
                    f"feed {publisher} at {node.address}: last known current "
                    f"{format_age(copy.age_seconds)} ago (more than {stale_after:g} s)",
                    publisher,
                    node.address,
                )
            )
        cells.append(
            Cell(
                copy,
                own=publisher == node.publisher,
                behind=copy.version < newest,
                fork=copy.version == newest and copy.digest != majority,
                stale=stale,
            )
        )
    return FeedRow(publisher, tuple(cells), diverged, any_stale), findings


def assess(nodes: Sequence[Answer], stale_after: float = DEFAULT_STALE_AFTER) -> StatusReport:
    """The table and the verdict from the nodes' answers, in the order given."""
    findings = [
        Finding(
            Problem.REFUSED if n.refused else Problem.UNREACHABLE,
            f"{n.address}: {n.reason}",
            address=n.address,
        )
        for n in nodes
        if isinstance(n, Unreachable)
    ]
    publishers = sorted({p for n in nodes if isinstance(n, NodeView) for p in n.feeds})
    rows = []
    for publisher in publishers:
        row, found = _row(publisher, nodes, stale_after)
        rows.append(row)
        findings.extend(found)
    return StatusReport(tuple(nodes), tuple(rows), tuple(findings), stale_after)


# ---------------------------------------------------------------------------- the table
def format_age(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 2 * 3600:
        return f"{s // 60}m"
    if s < 2 * 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _cell_text(cell: Cell | None) -> str:
    if cell is None:
        return "?"
    if cell.copy is None:
        return "-"
    marks = ("=" if cell.own else "") + ("<" if cell.behind else "") + ("~" if cell.fork else "")
    marks += "!" if cell.stale else ""
    return f"{_head(cell.copy)} {format_age(cell.copy.age_seconds):>4} {marks}".rstrip()


def _node_title(node: Answer) -> tuple[str, str]:
    if isinstance(node, Unreachable):
        return node.address, "refused" if node.refused else "unreachable"
    return node.address, f"{node.role} {node.region}".strip()


LEGEND = (
    "= the node's own feed   < behind the newest version   ~ same version, other digest (fork)\n"
    "! stale   - feed missing on that node   ? no answer from the node   age: since last known current"
)


def render(report: StatusReport) -> str:
    """The feeds × nodes table, the legend, then one line per finding and the verdict."""
    titles = [_node_title(n) for n in report.nodes]
    header = [("FEED", ""), ("STATE", ""), *titles]
    body = []
    for row in report.rows:
        state = "DIVERGED" if row.diverged else "STALE" if row.stale else "ok"
        if row.diverged and row.stale:
            state = "DIVERGED,STALE"
        body.append([row.publisher, state, *(_cell_text(c) for c in row.cells)])
    widths = [max([len(h[0]), len(h[1]), *(len(r[i]) for r in body)]) for i, h in enumerate(header)]
    lines = [
        "  ".join(h[0].ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
        "  ".join(h[1].ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in body]
    if not report.rows:
        lines.append("(no feeds on any reachable node)")
    lines += ["", LEGEND, ""]
    for finding in report.findings:
        lines.append(f"{finding.problem.upper()}: {finding.detail}")
    lines.append(verdict(report))
    return "\n".join(lines) + "\n"


def verdict(report: StatusReport) -> str:
    counts = {p: sum(f.problem is p for f in report.findings) for p in Problem}
    reachable = sum(isinstance(n, NodeView) for n in report.nodes)
    if not any(counts.values()):
        return f"OK: {len(report.rows)} feed(s) identical on {reachable} node(s), none stale"
    parts = [
        f"{counts[Problem.DIVERGED]} feed(s) diverged" if counts[Problem.DIVERGED] else "",
        f"{counts[Problem.STALE]} stale cop(ies)" if counts[Problem.STALE] else "",
        f"{counts[Problem.UNREACHABLE]} node(s) unreachable" if counts[Problem.UNREACHABLE] else "",
        f"{counts[Problem.REFUSED]} node(s) refused" if counts[Problem.REFUSED] else "",
    ]
    return "PROBLEM: " + ", ".join(p for p in parts if p)


# ---------------------------------------------------------------------------- the network
def fetch(addresses: Sequence[str], tls: ClientTls | None, timeout: float) -> list[Answer]:
    """Ask every node at once; an answer (or the reason there is none) per address."""
    channels = [open_channel(a, tls) for a in addresses]
    try:
        futures: list[Future[Any]] = [
            admin_pb2_grpc.AdminStub(ch).Status.future(  # type: ignore[no-untyped-call]
                admin_pb2.StatusRequest(), timeout=timeout
            )
            for ch in channels
        ]
        answers: list[Answer] = []
        for address, future in zip(addresses, futures, strict=True):
            try:
                answers.append(view_of(address, future.result()))
            except grpc.RpcError as exc:
                said = explain_error(address, exc, tls_given=tls is not None, timeout=timeout)
                answers.append(Unreachable(address, said.text, refused=said.reached))
        return answers
    finally:
        for channel in channels:
            channel.close()


def add_command(sub: Any) -> None:
    cmd = sub.add_parser(
        "status",
        help="every feed's head on each node side by side; non-zero exit on divergence",
        description="Every feed's version, digest prefix and age on each node, side by "
        "side. Exit code 0: identical everywhere and fresh; 1: a feed diverged or is stale; "
        "3: a node is unreachable or refused the call; 2: bad usage.",
    )
    cmd.add_argument(
        "addresses",
        nargs="+",
        metavar="ADDR",
        help="node gRPC address host:port, or the region code of a node `make up` started",
    )
    add_federation_option(cmd)
    cmd.add_argument(
        "--stale-after",
        type=float,
        default=DEFAULT_STALE_AFTER,
        metavar="SECONDS",
        help=f"a copy older than this is stale (default {DEFAULT_STALE_AFTER:g})",
    )
    add_connection_options(cmd, timeout=5.0)
    cmd.set_defaults(fn=main)


def main(args: argparse.Namespace) -> int:
    try:
        tls = tls_from_args(args)
        given = [resolve_node(a, args.federation) for a in args.addresses]
        addresses = list(dict.fromkeys(given))  # each node once, in the order given
        answers = fetch(addresses, tls, args.timeout)
    except (UsageError, TlsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    report = assess(answers, args.stale_after)
    sys.stdout.write(render(report))
    return report.exit_code
