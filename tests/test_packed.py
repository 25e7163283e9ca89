"""Packed batches (blacklist/packed.py): the C pass and the pure-Python fallback agree, the
bitmap read in place agrees with pyroaring's own ``in``, every malformed id is reported by
index with its cause, the limits hold at, below and above them, and ``check_packed``
answers exactly what ``check_many`` answers for the same ids."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

from blacklist import packed
from blacklist.authority import Authority, Revocation
from blacklist.cardid import canonical_bytes, diagnose
from blacklist.checker import Checker, CheckStatus
from blacklist.clock import ManualClock
from blacklist.entry import Reason
from blacklist.filters.fingerprint import fingerprints
from blacklist.packed import (
    PackedBatchError,
    explain_row,
    packed_count,
    python_scan_packed,
    scan_packed,
)
from blacklist.regions import PROVINCE_PREFIXES
from blacklist.store import RevocationStore
from tests.conftest import Keys, card

T = 1_749_000_000
needs_c = pytest.mark.skipif(
    not packed.HAVE_PACKED_SPEEDUPS, reason="C extension not built (or built before packed)"
)

valid_ids = st.builds(
    lambda p, r, m, s, low: f"{p:02d}{r:04d}{m}{s:016x}" if low else f"{p:02d}{r:04d}{m}{s:016X}",
    st.sampled_from(sorted(PROVINCE_PREFIXES)),
    st.integers(0, 9999),
    st.text("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdxyz", min_size=10, max_size=10),
    st.integers(0, 2**64 - 1),
    st.booleans(),
)
# A 32-byte row that is usually wrong somewhere: one byte of a valid id replaced by anything.
broken_rows = st.builds(
    lambda good, at, byte: good.encode()[:at] + bytes([byte]) + good.encode()[at + 1 :],
    valid_ids,
    st.integers(0, 31),
    st.integers(0, 255),
)
rows = st.one_of(valid_ids.map(str.encode), broken_rows)


def _fingerprints(batch: list[bytes], width: int) -> list[int]:
    ok = []
    for row in batch:
        try:
            ok.append(canonical_bytes(row.decode("latin-1")))
        except ValueError:
            continue
    if not ok:
        return []
    matrix = np.frombuffer(b"".join(ok), np.uint8).reshape(-1, 32)
    return [int(f) for f in fingerprints(matrix, width)]


@needs_c
@given(st.lists(rows, max_size=80), st.integers(4, 32), st.booleans())
@settings(max_examples=80, deadline=None)
def test_c_pass_matches_the_fallback(batch: list[bytes], width: int, in_place: bool) -> None:
    rng = random.Random(len(batch))
    container = BitMap(f for f in _fingerprints(batch, width) if rng.random() < 0.5)
    data = b"".join(batch)
    raw = packed._c_scan_packed(data, packed._PROVINCES, 64 - width, container, in_place)
    valid = len(batch) - len(raw[3])
    slow = python_scan_packed(data, width, container)
    assert raw[0][: 32 * valid] == slow.matrix.tobytes()
    assert np.frombuffer(raw[1], np.uint32)[:valid].tolist() == slow.regions.tolist()
    assert raw[2] == slow.hits
    assert raw[3] == slow.bad
    fast = scan_packed(data, width, container)
    assert (fast.hits, fast.bad) == (slow.hits, slow.bad)
    # The fallback is the single-id parser's judgement, row by row.
    canon = [r for r in batch if not _bad(r)]
    assert slow.matrix.tobytes() == b"".join(r.upper() for r in canon)
    assert slow.bad == [i for i, r in enumerate(batch) if _bad(r)]


def _bad(row: bytes) -> bool:
    try:
        canonical_bytes(row.decode("latin-1"))
    except ValueError:
        return True
    return False


@needs_c
def test_the_bitmap_read_in_place_agrees_with_pyroaring() -> None:
    """Every container kind CRoaring has (array, bitset, run, shared) at the edges of
    what it holds; and the node uses the in-place read (the layout check passed)."""
    assert packed.IN_PLACE
    assert packed._in_place_agrees()
    rng = np.random.default_rng(5)
    bitmap = BitMap(rng.integers(0, 1 << 28, 200_000, dtype=np.uint32))
    bitmap.add_range(7 << 16, (7 << 16) + 60_000)
    bitmap.run_optimize()
    probes = np.concatenate(
        [rng.integers(0, 1 << 28, 20_000, dtype=np.uint32), np.array([*bitmap][:5000], np.uint32)]
    )
    expected = [i for i, v in enumerate(probes.tolist()) if v in bitmap]
    assert packed._c_roaring_members(bitmap, probes) == expected
    assert packed._c_roaring_members(BitMap(), probes) == []


def test_every_malformed_id_is_named_by_index_with_its_cause() -> None:
    good = card()
    batch = [
        good,
        "99" + good[2:],  # no such province
        good[:20] + "G" + good[21:],  # serial not hex
        good.lower(),  # fine: either case
        good[:8] + "-" + good[9:],  # middle not alphanumeric
        good[:3] + "A" + good[4:],  # region not digits
        good[:10] + " " + good[11:],  # whitespace
    ]
    data = (
        b"".join(b.encode() for b in batch) + good[:10].encode() + b"\xc3\xa9" + good[12:].encode()
    )
    for scanner in (scan_packed, python_scan_packed):
        assert scanner(data, 28, BitMap()).bad == [1, 2, 4, 5, 6, 7]
    causes = {i: explain_row(data[32 * i : 32 * i + 32], i) for i in (1, 2, 4, 5, 6, 7)}
    assert "not a province-level code" in causes[1].problem
    assert "serial" in causes[2].problem and "hex" in causes[2].problem
    assert "middle part" in causes[4].problem
    assert "region code" in causes[5].problem
    assert causes[6].problem == "contains whitespace"
    assert causes[7].problem == "contains non-ASCII characters"
    # The same words as a single check of the same id gives.
    for i in (1, 2, 4, 5, 6):
        assert causes[i].problem == diagnose(batch[i]).problem
        assert causes[i].index == i


@pytest.mark.parametrize(
    ("ids", "limit", "ok"),
    [(9, 10, True), (10, 10, True), (11, 10, False), (1, 1, True), (2, 1, False)],
)
def test_packed_count_limit_below_at_and_above(ids: int, limit: int, ok: bool) -> None:
    data = card().encode() * ids
    if ok:
        assert packed_count(data, limit) == ids
    else:
        with pytest.raises(PackedBatchError, match=f"batch of {ids} card ids .* limit of {limit}"):
            packed_count(data, limit)


@pytest.mark.parametrize("size", [0, 1, 31, 33, 63, 65])
def test_packed_length_must_be_whole_ids(size: int) -> None:
    data = (card() * 3).encode()[:size]
    with pytest.raises(PackedBatchError) as info:
        packed_count(data, 10)
    if size:
        assert f"{size} bytes, not a multiple of 32: id {size // 32} is cut short" in str(
            info.value
        )
    else:
        assert "empty batch" in str(info.value)


# ---------------------------------------------------------------- against check_many
@pytest.fixture
def checker(store: RevocationStore, keys: Keys, clock: ManualClock) -> tuple[Checker, list[str]]:
    gz = Authority(store, keys.gz, keys.ring, clock=clock)
    revoked = [card() for _ in range(300)]
    gz.publish([Revocation(c, Reason.LOSS, T) for c in revoked])
    return Checker(store, keys.ring, clock=clock), revoked


@given(data=st.data())
@settings(
    max_examples=40,
    deadline=None,
    # The store is read, never written, by the examples: sharing it between them is safe.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_check_packed_answers_what_check_many_answers(
    checker: tuple[Checker, list[str]], data: st.DataObject
) -> None:
    check, revoked = checker
    serials = st.integers(0, 2**64 - 1)
    pick = st.one_of(
        st.sampled_from(revoked),
        st.builds(card, st.just("440100"), serials),  # valid, not revoked
        st.builds(card, st.just("110100"), serials),  # NO_DATA
        st.builds(card, st.just("120100"), serials),  # UNKNOWN_ISSUER
    )
    either_case = st.tuples(pick, st.booleans()).map(lambda p: p[0].lower() if p[1] else p[0])
    ids = data.draw(st.lists(either_case, min_size=1, max_size=300))
    many = check.check_many(ids)
    got = check.check_packed("".join(ids).encode())
    assert got.malformed == {} and got.positions is None
    assert got.batch.statuses.tolist() == many.statuses.tolist()
    assert [got.batch[i].feed_version for i in range(len(ids))] == [
        many[i].feed_version for i in range(len(ids))
    ]
    assert {i: r.entry for i, r in got.batch.revoked.items()} == {
        i: r.entry for i, r in many.revoked.items()
    }


def test_check_packed_answers_the_valid_ids_around_malformed_ones(
    checker: tuple[Checker, list[str]],
) -> None:
    check, revoked = checker
    fine = card()
    ids = [revoked[0], "99" + fine[2:], fine, fine[:31] + "Z", revoked[1]]
    got = check.check_packed("".join(ids).encode())
    assert sorted(got.malformed) == [1, 3]
    assert got.index_of(np.arange(3)).tolist() == [0, 2, 4]
    assert [CheckStatus(s) for s in got.batch.statuses.tolist()] == [
        CheckStatus.REVOKED,
        CheckStatus.NOT_REVOKED,
        CheckStatus.REVOKED,
    ]
    only_bad = check.check_packed(("99" + fine[2:]).encode() * 3)
    assert sorted(only_bad.malformed) == [0, 1, 2] and len(only_bad.batch) == 0


def test_the_fallback_checker_answers_as_the_c_one(
    checker: tuple[Checker, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    check, revoked = checker
    fine = card()
    ids = [*revoked[:20], "99" + fine[2:], fine, card("110100"), card("120100"), fine.lower()]
    data = "".join(ids).encode()
    fast = check.check_packed(data)
    monkeypatch.setattr("blacklist.checker.scan_packed", python_scan_packed)
    slow = check.check_packed(data)
    assert slow.batch.statuses.tolist() == fast.batch.statuses.tolist()
    assert slow.positions is not None and fast.positions is not None
    assert slow.positions.tolist() == fast.positions.tolist()
    assert {i: str(e) for i, e in slow.malformed.items()} == {
        i: str(e) for i, e in fast.malformed.items()
    }
    assert sorted(slow.batch.revoked) == sorted(fast.batch.revoked) == list(range(20))
