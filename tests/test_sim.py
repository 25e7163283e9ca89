"""Issue #18: the national simulator (blacklist/sim/) — its clock and links, that one seed
replays exactly, that the invariants of the fault run can fail (a node that skips
acceptance, an index that loses fingerprints), and a small simulated day."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

import blacklist.store
from blacklist.delta import Delta, FeedHead
from blacklist.deltadecode import decode
from blacklist.filters.roaring_index import FingerprintIndex
from blacklist.rejections import BadSignature, UnknownKey
from blacklist.sim import report
from blacklist.sim.events import Scheduler
from blacklist.sim.faults import InvariantViolated, run_seed
from blacklist.sim.messages import Event
from blacklist.sim.network import LinkState, Network
from blacklist.sim.scenarios import SMALL, Day, percentile
from blacklist.sync.accept import Accepted, accept_signed


def test_events_run_in_time_then_insertion_order() -> None:
    s = Scheduler(100.0)
    seen: list[str] = []
    s.at(102.0, seen.append, "late")
    s.at(101.0, seen.append, "first")
    s.at(101.0, seen.append, "second")
    s.after(0.5, seen.append, "soonest").cancel()
    s.run_until(101.0)
    assert seen == ["first", "second"] and s.now == 101.0
    s.run_until(105.0)
    assert seen == ["first", "second", "late"] and s.now == 105.0
    with pytest.raises(ValueError, match="before the virtual now"):
        s.at(104.0, seen.append, "past")


def _network(link: LinkState) -> tuple[Scheduler, Network, list[tuple[float, int]]]:
    s = Scheduler(0.0)
    got: list[tuple[float, int]] = []
    net = Network(
        s,
        random.Random(1),
        lambda src, dst, m: got.append((s.now, m.session)),
        lambda c: True,
        link,
    )
    return s, net, got


def test_link_latency_and_bandwidth_queue_messages_in_order() -> None:
    s, net, got = _network(LinkState(latency=0.5, bandwidth=1000.0))
    net.send("a", "b", Event(1, delta=bytes(997)))  # 1000 bytes on the wire: 1 s to send
    net.send("a", "b", Event(2, delta=bytes(997)))
    s.run_until(10.0)
    assert got == [(1.5, 1), (2.5, 2)]
    assert net.traffic["a"].sent == 2000 and net.traffic["b"].received == 2000


def test_a_partition_drops_what_is_in_flight_and_what_is_sent() -> None:
    s, net, got = _network(LinkState(latency=1.0))
    net.send("a", "b", Event(1, delta=b"x"))
    net.partition("a", "b")
    net.send("b", "a", Event(2, delta=b"x"))
    s.run_until(5.0)
    assert got == [] and net.lost == 2
    net.partition("a", "b", up=True)
    net.send("a", "b", Event(3, delta=b"x"))
    s.run_until(10.0)
    assert [m for _, m in got] == [3]


def test_loss_one_drops_everything_and_duplicate_one_doubles_it() -> None:
    s, net, got = _network(LinkState(loss=1.0))
    net.send("a", "b", Event(1, delta=b"x"))
    s.run_until(5.0)
    assert got == []
    s, net, got = _network(LinkState(duplicate=1.0))
    net.send("a", "b", Event(1, delta=b"x"))
    s.run_until(5.0)
    assert [m for _, m in got] == [1, 1]


def test_jitter_reorders_messages() -> None:
    s, net, got = _network(LinkState(latency=0.01, jitter=5.0))
    for i in range(20):
        net.send("a", "b", Event(i, delta=b"x"))
    s.run_until(60.0)
    order = [m for _, m in got]
    assert sorted(order) == list(range(20)) and order != list(range(20))


def test_one_seed_replays_exactly() -> None:
    a, b = run_seed(7, 20), run_seed(7, 20)
    assert a.actions == b.actions
    assert a.final_heads == b.final_heads and a.bytes_sent == b.bytes_sent
    assert run_seed(8, 20).actions != a.actions


def _skip_signatures(
    data: bytes, position_of: object, keys: object, policy: object = None
) -> Accepted:
    """accept_signed, except that a signature nobody can verify is let through."""
    try:
        return accept_signed(data, position_of, keys, policy)  # type: ignore[arg-type]
    except (UnknownKey, BadSignature):
        item = decode(data)
        if isinstance(item, Delta):
            return Accepted(item, FeedHead(item.publisher, item.version, item.digest))
        return Accepted(item, FeedHead(item.publisher, item.version, item.head_digest))


def test_the_invariants_catch_a_node_that_applies_forgeries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(blacklist.store, "accept_signed", _skip_signatures)
    with pytest.raises(
        InvariantViolated, match=r"seed \d+, step .*replay: python -m blacklist.sim faults --seed"
    ):
        for seed in range(30):
            run_seed(seed, 30)


def test_the_invariants_catch_an_index_that_loses_fingerprints(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(FingerprintIndex, "add_many", lambda self, fps: None)
    with pytest.raises(InvariantViolated, match=r"answers NOT_REVOKED .* not REVOKED"):
        run_seed(0, 10)


TINY = dataclasses.replace(SMALL, provinces=2, cities_per_province=2, hours=17.0, per_day=1000)


def test_a_small_day_propagates_everything_and_recovers(tmp_path: Path) -> None:
    steady = Day(TINY, faults=False).run()
    disturbed = Day(TINY, faults=True).run()
    assert steady.deltas > 0 and steady.unreached == 0
    # City to city in another province is four hops of 20 ms each, at least.
    assert percentile(steady.latencies, 50) >= 0.08
    assert [c.seconds is not None for c in disturbed.converged] == [True, True, True]
    # The deltas signed while the province was cut off wait for the link to come back.
    assert max(disturbed.latencies) > 3600
    text = report.markdown(steady, disturbed, "pytest")
    assert text.rstrip().splitlines()[-1].startswith("national: p99 ")
    report.plot(steady, disturbed, tmp_path / "simulation.png")
    assert (tmp_path / "simulation.png").stat().st_size > 10_000
