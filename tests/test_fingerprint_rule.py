"""The fingerprint rule exists once (issue #12): :func:`blacklist.filters.fingerprint.fingerprint`
is its definition, and every C path of ``blacklist._speedups`` that computes fingerprints
(the single probe's digest, ``probe_in``, ``scan``, ``key_fingerprints``, ``scan_packed``) agrees with it
bit for bit at the widths the index uses, the limits 1 and 32 included. A disagreement would
revoke a card on one path and not on another."""

from __future__ import annotations

import numpy as np
import pytest
from pyroaring import BitMap

from blacklist.cardid import text_to_key
from blacklist.fastpath import _PROVINCES, HAVE_SPEEDUPS
from blacklist.filters.fingerprint import fingerprint, fingerprint_shift
from blacklist.regions import PROVINCE_PREFIXES

pytestmark = pytest.mark.skipif(not HAVE_SPEEDUPS, reason="C extension not built")

WIDTHS = [1, 2, 16, 27, 28, 31, 32]
_BASE36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _ids(n: int, seed: int) -> list[str]:
    """Valid card ids, some lower-case (the rule hashes the canonical upper-case form),
    with the extreme serials and middles."""
    rng = np.random.default_rng(seed)
    provinces = sorted(PROVINCE_PREFIXES)
    out = [
        f"{provinces[0]:02d}0000{'0' * 10}{0:016X}",
        f"{provinces[-1]:02d}9999{'Z' * 10}{2**64 - 1:016X}",
    ]
    for _ in range(n - len(out)):
        middle = "".join(_BASE36[int(c)] for c in rng.integers(0, 36, 10))
        card = f"{rng.choice(provinces):02d}{int(rng.integers(0, 10000)):04d}{middle}"
        card += f"{int(rng.integers(0, 2**63)) * 2 + int(rng.integers(0, 2)):016X}"
        out.append(card.lower() if rng.random() < 0.3 else card)
    return out


@pytest.fixture(scope="module")
def ids() -> list[str]:
    return _ids(600, 7)


def _rule(ids: list[str], width: int) -> list[int]:
    return [fingerprint(i.upper().encode(), width) for i in ids]


@pytest.mark.parametrize("width", [0, 33])
def test_the_rule_refuses_a_width_outside_1_to_32(width: int) -> None:
    with pytest.raises(ValueError, match=f"fingerprint width {width}"):
        fingerprint_shift(width)


@pytest.mark.parametrize("width", WIDTHS)
def test_the_probe_digest_shifted_is_the_rule(ids: list[str], width: int) -> None:
    from blacklist._speedups import probe

    shift = fingerprint_shift(width)
    got = [probe(i, {}, _PROVINCES)[2] >> shift for i in ids]
    assert got == _rule(ids, width)


@pytest.mark.parametrize("width", WIDTHS)
def test_c_probe_in_hits_exactly_the_rule(ids: list[str], width: int) -> None:
    """Checker.check's one C call: validation, hash and the index test."""
    from blacklist._speedups import probe_in

    fps = _rule(ids, width)
    held = BitMap(fps[::3])
    index = (held, fingerprint_shift(width))
    got = [probe_in(i, {}, _PROVINCES, index)[2] for i in ids]
    assert got == [f in held for f in fps]


@pytest.mark.parametrize("width", WIDTHS)
def test_c_key_fingerprints_are_the_rule(ids: list[str], width: int) -> None:
    from blacklist._speedups import key_fingerprints

    keys = np.frombuffer(b"".join(text_to_key(i.upper()) for i in ids), np.uint8)
    raw = key_fingerprints(keys.reshape(-1, 18), fingerprint_shift(width))
    assert np.frombuffer(raw, np.uint32).tolist() == _rule(ids, width)


@pytest.mark.parametrize("width", WIDTHS)
def test_c_scan_hits_exactly_the_rule(ids: list[str], width: int) -> None:
    from blacklist._speedups import scan

    fps = _rule(ids, width)
    held = BitMap(fps[::3])  # every third id's fingerprint: others hit only by collision
    _, _, hits = scan(ids, _PROVINCES, fingerprint_shift(width), held)
    assert hits == [i for i, f in enumerate(fps) if f in held]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("in_place", [False, True])
def test_c_scan_packed_hits_exactly_the_rule(ids: list[str], width: int, in_place: bool) -> None:
    from blacklist._speedups import scan_packed

    fps = _rule(ids, width)
    held = BitMap(fps[::3])
    packed = b"".join(i.encode() for i in ids)
    _, _, hits, bad = scan_packed(packed, _PROVINCES, fingerprint_shift(width), held, in_place)
    assert list(bad) == []
    assert list(hits) == [i for i, f in enumerate(fps) if f in held]


@pytest.mark.parametrize("shift", [31, 64])
def test_c_refuses_a_shift_the_rule_cannot_give(shift: int) -> None:
    """Widths 1..32 are shifts 32..63; the C loops refuse any other."""
    from blacklist._speedups import key_fingerprints, scan

    with pytest.raises(ValueError, match="shift"):
        scan(["x"], _PROVINCES, shift, BitMap())
    with pytest.raises(ValueError, match="shift"):
        key_fingerprints(np.zeros((1, 18), np.uint8), shift)
