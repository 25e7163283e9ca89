"""Fixed-width bit packing: against a big-integer reference, and strict unpacking."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from blacklist.bitpack import (
    pack_runs,
    pack_uints,
    packed_size,
    runs_packed_size,
    unpack_runs,
    unpack_uints,
)
from blacklist.errors import CodecError


def reference_pack(values: list[int], widths: list[int]) -> bytes:
    """The layout spelled out with one Python integer: MSB first, zero padded."""
    acc = 0
    bits = 0
    for value, width in zip(values, widths, strict=True):
        acc = (acc << width) | value
        bits += width
    pad = -bits % 8
    return (acc << pad).to_bytes((bits + pad) // 8, "big")


@st.composite
def width_and_values(draw: st.DrawFn) -> tuple[int, list[int]]:
    width = draw(st.integers(0, 64))
    top = (1 << width) - 1
    value = st.one_of(st.integers(0, top), st.sampled_from([0, top]))
    return width, draw(st.lists(value, max_size=40))


@given(width_and_values())
def test_pack_matches_reference_and_round_trips(case: tuple[int, list[int]]) -> None:
    width, values = case
    arr = np.array(values, dtype=np.uint64)
    data = pack_uints(arr, width)
    assert data == reference_pack(values, [width] * len(values))
    assert len(data) == packed_size(len(values), width)
    assert unpack_uints(data, len(values), width).tolist() == values


@given(st.lists(width_and_values(), max_size=6))
def test_runs_match_reference_and_round_trip(runs: list[tuple[int, list[int]]]) -> None:
    lengths = [len(v) for _, v in runs]
    widths = [w for w, _ in runs]
    flat = [x for _, v in runs for x in v]
    per_value_width = [w for w, v in runs for _ in v]
    data = pack_runs(np.array(flat, dtype=np.uint64), lengths, widths)
    assert data == reference_pack(flat, per_value_width)
    assert len(data) == runs_packed_size(lengths, widths)
    assert unpack_runs(data, lengths, widths).tolist() == flat


@pytest.mark.parametrize("width", [1, 7, 12, 47, 57, 58, 63, 64])
def test_large_arrays_cross_chunk_boundaries(width: int) -> None:
    rng = np.random.default_rng(width)
    values = rng.integers(0, 2**width, size=150_001, dtype=np.uint64, endpoint=False)
    values[-1] = 2**width - 1
    data = pack_uints(values, width)
    assert np.array_equal(unpack_uints(data, len(values), width), values)


def test_mixed_widths_across_chunks() -> None:
    rng = np.random.default_rng(5)
    lengths = [70_000, 3, 1, 65_536, 9]
    widths = [47, 64, 0, 5, 13]
    values = np.concatenate(
        [
            rng.integers(0, 2**w, size=n, dtype=np.uint64)
            for n, w in zip(lengths, widths, strict=True)
        ]
    )
    data = pack_runs(values, lengths, widths)
    assert np.array_equal(unpack_runs(data, lengths, widths), values)


def test_width_zero_is_empty() -> None:
    assert pack_uints(np.zeros(10, dtype=np.uint64), 0) == b""
    assert unpack_uints(b"", 10, 0).tolist() == [0] * 10


def test_value_too_wide_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit in 3 bits"):
        pack_uints(np.array([1, 8], dtype=np.uint64), 3)


@pytest.mark.parametrize("width", [-1, 65])
def test_width_out_of_range_is_refused(width: int) -> None:
    with pytest.raises(ValueError, match="bit width"):
        pack_uints(np.zeros(1, dtype=np.uint64), width)


def test_wrong_length_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="times: 1 bytes, expected 2"):
        unpack_uints(b"\x00", 2, 5, "times")
    with pytest.raises(CodecError, match="expected 1"):
        unpack_uints(b"\x00\x00", 1, 5)


def test_nonzero_padding_is_a_codec_error() -> None:
    # One 5-bit value 0b10101 -> 0b10101_000; a set padding bit makes a second encoding.
    assert unpack_uints(b"\xa8", 1, 5).tolist() == [0b10101]
    with pytest.raises(CodecError, match="padding"):
        unpack_uints(b"\xa9", 1, 5)
