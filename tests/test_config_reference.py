"""node/configfields.py is the one declaration of the config: the README's reference is made
from it, every field it lists is known to the parser and no other, and every bound it
declares is the one the parser holds (at, below and above each)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest

from node.config import parse_config
from node.configfields import FIELDS, KNOWN_FIELDS, REQUIRED, ConfigError, reference
from tests.test_freshness_config import fields

ROOT = Path(__file__).resolve().parent.parent
# The fields the table bounds itself (the transfer limits, joined by one rule, have theirs in
# tests/test_transfer_budget.py).
BOUNDED = [f for f in FIELDS if f.kind in ("int", "seconds")]


def _readme_reference() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Configuration reference") :]
    section = section[: section.index("\n## ", 5)]
    return "".join(line + "\n" for line in section.splitlines() if line.startswith("|"))


def test_the_readme_reference_is_the_table() -> None:
    assert _readme_reference() == reference(), (
        "README's Configuration reference differs from node/configfields.py: "
        "paste the output of `python -m node.configfields`"
    )


def test_every_declared_field_is_known_and_nothing_else(tmp_path: Path) -> None:
    assert {f.name for f in FIELDS} == KNOWN_FIELDS
    with pytest.raises(ConfigError, match="unknown config field"):
        parse_config(fields(tmp_path, not_a_field=1), tmp_path)


def test_required_fields_are_required(tmp_path: Path) -> None:
    given = fields(tmp_path)
    for f in FIELDS:
        if f.default is REQUIRED:
            data = dict(given)
            del data[f.name]
            with pytest.raises(ConfigError, match=re.escape(f"'{f.name}'")):
                parse_config(data, tmp_path)


def _cases() -> list[Any]:
    cases = []
    for f in BOUNDED:
        step = 1 if f.kind == "int" else max(f.low * 0.5, 0.01)
        cases += [
            pytest.param(f, f.low, True, id=f"{f.name}=low"),
            pytest.param(f, f.high, True, id=f"{f.name}=high"),
            pytest.param(f, f.low - step, False, id=f"{f.name}<low"),
            pytest.param(f, f.high + step, False, id=f"{f.name}>high"),
        ]
    return cases


@pytest.mark.parametrize(("field", "value", "ok"), _cases())
def test_each_declared_bound_holds_at_below_and_above(
    tmp_path: Path, field: Any, value: float, ok: bool
) -> None:
    value = int(value) if field.kind == "int" else float(value)
    data = fields(tmp_path, **{field.name: value})
    if ok:
        parse_config(data, tmp_path)
    else:
        with pytest.raises(ConfigError, match=re.escape(f"'{field.name}' must be")):
            parse_config(data, tmp_path)


def test_defaults_are_what_a_config_without_the_field_gets(tmp_path: Path) -> None:
    config = parse_config(fields(tmp_path), tmp_path)
    assert config.max_batch == 10_000
    assert config.sync_interval == 5.0
    assert config.max_lapse == 366 * 86_400
    assert config.readiness.max_lag == 10
    assert math.isclose(config.head_statement_interval, 60.0)
