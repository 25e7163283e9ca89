"""`make demo` (the node issue): one city node as a separate process, used over real gRPC.

As an operator and a terminal would: make Guangzhou's signing key with the CLI, write a
config, start ``python -m node run`` and wait for its READY line; revoke 5,000 cards through
Admin.Revoke, check cards through CardStatus (CheckCard, one BatchCheck, a short
CheckStream), reinstate one, show two refusals with their gRPC status, measure CheckCard
latency from the client, scrape /metrics, and stop the node with SIGTERM. Every answer is
checked against what was revoked, so the demo fails loudly (non-zero exit) if the node is
wrong, and it never leaves the node running.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TextIO

import grpc

from node.gen.blacklist.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    card_status_pb2,
    card_status_pb2_grpc,
    types_pb2,
)
from node.localnode import LocalNode, LocalNodeError, NodeSpec, generate_keys, start_node

REGION, PREFIX, CITY = "440100", "4401", "Guangzhou"
REVOCATIONS, PER_CALL = 5000, 1000
LATENCY_CALLS, WARM_UP = 2000, 200
RPC_TIMEOUT = 10.0
CHINA = timezone(timedelta(hours=8), "CST")
# Roughly how reasons mix on a city's list: mostly lost and replaced cards.
REASON_WEIGHTS = {
    types_pb2.TEMPORARY_LOSS: 30,
    types_pb2.LOSS: 25,
    types_pb2.REPLACED: 15,
    types_pb2.DAMAGED: 10,
    types_pb2.EXPIRED: 10,
    types_pb2.CANCELLED: 8,
    types_pb2.OTHER: 2,
}
METRIC_LINES = (
    "blacklist_checks_total",
    "blacklist_feed_version",
    "blacklist_feed_entries",
    "blacklist_revocations_total",
    "blacklist_reinstatements_total",
)


class DemoFailed(RuntimeError):
    """The node answered something other than what the demo revoked (or did not answer)."""


def _card(region: str, rng: random.Random) -> str:
    return f"{region}D156000005{rng.getrandbits(64):016X}"


def _status(code: int) -> str:
    return str(types_pb2.CardStatusCode.Name(code))


def _reason(code: int) -> str:
    return str(types_pb2.Reason.Name(code)) if code else "-"


def _when(unix: int) -> str:
    return datetime.fromtimestamp(unix, CHINA).strftime("%Y-%m-%d %H:%M") if unix else "-"


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


class Demo:
    def __init__(self, out: TextIO, seed: int = 2026) -> None:
        self.out = out
        self.rng = random.Random(seed)
        self.started = time.perf_counter()
        self.revoked: dict[str, tuple[int, int]] = {}  # card -> (reason, effective_time)

    def say(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.started:5.2f}s] {text}", file=self.out, flush=True)

    def show(self, text: str) -> None:
        print(f"         {text}", file=self.out, flush=True)

    # -- setting up, as an operator would ---------------------------------------------------

    def start(self, root: Path) -> LocalNode:
        keys = generate_keys(REGION, [PREFIX], root / "keys")
        self.say(
            f"keys: `python -m node keys generate --publisher {REGION} --prefix {PREFIX}` wrote "
            f"{keys.private} and {keys.public.name}"
        )
        spec = NodeSpec(REGION, "city", signing_key=keys.private, trusted_keys=(keys.public,))
        node = start_node(spec, root / REGION)
        self.say(
            f"node {REGION} ({CITY}, city) started as pid {node.pid} from {node.config}: "
            f"gRPC {node.grpc}, metrics {node.metrics_url}"
        )
        return node

    # -- Admin ------------------------------------------------------------------------------

    def revoke(self, admin: Any) -> int:
        now = int(time.time())
        reasons, weights = list(REASON_WEIGHTS), list(REASON_WEIGHTS.values())
        t0 = time.perf_counter()
        version = 0
        for _ in range(REVOCATIONS // PER_CALL):
            batch = []
            for _ in range(PER_CALL):
                card = _card(REGION, self.rng)
                reason = self.rng.choices(reasons, weights)[0]
                # Reported over the last 90 days, during office hours more or less.
                effective = now - self.rng.randrange(90 * 86400)
                self.revoked[card] = (reason, effective)
                batch.append(
                    admin_pb2.Revocation(card_id=card, reason=reason, effective_time=effective)
                )
            answer = admin.Revoke(admin_pb2.RevokeRequest(revocations=batch), timeout=RPC_TIMEOUT)
            if answer.added != PER_CALL:
                raise DemoFailed(f"Revoke added {answer.added} of {PER_CALL} new cards")
            version = answer.version
        mix = Counter(_reason(r) for r, _ in self.revoked.values())
        self.say(
            f"Admin.Revoke: {len(self.revoked):,} cards in {REVOCATIONS // PER_CALL} calls → "
            f"feed {REGION} v{version} ({(time.perf_counter() - t0) * 1e3:.0f} ms); reasons "
            + ", ".join(f"{name} {n}" for name, n in mix.most_common())
        )
        return version

    def reinstate(self, admin: Any, status: Any, card: str) -> None:
        before = self.check(status, card, types_pb2.REVOKED)
        answer = admin.Reinstate(admin_pb2.ReinstateRequest(card_ids=[card]), timeout=RPC_TIMEOUT)
        if answer.removed != 1:
            raise DemoFailed(f"Reinstate of {card} removed {answer.removed} cards, expected 1")
        del self.revoked[card]
        after = self.check(status, card, types_pb2.NOT_REVOKED)
        self.say(
            f"Admin.Reinstate {card} (was {_status(before.status)} "
            f"{_reason(before.reason)}) → feed v{answer.version}; CheckCard now says "
            f"{_status(after.status)} (feed v{after.feed_version})"
        )

    # -- CardStatus, as a terminal would ----------------------------------------------------

    def check(self, status: Any, card: str, expected: int) -> Any:
        answer = status.CheckCard(
            card_status_pb2.CheckCardRequest(card_id=card, terminal_id="DEMO-POS-0001"),
            timeout=RPC_TIMEOUT,
        )
        if answer.status != expected:
            raise DemoFailed(
                f"CheckCard {card}: {_status(answer.status)}, expected {_status(expected)}"
            )
        if expected == types_pb2.REVOKED:
            reason, effective = self.revoked[card.upper()]
            if (answer.reason, answer.effective_time) != (reason, effective):
                raise DemoFailed(
                    f"CheckCard {card}: reason {_reason(answer.reason)} at "
                    f"{answer.effective_time}, revoked as {_reason(reason)} at {effective}"
                )
        return answer

    def check_table(self, status: Any) -> None:
        by_reason: dict[int, str] = {}
        for card, (reason, _) in self.revoked.items():
            by_reason.setdefault(reason, card)
        revoked = [by_reason[r] for r in sorted(by_reason)][:4]
        samples = [
            *[("revoked", c, types_pb2.REVOKED) for c in revoked],
            ("revoked, typed in lower case", revoked[0].lower(), types_pb2.REVOKED),
            ("never revoked", _card(REGION, self.rng), types_pb2.NOT_REVOKED),
            ("never revoked", _card(REGION, self.rng), types_pb2.NOT_REVOKED),
            (
                "Beijing card (no Beijing key here)",
                _card("110100", self.rng),
                types_pb2.UNKNOWN_ISSUER,
            ),
        ]
        self.say(f"CheckCard, one call per card ({len(samples)} cards):")
        head = f"{'':34} {'card id':32}  {'status':14} {'reason':14} {'effective (UTC+8)':17} feed"
        self.show(head)
        self.show("-" * len(head))
        for label, card, expected in samples:
            a = self.check(status, card, expected)
            feed = f"{a.publisher} v{a.feed_version}" if a.publisher else "-"
            self.show(
                f"{label:34} {a.card_id:32}  {_status(a.status):14} {_reason(a.reason):14} "
                f"{_when(a.effective_time):17} {feed}"
            )

    def batch_check(self, status: Any) -> None:
        ids = [_card(REGION, self.rng) for _ in range(990)]
        revoked = list(self.revoked)[100:110]
        for card in revoked:
            ids.insert(self.rng.randrange(len(ids) + 1), card)
        t0 = time.perf_counter()
        answer = status.BatchCheck(
            card_status_pb2.BatchCheckRequest(card_ids=ids, terminal_id="DEMO-GATEWAY"),
            timeout=RPC_TIMEOUT,
        )
        took = time.perf_counter() - t0
        flagged = {c.index: c for c in answer.cards}
        expected = {i for i, c in enumerate(ids) if c in self.revoked}
        if answer.count != len(ids) or set(flagged) != expected:
            raise DemoFailed(
                f"BatchCheck: flagged indexes {sorted(flagged)} of {answer.count}, "
                f"expected {sorted(expected)} of {len(ids)}"
            )
        if any(c.status != types_pb2.REVOKED for c in flagged.values()):
            raise DemoFailed(f"BatchCheck: unexpected answers {list(flagged.values())}")
        feeds = ", ".join(f"{f.publisher} v{f.version}" for f in answer.feeds)
        self.say(
            f"BatchCheck of {len(ids):,} ids in {took * 1e3:.1f} ms: {len(flagged)} REVOKED "
            f"(indexes {', '.join(map(str, sorted(flagged)))}), {len(ids) - len(flagged)} "
            f"NOT_REVOKED; feed {feeds}"
        )

    def check_stream(self, status: Any) -> None:
        revoked = list(self.revoked)[200:204]
        ids = [card for r in revoked for card in (r, _card(REGION, self.rng))]

        def requests() -> Iterator[card_status_pb2.CheckCardRequest]:
            for card in ids:
                yield card_status_pb2.CheckCardRequest(card_id=card, terminal_id="DEMO-GATEWAY")

        t0 = time.perf_counter()
        answers = list(status.CheckStream(requests(), timeout=RPC_TIMEOUT))
        took = time.perf_counter() - t0
        got = [(a.card_id, a.status) for a in answers]
        want = [(c, types_pb2.REVOKED if c in self.revoked else types_pb2.NOT_REVOKED) for c in ids]
        if got != want:
            raise DemoFailed(f"CheckStream answered {got}, expected {want}")
        self.say(
            f"CheckStream: {len(ids)} requests → {len(answers)} answers in order in "
            f"{took * 1e3:.1f} ms: " + " ".join(_status(s) for _, s in got)
        )

    # -- refusals ---------------------------------------------------------------------------

    def refused(self, what: str, call: Any, expected: grpc.StatusCode) -> None:
        try:
            call()
        except grpc.RpcError as exc:
            if exc.code() != expected:
                raise DemoFailed(
                    f"{what}: {exc.code().name} ({exc.details()}), expected {expected.name}"
                ) from None
            self.say(f"{what} → refused: {exc.code().name}: {exc.details()}")
            return
        raise DemoFailed(f"{what} was accepted; expected {expected.name}")

    def refusals(self, admin: Any, status: Any) -> None:
        bad = "44010OD156000005ABCDEF"
        self.refused(
            f"CheckCard {bad!r}",
            lambda: status.CheckCard(
                card_status_pb2.CheckCardRequest(card_id=bad), timeout=RPC_TIMEOUT
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        before = self.feed_version(admin)
        beijing = _card("110100", self.rng)
        revocation = admin_pb2.Revocation(card_id=beijing, reason=types_pb2.LOSS)
        self.refused(
            f"Admin.Revoke of Beijing card {beijing}",
            lambda: admin.Revoke(
                admin_pb2.RevokeRequest(revocations=[revocation]), timeout=RPC_TIMEOUT
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        if self.feed_version(admin) != before:
            raise DemoFailed("the refused Revoke changed the feed")

    def feed_version(self, admin: Any) -> int:
        answer = admin.Status(admin_pb2.StatusRequest(), timeout=RPC_TIMEOUT)
        return next((int(f.version) for f in answer.feeds if f.publisher == REGION), 0)

    # -- measurements -----------------------------------------------------------------------

    def latency(self, status: Any) -> None:
        revoked = list(self.revoked)
        cards = [
            self.rng.choice(revoked) if self.rng.random() < 0.1 else _card(REGION, self.rng)
            for _ in range(WARM_UP + LATENCY_CALLS)
        ]
        requests = [card_status_pb2.CheckCardRequest(card_id=c) for c in cards]
        check = status.CheckCard
        took: list[float] = []
        for request in requests:
            t0 = time.perf_counter_ns()
            check(request, timeout=RPC_TIMEOUT)
            took.append((time.perf_counter_ns() - t0) / 1000)
        lat = sorted(took[WARM_UP:])
        self.say(
            f"CheckCard latency from the client, {len(lat):,} sequential calls (10% revoked): "
            f"p50 {_percentile(lat, 0.50):.0f} µs, p90 {_percentile(lat, 0.90):.0f} µs, "
            f"p99 {_percentile(lat, 0.99):.0f} µs, max {lat[-1]:.0f} µs"
        )

    def scrape(self, url: str, version: int) -> None:
        with urllib.request.urlopen(url, timeout=RPC_TIMEOUT) as response:
            text = response.read().decode("utf-8")
        lines = [
            line
            for line in text.splitlines()
            if line.startswith(METRIC_LINES)
            or (line.startswith("grpc_server_handled_total") and 'grpc_code="OK"' not in line)
        ]
        want = f'blacklist_feed_version{{publisher="{REGION}"}} {float(version)}'
        if want not in lines:
            raise DemoFailed(f"/metrics has no line {want!r}")
        self.say(f"metrics: {url} ({len(text.splitlines())} lines), among them:")
        for line in lines:
            self.show(line)
        # The client's latency above is mostly the gRPC round trip; the handler's own share:
        values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line[:1] != "#")
        count = float(values.get("blacklist_check_seconds_count", "0"))
        if count:
            spent = float(values["blacklist_check_seconds_sum"]) / count
            self.show(
                f"(blacklist_check_seconds: {count:,.0f} checks, mean {spent * 1e6:.1f} µs "
                "inside the handler)"
            )

    # -- the whole run ----------------------------------------------------------------------

    def run(self) -> None:
        with tempfile.TemporaryDirectory(prefix="blacklist-demo-") as tmp:
            node = self.start(Path(tmp))
            try:
                self.use(node)
                t0 = time.perf_counter()
                code = node.stop()
                if code != 0:
                    raise DemoFailed(f"node exited with code {code} after SIGTERM")
                self.say(
                    f"node {REGION} stopped cleanly on SIGTERM (exit 0) in "
                    f"{time.perf_counter() - t0:.2f} s"
                )
            finally:
                node.close()  # kills it if anything above failed
        self.say("demo finished")

    def use(self, node: LocalNode) -> None:
        with grpc.insecure_channel(node.grpc) as channel:
            grpc.channel_ready_future(channel).result(timeout=RPC_TIMEOUT)
            status = card_status_pb2_grpc.CardStatusStub(channel)  # type: ignore[no-untyped-call]
            admin = admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
            self.revoke(admin)
            self.check_table(status)
            self.batch_check(status)
            self.check_stream(status)
            self.reinstate(admin, status, next(iter(self.revoked)))
            self.refusals(admin, status)
            self.latency(status)
            self.scrape(node.metrics_url, self.feed_version(admin))


def run(out: TextIO = sys.stdout) -> int:
    demo = Demo(out)
    try:
        demo.run()
    except (DemoFailed, LocalNodeError, OSError, grpc.FutureTimeoutError) as exc:
        print(f"demo FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    except grpc.RpcError as exc:
        print(f"demo FAILED: gRPC {exc.code().name}: {exc.details()}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("demo interrupted", file=sys.stderr, flush=True)
        return 130
    return 0


def main() -> int:
    return run()
