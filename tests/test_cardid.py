from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blacklist.cardid import CardId, key_to_text, region_key_range, text_to_key
from blacklist.errors import CardIdError
from blacklist.regions import PROVINCE_PREFIXES
from blacklist.rejections import MalformedDelta
from blacklist.sync.accept import parse_signed

ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
valid_ids = st.builds(
    lambda p, r, m, s, lower: f"{p:02d}{r:04d}{m}" + (f"{s:016x}" if lower else f"{s:016X}"),
    st.sampled_from(sorted(PROVINCE_PREFIXES)),
    st.integers(0, 9999),
    st.text(ALNUM, min_size=10, max_size=10),
    st.integers(0, 2**64 - 1),
    st.booleans(),
)


@given(valid_ids)
def test_key_round_trip(value: str) -> None:
    card = CardId.parse(value)
    assert card.text == value.upper()
    assert len(card.key) == 18
    assert CardId.from_key(card.key) == card
    assert key_to_text(text_to_key(card.text)) == card.text


@given(valid_ids, valid_ids)
def test_key_order_is_text_order(a: str, b: str) -> None:
    ka, kb = CardId.parse(a).key, CardId.parse(b).key
    # Region first, then middle, then serial: the same order as the canonical text's parts.
    ta, tb = a.upper(), b.upper()
    text_order = (int(ta[:6]), int(ta[6:16], 36), int(ta[16:], 16)) < (
        int(tb[:6]),
        int(tb[6:16], 36),
        int(tb[16:], 16),
    )
    assert (ka < kb) == text_order


def test_non_standard_middle_round_trips() -> None:
    for middle in ("D156000005", "0000000000", "ZZZZZZZZZZ", "a1b2c3d4e5"):
        text = f"440100{middle}00000000000000FF"
        assert CardId.from_key(CardId.parse(text).key).text == text.upper()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("440100D156000005ABCDEF012345678", "wrong length 31"),
        ("440100D156000005ABCDEF01234567890", "wrong length 33"),
        ("440100D156000005ABCDEF012345678G", "serial 'ABCDEF012345678G' is not 16 hex digits"),
        ("4401A0D156000005ABCDEF0123456789", "region code '4401A0' is not 6 digits"),
        ("990100D156000005ABCDEF0123456789", "'99' is not a province-level code"),
        ("160100D156000005ABCDEF0123456789", "'16' is not a province-level code"),
        ("440100D15600000-ABCDEF0123456789", "middle part 'D15600000-'"),
        ("440100D156000005ABCDEF012345678 ", "contains whitespace"),
        (" 440100D156000005ABCDEF012345678", "contains whitespace"),
        ("440100D156000005ABCDEF01234567８9"[:32], "non-ASCII"),
        (b"440100D156000005ABCDEF0123456789", "expected a string"),
        (None, "expected a string"),
    ],
)
def test_malformed_ids_name_the_problem_and_value(value: object, problem: str) -> None:
    with pytest.raises(CardIdError) as info:
        CardId.parse(value)
    assert problem in str(info.value)
    assert repr(value) in str(info.value)


def test_region_key_range() -> None:
    low, high = region_key_range("4401")
    assert int.from_bytes(low, "big") == 440100
    assert int.from_bytes(high, "big") == 440200
    key = CardId.parse("440199D156000005ABCDEF0123456789").key
    assert low <= key[:3] < high


@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    with pytest.raises(MalformedDelta):
        parse_signed(data)


@given(st.binary(max_size=200))
def test_random_bodies_in_a_valid_container_are_refused(body: bytes) -> None:
    from blacklist.binary import Writer

    w = Writer()
    w.raw(b"CRL1")
    w.blob(body)
    w.blob(b"\x00" * 64)
    with contextlib.suppress(MalformedDelta):
        parse_signed(w.getvalue())
