"""A virtual clock and its event queue: the simulator's only notion of time.

Events run in (time, insertion order), so one seed gives one history: nothing depends on
the wall clock or on hash order. A callback scheduled for a node carries the node's
incarnation and is dropped once the node crashed (what a dead process would have done
next never happens).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any


class Timer:
    """One scheduled callback; :meth:`cancel` keeps it from running."""

    __slots__ = ("alive", "args", "fn", "seq", "when")

    def __init__(self, when: float, seq: int, fn: Callable[..., Any], args: tuple[Any, ...]):
        self.when = when
        self.seq = seq
        self.fn = fn
        self.args = args
        self.alive = True

    def __lt__(self, other: Timer) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)

    def cancel(self) -> None:
        self.alive = False


class Scheduler:
    def __init__(self, start: float) -> None:
        self.now = float(start)
        self._heap: list[Timer] = []
        self._seq = 0
        self.events_run = 0

    def clock(self) -> float:
        """The virtual time (the ``Clock`` every store and authority is given)."""
        return self.now

    def at(self, when: float, fn: Callable[..., Any], *args: Any) -> Timer:
        if when < self.now:
            raise ValueError(f"cannot schedule at {when}, before the virtual now {self.now}")
        self._seq += 1
        timer = Timer(when, self._seq, fn, args)
        heapq.heappush(self._heap, timer)
        return timer

    def after(self, delay: float, fn: Callable[..., Any], *args: Any) -> Timer:
        return self.at(self.now + max(0.0, delay), fn, *args)

    def run_until(self, when: float) -> None:
        """Run every event due at or before ``when``, then set the clock to ``when``."""
        while self._heap and self._heap[0].when <= when:
            timer = heapq.heappop(self._heap)
            if not timer.alive:
                continue
            self.now = timer.when
            self.events_run += 1
            timer.fn(*timer.args)
        self.now = max(self.now, when)

    def pending(self) -> int:
        return sum(1 for t in self._heap if t.alive)
