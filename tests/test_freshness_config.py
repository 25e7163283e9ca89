"""The freshness fields of a node's config, at, below and above their bounds (node/config.py:
a bad value is a ConfigError naming the field, so the node refuses to start)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from node.config import ConfigError, parse_config
from tests.node_harness import write_keys


def fields(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    keys = write_keys(tmp_path / "keys", "440100", ["4401"])
    return {
        "role": "city",
        "region": "440100",
        "listen": "127.0.0.1:0",
        "metrics_listen": "127.0.0.1:0",
        "data_dir": str(tmp_path / "data"),
        "signing_key": str(keys.private),
        "plaintext": True,
        **extra,
    }


def test_defaults(tmp_path: Path) -> None:
    config = parse_config(fields(tmp_path), tmp_path)
    assert (config.head_statement_interval, config.max_clock_skew) == (60.0, 300)


@pytest.mark.parametrize(
    ("value", "ok"),
    [(0.04, False), (0.05, True), (0.06, True), (86399, True), (86400, True), (86401, False),
     (True, False), ("60", False)],
)  # fmt: skip
def test_head_statement_interval_bounds(tmp_path: Path, value: Any, ok: bool) -> None:
    data = fields(tmp_path, head_statement_interval=value)
    if ok:
        assert parse_config(data, tmp_path).head_statement_interval == float(value)
    else:
        with pytest.raises(ConfigError, match="'head_statement_interval' must be seconds"):
            parse_config(data, tmp_path)


@pytest.mark.parametrize(
    ("value", "ok"),
    [(-1, False), (0, True), (1, True), (86399, True), (86400, True), (86401, False),
     (1.5, False)],
)  # fmt: skip
def test_max_clock_skew_bounds(tmp_path: Path, value: Any, ok: bool) -> None:
    data = fields(tmp_path, max_clock_skew=value)
    if ok:
        assert parse_config(data, tmp_path).max_clock_skew == value
    else:
        with pytest.raises(ConfigError, match="'max_clock_skew' must be an integer"):
            parse_config(data, tmp_path)
