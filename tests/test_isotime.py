"""ISO 8601 times for people (blacklist/isotime.py): the form printed, the forms read, and the
range limits at, below and above each end."""

from __future__ import annotations

import pytest

from blacklist.isotime import MAX_SECONDS, TimeTextError, iso8601, parse_time


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (1, "1970-01-01T00:00:01Z"),
        (-1, "@-1"),  # below the range: no ISO form, the raw value marked as such
        (1_767_283_200, "2026-01-01T16:00:00Z"),
        (MAX_SECONDS - 1, "9999-12-31T23:59:58Z"),
        (MAX_SECONDS, "9999-12-31T23:59:59Z"),
        (MAX_SECONDS + 1, f"@{MAX_SECONDS + 1}"),
    ],
)
def test_iso8601(seconds: int, text: str) -> None:
    assert iso8601(seconds) == text


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2026-01-02T08:00:00+08:00", 1_767_312_000),
        ("2026-01-02T00:00:00Z", 1_767_312_000),
        ("2026-01-02", 1_767_312_000),
        ("1767312000", 1_767_312_000),
        (" 0 ", 0),
        ("1970-01-01T00:00:00Z", 0),
        ("9999-12-31T23:59:59Z", MAX_SECONDS),
    ],
)
def test_parse_time(text: str, seconds: int) -> None:
    assert parse_time(text) == seconds
    if seconds:
        assert parse_time(iso8601(seconds)) == seconds  # what is printed reads back


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-01-02T08:00:00", "has no offset"),
        ("yesterday", "not a time"),
        ("2026-13-01", "not a time"),
        ("١٢٣", "not a time"),  # Unicode digits are no unix seconds
        ("1969-12-31T23:59:59Z", "before 1970"),
    ],
)
def test_parse_time_refuses(text: str, message: str) -> None:
    with pytest.raises(TimeTextError, match=message):
        parse_time(text)
