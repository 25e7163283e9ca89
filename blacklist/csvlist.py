"""Legacy invalidity lists (失效名单) as CSV: each row becomes a revocation or a rejection that
names its line and its cause. Pure: it reads an iterable of text lines and nothing else, so a
list of any size streams through in bounded memory (node/cli/bulk.py feeds it a file).

Format, one card per row::

    card id, reason, date[, anything else...]

* card id: the 32-character card identification code, any case (blacklist/cardid.py);
* reason: the Chinese name (临时挂失, 挂失, 损坏, 到期, 换卡, 注销, 其他), the English name
  (``temporary_loss``, ``loss``, ... any case, ``-`` or a space for ``_``) or the code 1-7;
* date: ``YYYY-MM-DD`` or ``YYYY-MM-DD HH:MM:SS`` in China time (UTC+8, the lists' own
  clock: no daylight saving), or unix seconds (digits only).

Columns after the third are ignored, so a file written by ``export-csv`` (which adds the
publisher and the feed version) reads back — except a column that the header row names
``expires_at`` (or ``end_time``, ``解挂时间``): each row's end time (issue #17), a date as
above; empty for the reason's default lapse period (the authority's config), ``none`` (or
``never``, ``-``, ``无``) for no end time. ``export-csv`` writes that column last, so a list
exported and imported again keeps every end time, and every entry without one. Blank lines are skipped. A first row whose card id
field holds no digit (``card_id``, ``卡识别码``) is a header. A card that appears again after
an accepted row is rejected as a duplicate naming the earlier line: the list must say one thing
per card.
"""

from __future__ import annotations

import csv
import datetime
import enum
import functools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from blacklist.authority import Revocation
from blacklist.cardbatch import keys_from_matrix
from blacklist.cardid import CARD_ID_LENGTH, KEY_LENGTH, canonical_bytes
from blacklist.entry import MAY_LAPSE, Reason
from blacklist.errors import CardIdError
from blacklist.lapse import DEFAULT, NEVER

CHINA_TIME = datetime.timezone(datetime.timedelta(hours=8), "UTC+8")
# Unix seconds 0 means "now" to Admin.Revoke, so a list's date must be after it; the end of
# 9999-12-31 in China time is the last moment the date form can name.
MAX_TIME = 253_402_271_999
CHUNK = 4096  # rows per duplicate check (a vectorised step; see SeenCards)

REASON_NAMES_ZH = {
    Reason.TEMPORARY_LOSS: "临时挂失",
    Reason.LOSS: "挂失",
    Reason.DAMAGED: "损坏",
    Reason.EXPIRED: "到期",
    Reason.REPLACED: "换卡",
    Reason.CANCELLED: "注销",
    Reason.OTHER: "其他",
}
_REASONS: dict[str, Reason] = {
    **{name: reason for reason, name in REASON_NAMES_ZH.items()},
    "其它": Reason.OTHER,  # the common variant spelling of 其他
    **{str(int(r)): r for r in Reason},
}
END_COLUMNS = frozenset({"expires_at", "end_time", "解挂时间"})
NO_END = frozenset({"none", "never", "-", "无"})
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?: (\d{2}):(\d{2}):(\d{2}))?")


class Cause(enum.StrEnum):
    """Why a row was not imported (stable labels: they appear in reports)."""

    COLUMNS = "missing_columns"
    UNREADABLE = "unreadable"
    CARD_ID = "malformed_card_id"
    REASON = "unknown_reason"
    DATE = "bad_date"
    SCOPE = "out_of_scope"
    END = "bad_end_time"
    DUPLICATE = "duplicate"
    REFUSED = "refused_by_node"  # used by the importer when the node refuses a batch


class Row(NamedTuple):
    """An accepted row: its (first) line number and the revocation it asks for. (A
    NamedTuple: one is built per row, and a frozen dataclass costs several times more.)"""

    line: int
    revocation: Revocation
    # The row's end time as Admin.Revoke takes it (blacklist/lapse.py): DEFAULT (0), NEVER
    # (-1) or unix seconds; the node resolves the default by its config.
    expires_at: int = DEFAULT


@dataclass(frozen=True, slots=True)
class Rejection:
    line: int
    cause: Cause
    detail: str


def parse_reason(text: str) -> Reason:
    """A reason by Chinese name, English name or code; ValueError naming the choices."""
    value = text.strip()
    found = _REASONS.get(value)
    if found is not None:
        return found
    try:
        return Reason.parse(value)
    except ValueError:
        choices = ", ".join(f"{REASON_NAMES_ZH[r]}/{r.name.lower()}/{int(r)}" for r in Reason)
        raise ValueError(f"unknown reason {value!r}; expected one of {choices}") from None


@functools.lru_cache(maxsize=4096)  # lists repeat their dates a great deal
def parse_date(text: str) -> int:
    """Unix seconds of ``YYYY-MM-DD``, ``YYYY-MM-DD HH:MM:SS`` (China time) or unix seconds."""
    value = text.strip()
    if value.isascii() and value.isdigit():
        seconds = int(value)
    else:
        match = _DATE.fullmatch(value)
        if match is None:
            raise ValueError(
                f"date {value!r} is not YYYY-MM-DD, YYYY-MM-DD HH:MM:SS or unix seconds"
            )
        year, month, day, hour, minute, second = (int(p) if p else 0 for p in match.groups())
        try:
            moment = datetime.datetime(year, month, day, hour, minute, second, tzinfo=CHINA_TIME)
        except ValueError as exc:
            raise ValueError(f"date {value!r}: {exc}") from None
        seconds = int(moment.timestamp())
    if not 0 < seconds <= MAX_TIME:
        raise ValueError(f"date {value!r} is out of range (after 1970-01-01, before 10000)")
    return seconds


def format_time(seconds: int) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in China time: the form :func:`parse_date` reads back (unix
    seconds for a time that form cannot name)."""
    if not 0 < seconds <= MAX_TIME:
        return str(seconds)
    moment = datetime.datetime.fromtimestamp(seconds, CHINA_TIME)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def is_header(fields: Sequence[str]) -> bool:
    """A first row naming its columns: its card id field holds no digit."""
    return bool(fields) and not any(ch.isdigit() for ch in fields[0])


def end_column(header: Sequence[str]) -> int | None:
    """The index of the end-time column a header row names, if any."""
    for i, name in enumerate(header):
        if name.strip().lower() in END_COLUMNS:
            return i
    return None


def parse_end(text: str, reason: Reason, when: int) -> int:
    """An end-time cell: DEFAULT when empty, NEVER for ``none``, else a date after ``when``
    on a reason that lapses; ValueError naming the value."""
    value = text.strip()
    if not value:
        return DEFAULT
    if value.lower() in NO_END:
        return NEVER
    end = parse_date(value)
    if reason not in MAY_LAPSE:
        raise ValueError(
            f"end time {value!r} on reason {reason.name.lower()}, which does not lapse"
        )
    if end <= when:
        raise ValueError(f"end time {value!r} is not after the effective time")
    return end


def parse_fields(
    fields: Sequence[str], line: int, scope: Sequence[str] = (), end_at: int | None = None
) -> Row | Rejection:
    """One CSV row (already split) → a Row, or a Rejection with the first problem found.
    ``scope``: the authority's region prefixes; a card outside them is rejected (empty: any).
    ``end_at``: the end-time column (from the header), if the list has one."""
    if len(fields) < 3:
        return Rejection(
            line, Cause.COLUMNS, f"{len(fields)} column(s); expected card id, reason, date"
        )
    try:
        card = canonical_bytes(fields[0].strip()).decode("ascii")
    except CardIdError as exc:
        return Rejection(line, Cause.CARD_ID, str(exc))
    reason = _REASONS.get(fields[1])
    if reason is None:
        try:
            reason = parse_reason(fields[1])
        except ValueError as exc:
            return Rejection(line, Cause.REASON, str(exc))
    try:
        when = parse_date(fields[2])
    except ValueError as exc:
        return Rejection(line, Cause.DATE, str(exc))
    if scope and not card.startswith(scope if isinstance(scope, tuple) else tuple(scope)):
        return Rejection(
            line,
            Cause.SCOPE,
            f"card {card} (region {card[:6]}) is outside the authority's prefixes {list(scope)}",
        )
    if end_at is None or end_at >= len(fields):
        return Row(line, Revocation(card, reason, when))
    try:
        end = parse_end(fields[end_at], reason, when)
    except ValueError as exc:
        return Rejection(line, Cause.END, str(exc))
    return Row(line, Revocation(card, reason, when), end)


class SeenCards:
    """The cards of the rows accepted so far, with their lines, to find duplicates.

    18 bytes of key and 4 of line number per card (a Python set of the keys alone would cost
    about five times that), in sorted numpy runs merged like a binary counter: a run is
    merged into the one before it while that one is at most twice its size, up to
    ``max_run`` cards. Adding n cards costs O(n log n); a lookup searches each run. The cap
    bounds what a merge needs on top of the runs themselves (two runs' worth, briefly), at
    the cost of one more run to search per ``max_run`` cards."""

    def __init__(self, max_run: int = 1 << 18) -> None:
        self._max_run = max_run
        self._runs: list[tuple[NDArray[np.bytes_], NDArray[np.uint32]]] = []

    def __len__(self) -> int:
        return sum(len(keys) for keys, _ in self._runs)

    def _earlier(self, keys: NDArray[np.bytes_]) -> NDArray[np.int64]:
        """Line of each key's earlier occurrence, or 0."""
        found = np.zeros(len(keys), dtype=np.int64)
        for run, lines in self._runs:
            at = np.searchsorted(run, keys)
            inside = at < len(run)
            hit = np.zeros(len(keys), dtype=bool)
            hit[inside] = run[at[inside]] == keys[inside]
            found[hit] = lines[at[hit]]
        return found

    def admit(self, keys: Sequence[bytes], lines: Sequence[int]) -> list[int]:
        """Record the rows' cards; for each row, the line of an earlier row with the same
        card (in a previous call or earlier in this one), or 0 when it is the first."""
        if not keys:
            return []
        array = np.array(keys, dtype=f"S{KEY_LENGTH}")
        earlier = self._earlier(array).tolist()
        first: dict[bytes, int] = {}
        new: list[int] = []
        for i, key in enumerate(keys):
            if earlier[i]:
                continue
            if key in first:
                earlier[i] = lines[first[key]]
            else:
                first[key] = i
                new.append(i)
        if new:
            run = array[new]
            order = np.argsort(run, kind="stable")
            self._add(run[order], np.array(lines, dtype=np.uint32)[new][order])
        return [int(e) for e in earlier]

    def _add(self, keys: NDArray[np.bytes_], lines: NDArray[np.uint32]) -> None:
        self._runs.append((keys, lines))
        while len(self._runs) > 1:
            before, last = len(self._runs[-2][0]), len(self._runs[-1][0])
            if before > 2 * last or before + last > self._max_run:
                break
            (k2, l2), (k1, l1) = self._runs.pop(), self._runs.pop()
            self._runs.append(_merge(k1, l1, k2, l2))


def _merge(
    k1: NDArray[np.bytes_], l1: NDArray[np.uint32], k2: NDArray[np.bytes_], l2: NDArray[np.uint32]
) -> tuple[NDArray[np.bytes_], NDArray[np.uint32]]:
    """Two sorted runs (no key in both) as one, placing the smaller run's rows by binary
    search: the only temporaries are its positions and a mask, not a sort of both."""
    if len(k1) < len(k2):
        k1, l1, k2, l2 = k2, l2, k1, l1
    at = np.searchsorted(k1, k2)
    at += np.arange(len(k2), dtype=at.dtype)  # where each row of the smaller run lands
    keys = np.empty(len(k1) + len(k2), dtype=k1.dtype)
    lines = np.empty(len(keys), dtype=l1.dtype)
    rest = np.ones(len(keys), dtype=bool)
    rest[at] = False
    keys[at], lines[at] = k2, l2
    keys[rest], lines[rest] = k1, l1
    return keys, lines


def read_rows(
    lines: Iterable[str],
    scope: Sequence[str] = (),
    *,
    delimiter: str = ",",
    chunk: int = CHUNK,
) -> Iterator[Row | Rejection]:
    """Every data row of a list, in line order, as a Row or a Rejection. Reads ``lines``
    lazily and holds at most ``chunk`` rows, plus :class:`SeenCards`."""
    reader = csv.reader(lines, delimiter=delimiter)
    scope = tuple(scope)
    seen = SeenCards()
    pending: list[Row | Rejection] = []
    first = True
    end_at: int | None = None
    last_line = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            pending.append(Rejection(last_line + 1, Cause.UNREADABLE, str(exc)))
            last_line = reader.line_num
            continue
        line, last_line = last_line + 1, reader.line_num
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # a blank line
        if first:
            first = False
            fields[0] = fields[0].removeprefix("\ufeff")  # a byte order mark read as text
            if is_header(fields):
                end_at = end_column(fields)
                continue
        pending.append(parse_fields(fields, line, scope, end_at))
        if len(pending) >= chunk:
            yield from _without_duplicates(pending, seen)
            pending = []
    yield from _without_duplicates(pending, seen)


def _without_duplicates(items: list[Row | Rejection], seen: SeenCards) -> Iterator[Row | Rejection]:
    rows = [item for item in items if isinstance(item, Row)]
    text = "".join([r.revocation.card_id for r in rows]).encode("ascii")
    matrix = np.frombuffer(text, dtype=np.uint8).reshape(-1, CARD_ID_LENGTH)
    keys = keys_from_matrix(matrix).tobytes()
    earlier = iter(
        seen.admit(
            [keys[i : i + KEY_LENGTH] for i in range(0, len(keys), KEY_LENGTH)],
            [r.line for r in rows],
        )
    )
    for item in items:
        if isinstance(item, Row):
            before = next(earlier)
            if before:
                yield Rejection(
                    item.line,
                    Cause.DUPLICATE,
                    f"card {item.revocation.card_id} already on line {before}",
                )
                continue
        yield item
