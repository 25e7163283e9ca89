"""blacklist/csvlist.py: a legacy list's rows as revocations or rejections, without any I/O."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blacklist.authority import Revocation
from blacklist.csvlist import (
    MAX_TIME,
    REASON_NAMES_ZH,
    Cause,
    Rejection,
    Row,
    SeenCards,
    format_time,
    parse_date,
    parse_fields,
    parse_reason,
    read_rows,
)
from blacklist.entry import Reason
from tests.conftest import card

NEW_YEAR_2024_CHINA = 1_704_038_400  # 2024-01-01 00:00:00 UTC+8 = 2023-12-31 16:00 UTC


# ---------------------------------------------------------------------------- reasons
@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("临时挂失", Reason.TEMPORARY_LOSS),
        ("挂失", Reason.LOSS),
        ("损坏", Reason.DAMAGED),
        ("到期", Reason.EXPIRED),
        ("换卡", Reason.REPLACED),
        ("注销", Reason.CANCELLED),
        ("其他", Reason.OTHER),
        ("其它", Reason.OTHER),
        (" 挂失 ", Reason.LOSS),
        ("temporary_loss", Reason.TEMPORARY_LOSS),
        ("Temporary Loss", Reason.TEMPORARY_LOSS),
        ("temporary-loss", Reason.TEMPORARY_LOSS),
        ("LOSS", Reason.LOSS),
        ("cancelled", Reason.CANCELLED),
        ("1", Reason.TEMPORARY_LOSS),
        ("7", Reason.OTHER),
    ],
)
def test_reasons_by_chinese_name_english_name_or_code(text: str, reason: Reason) -> None:
    assert parse_reason(text) is reason


@pytest.mark.parametrize("text", ["解挂", "0", "8", "", "lost", "挂 失"])
def test_unknown_reasons_name_the_choices(text: str) -> None:
    with pytest.raises(ValueError, match="unknown reason") as info:
        parse_reason(text)
    assert "临时挂失/temporary_loss/1" in str(info.value)


# ---------------------------------------------------------------------------- dates
@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2024-01-01", NEW_YEAR_2024_CHINA),
        ("2024-01-01 00:00:00", NEW_YEAR_2024_CHINA),
        ("2024-01-01 08:30:05", NEW_YEAR_2024_CHINA + 8 * 3600 + 30 * 60 + 5),
        ("2024-02-29", NEW_YEAR_2024_CHINA + 59 * 86400),
        (" 2024-01-01 ", NEW_YEAR_2024_CHINA),
        ("1704038400", NEW_YEAR_2024_CHINA),
        ("1", 1),
    ],
)
def test_dates_in_china_time_or_unix_seconds(text: str, seconds: int) -> None:
    assert parse_date(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "2023-02-29",  # not a leap year
        "2024-13-01",
        "2024-01-01 24:00:00",
        "2024/01/01",
        "2024-1-1",
        "2024-01-01T08:00:00",
        "2024-01-01 08:00",
        "2024-01-01 08:00:00+08:00",
        "",
        "0",  # "now" on the wire: never a list's date
        "-5",
        "1e9",
        "１７０４０３８４００",  # full-width digits
        str(MAX_TIME + 1),
        "二〇二四年一月一日",
    ],
)
def test_bad_dates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="date"):
        parse_date(text)


@given(st.integers(min_value=1, max_value=MAX_TIME))
def test_format_time_reads_back(seconds: int) -> None:
    assert parse_date(format_time(seconds)) == seconds


# ---------------------------------------------------------------------------- one row
def test_a_good_row_is_canonical() -> None:
    c = card()
    row = parse_fields([f" {c.lower()} ", "挂失", "2024-01-01"], 7, ("4401",))
    assert row == Row(7, Revocation(c, Reason.LOSS, NEW_YEAR_2024_CHINA))


@pytest.mark.parametrize(
    ("fields", "cause", "words"),
    [
        ([card()], Cause.COLUMNS, "1 column(s)"),
        ([card(), "挂失"], Cause.COLUMNS, "2 column(s)"),
        (["440100D15600000", "挂失", "2024-01-01"], Cause.CARD_ID, "440100D15600000"),
        ([card("999900"), "挂失", "2024-01-01"], Cause.CARD_ID, "999900"),
        ([card(), "解挂", "2024-01-01"], Cause.REASON, "'解挂'"),
        ([card(), "挂失", "2024-02-30"], Cause.DATE, "2024-02-30"),
        ([card("110100"), "挂失", "2024-01-01"], Cause.SCOPE, "region 110100"),
    ],
)
def test_each_problem_has_its_cause(fields: list[str], cause: Cause, words: str) -> None:
    got = parse_fields(fields, 3, ("4401", "4499"))
    assert isinstance(got, Rejection)
    assert (got.line, got.cause) == (3, cause)
    assert words in got.detail


def test_without_a_scope_any_region_is_accepted() -> None:
    assert isinstance(parse_fields([card("110100"), "1", "1"], 1), Row)


def test_extra_columns_are_ignored_so_an_export_reads_back() -> None:
    c = card()
    row = parse_fields([c, "loss", "2024-01-01 00:00:00", "440100", "17"], 2)
    assert row == Row(2, Revocation(c, Reason.LOSS, NEW_YEAR_2024_CHINA))


# ---------------------------------------------------------------------------- a whole list
def test_header_blank_lines_bom_and_line_numbers() -> None:
    a, b = card(), card()
    lines = [
        "\ufeff卡识别码,失效原因,失效日期\n",
        f"{a},挂失,2024-01-01\n",
        "\n",
        "   \n",
        "not-a-card,挂失,2024-01-01\n",
        f'"{b}",损坏,"2024-01-01 12:00:00"\n',
    ]
    got = list(read_rows(lines))
    assert got == [
        Row(2, Revocation(a, Reason.LOSS, NEW_YEAR_2024_CHINA)),
        Rejection(5, Cause.CARD_ID, got[1].detail if isinstance(got[1], Rejection) else ""),
        Row(6, Revocation(b, Reason.DAMAGED, NEW_YEAR_2024_CHINA + 12 * 3600)),
    ]


def test_a_list_without_header_starts_with_data() -> None:
    a = card()
    assert list(read_rows([f"\ufeff{a},1,1704038400"])) == [
        Row(1, Revocation(a, Reason.TEMPORARY_LOSS, NEW_YEAR_2024_CHINA))
    ]


def test_a_quoted_field_across_lines_is_numbered_by_its_first_line() -> None:
    a, b = card(), card()
    got = list(read_rows([f"{a},挂失,1\n", f'{b},"挂\n', '失",1\n', f"{a},挂失,1\n"]))
    assert [(g.line, type(g).__name__) for g in got] == [
        (1, "Row"),
        (2, "Rejection"),
        (4, "Rejection"),
    ]
    assert isinstance(got[1], Rejection) and got[1].cause is Cause.REASON
    assert got[2] == Rejection(4, Cause.DUPLICATE, f"card {a} already on line 1")


def test_an_unreadable_row_is_rejected_and_reading_goes_on() -> None:
    a = card()
    huge = '"' + "x" * 200_000 + '",挂失,1\n'  # over csv's field size limit
    got = list(read_rows([huge, f"{a},挂失,1\n"]))
    assert isinstance(got[0], Rejection) and got[0].cause is Cause.UNREADABLE
    assert got[0].line == 1
    assert got[1] == Row(2, Revocation(a, Reason.LOSS, 1))


def test_duplicates_name_the_first_accepted_line_across_chunks() -> None:
    a, b, c = card(), card(), card()
    lines = [
        f"{a},挂失,1",  # 1
        f"{b},bad,1",  # 2: rejected, so a later b is not a duplicate
        f"{c},挂失,1",  # 3
        f"{a.lower()},损坏,2",  # 4: a again, another reason: still one card
        f"{b},挂失,1",  # 5
        f"{c},挂失,1",  # 6
        f"{b},挂失,1",  # 7
    ]
    got = list(read_rows(lines, chunk=2))
    assert [(g.line, g.cause if isinstance(g, Rejection) else None) for g in got] == [
        (1, None),
        (2, Cause.REASON),
        (3, None),
        (4, Cause.DUPLICATE),
        (5, None),
        (6, Cause.DUPLICATE),
        (7, Cause.DUPLICATE),
    ]
    assert [g.detail for g in got if isinstance(g, Rejection)][1:] == [
        f"card {a} already on line 1",
        f"card {c} already on line 3",
        f"card {b} already on line 5",
    ]


def test_other_delimiters() -> None:
    a = card()
    assert list(read_rows([f"{a}\t挂失\t1"], delimiter="\t")) == [
        Row(1, Revocation(a, Reason.LOSS, 1))
    ]


def test_rows_stream_lazily() -> None:
    """The reader pulls lines only as rows are asked for (never the whole file)."""
    pulled = 0

    def lines() -> object:
        nonlocal pulled
        for i in range(1_000_000):
            pulled += 1
            yield f"{card(serial=i)},挂失,1\n"

    rows = read_rows(lines(), chunk=100)  # type: ignore[arg-type]
    for _ in range(150):
        next(rows)
    assert pulled <= 200


# ---------------------------------------------------------------------------- properties
@settings(max_examples=200)
@given(
    serials=st.lists(st.integers(min_value=0, max_value=15), min_size=0, max_size=60),
    chunks=st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=20),
    max_run=st.integers(min_value=1, max_value=24),
)
def test_seen_cards_matches_a_dict(serials: list[int], chunks: list[int], max_run: int) -> None:
    seen = SeenCards(max_run)
    model: dict[bytes, int] = {}
    line, i, c = 0, 0, 0
    while i < len(serials):
        size = chunks[c % len(chunks)]
        c += 1
        batch = serials[i : i + size]
        i += size
        keys = [s.to_bytes(18, "big") if s % 3 else bytes(18 - 1) + bytes([s]) for s in batch]
        lines = list(range(line + 1, line + 1 + len(batch)))
        line += len(batch)
        expected = []
        for key, n in zip(keys, lines, strict=True):
            expected.append(model.get(key, 0))
            model.setdefault(key, n)
        assert seen.admit(keys, lines) == expected
    assert len(seen) == len(model)


reasons = st.sampled_from(list(Reason))
spellings = st.sampled_from(["zh", "en", "code"])


@settings(max_examples=100)
@given(
    serial=st.integers(min_value=0, max_value=2**64 - 1),
    reason=reasons,
    spelling=spellings,
    seconds=st.integers(min_value=1, max_value=MAX_TIME),
    form=st.sampled_from(["datetime", "unix"]),
)
def test_any_spelling_of_a_row_reads_as_the_same_revocation(
    serial: int, reason: Reason, spelling: str, seconds: int, form: str
) -> None:
    c = card("440100", serial)
    name = {
        "zh": REASON_NAMES_ZH[reason],
        "en": random.choice([reason.name.lower(), reason.name.lower().replace("_", " ")]),
        "code": str(int(reason)),
    }[spelling]
    date = format_time(seconds) if form == "datetime" else str(seconds)
    assert list(read_rows([f"{c.lower()},{name},{date}\n"], ("44",))) == [
        Row(1, Revocation(c, reason, seconds))
    ]
