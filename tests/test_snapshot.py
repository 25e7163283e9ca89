from __future__ import annotations

from pathlib import Path

import pytest

from blacklist.authority import Authority, Revocation
from blacklist.checker import Checker
from blacklist.delta import sign_snapshot
from blacklist.deltadecode import decode
from blacklist.entry import Reason
from blacklist.rejections import BadSignature, ForkedFeed, MalformedDelta, ReplayedDelta
from blacklist.store import RevocationStore
from tests.conftest import Keys, card

T = 1_749_000_000


def make_source(path: Path, keys: Keys) -> tuple[RevocationStore, list[str]]:
    store = RevocationStore(path, map_size=1 << 28)
    gz = Authority(store, keys.gz, keys.ring)
    cards = [card() for _ in range(300)] + [card("440103") for _ in range(20)]
    gz.publish([Revocation(c, Reason(1 + i % 7), T + i) for i, c in enumerate(cards)])
    gz.publish([Revocation(c, Reason.LOSS, T) for c in (card(), card())], cards[:10])
    return store, cards


def test_snapshot_bootstraps_an_empty_store(tmp_path: Path, keys: Keys) -> None:
    source, cards = make_source(tmp_path / "a", keys)
    entries, versions = source.feed_entries("440100")
    snap = sign_snapshot(keys.gz, source.head("440100"), entries, versions, T)
    again = decode(snap.to_bytes())
    assert again.digest == snap.digest

    fresh = RevocationStore(tmp_path / "b", map_size=1 << 28)
    result = fresh.apply(snap.to_bytes(), keys.ring)
    assert result.added == 312
    assert fresh.head("440100") == source.head("440100")
    assert list(fresh.iter_entries()) == list(source.iter_entries())
    checker = Checker(fresh, keys.ring)
    assert not checker.check(cards[0]).revoked
    assert checker.check(cards[100]).revoked
    assert checker.check(cards[100]).entry == Checker(source, keys.ring).check(cards[100]).entry

    # The feed continues from the snapshot with the next delta.
    Authority(source, keys.gz, keys.ring).publish([Revocation(card(), Reason.LOSS, T)])
    delta = source.retained_delta("440100", 3)
    assert delta is not None
    fresh.apply(delta, keys.ring)
    assert list(fresh.iter_entries()) == list(source.iter_entries())
    source.close()
    fresh.close()


def test_snapshot_replaces_a_stale_copy(tmp_path: Path, keys: Keys) -> None:
    source, _ = make_source(tmp_path / "a", keys)
    stale = RevocationStore(tmp_path / "b", map_size=1 << 28)
    first = source.retained_delta("440100", 1)
    assert first is not None
    stale.apply(first, keys.ring)
    entries, versions = source.feed_entries("440100")
    issued = source.feeds["440100"].issued_at  # a snapshot is signed after its head
    snap = sign_snapshot(keys.gz, source.head("440100"), entries, versions, issued)
    stale.apply(snap.to_bytes(), keys.ring)
    assert list(stale.iter_entries()) == list(source.iter_entries())
    assert len(stale.index) == source.entry_count()
    assert stale.retained_versions("440100") == []
    with pytest.raises(ReplayedDelta):
        stale.apply(first, keys.ring)
    source.close()
    stale.close()


def test_snapshot_rejections(tmp_path: Path, keys: Keys) -> None:
    source, _ = make_source(tmp_path / "a", keys)
    entries, versions = source.feed_entries("440100")
    head = source.head("440100")
    snap = sign_snapshot(keys.gz, head, entries, versions, T).to_bytes()
    target = RevocationStore(tmp_path / "b", map_size=1 << 28)
    with pytest.raises(MalformedDelta):
        target.apply(snap[: len(snap) // 2], keys.ring)
    tampered = bytearray(snap)
    tampered[len(snap) // 2] ^= 0x10
    with pytest.raises((BadSignature, MalformedDelta)):
        target.apply(bytes(tampered), keys.ring)
    assert target.heads() == {} and target.entry_count() == 0
    target.apply(snap, keys.ring)
    with pytest.raises(ReplayedDelta):  # the same version again
        target.apply(snap, keys.ring)
    forged = sign_snapshot(
        keys.gz, type(head)(head.publisher, head.version, b"\x07" * 32), entries, versions, T
    )
    with pytest.raises(ForkedFeed):
        target.apply(forged.to_bytes(), keys.ring)
    source.close()
    target.close()
