"""End times as an authority sets them (issue #17): the default lapse period per reason and
its overrides (blacklist/lapse.py), the config fields, CSV columns and the audit record."""

from __future__ import annotations

from pathlib import Path

import pytest

from blacklist.audit import AuditAction, AuditChange, AuditLog, decode_record, pack_value
from blacklist.cardid import text_to_key
from blacklist.csvlist import Cause, Rejection, Row, format_time, parse_date, read_rows
from blacklist.entry import Reason
from blacklist.lapse import DAY, DEFAULT, NEVER, LapseError, LapsePolicy
from blacklist.store import RevocationStore
from node.config import ConfigError, parse_config
from tests.conftest import card

NOW = 1_750_000_000
TL = Reason.TEMPORARY_LOSS


def test_default_period_and_overrides() -> None:
    policy = LapsePolicy({TL: 10 * DAY})
    c = card()
    assert policy.end_time(c, TL, NOW, DEFAULT, NOW) == NOW + 10 * DAY
    assert policy.end_time(c, TL, NOW, NEVER, NOW) is None
    assert policy.end_time(c, TL, NOW, NOW + 60, NOW) == NOW + 60
    assert policy.end_time(c, Reason.LOSS, NOW, DEFAULT, NOW) is None  # a formal loss
    assert policy.end_time(c, Reason.OTHER, NOW, NOW + 5, NOW) == NOW + 5
    assert LapsePolicy().end_time(c, TL, NOW, DEFAULT, NOW) is None  # no default configured


def test_overrides_the_rules_refuse() -> None:
    policy = LapsePolicy({TL: DAY}, max_lapse=10 * DAY)
    c = card()
    cases = {
        "does not lapse": (Reason.LOSS, NOW, NOW + 60, NOW),
        "not after the effective time": (TL, NOW, NOW, NOW - 10),
        "already over": (TL, NOW - 100, NOW, NOW),
        "is not a time": (TL, NOW, -2, NOW),
        "more than the 864000 s": (TL, NOW, NOW + 10 * DAY + 1, NOW),
    }
    for message, (reason, effective, end, now) in cases.items():
        with pytest.raises(LapseError, match=message) as info:
            policy.end_time(c, reason, effective, end, now)
        assert c in str(info.value)
    # At and just below the longest period, accepted; the default that lands in the past
    # (a list's old temporary loss) is refused, never signed into a delta nodes refuse.
    assert policy.end_time(c, TL, NOW, NOW + 10 * DAY, NOW) == NOW + 10 * DAY
    assert policy.end_time(c, TL, NOW, NOW + 10 * DAY - 1, NOW) == NOW + 10 * DAY - 1
    with pytest.raises(LapseError, match="already over"):
        policy.end_time(c, TL, NOW - DAY, DEFAULT, NOW)


def test_a_policy_refuses_a_default_for_a_reason_that_does_not_lapse() -> None:
    with pytest.raises(ValueError, match="loss does not lapse"):
        LapsePolicy({Reason.LOSS: DAY})
    with pytest.raises(ValueError, match=r"outside 1\.\.86400"):
        LapsePolicy({TL: DAY + 1}, max_lapse=DAY)


def config(tmp_path: Path, **extra: object) -> dict[str, object]:
    return {
        "role": "city",
        "region": "440100",
        "listen": "127.0.0.1:1",
        "metrics_listen": "127.0.0.1:2",
        "data_dir": str(tmp_path / "d"),
        "plaintext": True,
        **extra,
    }


def test_config_lapse_fields(tmp_path: Path) -> None:
    parsed = parse_config(config(tmp_path, lapse_days={"temporary_loss": 10}), tmp_path)
    assert parsed.lapse_periods == {TL: 10 * DAY}
    assert parsed.lapse_policy().end_time(card(), TL, NOW, 0, NOW) == NOW + 10 * DAY
    assert parsed.acceptance().max_lapse == 366 * DAY
    parsed = parse_config(
        config(tmp_path, lapse_days={"临时挂失": 7.5}, max_lapse_days=30, sweep_interval=5),
        tmp_path,
    )
    assert (parsed.lapse_periods, parsed.max_lapse) == ({TL: 648_000}, 30 * DAY)
    assert parsed.acceptance().max_lapse == 30 * DAY and parsed.sweep_interval == 5.0
    bad = {
        "unknown reason": {"lapse_days": {"lost": 3}},
        "loss does not lapse": {"lapse_days": {"loss": 3}},
        "number of days > 0": {"lapse_days": {"temporary_loss": 0}},
        "table of reason": {"lapse_days": 10},
        "outside 1..2592000": {"lapse_days": {"temporary_loss": 31}, "max_lapse_days": 30},
        "max_lapse_days": {"max_lapse_days": 0},
        "sweep_interval": {"sweep_interval": 0},
    }
    for message, fields in bad.items():
        with pytest.raises(ConfigError, match=message):
            parse_config(config(tmp_path, **fields), tmp_path)


def rows(text: str) -> list[Row | Rejection]:
    return list(read_rows(text.splitlines(keepends=True)))


def test_csv_end_time_column_named_by_the_header() -> None:
    a, b, c, d = card(), card(), card(), card()
    listed = rows(
        "card_id,reason,effective_time,publisher,version,expires_at\n"
        f"{a},临时挂失,2026-01-01,440100,3,2026-01-11 08:00:00\n"
        f"{b},temporary_loss,2026-01-01,440100,3,\n"
        f"{c},挂失,2026-01-01,440100,3,none\n"
        f"{d},1,2026-01-01,440100,3,{parse_date('2026-01-03')}\n"
    )
    assert [r.expires_at for r in listed if isinstance(r, Row)] == [
        parse_date("2026-01-11 08:00:00"),
        DEFAULT,
        NEVER,
        parse_date("2026-01-03"),
    ]
    # No header naming it: the fourth column and after are ignored, as before.
    plain = rows(f"{a},临时挂失,2026-01-01,2026-01-11\n")
    assert isinstance(plain[0], Row) and plain[0].expires_at == DEFAULT


def test_csv_bad_end_times_are_rejected_by_row() -> None:
    a, b, c = card(), card(), card()
    listed = rows(
        "card_id,reason,date,expires_at\n"
        f"{a},挂失,2026-01-01,2026-01-05\n"  # a formal loss does not lapse
        f"{b},临时挂失,2026-01-05,2026-01-05\n"  # not after the effective time
        f"{c},临时挂失,2026-01-05,soon\n"
    )
    assert [(r.line, r.cause) for r in listed if isinstance(r, Rejection)] == [
        (2, Cause.END),
        (3, Cause.END),
        (4, Cause.END),
    ]
    assert "does not lapse" in listed[0].detail  # type: ignore[union-attr]
    assert format_time(parse_date("2026-01-11 08:00:00")) == "2026-01-11 08:00:00"


def test_audit_records_carry_the_end_time_and_old_ones_read_as_before(tmp_path: Path) -> None:
    store = RevocationStore(tmp_path / "s", map_size=1 << 26)
    log: AuditLog = store.audit
    a, b = card(), card()
    written = log.record(
        AuditAction.REVOKE,
        [AuditChange(a, int(TL), NOW + DAY), AuditChange(b, int(Reason.LOSS))],
        operator="op",
        feed_version=2,
        when=NOW,
    )
    assert [r.expires_at for r in written] == [NOW + DAY, None]
    read = log.page(10, card_id=a)[0]
    assert [(r.card_id, r.expires_at, r.operator) for r in read] == [(a, NOW + DAY, "op")]
    assert log.page(10, card_id=b)[0][0].expires_at is None
    # A value as the code before end times wrote it reads unchanged (no flag bit).
    old = pack_value(AuditAction.REVOKE, text_to_key(b), 2, 7, "someone")
    key = written[1].key
    record = decode_record(key, old)
    assert (record.card_id, record.reason, record.feed_version, record.operator) == (
        b,
        2,
        7,
        "someone",
    )
    assert record.expires_at is None
    store.close()
