"""When a revocation lapses by itself: the authority's default period per reason and the
per-call or per-row override (issue #17). Pure: the node reads the config, the Admin call
and the CSV row, and this decides the end time or refuses it.

A request names the end time as ``expires_at`` (unix seconds) with two reserved values:

* ``DEFAULT`` (0): the reason's default period after the effective time, if the config sets
  one (``lapse_days``, e.g. a temporary loss 10 days), else no end time;
* ``NEVER`` (-1): no end time, whatever the default (a temporary loss kept until removed).

Every end time that results obeys what every node's acceptance checks
(blacklist/sync/accept.py): only on a reason that may lapse (``entry.MAY_LAPSE``), after the
effective time, within ``max_lapse`` of it, and not already over now, so an authority never
signs a delta its own store (or any node) would refuse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from blacklist.entry import MAY_LAPSE, Reason
from blacklist.errors import BlacklistError
from blacklist.sync.accept import DEFAULT_MAX_LAPSE

DEFAULT = 0
NEVER = -1
DAY = 86_400


class LapseError(BlacklistError, ValueError):
    """An end time the lapse rules refuse (the message names the card and the value)."""


@dataclass(frozen=True)
class LapsePolicy:
    periods: Mapping[Reason, int] = field(default_factory=dict)  # seconds, by reason
    max_lapse: int = DEFAULT_MAX_LAPSE

    def __post_init__(self) -> None:
        for reason, seconds in self.periods.items():
            if reason not in MAY_LAPSE:
                names = ", ".join(r.name.lower() for r in sorted(MAY_LAPSE))
                raise ValueError(f"{reason.name.lower()} does not lapse (only {names} do)")
            if not 1 <= seconds <= self.max_lapse:
                raise ValueError(
                    f"the lapse period of {reason.name.lower()}, {seconds} s, is outside "
                    f"1..{self.max_lapse}"
                )

    def end_time(
        self, card: str, reason: Reason, effective_time: int, expires_at: int, now: int
    ) -> int | None:
        """The end time of one revocation (None: it does not lapse), or LapseError."""
        if expires_at == NEVER:
            return None
        if expires_at == DEFAULT:
            period = self.periods.get(reason)
            if period is None:
                return None
            end = effective_time + period
        elif expires_at < NEVER:
            raise LapseError(
                f"card {card}: expires_at {expires_at} is not a time (0: the default, "
                "-1: no end time)"
            )
        else:
            end = expires_at
            if reason not in MAY_LAPSE:
                raise LapseError(
                    f"card {card}: reason {reason.name} does not lapse; an end time is for "
                    + ", ".join(r.name for r in sorted(MAY_LAPSE))
                )
        if end <= effective_time:
            raise LapseError(
                f"card {card}: end time {end} is not after the effective time {effective_time}"
            )
        if end - effective_time > self.max_lapse:
            raise LapseError(
                f"card {card}: end time {end} is {end - effective_time} s after the effective "
                f"time, more than the {self.max_lapse} s any node accepts"
            )
        if end <= now:
            raise LapseError(f"card {card}: end time {end} is already over (now {now})")
        return end
