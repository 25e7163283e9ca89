"""When a replica may take calls: bootstrapped, and caught up with the signed heads.

A read replica (a node with upstreams and no signing key) sits behind a load balancer beside
others. A replica that has just started, or has fallen behind, answers from an old copy: a
card revoked minutes ago is NOT_REVOKED there. So it tells the balancer, through the standard
gRPC health service (grpc/doc/health-checking.md) and ``/ready`` on its metrics port, that it
is NOT_SERVING until:

1. it has finished one sync round with an upstream in which no feed was left behind
   (bootstrapped: snapshots and backlogs applied);
2. no feed's head is more than ``max_lag`` versions behind the newest *signed* head
   statement this node holds for it (blacklist/sync/freshness.py). The upstream's unsigned
   heads play no part: a relay cannot make a replica look caught up, only withhold;
3. if ``max_age`` is set, every feed was proven current (by a statement or a delta) at most
   ``max_age`` seconds ago: a replica whose upstream went silent leaves the pool rather than
   answer from a frozen copy (off by default: if every replica follows the same silent
   upstream, the pool would empty; an operator who prefers refusing to answering old sets it).

The same judgement runs on every tick, so a replica that falls behind later leaves the pool
again, and rejoins when it has caught up. Pure: the node supplies what it holds and the time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from blacklist.errors import BlacklistError
from blacklist.sync.freshness import FeedFreshness

MAX_LAG_LIMIT = 1 << 20  # versions; a configured lag above this is a typo, not a policy
MAX_AGE_LIMIT = 30 * 86400  # seconds


class ReadinessConfigError(BlacklistError, ValueError):
    """A readiness limit is out of its range."""


@dataclass(frozen=True)
class ReadinessLimits:
    max_lag: int = 10  # versions behind the newest signed head statement
    max_age: float = 0.0  # seconds since the feed was proven current; 0 = not judged

    def __post_init__(self) -> None:
        if not 0 <= self.max_lag <= MAX_LAG_LIMIT:
            raise ReadinessConfigError(
                f"ready_max_lag must be 0..{MAX_LAG_LIMIT} versions, got {self.max_lag}"
            )
        if not 0 <= self.max_age <= MAX_AGE_LIMIT:
            raise ReadinessConfigError(
                f"ready_max_age must be 0..{MAX_AGE_LIMIT} seconds, got {self.max_age:g}"
            )


@dataclass(frozen=True)
class Readiness:
    serving: bool
    reason: str


def judge(
    feeds: Mapping[str, FeedFreshness], now: float, *, synced: bool, limits: ReadinessLimits
) -> Readiness:
    """SERVING or NOT_SERVING, with the first reason found (feeds in publisher order)."""
    if not synced:
        return Readiness(False, "bootstrapping: no sync round with an upstream has completed")
    worst = 0
    for publisher in sorted(feeds):
        feed = feeds[publisher]
        if feed.lag > limits.max_lag:
            return Readiness(
                False,
                f"feed {publisher} is {feed.lag} versions behind its signed head statement "
                f"(ready_max_lag = {limits.max_lag})",
            )
        worst = max(worst, feed.lag)
        if limits.max_age:
            age = feed.age(now)
            if age is None or age > limits.max_age:
                proven = "never" if age is None else f"{age:.0f} s ago"
                return Readiness(
                    False,
                    f"feed {publisher} was last proven current {proven} "
                    f"(ready_max_age = {limits.max_age:g} s)",
                )
    return Readiness(True, f"caught up: {len(feeds)} feeds, at most {worst} versions behind")
