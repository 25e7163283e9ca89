"""Batch card-id functions must agree, row for row and error for error, with cardid.py."""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blacklist import cardbatch
from blacklist.cardbatch import (
    MIDDLE_LIMIT,
    columns_from_keys,
    columns_from_matrix,
    keys_from_columns,
    keys_from_matrix,
    matrix_from_columns,
    matrix_from_keys,
    parse_many,
    region_codes,
    rows_to_str,
)
from blacklist.cardid import canonical_bytes, diagnose, key_to_text, text_to_key
from blacklist.errors import CardIdError
from blacklist.regions import PROVINCE_PREFIXES

ALNUM = string.ascii_letters + string.digits
HEX = "0123456789abcdefABCDEF"
VALID = "110101d156000005abcdef0123456789"


@st.composite
def card_ids(draw: st.DrawFn) -> str:
    province = draw(st.sampled_from(sorted(PROVINCE_PREFIXES)))
    rest_of_region = draw(st.text("0123456789", min_size=4, max_size=4))
    middle = draw(st.text(ALNUM, min_size=10, max_size=10))
    serial = draw(st.text(HEX, min_size=16, max_size=16))
    return f"{province:02d}{rest_of_region}{middle}{serial}"


# Sizes on both sides of the vectorised-path threshold.
batches = st.lists(card_ids(), max_size=3 * cardbatch._VECTORISE_FROM)


@pytest.fixture(params=["as-shipped", "always-vectorised", "small-chunks"])
def path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a test through each implementation path, whatever the batch size."""
    with pytest.MonkeyPatch.context() as mp:
        if request.param == "always-vectorised":
            mp.setattr(cardbatch, "_VECTORISE_FROM", 1)
        if request.param == "small-chunks":
            mp.setattr(cardbatch, "_CHUNK_ROWS", 3)
        yield request.param


def scalar_matrix(ids: list[str]) -> bytes:
    return b"".join(canonical_bytes(x) for x in ids)


# --- parse_many, valid input -------------------------------------------------------------


@pytest.mark.usefixtures("path")
@settings(max_examples=60, deadline=None)
@given(batches)
def test_parse_many_matches_canonical_bytes(ids: list[str]) -> None:
    matrix = parse_many(ids)
    assert matrix.dtype == np.uint8
    assert matrix.shape == (len(ids), 32)
    assert matrix.flags.c_contiguous and matrix.flags.writeable
    assert matrix.tobytes() == scalar_matrix(ids)
    assert rows_to_str(matrix) == [canonical_bytes(x).decode() for x in ids]


@settings(max_examples=30, deadline=None)
@given(st.lists(card_ids(), min_size=cardbatch._VECTORISE_FROM, max_size=60))
def test_valid_batches_take_the_vectorised_path(ids: list[str]) -> None:
    # The per-id fallback would give the same answer, only slowly; make sure mixed case
    # and every province pass the vectorised checks.
    def no_fallback(batch: object) -> np.ndarray:
        raise AssertionError("valid batch fell back to the per-id parser")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cardbatch, "_parse_each", no_fallback)
        assert parse_many(ids).tobytes() == scalar_matrix(ids)


def test_parse_many_of_empty_batch() -> None:
    matrix = parse_many([])
    assert matrix.shape == (0, 32)
    assert matrix.dtype == np.uint8


@pytest.mark.usefixtures("path")
def test_parse_many_accepts_every_province_and_the_extreme_characters() -> None:
    ids = [f"{p:02d}0000" + "0000000000" + "0" * 16 for p in sorted(PROVINCE_PREFIXES)]
    ids += [f"{p:02d}9999" + "zZzZzZzZzZ" + "fFfFfFfFfFfFfFfF" for p in sorted(PROVINCE_PREFIXES)]
    ids += ["650000aAzZ09AazZ09aFAf90aAfF0919"]
    assert parse_many(ids).tobytes() == scalar_matrix(ids)


def test_parse_many_accepts_a_tuple_and_str_subclasses() -> None:
    class Text(str):
        pass

    ids = tuple(Text(VALID) for _ in range(40))
    assert parse_many(ids).tobytes() == scalar_matrix(list(ids))


# --- parse_many, invalid input -----------------------------------------------------------


def _replace(position: int, char: str) -> Callable[[str], object]:
    return lambda valid: valid[:position] + char + valid[position + 1 :]


# Each maker turns a valid id into one with a single kind of defect.
INVALID_MAKERS: dict[str, Callable[[str], object]] = {
    "too short": lambda v: v[:31],
    "too long": lambda v: v + "0",
    "empty": lambda v: "",
    "non-ASCII letter": _replace(20, "é"),
    "full-width digit": _replace(3, "１"),
    "space": _replace(9, " "),
    "tab": _replace(0, "\t"),
    "newline inside": _replace(31, "\n"),
    "newline appended": lambda v: v + "\n",
    "newline instead of last char": lambda v: v[:31] + "\n",
    "NUL": _replace(5, "\0"),
    "serial G": _replace(16, "G"),
    "serial g": _replace(31, "g"),
    "serial @": _replace(20, "@"),
    "serial `": _replace(20, "`"),
    "province 99": lambda v: "99" + v[2:],
    "province 00": lambda v: "00" + v[2:],
    "province 10": lambda v: "10" + v[2:],
    "province 66": lambda v: "66" + v[2:],
    "region letter": _replace(4, "A"),
    "region letter in province": _replace(0, "a"),
    "region /": _replace(5, "/"),
    "region :": _replace(1, ":"),
    "middle -": _replace(6, "-"),
    "middle @": _replace(10, "@"),
    "middle [": _replace(11, "["),
    "middle `": _replace(12, "`"),
    "middle {": _replace(15, "{"),
    "middle :": _replace(7, ":"),
    "None item": lambda v: None,
    "int item": lambda v: 110101,
    "bytes item": lambda v: v.encode(),
}


def assert_same_error(raised: CardIdError, bad: object, index: int) -> None:
    expected = diagnose(bad, index)
    assert raised.index == index
    assert raised.problem == expected.problem
    assert str(raised) == str(expected)
    if isinstance(bad, str) and bad.isascii():
        with pytest.raises(CardIdError) as scalar:
            canonical_bytes(bad)
        assert raised.problem == scalar.value.problem


@pytest.mark.usefixtures("path")
@pytest.mark.parametrize("kind", INVALID_MAKERS)
@settings(max_examples=8, deadline=None)
@given(st.lists(card_ids(), min_size=1, max_size=40), st.data())
def test_parse_many_reports_the_invalid_id_and_its_index(
    kind: str, ids: list[str], data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(ids) - 1), label="index")
    bad = INVALID_MAKERS[kind](ids[index])
    batch: list[object] = [*ids[:index], bad, *ids[index + 1 :]]
    with pytest.raises(CardIdError) as raised:
        parse_many(batch)  # type: ignore[arg-type]
    assert_same_error(raised.value, bad, index)


@pytest.mark.usefixtures("path")
def test_parse_many_reports_the_first_of_several_invalid_ids() -> None:
    batch = [VALID] * 30
    batch[25] = "99" + VALID[2:]
    batch[12] = VALID[:31]
    batch[18] = "x"
    with pytest.raises(CardIdError) as raised:
        parse_many(batch)
    assert_same_error(raised.value, batch[12], 12)


@pytest.mark.usefixtures("path")
def test_parse_many_rejects_lengths_that_compensate_each_other() -> None:
    # 31 + 33 characters: the joined text has the length of two valid ids.
    for cut in (31, 16, 0):
        batch = [VALID] * 20
        batch[7] = VALID[:cut]
        batch[8] = VALID[cut:] + VALID
        with pytest.raises(CardIdError) as raised:
            parse_many(batch)
        assert_same_error(raised.value, batch[7], 7)


@pytest.mark.usefixtures("path")
def test_parse_many_agrees_with_scalar_on_every_single_character_substitution() -> None:
    # Every ASCII character at every position of an id, in the middle of a batch.
    index = 17
    for position in range(32):
        for code in range(128):
            candidate = VALID[:position] + chr(code) + VALID[position + 1 :]
            batch = [VALID] * 24
            batch[index] = candidate
            try:
                expected = canonical_bytes(candidate)
            except CardIdError:
                with pytest.raises(CardIdError) as raised:
                    parse_many(batch)
                assert_same_error(raised.value, candidate, index)
            else:
                assert parse_many(batch)[index].tobytes() == expected


# --- keys and columns --------------------------------------------------------------------


@pytest.mark.usefixtures("path")
@settings(max_examples=40, deadline=None)
@given(batches)
def test_keys_and_columns_match_scalar_functions(ids: list[str]) -> None:
    matrix = parse_many(ids)
    texts = [canonical_bytes(x).decode() for x in ids]

    keys = keys_from_matrix(matrix)
    assert keys.shape == (len(ids), 18) and keys.dtype == np.uint8
    assert [k.tobytes() for k in keys] == [text_to_key(t) for t in texts]

    region, middle, serial = columns_from_matrix(matrix)
    assert [c.dtype for c in (region, middle, serial)] == [np.uint32, np.uint64, np.uint64]
    assert region.tolist() == [int(t[:6]) for t in texts]
    assert middle.tolist() == [int(t[6:16], 36) for t in texts]
    assert serial.tolist() == [int(t[16:], 16) for t in texts]
    assert region_codes(matrix).tolist() == region.tolist()

    assert rows_to_str(matrix_from_keys(keys)) == texts
    assert rows_to_str(matrix_from_columns(region, middle, serial)) == texts
    assert np.array_equal(keys_from_columns(region, middle, serial), keys)
    key_region, key_middle, key_serial = columns_from_keys(keys)
    assert key_region.dtype == np.uint32 and np.array_equal(key_region, region)
    assert key_middle.dtype == np.uint64 and np.array_equal(key_middle, middle)
    assert key_serial.dtype == np.uint64 and np.array_equal(key_serial, serial)


@st.composite
def key_columns(draw: st.DrawFn) -> tuple[int, int, int]:
    # Any in-range key, province or not: key_to_text does not check provinces either.
    edges = st.sampled_from
    region = draw(st.integers(0, 999_999) | edges([0, 999_999]))
    middle = draw(st.integers(0, MIDDLE_LIMIT - 1) | edges([0, MIDDLE_LIMIT - 1]))
    serial = draw(st.integers(0, 2**64 - 1) | edges([0, 2**64 - 1, 2**63]))
    return region, middle, serial


def key_bytes(region: int, middle: int, serial: int) -> bytes:
    return region.to_bytes(3, "big") + middle.to_bytes(7, "big") + serial.to_bytes(8, "big")


def keys_array(keys: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(-1, 18).copy()


@pytest.mark.usefixtures("path")
@settings(max_examples=40, deadline=None)
@given(st.lists(key_columns(), max_size=40))
def test_matrix_from_keys_matches_key_to_text(columns: list[tuple[int, int, int]]) -> None:
    keys = [key_bytes(*c) for c in columns]
    array = keys_array(keys)
    texts = [key_to_text(k) for k in keys]
    assert rows_to_str(matrix_from_keys(array)) == texts
    region, middle, serial = columns_from_keys(array)
    assert list(zip(region.tolist(), middle.tolist(), serial.tolist(), strict=True)) == columns
    assert rows_to_str(matrix_from_columns(region, middle, serial)) == texts
    assert [k.tobytes() for k in keys_from_columns(region, middle, serial)] == keys
    assert [k.tobytes() for k in keys_from_matrix(matrix_from_keys(array))] == keys


@pytest.mark.usefixtures("path")
@pytest.mark.parametrize(
    ("region", "middle"), [(1_000_000, 0), (2**24 - 1, 5), (0, MIDDLE_LIMIT), (0, 2**56 - 1)]
)
def test_matrix_from_keys_rejects_out_of_range_keys_like_key_to_text(
    region: int, middle: int
) -> None:
    bad = key_bytes(region, middle, 42)
    keys = [key_bytes(110101, 0, 1)] * 5 + [bad] * 2
    with pytest.raises(CardIdError) as scalar:
        key_to_text(bad)
    with pytest.raises(CardIdError) as raised:
        matrix_from_keys(keys_array(keys))
    assert raised.value.index == 5
    assert raised.value.value == bad
    assert raised.value.problem == scalar.value.problem


@pytest.mark.parametrize(
    ("region", "middle", "serial"),
    [(1_000_000, 0, 0), (0, MIDDLE_LIMIT, 0), (-1, 0, 0), (0, -1, 0), (0, 0, -1)],
)
def test_columns_out_of_range_are_rejected(region: int, middle: int, serial: int) -> None:
    columns = [np.array([1, region, 2], dtype=np.int64)]
    columns += [np.array([3, middle, 4], dtype=np.int64)]
    columns += [np.array([5, serial, 6], dtype=np.int64)]
    for convert in (matrix_from_columns, keys_from_columns):
        with pytest.raises(CardIdError) as raised:
            convert(*columns)
        assert raised.value.index == 1
        assert raised.value.value == (region, middle, serial)


def test_columns_must_be_integer_arrays_of_one_length() -> None:
    one = np.zeros(1, dtype=np.uint64)
    with pytest.raises(ValueError, match="one length"):
        matrix_from_columns(one, np.zeros(2, dtype=np.uint64), one)
    with pytest.raises(ValueError, match="integer"):
        keys_from_columns(one, one, np.zeros(1, dtype=np.float64))


@pytest.mark.parametrize(
    "convert", [columns_from_matrix, keys_from_matrix, region_codes, rows_to_str]
)
def test_matrix_functions_reject_other_shapes(convert: Callable[[np.ndarray], object]) -> None:
    with pytest.raises(ValueError, match=r"\(n, 32\) uint8"):
        convert(np.zeros((2, 18), dtype=np.uint8))


@pytest.mark.parametrize("convert", [columns_from_keys, matrix_from_keys])
def test_key_functions_reject_other_shapes(convert: Callable[[np.ndarray], object]) -> None:
    with pytest.raises(ValueError, match=r"\(n, 18\) uint8"):
        convert(np.zeros((2, 32), dtype=np.uint8))


def test_conversions_of_empty_batches() -> None:
    empty_matrix = np.empty((0, 32), dtype=np.uint8)
    empty_keys = np.empty((0, 18), dtype=np.uint8)
    assert keys_from_matrix(empty_matrix).shape == (0, 18)
    assert matrix_from_keys(empty_keys).shape == (0, 32)
    assert [c.shape for c in columns_from_matrix(empty_matrix)] == [(0,)] * 3
    assert [c.shape for c in columns_from_keys(empty_keys)] == [(0,)] * 3
    assert region_codes(empty_matrix).shape == (0,)
    assert rows_to_str(empty_matrix) == []


@pytest.mark.parametrize("rows", [1, 2, 31, 32, 33, 64])
@pytest.mark.parametrize("c_rows", [True, False])
def test_keys_from_matrix_row_by_row_and_by_columns_agree(
    rows: int, c_rows: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below 32 rows keys_from_matrix converts row by row (the C card_key), from 32 on by
    columns: both are text_to_key, row for row, on either side of the threshold (and the
    row-by-row fallback without the C extension too)."""
    if not c_rows:
        monkeypatch.setattr(cardbatch, "_row_key", text_to_key)
    rng = random.Random(rows)
    ids = [
        f"{rng.choice(sorted(PROVINCE_PREFIXES)):02d}{rng.randrange(10_000):04d}"
        f"{''.join(rng.choice('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ') for _ in range(10))}"
        f"{rng.getrandbits(64):016X}"
        for _ in range(rows)
    ]
    matrix = np.frombuffer("".join(ids).encode(), dtype=np.uint8).reshape(-1, 32)
    expected = [text_to_key(i) for i in ids]
    assert [k.tobytes() for k in keys_from_matrix(matrix)] == expected
    assert [k.tobytes() for k in keys_from_columns(*columns_from_matrix(matrix))] == expected
    writable = keys_from_matrix(matrix[: rows // 2 + 1])
    writable[0, 0] = writable[0, 0]  # callers may write into the keys, as before
