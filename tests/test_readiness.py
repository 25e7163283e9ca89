"""When a replica tells its balancer it takes calls (blacklist/sync/readiness.py, issue #18):
not before its first complete sync round, not while a feed is more than ``ready_max_lag``
versions behind its newest signed head statement, and (if set) not while a feed was proven
current longer than ``ready_max_age`` ago. Each limit at, below and above it, and the config
fields' bounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from blacklist.delta import FeedHead
from blacklist.sync.freshness import FeedFreshness
from blacklist.sync.head_statement import HeadStatement
from blacklist.sync.readiness import (
    MAX_AGE_LIMIT,
    MAX_LAG_LIMIT,
    ReadinessConfigError,
    ReadinessLimits,
    judge,
)
from node.config import ConfigError, parse_config
from tests.test_freshness_config import fields

NOW = 1_900_000_000.0


def feed(head: int, statement: int | None, fresh_as_of: float = NOW) -> FeedFreshness:
    newest = (
        HeadStatement("440100", statement, b"\x01" * 32, int(NOW), 1, b"k" * 8, b"s" * 64)
        if statement is not None
        else None
    )
    return FeedFreshness(FeedHead("440100", head, b"\x00" * 32), int(NOW), newest, int(fresh_as_of))


def test_not_serving_before_the_first_complete_round() -> None:
    got = judge({}, NOW, synced=False, limits=ReadinessLimits())
    assert not got.serving and "bootstrapping" in got.reason
    assert judge({}, NOW, synced=True, limits=ReadinessLimits()).serving


@pytest.mark.parametrize(("behind", "serving"), [(9, True), (10, True), (11, False)])
def test_lag_at_below_and_above_the_limit(behind: int, serving: bool) -> None:
    got = judge(
        {"440100": feed(100, 100 + behind)}, NOW, synced=True, limits=ReadinessLimits(max_lag=10)
    )
    assert got.serving is serving
    if not serving:
        assert got.reason == (
            "feed 440100 is 11 versions behind its signed head statement (ready_max_lag = 10)"
        )


def test_zero_lag_means_exactly_the_signed_head() -> None:
    limits = ReadinessLimits(max_lag=0)
    assert judge({"p": feed(5, 5)}, NOW, synced=True, limits=limits).serving
    assert not judge({"p": feed(5, 6)}, NOW, synced=True, limits=limits).serving
    assert judge({"p": feed(5, None)}, NOW, synced=True, limits=limits).serving


def test_a_head_ahead_of_the_statement_is_not_lag() -> None:
    assert judge({"p": feed(9, 5)}, NOW, synced=True, limits=ReadinessLimits(max_lag=0)).serving


@pytest.mark.parametrize(("age", "serving"), [(59.0, True), (60.0, True), (61.0, False)])
def test_age_at_below_and_above_the_limit(age: float, serving: bool) -> None:
    limits = ReadinessLimits(max_age=60)
    got = judge({"p": feed(1, 1, NOW - age)}, NOW, synced=True, limits=limits)
    assert got.serving is serving
    if not serving:
        assert "last proven current 61 s ago (ready_max_age = 60 s)" in got.reason


def test_age_is_not_judged_when_off_and_never_current_fails_when_on() -> None:
    stale = {"p": feed(1, 1, 0)}  # fresh_as_of 0: never proven current
    assert judge(stale, NOW, synced=True, limits=ReadinessLimits()).serving
    got = judge(stale, NOW, synced=True, limits=ReadinessLimits(max_age=60))
    assert not got.serving and "never" in got.reason


def test_the_first_failing_feed_in_publisher_order_is_named() -> None:
    feeds = {"440300": feed(1, 50), "440100": feed(1, 90)}
    assert "feed 440100 " in judge(feeds, NOW, synced=True, limits=ReadinessLimits()).reason


@pytest.mark.parametrize(
    ("lag", "age", "ok"),
    [(-1, 0.0, False), (0, 0.0, True), (MAX_LAG_LIMIT, 0.0, True), (MAX_LAG_LIMIT + 1, 0.0, False),
     (0, -1.0, False), (0, float(MAX_AGE_LIMIT), True), (0, MAX_AGE_LIMIT + 1.0, False)],
)  # fmt: skip
def test_limits_bounds(lag: int, age: float, ok: bool) -> None:
    if ok:
        ReadinessLimits(lag, age)
    else:
        with pytest.raises(ReadinessConfigError, match="ready_max_"):
            ReadinessLimits(lag, age)


@pytest.mark.parametrize(
    ("name", "value", "ok"),
    [("ready_max_lag", -1, False), ("ready_max_lag", 0, True), ("ready_max_lag", 1, True),
     ("ready_max_lag", MAX_LAG_LIMIT, True), ("ready_max_lag", MAX_LAG_LIMIT + 1, False),
     ("ready_max_lag", "10", False), ("ready_max_age", -0.5, False), ("ready_max_age", 0, True),
     ("ready_max_age", MAX_AGE_LIMIT, True), ("ready_max_age", MAX_AGE_LIMIT + 1, False)],
)  # fmt: skip
def test_config_fields(tmp_path: Path, name: str, value: Any, ok: bool) -> None:
    data = fields(tmp_path, **{name: value})
    if ok:
        limits = parse_config(data, tmp_path).readiness
        assert getattr(limits, name.removeprefix("ready_")) == value
    else:
        with pytest.raises(ConfigError, match=f"'{name}' must be"):
            parse_config(data, tmp_path)


def test_config_defaults(tmp_path: Path) -> None:
    assert parse_config(fields(tmp_path), tmp_path).readiness == ReadinessLimits(10, 0.0)
