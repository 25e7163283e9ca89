"""`make demo` (issues #4, #5): the national scenario, six node processes syncing over
loopback with certified keys and mutual TLS.

    ministry 000000
      ├── province 440000 (Guangdong) ── city 440100 (Guangzhou), city 440300 (Shenzhen)
      └── province 110000 (Beijing)   ── city 110100 (Beijing)

As operators and terminals would: make the root key, every publisher's key, its
certificate and every TLS certificate with the CLI (node/local/pki.py), write the
configs, start the six ``python -m node run`` processes (node/local/federation.py) and wait until
every child holds its upstream's push stream. Then revoke cards at Guangzhou through
Admin.Revoke and watch a Beijing terminal refuse them (CheckCard on 110100), timing how long
each revocation takes to cross the country (city → province → ministry → province → city);
check Shenzhen sees them too; reinstate one and watch Beijing accept it again; show callers
refused for their role or region (node/local/demo_trust.py); revoke a card at Beijing and watch
Guangzhou refuse it; measure check latency at Beijing; rotate Shenzhen's key and watch a
delta signed with the revoked key refused; print every node's feed heads side by side; stop
all six with SIGTERM.

Every answer is checked, so the demo fails loudly (a message and a non-zero exit) if any node
is wrong or a change does not arrive within ``PROPAGATION_TIMEOUT``; and it never leaves a
node running (try/finally, SIGTERM to the demo itself included).
"""

from __future__ import annotations

import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import FrameType
from typing import TextIO

import grpc

from node.gen.blacklist.v1 import (
    admin_pb2,
    card_status_pb2,
    types_pb2,
)
from node.local import demo_trust
from node.local.demo_trust import TrustStepFailed
from node.local.federation import Federation
from node.local.pki import TrustSetupError
from node.local.process import LocalNodeError
from node.local.scrape import sample, scrape
from node.local.session import (
    POLL_INTERVAL,
    PROPAGATION_TIMEOUT,
    RPC_TIMEOUT,
    DemoFailed,
    Session,
    random_card,
    reason_name,
    status_name,
)
from node.local.up import NAMES, FederationError, wait_linked

GUANGZHOU, SHENZHEN, BEIJING = "440100", "440300", "110100"
BATCH = 1000  # cards in the one large Revoke
SINGLES = 9  # single-card Revokes, each timed to Beijing
LATENCY_CALLS, WARM_UP = 1000, 200
SYNC_INTERVAL = 2.0  # the pull fallback; changes travel on the push streams
CHINA = timezone(timedelta(hours=8), "CST")


class Interrupted(BaseException):
    """SIGTERM to the demo itself: unwind through every ``finally``, so no node is left."""


def _when(unix: int) -> str:
    return datetime.fromtimestamp(unix, CHINA).strftime("%Y-%m-%d %H:%M") if unix else "-"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.0f} ms"


class Demo(Session):
    # -- setting up, as operators would -----------------------------------------------------

    suite = "sm2-sm3"  # every key's signing suite (issue #14: the national scenario is SM2)

    def start(self, root: Path) -> None:
        fed = self.fed = Federation(root, sync_interval=SYNC_INTERVAL, suite=self.suite)
        t0 = time.perf_counter()
        fed.prepare()
        other = "ed25519" if self.suite == "sm2-sm3" else "sm2-sm3"
        self.say(
            f"signing suite: {self.suite} for every key, certificate and feed (`demo --suite "
            f"{other}` for the other); the TLS links stay ECDSA P-256 (grpcio has no SM2)"
        )
        demo_trust.show_setup(self, time.perf_counter() - t0)
        self.say(f"configs in {root}/<region>/node.toml: trust_anchor, certificate_chains, tls_*")
        t0 = time.perf_counter()
        fed.start()
        self.say(f"started {len(fed.nodes)} nodes in {time.perf_counter() - t0:.1f} s:")
        for region, role, parent, _ in fed.topology:
            node = fed.nodes[region]
            up = f"upstream {parent}" if parent else "root"
            self.show(
                f"{region} {NAMES[region]:18} {role:8} pid {node.pid:<7} gRPC {node.grpc:21} "
                f"metrics {node.metrics_url}  ({up})"
            )
        self.connect()
        t0 = time.perf_counter()
        links = wait_linked(fed)
        self.say(
            f"sync: all {links} children hold their upstream's push stream over mutual TLS "
            f"({_ms(time.perf_counter() - t0)}; pull fallback every {SYNC_INTERVAL:g} s)"
        )

    # -- the scenario -----------------------------------------------------------------------

    def before(self) -> None:
        card = random_card(GUANGZHOU, self.rng)
        answer = self.expect(BEIJING, card, types_pb2.NO_DATA)
        self.say(
            f"before: {BEIJING} answers {status_name(answer.status)} for Guangzhou card {card} "
            f"(feed {answer.publisher} has not published yet)"
        )

    def revoke_batch(self) -> None:
        now = int(time.time())
        batch = [self.revocation(GUANGZHOU, now) for _ in range(BATCH)]
        t0 = time.perf_counter()
        answer = self.revoke(GUANGZHOU, batch)
        returned = time.perf_counter()
        took = self.wait_for(BEIJING, batch[-1].card_id, types_pb2.REVOKED, returned)
        mix = Counter(reason_name(r.reason) for r in batch)
        self.say(
            f"Admin.Revoke at {GUANGZHOU}: {BATCH:,} cards in one call → feed {GUANGZHOU} "
            f"v{answer.version} ({_ms(returned - t0)}); REVOKED at {BEIJING} (Beijing) "
            f"{_ms(took)} after the call returned ({BATCH:,} cards, and the first delta any node "
            "applies)"
        )
        self.show("reasons: " + ", ".join(f"{name} {n}" for name, n in mix.most_common()))
        cards = [r.card_id for r in batch]
        self.batch_expect(BEIJING, cards, [random_card(GUANGZHOU, self.rng) for _ in range(BATCH)])
        self.say(
            f"BatchCheck at {BEIJING} of those {BATCH:,} + {BATCH:,} never-revoked Guangzhou "
            f"ids: exactly the {BATCH:,} flagged REVOKED, each with the reason and time "
            "entered at Guangzhou"
        )

    def revoke_singles(self) -> None:
        pushed, streamed = self.federation.route(GUANGZHOU, BEIJING)
        hops = pushed + streamed
        before = {r: self._applied(r) for r in hops}
        took = []
        for _ in range(SINGLES):
            revocation = self.revocation(GUANGZHOU, int(time.time()))
            self.revoke(GUANGZHOU, [revocation])
            took.append(
                self.wait_for(BEIJING, revocation.card_id, types_pb2.REVOKED, time.perf_counter())
            )
        self.say(
            f"propagation {GUANGZHOU} → {BEIJING}, {SINGLES} single-card Revokes (Revoke "
            f"returns → CheckCard at {BEIJING} says REVOKED): p50 {_ms(statistics.median(took))}, "
            f"max {_ms(max(took))}"
        )
        self.show("each: " + ", ".join(_ms(t) for t in took))
        # Where the time goes: each hop verifies and applies the delta before passing it on.
        means = {}
        for r in hops:
            total, count = (a - b for a, b in zip(self._applied(r), before[r], strict=True))
            means[r] = total / count if count else 0.0
        self.show(
            f"path: {GUANGZHOU} ⇢ "
            + " ⇢ ".join(pushed)
            + " → "
            + " → ".join(streamed)
            + f" ({len(pushed)} PushDeltas up ⇢, {len(streamed)} Subscribe streams down →); "
            "each hop verifies and applies before passing on, mean: "
            + ", ".join(f"{r} {v * 1e3:.1f} ms" for r, v in means.items())
            + f" = {sum(means.values()) * 1e3:.0f} ms of the p50; the rest is RPC hops, "
            f"event loops and the {POLL_INTERVAL * 1e3:g} ms poll"
        )

    def _applied(self, region: str) -> tuple[float, float]:
        metrics = scrape(self.federation.metrics_url(region))
        return (
            sample(metrics, "blacklist_delta_apply_seconds_sum"),
            sample(metrics, "blacklist_delta_apply_seconds_count"),
        )

    def terminals(self) -> None:
        by_reason: dict[int, str] = {}
        for card, (reason, _) in self.revoked.items():
            by_reason.setdefault(reason, card)
        samples = [by_reason[r] for r in sorted(by_reason)][:5]
        samples.append(random_card(GUANGZHOU, self.rng))
        t0 = time.perf_counter()
        for card in samples:  # Shenzhen is two hops from Guangzhou: poll, do not assume
            expected = types_pb2.REVOKED if card in self.revoked else types_pb2.NOT_REVOKED
            self.wait_for(SHENZHEN, card, expected, t0)
        self.say("CheckCard, the same cards at a Beijing and a Shenzhen terminal:")
        head = f"{'card id':32}  {'110100 (Beijing)':16} {'440300 (Shenzhen)':17} {'reason':14} "
        head += f"{'effective (UTC+8)':17}  feed"
        self.show(head)
        self.show("-" * len(head))
        for card in samples:
            expected = types_pb2.REVOKED if card in self.revoked else types_pb2.NOT_REVOKED
            bj = self.expect(BEIJING, card, expected)
            sz = self.expect(SHENZHEN, card, expected)
            self.show(
                f"{card:32}  {status_name(bj.status):16} {status_name(sz.status):17} "
                f"{reason_name(bj.reason):14} {_when(bj.effective_time):17}  "
                f"{bj.publisher} v{bj.feed_version}"
            )
        revoked = list(self.revoked)
        answer = self.batch_expect(SHENZHEN, revoked, [])
        feeds = ", ".join(f"{f.publisher} v{f.version}" for f in answer.feeds)
        self.say(
            f"BatchCheck at {SHENZHEN} (Shenzhen) of all {len(revoked):,} revoked cards: "
            f"{len(answer.cards):,} REVOKED (feed {feeds})"
        )

    def reinstate(self) -> None:
        card = next(iter(self.revoked))
        reason = self.revoked[card][0]
        answer = self.admin[GUANGZHOU].Reinstate(
            admin_pb2.ReinstateRequest(card_ids=[card]), timeout=RPC_TIMEOUT
        )
        returned = time.perf_counter()
        if answer.removed != 1:
            raise DemoFailed(f"Reinstate of {card} removed {answer.removed} cards, expected 1")
        del self.revoked[card]
        took = self.wait_for(BEIJING, card, types_pb2.NOT_REVOKED, returned)
        self.wait_for(SHENZHEN, card, types_pb2.NOT_REVOKED, returned)
        self.say(
            f"Admin.Reinstate at {GUANGZHOU} of {card} (was {reason_name(reason)}) → feed "
            f"v{answer.version}; accepted again at {BEIJING}: NOT_REVOKED {_ms(took)} after "
            f"the call returned (and at {SHENZHEN})"
        )

    def other_direction(self) -> None:
        revocation = self.revocation(BEIJING, int(time.time()))
        answer = self.revoke(BEIJING, [revocation])
        took = self.wait_for(GUANGZHOU, revocation.card_id, types_pb2.REVOKED, time.perf_counter())
        self.say(
            f"Admin.Revoke at {BEIJING} of Beijing card {revocation.card_id} "
            f"({reason_name(revocation.reason)}) → feed {BEIJING} v{answer.version}; refused at "
            f"{GUANGZHOU} (Guangzhou): REVOKED {_ms(took)} after the call returned"
        )

    def latency(self) -> None:
        revoked = list(self.revoked)
        cards = [
            self.rng.choice(revoked)
            if self.rng.random() < 0.1
            else random_card(self.rng.choice((GUANGZHOU, BEIJING, SHENZHEN)), self.rng)
            for _ in range(WARM_UP + LATENCY_CALLS)
        ]
        requests = [card_status_pb2.CheckCardRequest(card_id=c) for c in cards]
        check = self.status[BEIJING].CheckCard
        url = self.federation.metrics_url(BEIJING)
        for request in requests[:WARM_UP]:
            check(request, timeout=RPC_TIMEOUT)
        before = scrape(url)
        took: list[float] = []
        for request in requests[WARM_UP:]:
            t0 = time.perf_counter_ns()
            check(request, timeout=RPC_TIMEOUT)
            took.append((time.perf_counter_ns() - t0) / 1000)
        after = scrape(url)
        cuts = statistics.quantiles(took, n=100, method="inclusive")
        self.say(
            f"CheckCard latency at {BEIJING} from the client, {len(took):,} sequential calls "
            f"(10% revoked): p50 {cuts[49]:.0f} µs, p90 {cuts[89]:.0f} µs, p99 "
            f"{cuts[98]:.0f} µs, max {max(took):.0f} µs"
        )
        count, spent = (
            sample(after, f"blacklist_check_seconds_{s}")
            - sample(before, f"blacklist_check_seconds_{s}")
            for s in ("count", "sum")
        )
        if count != len(took):
            raise DemoFailed(f"{url} counted {count:.0f} checks, the client made {len(took)}")
        self.show(
            f"server side ({url}, blacklist_check_seconds): {count:,.0f} checks, mean "
            f"{spent / count * 1e6:.1f} µs inside the handler; the rest is the gRPC round trip"
        )

    def heads(self) -> None:
        fed = self.federation
        regions = [r for r, *_ in fed.topology]
        deadline = time.perf_counter() + PROPAGATION_TIMEOUT
        while True:
            status = {
                r: self.admin[r].Status(admin_pb2.StatusRequest(), timeout=RPC_TIMEOUT)
                for r in regions
            }
            heads = {
                r: {f.publisher: (f.version, f.digest) for f in s.feeds} for r, s in status.items()
            }
            if all(h == heads[regions[0]] for h in heads.values()):
                break
            if time.perf_counter() > deadline:
                raise DemoFailed(f"feed heads differ {PROPAGATION_TIMEOUT:g} s on: {heads}")
            time.sleep(0.05)
        publishers = sorted(heads[regions[0]])
        self.say(f"feed heads on every node (Admin.Status): identical on all {len(regions)}")
        head = f"{'node':36}" + "".join(f"{p + ' head':17}" for p in publishers) + "entries"
        self.show(head)
        self.show("-" * len(head))
        for r, role, *_ in fed.topology:
            cells = "".join(
                f"v{heads[r][p][0]:<4} {heads[r][p][1][:4].hex()}    " for p in publishers
            )
            self.show(f"{r} {NAMES[r]:18} {role:8}  {cells}{status[r].entries:>7,}")

    def stop(self) -> None:
        t0 = time.perf_counter()
        codes = self.federation.stop_all()
        took = time.perf_counter() - t0
        listed = ", ".join(f"{r} {c}" for r, c in codes.items())
        if len(codes) != len(self.federation.topology) or any(codes.values()):
            raise DemoFailed(f"not every node stopped cleanly on SIGTERM: exit codes {listed}")
        self.say(
            f"all {len(codes)} nodes stopped with SIGTERM, cities first, in {took:.1f} s; "
            f"exit codes: {listed}"
        )

    def run(self) -> None:
        with tempfile.TemporaryDirectory(prefix="blacklist-demo-") as tmp:
            try:
                self.start(Path(tmp))
                self.before()
                self.revoke_batch()
                self.revoke_singles()
                self.terminals()
                self.reinstate()
                demo_trust.refusals(self, GUANGZHOU, BEIJING)
                self.other_direction()
                self.latency()
                demo_trust.rotate_key(self, SHENZHEN, BEIJING)
                self.heads()
                self.stop()
            except Exception:
                self.dump_logs()  # the directory goes away with the demo
                raise
            finally:
                self.close()
        self.say("demo finished")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def run(out: TextIO = sys.stdout, suite: str = "sm2-sm3") -> int:
    demo = Demo(out)
    demo.suite = suite
    try:
        previous = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread: no handler, SIGTERM ends the process as usual
        previous = None
    try:
        demo.run()
    except (
        DemoFailed,
        TrustStepFailed,
        TrustSetupError,
        FederationError,
        LocalNodeError,
        OSError,
        grpc.FutureTimeoutError,
    ) as exc:
        print(f"demo FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    except grpc.RpcError as exc:
        print(f"demo FAILED: gRPC {exc.code().name}: {exc.details()}", file=sys.stderr, flush=True)
        return 1
    except (KeyboardInterrupt, Interrupted):
        print("demo interrupted; no node left running", file=sys.stderr, flush=True)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def main(suite: str = "sm2-sm3") -> int:
    return run(suite=suite)
