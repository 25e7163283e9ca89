"""Simulated links: latency, bandwidth, loss, duplication, reordering and partitions.

A link joins two nodes and carries messages both ways. Each direction sends one message
at a time at the link's bandwidth (a message waits for the ones before it, as on one
TCP connection), then the message flies for the latency plus a random jitter; a jitter
larger than the gap between two messages reorders them. A lost message never arrives (the
protocol's pulls heal what a lost push missed, the request timeouts what a lost request
left hanging). A partitioned link drops everything, including what was in flight when it
went down. Bytes are counted when sent and when received, per node.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from blacklist.sim.events import Scheduler
from blacklist.sim.messages import Message, Refused, parts


@dataclass(slots=True)
class LinkState:
    latency: float = 0.020  # seconds one way
    bandwidth: float = 12.5e6  # bytes per second (100 Mbit/s)
    loss: float = 0.0  # probability a message is lost
    duplicate: float = 0.0  # probability a message arrives twice
    jitter: float = 0.0  # extra delay drawn in [0, jitter] per message (reordering)
    up: bool = True


@dataclass(slots=True)
class Traffic:
    sent: int = 0
    received: int = 0
    messages_sent: int = 0
    received_by_kind: dict[str, int] = field(default_factory=dict)


Deliver = Callable[[str, str, Message], None]  # (sender, receiver, message)


class Network:
    def __init__(
        self,
        scheduler: Scheduler,
        rng: random.Random,
        deliver: Deliver,
        is_up: Callable[[str], bool],
        default: LinkState | None = None,
    ) -> None:
        self._sched = scheduler
        self._rng = rng
        self._deliver = deliver
        self._is_up = is_up
        self._default = default or LinkState()
        self.links: dict[tuple[str, str], LinkState] = {}
        self._busy: dict[tuple[str, str], float] = {}
        self.traffic: dict[str, Traffic] = {}
        self.lost = 0
        # Bytes sent per minute by the nodes watched (the ministry's fan-out over the day).
        self.watched: dict[str, dict[int, int]] = {}

    def link(self, a: str, b: str) -> LinkState:
        key = (a, b) if a < b else (b, a)
        state = self.links.get(key)
        if state is None:
            d = self._default
            state = LinkState(d.latency, d.bandwidth, d.loss, d.duplicate, d.jitter, d.up)
            self.links[key] = state
        return state

    def _count(self, node: str) -> Traffic:
        t = self.traffic.get(node)
        if t is None:
            t = self.traffic[node] = Traffic()
        return t

    def send(self, src: str, dst: str, message: Message, *, request: bool = False) -> None:
        """Send ``message``; ``request``: a call whose caller learns at once (connection
        refused) when the other node's process is down, not after a timeout."""
        size = message.size
        counted = self._count(src)
        counted.sent += size
        counted.messages_sent += 1
        series = self.watched.get(src)
        if series is not None:
            minute = int(self._sched.now // 60)
            series[minute] = series.get(minute, 0) + size
        link = self.link(src, dst)
        if not link.up or self._rng.random() < link.loss:
            self.lost += 1
            return
        start = max(self._sched.now, self._busy.get((src, dst), 0.0))
        done = start + size / link.bandwidth
        self._busy[(src, dst)] = done
        arrive = done + link.latency + (self._rng.uniform(0, link.jitter) if link.jitter else 0)
        self._sched.at(arrive, self._arrive, src, dst, message, request)
        # A duplicate is a second copy of a push (a re-sent batch, push and pull
        # overlapping); a call's answer is never duplicated (one answer per call, as gRPC),
        # and the receiver drops a second one by its request id.
        if link.duplicate and self._rng.random() < link.duplicate:
            again = arrive + self._rng.uniform(0, link.latency + link.jitter)
            self._sched.at(again, self._arrive, src, dst, message, False)

    def _arrive(self, src: str, dst: str, message: Message, request: bool) -> None:
        link = self.link(src, dst)
        if not link.up:
            self.lost += 1
            return
        if not self._is_up(dst):
            if request and self._is_up(src):
                session = getattr(message, "session", 0)
                call = getattr(message, "request", 0)
                self._sched.after(link.latency, self._deliver, dst, src, Refused(session, call))
            return
        counted = self._count(dst)
        counted.received += message.size
        for kind, size in parts(message):
            counted.received_by_kind[kind] = counted.received_by_kind.get(kind, 0) + size
        self._deliver(src, dst, message)

    def partition(self, a: str, b: str, up: bool = False) -> None:
        self.link(a, b).up = up
