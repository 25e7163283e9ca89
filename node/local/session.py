"""What the demo's steps share (node/local/demo.py, node/local/demo_trust.py): the federation
it runs, the channels its operators and terminals hold, what it revoked, and the checks that
make it fail loudly when a node answers anything else."""

from __future__ import annotations

import random
import sys
import time
from typing import Any, TextIO

import grpc

from node.gen.blacklist.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    card_status_pb2,
    card_status_pb2_grpc,
    types_pb2,
)
from node.local.federation import Federation
from node.local.up import NAMES

PROPAGATION_TIMEOUT = 10.0
POLL_INTERVAL = 0.002
RPC_TIMEOUT = 10.0
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


class DemoFailed(RuntimeError):
    """A node answered something other than what the demo did (or did not answer in time)."""


def random_card(region: str, rng: random.Random) -> str:
    return f"{region}D156000005{rng.getrandbits(64):016X}"


def status_name(code: int) -> str:
    return str(types_pb2.CardStatusCode.Name(code))


def reason_name(code: int) -> str:
    return str(types_pb2.Reason.Name(code)) if code else "-"


class Session:
    """One demo run: its federation, the stubs its people hold, and what it revoked."""

    def __init__(self, out: TextIO, seed: int = 2026) -> None:
        self.out = out
        self.rng = random.Random(seed)
        self.started = time.perf_counter()
        self.revoked: dict[str, tuple[int, int]] = {}  # card -> (reason, effective_time)
        self.fed: Federation | None = None
        self.channels: list[grpc.Channel] = []
        self.status: dict[str, Any] = {}  # region -> CardStatus stub (a terminal there)
        self.admin: dict[str, Any] = {}  # region -> Admin stub (an operator there)

    def say(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.started:5.2f}s] {text}", file=self.out, flush=True)

    def show(self, text: str) -> None:
        print(f"         {text}", file=self.out, flush=True)

    @property
    def federation(self) -> Federation:
        assert self.fed is not None
        return self.fed

    def connect(self) -> None:
        """Channels as the people at each node would hold them: an operator of the node's
        region (Admin) and, at a city, a terminal there (CardStatus; elsewhere the operator
        checks cards)."""
        fed = self.federation
        for region, role, *_ in fed.topology:
            operator = fed.channel(region, f"operator-{region}")
            terminal = fed.channel(region, f"terminal-{region}") if role == "city" else operator
            for channel in {operator, terminal}:
                self.channels.append(channel)
                grpc.channel_ready_future(channel).result(timeout=RPC_TIMEOUT)
            self.status[region] = card_status_pb2_grpc.CardStatusStub(terminal)  # type: ignore[no-untyped-call]
            self.admin[region] = admin_pb2_grpc.AdminStub(operator)  # type: ignore[no-untyped-call]

    def close_channels(self) -> None:
        for channel in self.channels:
            channel.close()
        self.channels.clear()

    def close(self) -> None:
        self.close_channels()
        if self.fed is not None:
            self.fed.close()  # kills whatever is still running (an error path)

    # -- the terminal's side ----------------------------------------------------------------

    def check(self, region: str, card: str) -> Any:
        return self.status[region].CheckCard(
            card_status_pb2.CheckCardRequest(card_id=card, terminal_id=f"{region}-POS-0001"),
            timeout=RPC_TIMEOUT,
        )

    def expect(self, region: str, card: str, expected: int) -> Any:
        answer = self.check(region, card)
        self._verify(region, card, answer, expected)
        return answer

    def _verify(self, region: str, card: str, answer: Any, expected: int) -> None:
        if answer.status != expected:
            raise DemoFailed(
                f"CheckCard {card} at {region}: {status_name(answer.status)}, "
                f"expected {status_name(expected)}"
            )
        if expected == types_pb2.REVOKED:
            reason, effective = self.revoked[card]
            if (answer.reason, answer.effective_time) != (reason, effective):
                raise DemoFailed(
                    f"CheckCard {card} at {region}: {reason_name(answer.reason)} at "
                    f"{answer.effective_time}, but it was revoked as {reason_name(reason)} at "
                    f"{effective}"
                )

    def wait_for(self, region: str, card: str, expected: int, since: float) -> float:
        """Poll CheckCard at ``region`` until it answers ``expected``; seconds from ``since``."""
        request = card_status_pb2.CheckCardRequest(card_id=card, terminal_id=f"{region}-POS-0001")
        check = self.status[region].CheckCard
        while True:
            answer = check(request, timeout=RPC_TIMEOUT)
            took = time.perf_counter() - since
            if answer.status == expected:
                self._verify(region, card, answer, expected)
                return took
            if took > PROPAGATION_TIMEOUT:
                raise DemoFailed(
                    f"propagation not seen: {region} ({NAMES[region]}) still answers "
                    f"{status_name(answer.status)} for {card} {PROPAGATION_TIMEOUT:g} s later, "
                    f"expected {status_name(expected)} (its feed {answer.publisher or '-'} is at "
                    f"v{answer.feed_version})"
                )
            time.sleep(POLL_INTERVAL)

    def batch_expect(self, region: str, revoked: list[str], clean: list[str]) -> Any:
        ids = revoked + clean
        self.rng.shuffle(ids)
        answer = self.status[region].BatchCheck(
            card_status_pb2.BatchCheckRequest(card_ids=ids, terminal_id=f"{region}-GATEWAY"),
            timeout=RPC_TIMEOUT,
        )
        flagged = {ids[c.index]: c for c in answer.cards}
        if answer.count != len(ids) or set(flagged) != set(revoked):
            raise DemoFailed(
                f"BatchCheck at {region}: {len(flagged)} of {answer.count} flagged, expected "
                f"exactly the {len(revoked)} revoked cards of {len(ids)}"
            )
        for card, c in flagged.items():
            if (c.status, c.reason, c.effective_time) != (types_pb2.REVOKED, *self.revoked[card]):
                raise DemoFailed(f"BatchCheck at {region}: {card} answered {c}")
        return answer

    # -- the operator's side ----------------------------------------------------------------

    def revocation(self, region: str, now: int) -> admin_pb2.Revocation:
        card = random_card(region, self.rng)
        reason = self.rng.choices(list(REASON_WEIGHTS), list(REASON_WEIGHTS.values()))[0]
        effective = now - self.rng.randrange(90 * 86400)  # reported over the last 90 days
        return admin_pb2.Revocation(card_id=card, reason=reason, effective_time=effective)

    def revoke(self, region: str, revocations: list[admin_pb2.Revocation]) -> Any:
        answer = self.admin[region].Revoke(
            admin_pb2.RevokeRequest(revocations=revocations), timeout=RPC_TIMEOUT
        )
        if answer.added != len(revocations):
            raise DemoFailed(f"Revoke at {region} added {answer.added} of {len(revocations)}")
        for r in revocations:
            self.revoked[r.card_id] = (r.reason, r.effective_time)
        return answer

    def dump_logs(self) -> None:
        if self.fed is None:
            return
        for node in self.fed.nodes.values():
            print(f"--- {node.log} (last lines)\n{node.log_tail(8)}", file=sys.stderr)
