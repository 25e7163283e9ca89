"""One test per rejection cause: which rejection, and that the store did not change."""

from __future__ import annotations

import os
from typing import Any

import pytest

from blacklist.authority import Revocation, build_delta, cards_from_ids, entries_from_revocations
from blacklist.delta import FeedHead, sign_delta
from blacklist.entry import Reason
from blacklist.entryblock import EntryColumns
from blacklist.rejections import (
    ALL_CAUSES,
    BadSignature,
    DeltaRejected,
    DuplicateCard,
    DuplicateDelta,
    ForkedFeed,
    KeyNotAllowed,
    MalformedDelta,
    UnknownKey,
    VersionGap,
)
from blacklist.signing import SigningKey
from blacklist.store import RevocationStore
from tests.conftest import Keys, card

NOW = 1_750_000_000


def revs(*ids: str, reason: Reason = Reason.LOSS) -> list[Revocation]:
    return [Revocation(i, reason, NOW) for i in ids]


def state(store: RevocationStore) -> Any:
    return (
        store.heads(),
        list(store.iter_entries()),
        store.generation,
        len(store.index),
        {p: store.retained_versions(p) for p in store.feeds},
    )


@pytest.fixture
def seeded(store: RevocationStore, keys: Keys) -> RevocationStore:
    """A store holding two versions of Guangzhou's feed."""
    # issued_at 0, the builder's default, so that each test's next delta is not backdated.
    d1 = build_delta(keys.gz, store.head("440100"), revs(card(), card()))
    store.apply(d1.to_bytes(), keys.ring)
    d2 = build_delta(keys.gz, store.head("440100"), revs(card()))
    store.apply(d2.to_bytes(), keys.ring)
    return store


def rejected(store: RevocationStore, keys: Keys, data: bytes, kind: type[DeltaRejected]) -> None:
    before = state(store)
    with pytest.raises(kind) as info:
        store.apply(data, keys.ring)
    assert type(info.value) is kind, f"expected {kind.__name__}, got {info.value!r}"
    assert info.value.cause in ALL_CAUSES
    assert state(store) == before


def test_accepts_the_next_delta(seeded: RevocationStore, keys: Keys) -> None:
    d3 = build_delta(keys.gz, seeded.head("440100"), revs(card()), issued_at=NOW)
    result = seeded.apply(d3.to_bytes(), keys.ring)
    assert (result.version, result.added) == (3, 1)
    assert seeded.head("440100").digest == d3.digest


def test_bad_signature(seeded: RevocationStore, keys: Keys) -> None:
    data = bytearray(build_delta(keys.gz, seeded.head("440100"), revs(card())).to_bytes())
    data[-1] ^= 0x01  # last byte of the signature
    rejected(seeded, keys, bytes(data), BadSignature)


def test_tampered_body_fails_the_signature(seeded: RevocationStore, keys: Keys) -> None:
    delta = build_delta(keys.gz, seeded.head("440100"), revs(card()), issued_at=NOW)
    data = bytearray(delta.to_bytes())
    offset = data.index(NOW.to_bytes(8, "big"))  # flip a bit of issued_at inside the body
    data[offset + 7] ^= 0x01
    rejected(seeded, keys, bytes(data), BadSignature)


def test_unknown_key(seeded: RevocationStore, keys: Keys) -> None:
    stranger = SigningKey.generate("440100", ["4401"])
    data = build_delta(stranger, seeded.head("440100"), revs(card())).to_bytes()
    rejected(seeded, keys, data, UnknownKey)


def test_key_not_allowed_for_a_region(seeded: RevocationStore, keys: Keys) -> None:
    # Guangzhou's key signing a Beijing card (bypassing the authority's own scope check).
    adds = entries_from_revocations(revs(card("110100")))
    delta = sign_delta(keys.gz, seeded.head("440100"), adds, cards_from_ids([]), NOW)
    rejected(seeded, keys, delta.to_bytes(), KeyNotAllowed)


def test_key_not_allowed_for_another_publisher(seeded: RevocationStore, keys: Keys) -> None:
    # Shenzhen's key claiming to write Guangzhou's feed.
    adds = entries_from_revocations(revs(card("440100")))
    delta = sign_delta(keys.sz, seeded.head("440100"), adds, cards_from_ids([]), NOW)
    rejected(seeded, keys, delta.to_bytes(), KeyNotAllowed)


def test_version_gap(seeded: RevocationStore, keys: Keys) -> None:
    ahead = FeedHead("440100", seeded.head("440100").version + 1, os.urandom(32))
    data = build_delta(keys.gz, ahead, revs(card())).to_bytes()
    rejected(seeded, keys, data, VersionGap)


def test_replay(seeded: RevocationStore, keys: Keys) -> None:
    # A copy of a held delta is a duplicate (normal: not counted as tampering).
    again = seeded.retained_delta("440100", 2)
    assert again is not None
    rejected(seeded, keys, again, DuplicateDelta)


def test_rollback(seeded: RevocationStore, keys: Keys) -> None:
    old = seeded.retained_delta("440100", 1)
    assert old is not None
    rejected(seeded, keys, old, DuplicateDelta)


def test_fork(seeded: RevocationStore, keys: Keys) -> None:
    # A second history: version 3 built on a version 2 this node never saw.
    other_v2 = FeedHead("440100", 2, os.urandom(32))
    data = build_delta(keys.gz, other_v2, revs(card())).to_bytes()
    rejected(seeded, keys, data, ForkedFeed)


@pytest.mark.parametrize(
    "data",
    [b"", b"CRL1", b"garbage" * 10, b"CRL1\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"],
    ids=["empty", "magic-only", "garbage", "huge-length"],
)
def test_malformed_bytes(seeded: RevocationStore, keys: Keys, data: bytes) -> None:
    rejected(seeded, keys, data, MalformedDelta)


def test_truncated_delta(seeded: RevocationStore, keys: Keys) -> None:
    data = build_delta(keys.gz, seeded.head("440100"), revs(card(), card())).to_bytes()
    for cut in range(len(data)):
        rejected(seeded, keys, data[:cut], MalformedDelta)


def test_malformed_content_unknown_reason(seeded: RevocationStore, keys: Keys) -> None:
    adds = entries_from_revocations(revs(card()))
    bad = EntryColumns(adds.cards, adds.reason + 40, adds.time)
    delta = sign_delta(keys.gz, seeded.head("440100"), bad, cards_from_ids([]), NOW)
    rejected(seeded, keys, delta.to_bytes(), MalformedDelta)


def test_duplicate_card_in_adds(seeded: RevocationStore, keys: Keys) -> None:
    c = card()
    adds = entries_from_revocations(revs(c, c, card()))
    delta = sign_delta(keys.gz, seeded.head("440100"), adds, cards_from_ids([]), NOW)
    rejected(seeded, keys, delta.to_bytes(), DuplicateCard)


def test_duplicate_card_in_adds_and_removes(seeded: RevocationStore, keys: Keys) -> None:
    c = card()
    adds = entries_from_revocations(revs(c))
    delta = sign_delta(keys.gz, seeded.head("440100"), adds, cards_from_ids([c]), NOW)
    rejected(seeded, keys, delta.to_bytes(), DuplicateCard)


def test_duplicate_card_in_removes(seeded: RevocationStore, keys: Keys) -> None:
    c = next(iter(seeded.iter_entries())).card_id
    delta = sign_delta(
        keys.gz, seeded.head("440100"), entries_from_revocations([]), cards_from_ids([c, c]), NOW
    )
    rejected(seeded, keys, delta.to_bytes(), DuplicateCard)
