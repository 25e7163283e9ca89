"""Signed freshness between real node processes (issue #11 item 7, and the age part of 10).

* A relay that withholds a city's deltas, and claims in the unsigned head that nothing is
  new, cannot keep the child's ``feed_age_seconds`` near 0: the age grows past the
  statement interval and the signed lag shows, until the relay lets the deltas through.
* An honest federation (ministry ← province ← two cities) keeps ages small on every tier,
  also at the ministry, which has no upstream: cities' statements are pushed up.
* A node's statements survive a restart with its upstream down.

Nodes sign a head statement every ``INTERVAL`` seconds. Bounds on ages are multiples of it
with a wide margin; nothing here measures how long the test itself took.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest

from node.gen.blacklist.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    card_status_pb2,
    card_status_pb2_grpc,
    sync_pb2,
    sync_pb2_grpc,
    types_pb2,
)
from node.grpc.sync import MAX_PUSH_STATEMENTS
from node.local.process import LocalNode, NodeSpec, start_node
from tests.node_harness import KeyFiles, Metrics, card_id, write_keys
from tests.withholding_relay import WithholdingRelay

MINISTRY, GD, GZ, SZ = "000000", "440000", "440100", "440300"
INTERVAL = 1  # head_statement_interval of every authority here (seconds)
SYNC_INTERVAL = 0.5
TIMEOUT = 45.0  # a deadline for slow machines, not a performance claim
S = types_pb2.CardStatusCode
CALL: dict[str, Any] = {"timeout": 10.0, "wait_for_ready": True}
TAMPERING = ("bad_signature", "key_not_allowed", "fork", "malformed")


def wait_until(
    what: str, condition: Callable[[], bool], detail: Callable[[], str] | None = None
) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what}" + (f"\n{detail()}" if detail else "")
            )
        time.sleep(0.1)


class Nodes:
    """Running nodes by region, with cached channels."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: dict[str, LocalNode] = {}
        self._channels: dict[str, Any] = {}

    def start(self, spec: NodeSpec, name: str | None = None) -> LocalNode:
        name = name or spec.region
        node = start_node(spec, self.root / name)
        self.nodes[name] = node
        self._channels.pop(name, None)
        return node

    def channel(self, name: str) -> Any:
        if name not in self._channels:
            self._channels[name] = grpc.insecure_channel(self.nodes[name].grpc)
        return self._channels[name]

    def check(self, name: str, card: str) -> Any:
        stub = card_status_pb2_grpc.CardStatusStub(self.channel(name))  # type: ignore[no-untyped-call]
        return stub.CheckCard(card_status_pb2.CheckCardRequest(card_id=card), **CALL)

    def revoke(self, name: str, cards: Sequence[str]) -> Any:
        stub = admin_pb2_grpc.AdminStub(self.channel(name))  # type: ignore[no-untyped-call]
        revocations = [admin_pb2.Revocation(card_id=c, reason=types_pb2.LOSS) for c in cards]
        return stub.Revoke(admin_pb2.RevokeRequest(revocations=revocations), **CALL)

    def feed(self, name: str, publisher: str) -> Any:
        stub = admin_pb2_grpc.AdminStub(self.channel(name))  # type: ignore[no-untyped-call]
        for feed in stub.Status(admin_pb2.StatusRequest(), **CALL).feeds:
            if feed.publisher == publisher:
                return feed
        return None

    def statements(self, name: str) -> list[bytes]:
        """The head statements the node serves its children (GetUpdates)."""
        stub = sync_pb2_grpc.SyncStub(self.channel(name))  # type: ignore[no-untyped-call]
        response = stub.GetUpdates(sync_pb2.GetUpdatesRequest(node="probe"), **CALL)
        return list(response.head_statements)

    def scrape(self, name: str) -> Metrics:
        return Metrics.of(self.nodes[name].metrics_url)

    def stop(self, name: str) -> None:
        self._channels.pop(name, None)
        assert self.nodes.pop(name).stop() == 0

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        for node in reversed(list(self.nodes.values())):
            node.close()


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    n = Nodes(tmp_path)
    try:
        yield n
    finally:
        n.close()


def keys(root: Path) -> dict[str, KeyFiles]:
    return {
        GD: write_keys(root / "keys", GD, ["4499"]),
        GZ: write_keys(root / "keys", GZ, ["4401"]),
        SZ: write_keys(root / "keys", SZ, ["4403"]),
    }


def spec(
    region: str,
    role: str,
    k: dict[str, KeyFiles],
    *,
    upstream: str | None = None,
    signing: bool = True,
) -> NodeSpec:
    return NodeSpec(
        region,
        role=role,
        signing_key=k[region].private if signing and region in k else None,
        trusted_keys=tuple(kf.public for kf in k.values()),
        upstreams=(upstream,) if upstream else (),
        sync_interval=SYNC_INTERVAL,
        head_statement_interval=INTERVAL,
    )


def age(nodes: Nodes, name: str, card: str) -> float:
    answer = nodes.check(name, card)
    assert answer.publisher == GZ, answer
    return float(answer.feed_age_seconds)


def tampering(m: Metrics) -> dict[str, float]:
    return {
        c: m.get("blacklist_head_statements_rejected_total", cause=c)
        for c in TAMPERING
        if m.get("blacklist_head_statements_rejected_total", cause=c)
    }


# ---------------------------------------------------------------------------- the lying relay
def test_a_relay_that_withholds_deltas_cannot_make_the_feed_look_fresh(
    nodes: Nodes, tmp_path: Path
) -> None:
    rng = random.Random(7)
    k = keys(tmp_path)
    nodes.start(spec(GZ, "city", k))
    with WithholdingRelay(nodes.nodes[GZ].grpc, publisher=GZ) as relay:
        # The child: a node of another city with no key of its own, behind the relay.
        nodes.start(spec(SZ, "city", k, upstream=relay.address, signing=False))
        early, late = card_id(GZ, rng.getrandbits(64)), card_id(GZ, rng.getrandbits(64))
        nodes.revoke(GZ, [early])
        wait_until(
            "the child to hold the first revocation",
            lambda: nodes.check(SZ, early).status == S.REVOKED,
        )
        wait_until("the child's copy to be fresh", lambda: age(nodes, SZ, early) < 3 * INTERVAL)

        held = nodes.feed(SZ, GZ)
        relay.freeze(held.version, held.digest)
        nodes.revoke(GZ, [late])  # v2: the relay keeps it from the child
        ages: list[float] = []

        def stale() -> bool:
            ages.append(age(nodes, SZ, early))
            return ages[-1] > 5 * INTERVAL

        wait_until("the frozen feed's age to grow", stale, detail=lambda: f"ages {ages}")
        assert ages == sorted(ages), ages  # nothing refreshes it while the deltas are withheld
        answer = nodes.check(SZ, late)
        assert (answer.status, answer.feed_version) == (S.NOT_REVOKED, held.version)
        assert relay.withheld >= 1
        m = nodes.scrape(SZ)
        assert m.value("blacklist_feed_age_seconds", publisher=GZ) > 5 * INTERVAL
        # The authority's signed statement, relayed unchanged, shows how far behind it is.
        assert m.value("blacklist_feed_lag_versions", publisher=GZ) == 1
        assert m.get("blacklist_head_statements_total", result="accepted") > 0
        assert tampering(m) == {}

        relay.thaw()
        wait_until("the child to catch up", lambda: nodes.check(SZ, late).status == S.REVOKED)
        wait_until("the age to be small again", lambda: age(nodes, SZ, early) < 3 * INTERVAL)
        lag = nodes.scrape(SZ).value("blacklist_feed_lag_versions", publisher=GZ)
        assert lag == 0
        nodes.stop(SZ)


# ---------------------------------------------------------------------------- honest federation
def test_an_honest_federation_keeps_ages_small_on_every_tier(nodes: Nodes, tmp_path: Path) -> None:
    """No revocation for many statement intervals: every node still knows 440100's feed
    current, the ministry included (it has no upstream; the city's statements come up
    through the province)."""
    rng = random.Random(8)
    k = keys(tmp_path)
    nodes.start(spec(MINISTRY, "ministry", k))
    nodes.start(spec(GD, "province", k, upstream=nodes.nodes[MINISTRY].grpc))
    nodes.start(spec(GZ, "city", k, upstream=nodes.nodes[GD].grpc))
    nodes.start(spec(SZ, "city", k, upstream=nodes.nodes[GD].grpc))
    card = card_id(GZ, rng.getrandbits(64))
    nodes.revoke(GZ, [card])
    everywhere = (MINISTRY, GD, SZ)
    wait_until(
        "every node to hold the revocation",
        lambda: all(nodes.check(n, card).status == S.REVOKED for n in everywhere),
    )
    issued = nodes.feed(GZ, GZ).issued_at
    # Long after the only delta was issued, ages are still those of recent statements
    # (measured from that delta alone, they would all be over 8 intervals).
    wait_until("the only delta to be 8 intervals old", lambda: time.time() - issued > 8 * INTERVAL)
    for name in everywhere:
        assert age(nodes, name, card) < 5 * INTERVAL, name
        m = nodes.scrape(name)
        assert m.value("blacklist_feed_lag_versions", publisher=GZ) == 0, name
        assert m.value("blacklist_feed_age_seconds", publisher=GZ) < 5 * INTERVAL, name
        assert tampering(m) == {}, name
    assert nodes.scrape(GZ).get("blacklist_head_statements_signed_total") > 1


# ---------------------------------------------------------------------------- restart
def test_statements_survive_a_restart_with_the_upstream_down(nodes: Nodes, tmp_path: Path) -> None:
    rng = random.Random(9)
    k = keys(tmp_path)
    nodes.start(spec(GZ, "city", k))
    child = spec(SZ, "city", k, upstream=nodes.nodes[GZ].grpc, signing=False)
    nodes.start(child)
    card = card_id(GZ, rng.getrandbits(64))
    nodes.revoke(GZ, [card])
    wait_until(
        "the child to hold the revocation", lambda: nodes.check(SZ, card).status == S.REVOKED
    )
    nodes.stop(GZ)  # no statement after this one
    wait_until(
        "the child to hold the authority's last statement",
        lambda: nodes.statements(SZ) != [] and age(nodes, SZ, card) > INTERVAL,
    )
    before = nodes.statements(SZ)
    age_before = age(nodes, SZ, card)
    nodes.stop(SZ)
    nodes.start(child)  # same data directory; its upstream is gone
    assert nodes.statements(SZ) == before
    after = age(nodes, SZ, card)
    assert after >= age_before  # still measured from the same signed time, not reset
    assert nodes.scrape(SZ).value("blacklist_feed_lag_versions", publisher=GZ) == 0


# ---------------------------------------------------------------------------- the push bound
@pytest.mark.parametrize(
    ("count", "ok"),
    [
        (MAX_PUSH_STATEMENTS - 1, True),
        (MAX_PUSH_STATEMENTS, True),
        (MAX_PUSH_STATEMENTS + 1, False),
    ],
)
def test_push_head_statements_is_bounded_per_call(
    nodes: Nodes, tmp_path: Path, count: int, ok: bool
) -> None:
    """Each statement costs a signature check on the writer thread: a call carries at most
    MAX_PUSH_STATEMENTS (a child has one per publisher to send). Junk is refused whole
    before any verification, counted, and the node keeps serving."""
    k = keys(tmp_path)
    nodes.start(spec(GZ, "city", k))
    stub = sync_pb2_grpc.SyncStub(nodes.channel(GZ))  # type: ignore[no-untyped-call]
    request = sync_pb2.PushHeadStatementsRequest(statements=[b"junk"] * count, node="probe")
    if ok:
        response = stub.PushHeadStatements(request, **CALL)
        assert (response.accepted, len(response.rejected)) == (0, count)
        assert response.rejected[0].startswith("malformed: ")
        m = nodes.scrape(GZ)
        assert m.value("blacklist_head_statements_rejected_total", cause="malformed") == count
    else:
        with pytest.raises(grpc.RpcError) as caught:
            stub.PushHeadStatements(request, **CALL)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"{count} head statements exceed the limit" in caught.value.details()
    card = card_id(GZ, 1)
    nodes.revoke(GZ, [card])
    assert nodes.check(GZ, card).status == S.REVOKED
