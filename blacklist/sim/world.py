"""The simulated federation: nodes, links, the virtual clock, and what was observed.

The world routes messages between :class:`SimNode`\\ s through the :class:`Network`,
keeps the genuine history of every feed (each version's digest, as its authority signed
it) and measures propagation: for every published delta, the time until every node that
was in the federation when it was signed holds that version or a later one (by delta or
by snapshot).
"""

from __future__ import annotations

import random
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from blacklist.authority import Revocation
from blacklist.delta import Delta, FeedHead
from blacklist.signing import Keyring
from blacklist.sim.events import Scheduler
from blacklist.sim.messages import Message
from blacklist.sim.network import LinkState, Network
from blacklist.sim.simnode import NodeConfig, SimNode
from blacklist.sim.topology import NodeSpec, signing_keys
from blacklist.sync.ingest import Outcome

# Monday 2026-12-07 00:00 China Standard Time (UTC+8), as a Unix time.
START = 1_796_572_800 - 8 * 3600


@dataclass
class Published:
    publisher: str
    version: int
    at: float
    waiting: int  # nodes that do not hold it yet
    reached_all: float | None = None


@dataclass
class Observed:
    published: dict[tuple[str, int], Published] = field(default_factory=dict)
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (outcome, cause)
    snapshot_applies: Counter[str] = field(default_factory=Counter)  # by receiving tier


Applied = Callable[[str, str, int, int, bool], None]
Refusal = Callable[[str, Outcome, str, bytes], None]


class World:
    def __init__(
        self,
        specs: Sequence[NodeSpec],
        *,
        seed: int,
        config: NodeConfig,
        link: LinkState | None = None,
        root: Path | None = None,
        start: float = START,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.scheduler = Scheduler(start)
        self.start_time = start
        self.specs = {s.code: s for s in specs}
        self.signing = signing_keys(list(specs), random.Random(seed ^ 0x5EED))
        self.keys = Keyring(k.trusted() for _, k in sorted(self.signing.items()))
        self._tmp = None
        if root is None:
            base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
            self._tmp = tempfile.TemporaryDirectory(prefix="blacklist-sim-", dir=base)
            root = Path(self._tmp.name)
        self.root = root
        self.network = Network(
            self.scheduler, random.Random(seed ^ 0x11), self._deliver, self.is_up, link
        )
        self.nodes: dict[str, SimNode] = {}
        for spec in specs:
            self.nodes[spec.code] = SimNode(
                self,
                spec.code,
                spec.tier,
                spec.upstreams,
                self.signing.get(spec.code),
                root / spec.code,
                config,
                random.Random(f"{seed}:{spec.code}"),
            )
        self.members: dict[str, float] = {}  # node → when it joined (counts for propagation)
        self.history: dict[str, list[bytes]] = {
            p: [FeedHead.genesis(p).digest] for p in self.signing
        }
        self.reached: dict[str, dict[str, int]] = {c: {} for c in self.nodes}
        self.observed = Observed()
        self.on_applied: list[Applied] = []
        self.on_refused: list[Refusal] = []

    def close(self) -> None:
        for node in self.nodes.values():
            if node.up:
                node.crash(clean=True)
        if self._tmp is not None:
            self._tmp.cleanup()

    # ------------------------------------------------------------------ the Host protocol
    def send(self, src: str, dst: str, message: Message, *, request: bool = False) -> None:
        self.network.send(src, dst, message, request=request)

    def _deliver(self, src: str, dst: str, message: Message) -> None:
        self.nodes[dst].receive(src, message)

    def is_up(self, code: str) -> bool:
        return self.nodes[code].up

    def applied(self, node: str, publisher: str, before: int, after: int, snapshot: bool) -> None:
        if snapshot:
            self.observed.snapshot_applies[self.nodes[node].tier] += 1
        self._reach(node, publisher, after)
        for fn in self.on_applied:
            fn(node, publisher, before, after, snapshot)

    def refused(self, node: str, outcome: Outcome, cause: str, data: bytes) -> None:
        self.observed.outcomes[(outcome.value, cause)] += 1
        for fn in self.on_refused:
            fn(node, outcome, cause, data)

    # ------------------------------------------------------------------ membership
    def join(self, code: str) -> None:
        """Start a node and count it in the propagation of what is signed from now on."""
        self.members.setdefault(code, self.scheduler.now)
        self.nodes[code].start()

    def _reach(self, node: str, publisher: str, version: int) -> None:
        held = self.reached[node].get(publisher, 0)
        if version <= held:
            return
        self.reached[node][publisher] = version
        joined = self.members.get(node)
        if joined is None:
            return
        now = self.scheduler.now
        for v in range(held + 1, version + 1):
            p = self.observed.published.get((publisher, v))
            if p is None or p.at < joined or p.reached_all is not None:
                continue
            p.waiting -= 1
            if p.waiting == 0:
                p.reached_all = now

    # ------------------------------------------------------------------ publishing
    def publish(
        self, code: str, revocations: Sequence[Revocation], reinstatements: Sequence[str] = ()
    ) -> Delta | None:
        node = self.nodes[code]
        delta = node.publish(revocations, reinstatements)
        if delta is None:
            return None
        history = self.history[code]
        if delta.version != len(history):
            raise AssertionError(
                f"{code} signed v{delta.version} but its genuine feed is at v{len(history) - 1}"
            )
        history.append(delta.digest)
        now = self.scheduler.now
        others = sum(1 for c, t in self.members.items() if t <= now and c != code)
        self.observed.published[(code, delta.version)] = Published(code, delta.version, now, others)
        self.reached[code][code] = delta.version
        if others == 0:
            self.observed.published[(code, delta.version)].reached_all = now
        for fn in self.on_applied:
            fn(code, code, delta.version - 1, delta.version, False)
        return delta

    def run_until(self, when: float) -> None:
        self.scheduler.run_until(when)

    def heads(self, code: str) -> dict[str, FeedHead]:
        store = self.nodes[code].store
        assert store is not None, f"node {code} is down"
        return store.heads()

    def genuine_heads(self) -> dict[str, FeedHead]:
        return {
            p: FeedHead(p, len(h) - 1, h[-1]) for p, h in sorted(self.history.items()) if len(h) > 1
        }
