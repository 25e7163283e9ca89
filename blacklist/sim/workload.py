"""Revocations as the offices enter them: a national daily total, bursty by office hours.

1.39 billion cards, about 5% changing state a year: ~190,000 revocations a day. They
arrive as a Poisson process whose rate follows the offices' day in China Standard Time
(counters open 08:30–12:00 and 14:00–17:30, lunch and evenings slow, nights nearly
nothing but online loss reports), a fifth of it on weekend days. Each authority takes a
share (cities by a log-normal "size", provinces' pooling feeds 5% between them) and
signs what arrived every ``publish_interval`` seconds as one delta (an office system in
front of ``Admin.Revoke``); some of the changes are reinstatements of cards its feed holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from blacklist.authority import Revocation
from blacklist.entry import Reason
from blacklist.sim.topology import NodeSpec

NATIONAL_PER_DAY = 190_000
# Relative rate by hour of the day (CST); normalised so a weekday's mean is 1.
_HOURS = [
    0.05, 0.03, 0.02, 0.02, 0.02, 0.05, 0.15, 0.5, 1.5, 3.2, 3.4, 2.6,
    0.9, 1.0, 2.4, 3.0, 2.8, 1.6, 0.7, 0.45, 0.35, 0.25, 0.15, 0.08,
]  # fmt: skip
HOURLY = [h * 24 / sum(_HOURS) for h in _HOURS]
WEEKEND = 0.2
REINSTATE_SHARE = 0.08  # of the changes: a reinstatement (解挂) of a card the feed holds
_MIDDLE = "D156000005"


def rate_factor(local_seconds: float) -> float:
    """The office rate at a time counted from a Monday 00:00 CST, relative to the mean."""
    day = int(local_seconds // 86_400) % 7
    hour = int(local_seconds // 3600) % 24
    return HOURLY[hour] * (WEEKEND if day >= 5 else 1.0)


@dataclass
class FeedWork:
    """What one authority has entered and not yet reinstated (its oracle of cards)."""

    spec: NodeSpec
    per_second: float
    serial: int = 0
    revoked: list[str] = field(default_factory=list)


class Workload:
    def __init__(self, specs: Sequence[NodeSpec], per_day: float, rng: np.random.Generator) -> None:
        self._rng = rng
        publishers = [s for s in specs if s.prefix is not None]
        cities = [s for s in publishers if s.tier == "city"]
        provinces = [s for s in publishers if s.tier != "city"]
        weights = rng.lognormal(0.0, 0.8, len(cities))
        city_share = 0.95 if provinces else 1.0
        self.feeds: dict[str, FeedWork] = {}
        for spec, w in zip(cities, weights, strict=True):
            rate = per_day * city_share * w / weights.sum() / 86_400
            self.feeds[spec.code] = FeedWork(spec, rate)
        for spec in provinces:
            self.feeds[spec.code] = FeedWork(spec, per_day * 0.05 / len(provinces) / 86_400)

    def new_cards(self, publisher: str, count: int) -> list[str]:
        work = self.feeds[publisher]
        region = work.spec.card_region()
        out = []
        for _ in range(count):
            work.serial += 1
            # Serials spread over the 64-bit space (as real card serials are), deterministic.
            serial = (work.serial * 0x9E3779B97F4A7C15) & (2**64 - 1)
            out.append(f"{region}{_MIDDLE}{serial:016X}")
        return out

    def draw(
        self, publisher: str, interval: float, local_seconds: float, now: int
    ) -> tuple[list[Revocation], list[str]]:
        """The changes entered at ``publisher`` in the last ``interval`` seconds."""
        work = self.feeds[publisher]
        mean = work.per_second * interval * rate_factor(local_seconds)
        count = int(self._rng.poisson(mean)) if mean > 0 else 0
        if count == 0:
            return [], []
        back = int(self._rng.binomial(count, REINSTATE_SHARE)) if work.revoked else 0
        back = min(back, len(work.revoked))
        reinstated = []
        for _ in range(back):
            i = int(self._rng.integers(len(work.revoked)))
            reinstated.append(work.revoked.pop(i))
        cards = self.new_cards(publisher, count - back)
        work.revoked.extend(cards)
        effective = now - int(self._rng.integers(0, max(1, math.ceil(interval))))
        return [Revocation(c, Reason.LOSS, effective) for c in cards], reinstated
