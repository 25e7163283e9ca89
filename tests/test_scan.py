"""check_many's front half: the C pass and the numpy fallback agree."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

from blacklist.errors import CardIdError
from blacklist.fastpath import HAVE_SPEEDUPS, python_scan, scan
from blacklist.filters.fingerprint import fingerprints
from blacklist.regions import PROVINCE_PREFIXES

ids = st.builds(
    lambda p, r, m, s: f"{p:02d}{r:04d}{m}{s:016x}" if s % 2 else f"{p:02d}{r:04d}{m}{s:016X}",
    st.sampled_from(sorted(PROVINCE_PREFIXES)),
    st.integers(0, 9999),
    st.text("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdxyz", min_size=10, max_size=10),
    st.integers(0, 2**64 - 1),
)


@given(st.lists(ids, max_size=60), st.integers(1, 32))
@settings(max_examples=60, deadline=None)
def test_scan_matches_fallback(batch: list[str], width: int) -> None:
    rng = random.Random(len(batch))
    upper = [b.upper().encode() for b in batch]
    fps = (
        [
            int(x)
            for x in fingerprints(np.frombuffer(b"".join(upper), np.uint8).reshape(-1, 32), width)
        ]
        if batch
        else []
    )
    container = BitMap(f for f in fps if rng.random() < 0.5)
    fast = scan(batch, width, container)
    slow = python_scan(batch, width, container)
    assert fast[0].tobytes() == slow[0].tobytes() == b"".join(upper)
    assert fast[1].tolist() == slow[1].tolist() == [int(b[:6]) for b in batch]
    assert fast[2] == slow[2] == [i for i, f in enumerate(fps) if f in container]


@pytest.mark.skipif(not HAVE_SPEEDUPS, reason="C extension not built; fallback only")
@pytest.mark.parametrize(
    "bad", ["x", "990100D156000005" + "0" * 16, None, "440100D15600000 " + "0" * 16]
)
def test_scan_names_the_first_bad_id(bad: object) -> None:
    good = "440100D156000005" + "A" * 16
    batch = [good, good, bad, "also bad"]
    with pytest.raises(CardIdError) as info:
        scan(batch, 28, BitMap())  # type: ignore[arg-type]
    assert info.value.index == 2
    with pytest.raises(CardIdError) as slow:
        python_scan(batch, 28, BitMap())  # type: ignore[arg-type]
    assert str(slow.value) == str(info.value)


@given(st.lists(ids, max_size=40), st.integers(1, 32))
@settings(max_examples=40, deadline=None)
def test_key_fingerprints_match_fallback(batch: list[str], width: int) -> None:
    from blacklist.cardbatch import keys_from_matrix, parse_many
    from blacklist.fastpath import key_fingerprints, python_key_fingerprints

    matrix = parse_many(batch)
    keys = keys_from_matrix(matrix)
    expected = fingerprints(matrix, width).tolist()
    assert key_fingerprints(keys, width).tolist() == expected
    assert python_key_fingerprints(keys, width).tolist() == expected
