"""The national scenarios: a steady day, and a day with a province offline for six hours,
a city bootstrapping from empty and the ministry restarting.

Both runs use the same federation, workload and node settings (:class:`Plan`); the
steady day gives propagation and bytes per day, the scenario day what each disturbance
costs and how long the federation takes to converge again.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from blacklist.regions import MINISTRY_CODE
from blacklist.sim.serving import answer_updates
from blacklist.sim.simnode import NodeConfig
from blacklist.sim.topology import NodeSpec, national
from blacklist.sim.workload import Workload
from blacklist.sim.world import World

HOUR = 3600.0


@dataclass(frozen=True)
class Plan:
    name: str
    provinces: int | None  # None: all 31
    cities_per_province: int | None  # None: all
    per_day: float  # revocations a day, nationally, in this run
    publish_interval: float  # an authority signs what its offices entered this often
    config: NodeConfig
    hours: float = 24.0
    offline_at: float = 8 * HOUR  # the province's link to the ministry is cut ...
    offline_hours: float = 6.0  # ... for this long
    bootstrap_at: float = 10 * HOUR  # a city's node starts from an empty directory
    restart_at: float = 16 * HOUR  # the ministry is killed ...
    restart_down: float = 120.0  # ... and started again this much later
    initial_cards: int = 20  # each feed's list before the day (its first delta)
    seed: int = 1
    disturbed_hours: float = 24.0  # the disturbed day ends here (after the last one healed)


SMALL = Plan(
    "small",
    provinces=3,
    cities_per_province=2,
    per_day=2_000,
    publish_interval=900.0,
    config=NodeConfig(sync_interval=300.0, statement_interval=1800.0),
)
FULL = Plan(
    "national",
    provinces=None,
    cities_per_province=None,
    per_day=190_000,
    publish_interval=8 * HOUR,
    # No head statements: each costs every node a verification and a write, as a delta does,
    # and the whole run must fit one process per day on a shared core. What they would cost
    # is computed in the report from the statements' size.
    config=NodeConfig(
        sync_interval=4 * HOUR,
        statement_interval=48 * HOUR,
        statement_after_publish=False,
        first_statement=48 * HOUR,
    ),
    initial_cards=0,
    disturbed_hours=17.0,
)


@dataclass
class Converged:
    what: str
    node: str | None  # converged when this node holds its upstream's heads (None: every node
    # holds every genuine head)
    started: float  # seconds after midnight when the disturbance ended
    seconds: float | None  # until every node held every genuine head (None: not in the run)
    bytes: int = 0  # bytes sent by all nodes meanwhile
    snapshots: int = 0  # snapshots applied meanwhile


@dataclass
class DayResult:
    plan: Plan
    specs: list[NodeSpec]
    latencies: list[float]  # publication → every node, seconds, per delta
    unreached: int  # deltas not at every node by the end
    sent: dict[str, int]  # bytes per node
    received: dict[str, int]
    received_by_kind: dict[str, dict[str, int]]  # per node: bytes by what they carried
    snapshots: dict[str, int]  # snapshot applies by receiving tier
    ministry_per_minute: dict[int, int]
    revocations: int
    deltas: int
    outcomes: dict[str, int]
    wall_seconds: float
    idle_pull_bytes: int  # one GetUpdates and its answer with nothing new (request + answer)
    converged: list[Converged] = field(default_factory=list)

    def tier_of(self, code: str) -> str:
        return next(s.tier for s in self.specs if s.code == code)


def _specs(plan: Plan) -> list[NodeSpec]:
    return national(plan.provinces, plan.cities_per_province)


def _all_converged(world: World) -> bool:
    genuine = world.genuine_heads()
    return all(n.store is not None and n.store.heads() == genuine for n in world.nodes.values())


def _caught_up(world: World, code: str) -> bool:
    node = world.nodes[code]
    up = world.nodes[node.upstreams[0]]
    if node.store is None or up.store is None:
        return False
    return node.store.heads() == up.store.heads()


class Day:
    """One simulated day of ``plan``; ``faults`` adds the three disturbances."""

    def __init__(self, plan: Plan, faults: bool, progress: bool = False) -> None:
        if faults:
            plan = dataclasses.replace(plan, hours=plan.disturbed_hours)
        self.progress = progress
        self.plan = plan
        self.faults = faults
        self.specs = _specs(plan)
        self.world = World(self.specs, seed=plan.seed, config=plan.config)
        self.world.network.watched[MINISTRY_CODE] = {}
        self.workload = Workload(self.specs, plan.per_day, np.random.default_rng(plan.seed))
        provinces = [s.code for s in self.specs if s.tier == "province"]
        self.offline = "440000" if "440000" in provinces else provinces[-1]
        cities = [s.code for s in self.specs if s.tier == "city"]
        self.late_city = cities[-1]
        self.revocations = 0
        self.deltas = 0
        self.converged: list[Converged] = []
        self._watch: list[Converged] = []

    @property
    def t0(self) -> float:
        return self.world.start_time

    def _local(self) -> float:
        return self.world.scheduler.now - self.t0

    def run(self) -> DayResult:
        wall = time.perf_counter()
        w, plan = self.world, self.plan
        for code in sorted(w.nodes):
            if not (self.faults and code == self.late_city):
                w.join(code)
        self._initial_lists()
        events = self._timeline()
        step = plan.publish_interval
        phase = {p: (i * 7919) % int(step) for i, p in enumerate(sorted(self.workload.feeds))}
        end = self.t0 + plan.hours * HOUR
        ticks = [
            (self.t0 + k * step + phase[p], p)
            for p in self.workload.feeds
            for k in range(1, int(plan.hours * HOUR / step) + 1)
            if k * step + phase[p] < plan.hours * HOUR
        ]
        ticks += [(self.t0 + at, name) for at, name in events]
        ticks.sort()
        hour = 0
        for at, what in ticks:
            if self.progress and at - self.t0 >= (hour + 1) * HOUR:
                hour = int((at - self.t0) // HOUR)
                day = "disturbed" if self.faults else "steady"
                print(
                    f"    {day} day {hour:02d}:00, {time.perf_counter() - wall:.0f} s", flush=True
                )
            self._advance(at)
            if what in self.workload.feeds:
                self._publish(what)
            else:
                self._disturb(what)
        self._advance(end)
        # Let the last ones land (the last pull round of every node), then measure.
        self._advance(end + plan.config.sync_interval + 120)
        result = self._result(time.perf_counter() - wall)
        w.close()
        return result

    def _initial_lists(self) -> None:
        if not self.plan.initial_cards:
            return
        for p in sorted(self.workload.feeds):
            if self.world.nodes[p].up:
                cards = self.workload.new_cards(p, self.plan.initial_cards)
                from blacklist.authority import Revocation
                from blacklist.entry import Reason

                now = int(self.world.scheduler.now)
                self.world.publish(p, [Revocation(c, Reason.LOSS, now - 86_400) for c in cards])
        self._advance(self.t0 + 600)

    def _timeline(self) -> list[tuple[float, str]]:
        if not self.faults:
            return []
        p = self.plan
        return [
            (p.offline_at, "offline"),
            (p.offline_at + p.offline_hours * HOUR, "heal"),
            (p.bootstrap_at, "bootstrap"),
            (p.restart_at, "ministry-down"),
            (p.restart_at + p.restart_down, "ministry-up"),
        ]

    def _publish(self, publisher: str) -> None:
        node = self.world.nodes[publisher]
        if not node.up:
            return
        now = int(self.world.scheduler.now)
        revs, back = self.workload.draw(publisher, self.plan.publish_interval, self._local(), now)
        if (revs or back) and self.world.publish(publisher, revs, back) is not None:
            self.revocations += len(revs)
            self.deltas += 1

    def _disturb(self, what: str) -> None:
        w = self.world
        if what == "offline":
            w.network.partition(self.offline, MINISTRY_CODE)
        elif what == "heal":
            w.network.partition(self.offline, MINISTRY_CODE, up=True)
            self._start_watch(f"province {self.offline} back after {self.plan.offline_hours:g} h")
        elif what == "bootstrap":
            w.join(self.late_city)
            self._start_watch(f"city {self.late_city} bootstrapping from empty", self.late_city)
        elif what == "ministry-down":
            w.nodes[MINISTRY_CODE].crash()
        elif what == "ministry-up":
            w.nodes[MINISTRY_CODE].start()
            self._start_watch(f"ministry restarted after {self.plan.restart_down:g} s down")

    def _start_watch(self, what: str, node: str | None = None) -> None:
        traffic = self.world.network.traffic
        c = Converged(what, node, self._local(), None)
        c.bytes = -sum(t.sent for t in traffic.values())
        c.snapshots = -sum(self.world.observed.snapshot_applies.values())
        self._watch.append(c)
        self.converged.append(c)

    def _advance(self, until: float) -> None:
        """Run to ``until``; while a disturbance is being healed, check every 5 s whether
        every node holds every genuine head."""
        w = self.world
        while self._watch and w.scheduler.now < until:
            w.run_until(min(until, w.scheduler.now + 5.0))
            everyone: bool | None = None
            for c in list(self._watch):
                if c.node is not None:
                    done = _caught_up(w, c.node)
                else:
                    everyone = _all_converged(w) if everyone is None else everyone
                    done = everyone
                if done:
                    c.seconds = self._local() - c.started
                    c.bytes += sum(t.sent for t in w.network.traffic.values())
                    c.snapshots += sum(w.observed.snapshot_applies.values())
                    self._watch.remove(c)
        w.run_until(until)

    def _idle_pull_bytes(self) -> int:
        """The bytes of one pull when nothing is new: heads both ways and every statement."""
        from blacklist.sim.messages import GetUpdates

        node = self.world.nodes[self.specs[-1].code]
        up = self.world.nodes[node.upstreams[0]]
        assert node.store is not None and up.store is not None
        request = GetUpdates(0, node.store.heads(), node.code)
        answer = answer_updates(up.store, request, self.plan.config.max_message_bytes)
        return request.size + answer.size

    def _result(self, wall: float) -> DayResult:
        w = self.world
        published = list(w.observed.published.values())
        day_start = self.t0 + 600  # the initial lists are not part of the day
        day = [p for p in published if p.at >= day_start]
        return DayResult(
            plan=self.plan,
            specs=self.specs,
            latencies=sorted(p.reached_all - p.at for p in day if p.reached_all is not None),
            unreached=sum(1 for p in day if p.reached_all is None),
            sent={c: t.sent for c, t in w.network.traffic.items()},
            received={c: t.received for c, t in w.network.traffic.items()},
            received_by_kind={c: dict(t.received_by_kind) for c, t in w.network.traffic.items()},
            snapshots=dict(w.observed.snapshot_applies),
            ministry_per_minute=dict(w.network.watched[MINISTRY_CODE]),
            revocations=self.revocations,
            deltas=self.deltas,
            outcomes={f"{o}:{c}": n for (o, c), n in sorted(w.observed.outcomes.items())},
            wall_seconds=wall,
            idle_pull_bytes=self._idle_pull_bytes(),
            converged=self.converged,
        )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.array(values), q))
