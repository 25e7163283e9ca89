"""Deterministic fault injection over the simulated federation (after FoundationDB's
simulation testing): one seed draws a run — publications, crashes that lose what was not
committed (the queues and what was in flight; a kill right after a commit, before the
node sent it on), restarts, partitions, lost, reordered and duplicated messages, slow links, a
stale upstream (the ministry restored from an old backup), and forged or tampered items
offered to nodes — and every invariant is checked after every step:

1. **genuine heads**: every feed head a node holds, after every apply, is a version its
   authority signed, with that version's digest (no node applies anything a rule refuses);
2. **refusals**: every forged or tampered item offered is not applied, and leaves the
   node's heads and head statements as they were;
3. **answers**: every node answers REVOKED for exactly the cards revoked in the version of
   the feed it holds (so never NOT_REVOKED for a card whose revocation it applied, nor a
   stale REVOKED after a reinstatement it applied), NO_DATA before the feed's first delta;
4. **convergence**: once the faults heal, every node holds every authority's head.

The same seed replays the same run exactly (virtual time, seeded draws, keys from the
seed, no hash-ordered iteration): ``python -m blacklist.sim faults --seed N``.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from blacklist.authority import Revocation, cards_from_ids, entries_from_revocations
from blacklist.checker import CheckStatus
from blacklist.delta import FeedHead, Snapshot, sign_delta, sign_snapshot
from blacklist.entry import Reason
from blacklist.regions import MINISTRY_CODE
from blacklist.signing import SigningKey
from blacklist.sim.network import LinkState
from blacklist.sim.simnode import NodeConfig, Source
from blacklist.sim.topology import NodeSpec, national
from blacklist.sim.workload import Workload
from blacklist.sim.world import World
from blacklist.sync.freshness import sign_statement
from blacklist.sync.ingest import Outcome

NORMAL = LinkState(latency=0.02, bandwidth=12.5e6)


class InvariantViolated(AssertionError):
    """An invariant failed; the message names the seed, the step and what broke."""


@dataclass
class FaultLog:
    seed: int
    steps: int = 0
    actions: list[str] = field(default_factory=list)
    published: int = 0
    forgeries: int = 0
    crashes: int = 0
    checks: int = 0
    final_heads: list[tuple[str, int, str]] = field(default_factory=list)
    bytes_sent: int = 0


def topology() -> list[NodeSpec]:
    """1 ministry, 2 provinces, 4 cities; each city fails over to the ministry."""
    specs = []
    for s in national(2, 2):
        if s.tier == "city":
            s = NodeSpec(s.code, s.tier, (*s.upstreams, MINISTRY_CODE), s.prefix)
        specs.append(s)
    return specs


class FaultRun:
    def __init__(self, seed: int, steps: int = 30, step_seconds: float = 20.0) -> None:
        self.seed = seed
        self.steps = steps
        self.step_seconds = step_seconds
        self.rng = random.Random(seed)
        self.specs = topology()
        retain = self.rng.choice([2, 4, 1000])  # short histories force snapshots
        self.config = NodeConfig(
            sync_interval=15.0, statement_interval=60.0, request_timeout=5.0, retain_deltas=retain
        )
        self.world = World(self.specs, seed=seed, config=self.config, link=NORMAL)
        self.workload = Workload(self.specs, 20_000, np.random.default_rng(seed))
        self.log = FaultLog(seed)
        # The genuine state of every feed at every version: the cards revoked.
        self.states: dict[str, list[frozenset[str]]] = {
            p: [frozenset()] for p in self.world.signing
        }
        self.cards: dict[str, set[str]] = {p: set() for p in self.world.signing}
        self.publisher_of: dict[str, str] = {}
        self.recent: list[str] = []
        self.backup: str | None = None
        self.step = 0
        self.world.on_applied.append(self._check_genuine)

    # ------------------------------------------------------------------ invariants
    def _fail(self, what: str) -> None:
        raise InvariantViolated(
            f"seed {self.seed}, step {self.step} ({self.log.actions[-1] if self.log.actions else 'start'}): "
            f"{what}; replay: python -m blacklist.sim faults --seed {self.seed}"
        )

    def _check_genuine(
        self, node: str, publisher: str, before: int, after: int, snap: bool
    ) -> None:
        store = self.world.nodes[node].store
        if store is None:
            return  # killed right after the commit; check_all looks at it once restarted
        head = store.head(publisher)
        history = self.world.history.get(publisher)
        if history is None or head.version >= len(history) or history[head.version] != head.digest:
            self._fail(
                f"{node} holds {publisher} v{head.version}, which its authority never signed"
            )

    def check_all(self) -> None:
        self.log.checks += 1
        cards = self._sample()
        for code, node in self.world.nodes.items():
            if node.store is None or node.checker is None:
                continue
            heads = node.store.heads()
            for p, head in heads.items():
                history = self.world.history.get(p, [])
                if head.version >= len(history) or history[head.version] != head.digest:
                    self._fail(f"{code} holds {p} v{head.version}, not a genuine head")
            statuses = node.checker.check_many(cards).statuses
            for card, status in zip(cards, statuses.tolist(), strict=True):
                want = self._expected(card, heads)
                if status != want:
                    self._fail(
                        f"{code} answers {CheckStatus(status).name} for {card}, not "
                        f"{want.name} (its feed at v{self._version(card, heads)})"
                    )
            # And the single-card path (the index probe, then LMDB) for a few of them.
            for card in self.rng.sample(cards, min(3, len(cards))):
                status = node.checker.check(card).status
                if status is not self._expected(card, heads):
                    self._fail(f"{code}: check({card}) answers {status.name}")

    def _sample(self) -> list[str]:
        """The cards to ask every node about: those of the last changes, and others."""
        recent = self.recent[-40:]
        others = sorted(c for cards in self.cards.values() for c in cards)
        return sorted(set(recent) | set(self.rng.sample(others, min(20, len(others)))))

    def _version(self, card: str, heads: dict[str, FeedHead]) -> int:
        p = self.publisher_of[card]
        return heads[p].version if p in heads else 0

    def _expected(self, card: str, heads: dict[str, FeedHead]) -> CheckStatus:
        p = self.publisher_of[card]
        version = self._version(card, heads)
        if version == 0:
            return CheckStatus.NO_DATA
        return CheckStatus.REVOKED if card in self.states[p][version] else CheckStatus.NOT_REVOKED

    def check_converged(self) -> None:
        genuine = self.world.genuine_heads()
        for code, node in self.world.nodes.items():
            assert node.store is not None
            heads = node.store.heads()
            if heads != genuine:
                diff = {
                    p: (heads[p].version if p in heads else 0, h.version)
                    for p, h in genuine.items()
                    if heads.get(p) != h
                }
                self._fail(f"after healing, {code} has not converged: (held, genuine) {diff}")

    # ------------------------------------------------------------------ actions
    def publish(self, publisher: str) -> None:
        revs, back = self.workload.draw(publisher, 60.0, 10 * 3600.0, int(self.world.scheduler.now))
        if not revs and not back:
            return
        delta = self.world.publish(publisher, revs, back)
        if delta is None:
            return
        state = set(self.states[publisher][-1])
        state.difference_update(back)
        state.update(r.card_id for r in revs)
        self.states[publisher].append(frozenset(state))
        self.cards[publisher].update(r.card_id for r in revs)
        for card in [*(r.card_id for r in revs), *back]:
            self.publisher_of[card] = publisher
            self.recent.append(card)
        self.log.published += 1

    def _offer(self, code: str, data: bytes, what: str) -> None:
        """Offer a forged or tampered item to a node: it must not be applied."""
        node = self.world.nodes[code]
        if node.store is None:
            return
        before = node.store.heads()
        outcome = node.ingest(data, self.rng.choice([Source.UPSTREAM, Source.CHILD]))
        self.log.forgeries += 1
        if outcome is Outcome.APPLIED or node.store.heads() != before:
            self._fail(f"{code} applied a {what} ({outcome.value})")

    def forge(self) -> None:
        w, rng = self.world, self.rng
        target = rng.choice(sorted(w.nodes))
        publisher = rng.choice(sorted(w.signing))
        node = w.nodes[target]
        if node.store is None:
            return
        real = w.signing[publisher]
        head = node.store.head(publisher)
        now = int(w.scheduler.now)
        card = self.workload.new_cards(publisher, 1)
        kind = rng.randrange(6)
        if kind == 0:  # a key nobody certified, for the publisher's prefix
            thief = SigningKey(1, rng.randbytes(32), publisher, real.prefixes)
            entries = entries_from_revocations([Revocation(card[0], Reason.LOSS, now)])
            data = sign_delta(thief, head, entries, cards_from_ids([]), now).to_bytes()
            self._offer(target, data, f"delta of {publisher} signed by an unknown key")
        elif kind == 1:  # the real key of another publisher, signing this one's cards
            other = rng.choice(sorted(p for p in w.signing if p != publisher))
            key = w.signing[other]
            entries = entries_from_revocations([Revocation(card[0], Reason.LOSS, now)])
            data = sign_delta(
                key, node.store.head(other), entries, cards_from_ids([]), now
            ).to_bytes()
            self._offer(
                target, data, f"delta of {other} revoking a {publisher} card (out of scope)"
            )
        elif kind == 2:  # a genuine retained delta with one byte flipped
            versions = node.store.retained_versions(publisher)
            if not versions:
                return
            raw = bytearray(node.store.retained_delta(publisher, rng.choice(versions)) or b"")
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
            self._offer(target, bytes(raw), f"tampered delta of {publisher}")
        elif kind == 3:  # a snapshot signed by an unknown key, emptying the feed
            thief = SigningKey(1, rng.randbytes(32), publisher, real.prefixes)
            empty = entries_from_revocations([])
            snap: Snapshot = sign_snapshot(thief, head, empty, np.zeros(0, np.uint64), now)
            self._offer(target, snap.to_bytes(), f"snapshot of {publisher} by an unknown key")
        elif kind == 4:  # a head statement by an unknown key, claiming a newer head
            thief = SigningKey(1, rng.randbytes(32), publisher, real.prefixes)
            st = sign_statement(thief, head, now)
            before = node.store.statements.newest(publisher)
            node.accept_statements([st.to_bytes()], Source.UPSTREAM)
            self.log.forgeries += 1
            if node.store.statements.newest(publisher) != before:
                self._fail(
                    f"{target} kept a head statement of {publisher} signed by an unknown key"
                )
        else:  # an old genuine delta again (a replay: held or older, never applied twice)
            versions = node.store.retained_versions(publisher)
            if versions:
                data = node.store.retained_delta(publisher, rng.choice(versions)) or b""
                self._offer(target, data, f"replayed delta of {publisher}")

    def _links(self) -> list[tuple[str, str]]:
        return sorted((s.code, up) for s in self.specs for up in s.upstreams)

    def act(self) -> str:
        w, rng = self.world, self.rng
        codes = sorted(w.nodes)
        r = rng.random()
        if r < 0.35:
            p = rng.choice(sorted(w.signing))
            self.publish(p)
            return f"publish {p}"
        if r < 0.45:
            self.forge()
            return "forge"
        if r < 0.50:
            code = rng.choice(codes)
            w.nodes[code].die_after_commit = True
            return f"kill -9 {code} right after its next commit"
        if r < 0.55:
            code = rng.choice(codes)
            clean = rng.random() < 0.3
            w.nodes[code].crash(clean=clean)
            self.log.crashes += 1
            return f"{'stop' if clean else 'kill -9'} {code}"
        if r < 0.63:
            down = [c for c in codes if not w.nodes[c].up]
            if down:
                code = rng.choice(down)
                w.nodes[code].start()
                return f"restart {code}"
            return "nothing down"
        if r < 0.71:
            a, b = rng.choice(self._links())
            w.network.partition(a, b, up=not w.network.link(a, b).up)
            return f"partition {a}-{b} {'healed' if w.network.link(a, b).up else 'cut'}"
        if r < 0.81:
            a, b = rng.choice(self._links())
            link = w.network.link(a, b)
            link.loss = rng.choice([0.0, 0.1, 0.3])
            link.duplicate = rng.choice([0.0, 0.2, 0.5])
            link.jitter = rng.choice([0.0, 0.05, 0.5, 3.0])  # reorders messages
            link.latency = rng.choice([0.02, 0.2, 1.0])
            link.bandwidth = rng.choice([12.5e6, 50e3, 5e3])  # slow links
            return f"link {a}-{b} loss {link.loss} dup {link.duplicate} jitter {link.jitter}"
        if r < 0.86:
            return self.stale_ministry()
        return "wait"

    def stale_ministry(self) -> str:
        """Back up the ministry (it signs nothing, so an old copy of it is only stale), or
        bring it back from that backup: its children then hold more than their upstream."""
        m = self.world.nodes[MINISTRY_CODE]
        backup = self.world.root / "ministry-backup"
        if self.backup is None:
            if m.store is None:
                return "no backup (ministry down)"
            backup.mkdir()
            m.store.env.copy(str(backup))
            self.backup = str(backup)
            return "backup ministry"
        m.crash()
        shutil.rmtree(m.path)
        shutil.copytree(backup, m.path)
        m.start()
        return "ministry restored from an old backup"

    def heal(self) -> None:
        w = self.world
        for a, b in self._links():
            link = w.network.link(a, b)
            link.up, link.loss, link.duplicate, link.jitter = True, 0.0, 0.0, 0.0
            link.latency, link.bandwidth = NORMAL.latency, NORMAL.bandwidth
        for code in sorted(w.nodes):
            w.nodes[code].die_after_commit = False
            w.nodes[code].start()

    # ------------------------------------------------------------------ the run
    def run(self) -> FaultLog:
        w = self.world
        try:
            for code in sorted(w.nodes):
                w.join(code)
            for p in sorted(w.signing):
                self.publish(p)
            for step in range(1, self.steps + 1):
                self.step = step
                self.log.actions.append(self.act())
                w.run_until(w.scheduler.now + self.step_seconds * self.rng.random())
                self.check_all()
            self.log.actions.append("heal everything")
            self.heal()
            # Long enough for timeouts, backoff and two scheduled pulls everywhere.
            settle = self.config.request_timeout + 15 + 3 * self.config.sync_interval
            w.run_until(w.scheduler.now + settle)
            self.check_all()
            self.check_converged()
            self.log.steps = self.steps
            self.log.final_heads = [
                (p, h.version, h.digest.hex()) for p, h in w.genuine_heads().items()
            ]
            self.log.bytes_sent = sum(t.sent for t in w.network.traffic.values())
            return self.log
        finally:
            w.close()


def run_seed(seed: int, steps: int = 30) -> FaultLog:
    return FaultRun(seed, steps).run()


def run_seeds(
    seeds: range, steps: int = 30, on_seed: Callable[[FaultLog], None] | None = None
) -> list[int]:
    """Run many seeds; return the failing ones (each failure's message is printed)."""
    failed = []
    for seed in seeds:
        try:
            log = run_seed(seed, steps)
        except InvariantViolated as exc:
            print(exc)
            failed.append(seed)
            continue
        if on_seed is not None:
            on_seed(log)
    return failed
