"""The vectorised XXH64 and fingerprints must equal the scalar xxhash path bit for bit."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from blacklist.filters import fingerprint as fp
from blacklist.filters.fingerprint import (
    MAX_WIDTH,
    MIN_WIDTH,
    fingerprint,
    fingerprints,
    xxh64_rows,
)

WIDTHS = (1, 8, 16, 32)


@pytest.fixture(params=["per-row", "vectorised", "vectorised-small-chunks"])
def path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a test through each implementation path, whatever the batch size."""
    with pytest.MonkeyPatch.context() as mp:
        if request.param == "per-row":
            mp.setattr(fp, "_VECTORISE_FROM", 10**9)
        else:
            mp.setattr(fp, "_VECTORISE_FROM", 0)
        if request.param == "vectorised-small-chunks":
            mp.setattr(fp, "_CHUNK_ROWS", 3)
        yield request.param


def scalar_xxh64(matrix: np.ndarray) -> list[int]:
    return [xxhash.xxh64_intdigest(row.tobytes()) for row in matrix]


def special_rows() -> np.ndarray:
    rows = [bytes(32), b"\xff" * 32, b"\x80" * 32, b"\x7f" * 32, bytes(range(32))]
    rows += [b"\xff" * i + bytes(32 - i) for i in range(0, 33, 8)]
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(-1, 32)


@st.composite
def matrices(draw: st.DrawFn, max_rows: int = 40) -> np.ndarray:
    rows = draw(st.lists(st.binary(min_size=32, max_size=32), max_size=max_rows))
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(-1, 32).copy()


@pytest.mark.usefixtures("path")
@settings(max_examples=60, deadline=None)
@given(matrices())
def test_xxh64_rows_matches_xxhash(matrix: np.ndarray) -> None:
    got = xxh64_rows(matrix)
    assert got.dtype == np.uint64
    assert got.shape == (matrix.shape[0],)
    assert [int(h) for h in got] == scalar_xxh64(matrix)


@pytest.mark.usefixtures("path")
def test_xxh64_rows_extreme_rows() -> None:
    matrix = special_rows()
    assert [int(h) for h in xxh64_rows(matrix)] == scalar_xxh64(matrix)


@pytest.mark.usefixtures("path")
@pytest.mark.parametrize("n", [0, 1, 2, 7])
def test_xxh64_rows_tiny_batches(n: int) -> None:
    matrix = np.random.default_rng(n).integers(0, 256, (n, 32), dtype=np.uint8)
    assert [int(h) for h in xxh64_rows(matrix)] == scalar_xxh64(matrix)


def test_xxh64_rows_large_random_batch_spanning_chunks() -> None:
    n = fp._CHUNK_ROWS * 2 + 123
    matrix = np.random.default_rng(7).integers(0, 256, (n, 32), dtype=np.uint8)
    matrix[-1] = 0xFF
    assert [int(h) for h in xxh64_rows(matrix)] == scalar_xxh64(matrix)


def test_xxh64_rows_accepts_non_contiguous_input() -> None:
    matrix = np.random.default_rng(3).integers(0, 256, (600, 32), dtype=np.uint8)
    view = matrix[::2]
    assert [int(h) for h in xxh64_rows(view)] == scalar_xxh64(view)


def test_xxh64_rows_raises_no_numpy_warnings() -> None:
    matrix = np.vstack([special_rows()] * 60)
    with np.errstate(all="raise"):
        assert [int(h) for h in xxh64_rows(matrix)] == scalar_xxh64(matrix)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((3, 31), dtype=np.uint8),
        np.zeros((3, 32), dtype=np.int8),
        np.zeros(32, dtype=np.uint8),
        np.zeros((3, 4), dtype=np.uint64),
    ],
)
def test_xxh64_rows_rejects_other_shapes(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8 matrix"):
        xxh64_rows(bad)


@pytest.mark.usefixtures("path")
@settings(max_examples=40, deadline=None)
@given(matrices(), st.sampled_from(WIDTHS))
def test_fingerprints_match_scalar(matrix: np.ndarray, width: int) -> None:
    got = fingerprints(matrix, width)
    assert got.dtype == np.uint32
    assert got.tolist() == [fingerprint(row.tobytes(), width) for row in matrix]


@pytest.mark.usefixtures("path")
@pytest.mark.parametrize("width", [*WIDTHS, 3, 31])
def test_fingerprints_extreme_rows(width: int) -> None:
    matrix = special_rows()
    expected = [fingerprint(row.tobytes(), width) for row in matrix]
    assert fingerprints(matrix, width).tolist() == expected
    assert max(expected) < 1 << width


def test_fingerprint_is_top_bits_of_xxh64() -> None:
    data = b"110101D156000005ABCDEF0123456789"
    digest = xxhash.xxh64_intdigest(data)
    assert fingerprint(data, 32) == digest >> 32
    assert fingerprint(data, 1) == digest >> 63


def test_fingerprints_of_empty_batch() -> None:
    got = fingerprints(np.empty((0, 32), dtype=np.uint8), 32)
    assert got.dtype == np.uint32
    assert got.shape == (0,)


@pytest.mark.parametrize("width", [MIN_WIDTH - 1, MAX_WIDTH + 1, -5, 64])
def test_invalid_width_is_rejected_naming_the_value(width: int) -> None:
    with pytest.raises(ValueError, match=rf"width {width}\b"):
        fingerprint(b"x" * 32, width)
    with pytest.raises(ValueError, match=rf"width {width}\b"):
        fingerprints(np.zeros((1, 32), dtype=np.uint8), width)
