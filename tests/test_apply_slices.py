"""A big write in slices (blacklist/slices.py, issue #15) leaves the store exactly as one
unsliced write does: every LMDB table byte for byte and the index's bitmaps and counts, at
the slice boundaries (n = k*slice - 1, k*slice, k*slice + 1) for deltas and snapshots; the
index's slices against one add_many under hypothesis; the slice size's limit at, below and
above it. (All or nothing across slices: tests/test_crash.py kills a sliced apply.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import blacklist.slices as slices
from blacklist.cardid import text_to_key
from blacklist.clock import ManualClock
from blacklist.columns import CardColumns, EntryColumns
from blacklist.delta import FeedHead, sign_delta, sign_snapshot
from blacklist.filters.roaring_index import FingerprintIndex
from blacklist.slices import add_in_slices, put_in_slices
from blacklist.store import RevocationStore
from tests.conftest import Keys, card

SLICE = 7
NOW = 1_750_000_000


def columns(cards: list[str], seed: int) -> EntryColumns:
    rows = np.frombuffer(b"".join(text_to_key(c) for c in cards), np.uint8).reshape(-1, 18)
    sorted_cards = CardColumns.from_keys(rows).sorted()
    rng = np.random.default_rng(seed)
    n = len(cards)
    times = NOW - 100 - rng.integers(0, 50, n)
    # Every third entry a temporary loss that lapses (issue #17: the lapse table is written
    # per entry), the others of reasons that do not.
    lapsing = np.arange(n) % 3 == 0
    reasons = np.where(lapsing, 1, rng.integers(2, 6, n)).astype(np.uint8)
    entries = EntryColumns(sorted_cards, reasons, times)
    return entries.with_expires(np.where(lapsing, times + 864_000, 0))


def dump(store: RevocationStore) -> dict[bytes, list[tuple[bytes, bytes]]]:
    """Every table of the store's environment, key by key (the main table lists them)."""
    env: lmdb.Environment = store.env
    tables: dict[bytes, list[tuple[bytes, bytes]]] = {}
    with env.begin() as txn:
        names = [bytes(k) for k, _ in txn.cursor()]
    for name in names:
        db = env.open_db(name, create=False)
        with env.begin(db=db) as txn:
            tables[name] = [(bytes(k), bytes(v)) for k, v in txn.cursor()]
    return tables


def index_state(index: FingerprintIndex) -> tuple[Any, ...]:
    return (list(index.bitmap), list(index.shared), dict(index._extra), len(index), index.width)


def pair(tmp_path: Path, narrow: bool) -> tuple[RevocationStore, RevocationStore]:
    """Two stores alike but for the slice size: SLICE, and larger than any write here."""
    width = 8 if narrow else None  # 8 bits: fingerprints collide, shared and 3+ counts used
    return tuple(  # type: ignore[return-value]
        RevocationStore(
            tmp_path / name,
            clock=ManualClock(float(NOW)),
            map_size=1 << 26,
            fingerprint_width=width,
            apply_slice=size,
        )
        for name, size in (("sliced", SLICE), ("whole", 10**9))
    )


BOUNDARIES = [k * SLICE + d for k in (1, 2, 3) for d in (-1, 0, 1)]


@pytest.mark.parametrize("narrow", [False, True])
@pytest.mark.parametrize("n", BOUNDARIES)
def test_a_sliced_delta_leaves_the_store_as_an_unsliced_one(
    tmp_path: Path, keys: Keys, n: int, narrow: bool
) -> None:
    sliced, whole = pair(tmp_path, narrow)
    first = [card("440100", s) for s in range(1, n + 1)]
    # The second delta: half of it re-revokes held cards (read back through the index's
    # "maybe held" rows), half is new, and a few held cards are reinstated.
    second = first[: n // 2] + [card("440100", 1000 + s) for s in range(n - n // 2)]
    gone = first[n // 2 : n // 2 + 3]
    head = sliced.head("440100")
    d1 = sign_delta(keys.gz, head, columns(first, 1), CardColumns.empty(), NOW - 10)
    results = [store.apply(d1.to_bytes(), keys.ring) for store in (sliced, whole)]
    removes = CardColumns.from_keys(
        np.frombuffer(b"".join(text_to_key(c) for c in gone), np.uint8).reshape(-1, 18)
    ).sorted()
    d2 = sign_delta(keys.gz, sliced.head("440100"), columns(second, 2), removes, NOW - 5)
    results += [store.apply(d2.to_bytes(), keys.ring) for store in (sliced, whole)]
    assert results[0] == results[1] and results[2] == results[3]
    assert results[0].added == n
    assert dump(sliced) == dump(whole)
    assert index_state(sliced.index) == index_state(whole.index)
    assert sliced.reason_counts.by_reason() == whole.reason_counts.by_reason()
    assert sliced.feeds == whole.feeds
    for store in (sliced, whole):
        store.close()


@pytest.mark.parametrize("n", BOUNDARIES)
def test_a_sliced_snapshot_leaves_the_store_as_an_unsliced_one(
    tmp_path: Path, keys: Keys, n: int
) -> None:
    sliced, whole = pair(tmp_path, narrow=True)
    entries = columns([card("440100", s) for s in range(1, n + 1)], 3)
    d1 = sign_delta(keys.gz, sliced.head("440100"), entries, CardColumns.empty(), NOW - 10)
    for store in (sliced, whole):
        store.apply(d1.to_bytes(), keys.ring)
    fresh = columns([card("440100", 500 + s) for s in range(n)], 4)
    # A later head of the feed than the stores hold (a child far behind takes a snapshot).
    head = FeedHead("440100", d1.version + 5, d1.digest)
    versions = np.full(n, head.version, np.uint64)
    snapshot = sign_snapshot(keys.gz, head, fresh, versions, NOW - 5)
    results = [store.apply_snapshot(snapshot, keys.ring) for store in (sliced, whole)]
    assert results[0] == results[1]
    assert dump(sliced) == dump(whole)
    assert index_state(sliced.index) == index_state(whole.index)
    for store in (sliced, whole):
        store.close()


@settings(max_examples=200, deadline=None)
@given(
    held=st.lists(st.integers(0, 40), max_size=30),
    batch=st.lists(st.integers(0, 40), max_size=60),
    size=st.integers(1, 12),
)
def test_index_slices_count_as_one_add_many(held: list[int], batch: list[int], size: int) -> None:
    """Repeats within a slice, across slices and of fingerprints already held all end in
    the same bitmap, shared bitmap, 3+ counts and entry count."""
    whole, sliced = FingerprintIndex(16), FingerprintIndex(16)
    for index in (whole, sliced):
        index.add_many(np.array(held, dtype=np.uint32))
    whole.add_many(np.array(batch, dtype=np.uint32))
    add_in_slices(sliced, np.array(batch, dtype=np.uint32), size)
    assert index_state(sliced) == index_state(whole)


@pytest.mark.parametrize("n", [0, 1, *BOUNDARIES])
def test_the_gil_is_offered_between_slices_never_after_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int
) -> None:
    """One offer between each two slices: ceil(n / size) - 1 of them, with the items put so
    far a whole number of slices at each."""
    env = lmdb.open(str(tmp_path / "env"), map_size=1 << 24)
    done: list[int] = []
    monkeypatch.setattr(slices, "_yield_gil", lambda: done.append(count(env)))
    items = [(f"{i:08d}".encode(), b"v") for i in range(n)]
    with env.begin(write=True) as txn:
        put_in_slices(txn.cursor(), [k for k, _ in items], [v for _, v in items], SLICE)
        inside = count(env, txn)
    assert inside == n and count(env) == n
    assert len(done) == max(0, -(-n // SLICE) - 1)
    env.close()
    calls: list[None] = []
    monkeypatch.setattr(slices, "_yield_gil", lambda: calls.append(None))
    add_in_slices(FingerprintIndex(16), np.arange(n, dtype=np.uint32), SLICE)
    assert len(calls) == len(done)


def count(env: lmdb.Environment, txn: Any = None) -> int:
    if txn is not None:
        return int(txn.stat()["entries"])
    with env.begin() as read:
        return int(read.stat()["entries"])


@pytest.mark.parametrize("size", [-1, 0])
def test_a_slice_size_below_one_is_refused(tmp_path: Path, size: int) -> None:
    with pytest.raises(ValueError, match=f"apply_slice must be >= 1, got {size}"):
        RevocationStore(tmp_path / "s", map_size=1 << 24, apply_slice=size)
    with pytest.raises(ValueError, match=f"slice size must be >= 1, got {size}"):
        add_in_slices(FingerprintIndex(16), np.arange(3, dtype=np.uint32), size)
    with pytest.raises(ValueError, match=f"slice size must be >= 1, got {size}"):
        put_in_slices(None, [b"k"], [b"v"], size)


def test_a_slice_of_one_item_and_keys_without_values(tmp_path: Path) -> None:
    store = RevocationStore(tmp_path / "s", map_size=1 << 24, apply_slice=1)
    store.close()
    env = lmdb.open(str(tmp_path / "env"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        put_in_slices(txn.cursor(), [b"a", b"b", b"c"], [b"1", b"2", b"3"], 1)
        assert count(env, txn) == 3
        with pytest.raises(ValueError, match="3 keys but 2 values"):
            put_in_slices(txn.cursor(), [b"a", b"b", b"c"], [b"1", b"2"], 2)
    env.close()
