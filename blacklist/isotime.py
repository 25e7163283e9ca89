"""Times for people: ISO 8601 / RFC 3339 text for the unix seconds the wire carries.

Output is UTC with a ``Z`` (RFC 3339 §5.6: ``2026-12-04T19:45:39Z``), one form everywhere a
tool prints a time (``card``, ``keys certify``, ``psam show``), so that it sorts as text and
never depends on the machine's time zone. Input takes any RFC 3339 time with an offset
(``2026-12-04T10:00:00+08:00``), a bare date (midnight UTC), or unix seconds.
"""

from __future__ import annotations

import datetime

# 9999-12-31T23:59:59Z: the last second ISO 8601's four-digit year can name.
MAX_SECONDS = 253_402_300_799


class TimeTextError(ValueError):
    """Text that is neither an ISO 8601 time with an offset, a date, nor unix seconds."""


def iso8601(seconds: int) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` for ``seconds`` since the epoch (0 .. MAX_SECONDS); a time
    outside that range has no such form and is shown as ``@<seconds>``."""
    if not 0 <= seconds <= MAX_SECONDS:
        return f"@{seconds}"
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> int:
    """Unix seconds from ``text``: ``2026-12-04T10:00:00+08:00`` / ``...Z``, ``2026-12-04``
    (00:00 UTC) or a plain number of seconds. A date and time without an offset is refused:
    which zone it meant cannot be guessed."""
    value = text.strip()
    if value.isascii() and value.isdecimal():
        return int(value)
    try:
        if len(value) == 10:
            day = datetime.date.fromisoformat(value)
            moment = datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC)
        else:
            moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise TimeTextError(
            f"not a time: {text[:40]!r} (give e.g. 2026-12-04T10:00:00+08:00, "
            "2026-12-04T02:00:00Z, 2026-12-04 or unix seconds)"
        ) from None
    if moment.tzinfo is None:
        raise TimeTextError(
            f"{text[:40]!r} has no offset: add Z (UTC) or one such as +08:00 (China time)"
        )
    seconds = int(moment.timestamp())
    if not 0 <= seconds <= MAX_SECONDS:
        raise TimeTextError(f"{text[:40]!r} is before 1970 or after 9999")
    return seconds
