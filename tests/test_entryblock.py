"""Entry and card blocks: round trips, canonical form, hostile bytes and the size target."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blacklist.binary import Reader, Writer
from blacklist.cardid import STANDARD_MIDDLE, text_to_key
from blacklist.eliasfano import low_widths, read_sequence, write_sequence
from blacklist.entryblock import (
    MIDDLE_LIMIT,
    CardColumns,
    EntryColumns,
    read_cards,
    read_entries,
    write_cards,
    write_entries,
)
from blacklist.errors import CodecError

U64_MAX = 2**64 - 1
STD_MIDDLE = int(STANDARD_MIDDLE, 36)
REGIONS = [0, 1, 110100, 440100, 440300, 999998, 999999]
MIDDLES = [0, 1, STD_MIDDLE, MIDDLE_LIMIT - 2, MIDDLE_LIMIT - 1]
SERIAL_EDGES = [0, 1, 2**63 - 1, 2**63, U64_MAX - 1, U64_MAX]
TIME_EDGES = [-(2**63), -1, 0, 1_750_000_000, 2**63 - 1]

Row = tuple[int, int, int, int, int]  # region, middle, serial, reason, time


@st.composite
def entry_rows(draw: st.DrawFn, max_groups: int = 4, max_group_size: int = 12) -> list[Row]:
    """Rows in a random order: a few (region, middle) groups, serials that include the
    extremes and repeats (small values collide often), any reasons and times."""
    group = st.tuples(
        st.sampled_from(REGIONS) | st.integers(0, 999_999),
        st.sampled_from(MIDDLES) | st.integers(0, MIDDLE_LIMIT - 1),
    )
    serial = st.integers(0, U64_MAX) | st.sampled_from(SERIAL_EDGES) | st.integers(0, 5)
    reason = st.integers(1, 7) | st.integers(0, 255)
    base = draw(st.sampled_from(TIME_EDGES[1:-1]))
    time = st.integers(base, base + 3600) | st.sampled_from(TIME_EDGES)
    time |= st.integers(-(2**63), 2**63 - 1)
    rows: list[Row] = []
    for region, middle in draw(st.lists(group, max_size=max_groups)):
        for s in draw(st.lists(serial, min_size=1, max_size=max_group_size)):
            rows.append((region, middle, s, draw(reason), draw(time)))
    return draw(st.permutations(rows))


def make_entries(rows: list[Row]) -> EntryColumns:
    cols = list(zip(*rows, strict=True)) if rows else [[]] * 5
    cards = CardColumns(
        np.array(cols[0], dtype=np.uint32),
        np.array(cols[1], dtype=np.uint64),
        np.array(cols[2], dtype=np.uint64),
    )
    return EntryColumns(cards, np.array(cols[3], dtype=np.uint8), np.array(cols[4], dtype=np.int64))


def encode_entries(entries: EntryColumns) -> bytes:
    w = Writer()
    write_entries(w, entries)
    return w.getvalue()


def encode_cards(cards: CardColumns) -> bytes:
    w = Writer()
    write_cards(w, cards)
    return w.getvalue()


def decode_or_reject(data: bytes) -> None:
    """Decoding arbitrary bytes either raises CodecError or accepts a prefix that is the
    canonical encoding of what it decoded to (re-encoding gives those very bytes)."""
    readers: list[tuple[Callable[[Reader], Any], Callable[[Any], bytes]]] = [
        (read_entries, encode_entries),
        (read_cards, encode_cards),
    ]
    for read, encode in readers:
        r = Reader(data)
        try:
            value = read(r)
        except CodecError:
            continue
        assert encode(value) == data[: r.pos]


# ------------------------------------------------------------------------------ round trips


@given(entry_rows())
def test_entries_round_trip(rows: list[Row]) -> None:
    entries = make_entries(rows).sorted()
    data = encode_entries(entries)
    r = Reader(data)
    decoded = read_entries(r)
    r.expect_end()
    assert decoded == entries
    assert decoded.reason.dtype == np.uint8 and decoded.time.dtype == np.int64
    assert encode_entries(decoded) == data


@given(entry_rows(max_groups=6))
def test_cards_round_trip(rows: list[Row]) -> None:
    cards = make_entries(rows).cards.sorted()
    data = encode_cards(cards)
    r = Reader(data)
    decoded = read_cards(r)
    r.expect_end()
    assert decoded == cards
    assert decoded.region.dtype == np.uint32
    assert decoded.middle.dtype == decoded.serial.dtype == np.uint64


@given(entry_rows())
def test_sorted_is_a_stable_sort_by_card(rows: list[Row]) -> None:
    entries = make_entries(rows)
    expected = sorted(range(len(rows)), key=lambda i: rows[i][:3])
    assert entries.sort_order().tolist() == expected
    assert entries.sorted() == entries.take(expected)
    assert entries.sorted().cards.is_sorted()


@given(entry_rows(max_groups=2, max_group_size=6))
def test_duplicates_survive_in_their_order(rows: list[Row]) -> None:
    doubled = make_entries(rows + [(r[0], r[1], r[2], 9, 100 + i) for i, r in enumerate(rows)])
    entries = doubled.sorted()
    decoded = read_entries(Reader(encode_entries(entries)))
    assert decoded == entries
    if rows:
        assert decoded.cards.first_duplicate() is not None


def test_empty_blocks() -> None:
    assert encode_cards(CardColumns.empty()) == b"\x00\x00\x00"
    assert read_cards(Reader(b"\x00\x00\x00")) == CardColumns.empty()
    data = encode_entries(EntryColumns.empty())
    assert read_entries(Reader(data)) == EntryColumns.empty()


def test_unsorted_input_is_refused() -> None:
    entries = make_entries([(440100, STD_MIDDLE, 2, 1, 0), (440100, STD_MIDDLE, 1, 1, 0)])
    with pytest.raises(ValueError, match="not sorted"):
        encode_entries(entries)
    with pytest.raises(ValueError, match="not sorted"):
        encode_cards(make_entries([(440300, 0, 0, 1, 0), (440100, 0, 0, 1, 0)]).cards)
    assert read_entries(Reader(encode_entries(entries.sorted()))) == entries.take([1, 0])


def test_columns_refuse_out_of_range_values() -> None:
    with pytest.raises(ValueError, match="region 1000000"):
        CardColumns(np.array([1_000_000]), np.array([0]), np.array([0]))
    with pytest.raises(ValueError, match="middle"):
        CardColumns(np.array([1]), np.array([MIDDLE_LIMIT], dtype=np.uint64), np.array([0]))
    with pytest.raises(ValueError, match="serial -1"):
        CardColumns(np.array([1]), np.array([0]), np.array([-1]))
    with pytest.raises(ValueError, match="lengths differ"):
        CardColumns(np.array([1, 2]), np.array([0]), np.array([0]))


def test_from_keys_and_card_ids() -> None:
    ids = ["440100D156000005FFFFFFFFFFFFFFFF", "110100ZZZZZZZZZZ0000000000000001"]
    rows = np.frombuffer(b"".join(text_to_key(t) for t in ids), dtype=np.uint8).reshape(-1, 18)
    cards = CardColumns.from_keys(rows)
    assert cards.region.tolist() == [440100, 110100]
    assert cards.middle.tolist() == [STD_MIDDLE, MIDDLE_LIMIT - 1]
    assert cards.serial.tolist() == [U64_MAX, 1]
    assert [cards.card_id(i) for i in range(2)] == ids
    both = CardColumns.concatenate([cards, cards.take([0])])
    assert both.first_duplicate() == ids[0]
    assert cards.first_duplicate() is None


# ------------------------------------------------------------------------------ Elias–Fano


@given(st.lists(st.integers(0, U64_MAX) | st.sampled_from(SERIAL_EDGES), min_size=1, max_size=60))
def test_elias_fano_round_trip_and_size(values: list[int]) -> None:
    arr = np.array(sorted(values), dtype=np.uint64)
    w = Writer()
    write_sequence(w, arr)
    data = w.getvalue()
    r = Reader(data)
    assert read_sequence(r, len(arr)).tolist() == sorted(values)
    r.expect_end()
    # l + 3 bits a value, plus the width byte, a length varint and two padded bytes.
    low = int(low_widths(arr[-1:], np.array([len(arr)]))[0])
    assert len(data) <= (len(arr) * (low + 3) + 7) // 8 + 1 + 2 + 2


@pytest.mark.parametrize(
    ("values", "width"),
    [
        ([0], 0),
        ([U64_MAX], 63),
        ([2**63 - 1], 63),
        ([2**63 - 2], 62),
        ([5] * 9, 0),
        ([0, U64_MAX], 63),
        ([U64_MAX] * 3, 62),
    ],
)
def test_elias_fano_low_width_extremes(values: list[int], width: int) -> None:
    arr = np.array(values, dtype=np.uint64)
    assert low_widths(arr[-1:], np.array([len(arr)])).tolist() == [width]
    w = Writer()
    write_sequence(w, arr)
    assert read_sequence(Reader(w.getvalue()), len(arr)).tolist() == values


# ------------------------------------------------------------------------------ hostile bytes


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_random_bytes_never_crash(data: bytes) -> None:
    decode_or_reject(data)


@given(entry_rows(max_groups=3, max_group_size=5), st.data())
def test_mutated_encodings_never_crash(rows: list[Row], data: st.DataObject) -> None:
    encoded = bytearray(encode_entries(make_entries(rows).sorted()))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(encoded) - 1))
        encoded[i] = data.draw(st.integers(0, 255))
    decode_or_reject(bytes(encoded))


def test_every_truncation_of_a_small_block_is_rejected() -> None:
    rows = [
        (110100, STD_MIDDLE, 7, 1, -5),
        (440100, STD_MIDDLE, U64_MAX, 7, 2**40),
        (440100, STD_MIDDLE, U64_MAX, 2, 0),
        (440100, MIDDLE_LIMIT - 1, 0, 3, 1_750_000_000),
        (999999, 0, 2**63, 255, -(2**63)),
    ]
    data = encode_entries(make_entries(rows).sorted())
    for cut in range(len(data)):
        decode_or_reject(data[:cut])
        with pytest.raises(CodecError):
            read_entries(Reader(data[:cut]))


def test_sampled_truncations_of_a_large_block_are_rejected() -> None:
    entries = city_scenario(3_000, seed=3)
    data = encode_entries(entries)
    rng = np.random.default_rng(4)
    for cut in [*rng.integers(0, len(data), 40).tolist(), len(data) - 1, 0, 1, 2]:
        with pytest.raises(CodecError):
            read_entries(Reader(data[:cut]))


def block(*fields: tuple[str, Any]) -> bytes:
    """Hand-written bytes: ('v', uvarint), ('s', svarint), ('b', u8), ('r', raw bytes)."""
    w = Writer()
    for kind, value in fields:
        {"v": w.uvarint, "s": w.svarint, "b": w.u8, "r": w.raw}[kind](value)
    return w.getvalue()


ONE_CARD = (("v", 1), ("v", 1), ("v", 440100), ("v", STD_MIDDLE), ("v", 1))
# The serial 5 alone: l = floor(log2(6)) = 2, low bits 01, high part 1 -> vector "01".
SERIAL_5 = (("r", b"\x02"), ("r", b"\x40"), ("v", 1), ("r", b"\x40"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (block(("v", 10**8)), "card count 100000000 needs"),
        (block(("v", 10**8 + 1)), "card count = 100000001 exceeds the limit"),
        (block(("r", b"\x80\x00")), "varint card count is padded"),
        (block(("v", 1), ("v", 0), ("r", bytes(8))), "group count is 0 for 1 cards"),
        (block(("v", 1), ("v", 2), ("r", bytes(8))), "group count = 2 exceeds the limit 1"),
        (block(("v", 1), ("v", 1), ("v", 1_000_000), ("r", bytes(8))), "group 0 region delta"),
        (block(("v", 1), ("v", 1), ("v", 1), ("v", MIDDLE_LIMIT)), "group 0 middle"),
        (block(("v", 2), ("v", 1), ("v", 1), ("v", 0), ("v", 1), ("r", bytes(8))), "add up to 1"),
        (
            block(("v", 2), ("v", 2), ("v", 1), ("v", 0), ("v", 0), ("r", bytes(8))),
            "group 0 is empty",
        ),
        (
            block(("v", 2), ("v", 2), ("v", 1), ("v", 3), ("v", 1), ("v", 0), ("v", 0), ("v", 1)),
            "group 1 repeats the previous group",
        ),
        (
            block(("v", 2), ("v", 2), ("v", 1), ("v", 3), ("v", 1), ("v", 0), ("v", MIDDLE_LIMIT)),
            "group 1 middle delta",
        ),
        (block(*ONE_CARD, ("r", b"\x40"), ("r", bytes(9))), "serial low width 64 of group 0"),
        (block(*ONE_CARD, ("r", b"\x02\x40"), ("v", 1), ("r", b"\x00")), "hold 0 ones, expected 1"),
        # Three zero serials (l = 0, vector "111") and a needless zero byte after them.
        (
            block(
                ("v", 3),
                ("v", 1),
                ("v", 1),
                ("v", 0),
                ("v", 3),
                ("r", b"\x00"),
                ("v", 2),
                ("r", b"\xe0\x00"),
            ),
            "1 spare bytes",
        ),
        (block(*ONE_CARD, ("r", b"\x02\x40"), ("v", 2), ("r", b"\x40\x00")), "high length = 2"),
        (block(*ONE_CARD, ("r", b"\x02\x41"), ("v", 1), ("r", b"\x40")), "low bits: padding"),
        # 5 with l = 0 (high part 5 in unary): decodes, but l is not the canonical 2.
        (block(*ONE_CARD, ("r", b"\x00"), ("v", 1), ("r", b"\x04")), "not the canonical 2"),
        # l = 63 and high part 2: 2 << 63 does not fit in 64 bits.
        (block(*ONE_CARD, ("r", b"\x3f" + bytes(8)), ("v", 1), ("r", b"\x20")), "overflows 64"),
        # Two serials in one group, equal high parts, low bits 1 then 0.
        (
            block(
                ("v", 2),
                ("v", 1),
                ("v", 1),
                ("v", 0),
                ("v", 2),
                ("r", b"\x01\x80"),
                ("v", 1),
                ("r", b"\xc0"),
            ),
            "values decrease within a group",
        ),
        (block(*ONE_CARD, *SERIAL_5, ("s", 0), ("b", 65)), "time width 65 exceeds 64"),
        (block(*ONE_CARD, *SERIAL_5, ("s", 0), ("b", 1), ("r", b"\x00")), "time width 1 is not"),
        (block(*ONE_CARD, *SERIAL_5, ("s", 0), ("b", 1), ("r", b"\x80")), "min time 0 is not"),
        (block(*ONE_CARD, *SERIAL_5, ("s", 2**63 - 1), ("b", 1), ("r", b"\x80")), "min time"),
        (
            block(
                ("v", 2),
                ("v", 1),
                ("v", 1),
                ("v", 0),
                ("v", 2),
                ("r", b"\x00"),
                ("v", 1),
                ("r", b"\xc0"),
                ("s", 2**63 - 1),
                ("b", 1),
                ("r", b"\x40"),
            ),
            "overflows int64",
        ),
        (block(*ONE_CARD, *SERIAL_5, ("s", 0), ("b", 0), ("b", 9)), "reason width 9 exceeds 8"),
        (
            block(*ONE_CARD, *SERIAL_5, ("s", 0), ("b", 0), ("b", 2), ("r", b"\x40")),
            "not the minimal",
        ),
        (
            block(("v", 0), ("v", 0), ("v", 0), ("s", 7), ("b", 0), ("b", 0)),
            "empty entry block with min time 7",
        ),
    ],
)
def test_hostile_fields_are_named(data: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        read_entries(Reader(data))


def test_hand_written_block_decodes() -> None:
    """The bytes the hostile cases start from are themselves valid."""
    data = block(*ONE_CARD, *SERIAL_5, ("s", -3), ("b", 0), ("b", 2), ("r", b"\x80"))
    entries = read_entries(Reader(data))
    assert entries == make_entries([(440100, STD_MIDDLE, 5, 2, -3)])
    assert encode_entries(entries) == data


# ------------------------------------------------------------------------------ size target


def city_scenario(n: int, seed: int) -> EntryColumns:
    """One city's adds: one region, the standard middle, random serials, reasons 1..7,
    per-second times within one hour."""
    rng = np.random.default_rng(seed)
    cards = CardColumns(
        np.full(n, 440100, dtype=np.uint32),
        np.full(n, STD_MIDDLE, dtype=np.uint64),
        rng.integers(0, 2**64, size=n, dtype=np.uint64),
    )
    reasons = rng.integers(1, 8, size=n, dtype=np.uint8)
    times = 1_750_000_000 + rng.integers(0, 3600, size=n, dtype=np.int64)
    return EntryColumns(cards, reasons, times).sorted()


def test_city_delta_of_100k_entries_fits_in_10_bytes_each() -> None:
    entries = city_scenario(100_000, seed=1)
    data = encode_entries(entries)
    # ~49.3 bits of serial (47 low + 2.3 high) + 12 of time + 3 of reason: about 8.04.
    assert len(data) / len(entries) <= 10
    assert len(data) / len(entries) < 8.1
    r = Reader(data)
    assert read_entries(r) == entries
    r.expect_end()


def test_elias_fano_refuses_a_count_the_bytes_cannot_hold() -> None:
    with pytest.raises(CodecError, match="10000 values need at least 10000 bits"):
        read_sequence(Reader(bytes(100)), 10_000)
