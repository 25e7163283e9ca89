"""One test per rejection cause: which rejection, and that the store did not change."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from blacklist.authority import Revocation, build_delta, cards_from_ids, entries_from_revocations
from blacklist.delta import Delta, FeedHead, Snapshot, sign_delta, sign_snapshot
from blacklist.deltadecode import DecodeLimits
from blacklist.entry import Reason
from blacklist.entryblock import EntryColumns
from blacklist.psam import psam_columns
from blacklist.rejections import (
    ALL_CAUSES,
    Backdated,
    BadSignature,
    BadTrustRecord,
    DeltaRejected,
    DuplicateCard,
    DuplicateDelta,
    ForkedFeed,
    FromTheFuture,
    KeyNotAllowed,
    MalformedDelta,
    ReplayedDelta,
    UnknownKey,
    VersionCeiling,
    VersionGap,
)
from blacklist.signing import SigningKey
from blacklist.store import RevocationStore
from blacklist.sync.accept import (
    MAX_FEED_VERSION,
    AcceptPolicy,
    FeedPosition,
    accept_current_snapshot,
    accept_delta,
    accept_snapshot,
    parse_signed,
)
from tests.conftest import Keys, card

NOW = 1_750_000_000


@pytest.fixture(scope="module")
def keys(keys_each_suite: Keys) -> Keys:
    """Every rule here under both signing suites (conftest.SUITE_NAMES)."""
    return keys_each_suite


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


def rejected(store: RevocationStore, keys: Keys, data: bytes, kind: type[DeltaRejected]) -> str:
    """Refused as ``kind``, the store unchanged; returns the refusal's message."""
    before = state(store)
    with pytest.raises(kind) as info:
        store.apply(data, keys.ring)
    assert type(info.value) is kind, f"expected {kind.__name__}, got {info.value!r}"
    assert info.value.cause in ALL_CAUSES
    assert state(store) == before
    return str(info.value)


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
    stranger = SigningKey.generate("440100", ["4401"], keys.suite)
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


# --- rules the mutation run (make mutate) showed untested ----------------------------------


def test_key_not_allowed_for_a_reinstated_card(seeded: RevocationStore, keys: Keys) -> None:
    """Reinstatements are in the key's scope too: Guangzhou's key cannot lift a Beijing
    card's revocation (the removes block is region-checked like the adds)."""
    delta = sign_delta(
        keys.gz,
        seeded.head("440100"),
        entries_from_revocations([]),
        cards_from_ids([card("110100")]),
        NOW,
    )
    assert "region 110100" in rejected(seeded, keys, delta.to_bytes(), KeyNotAllowed)


def test_key_not_allowed_for_one_card_among_its_own(seeded: RevocationStore, keys: Keys) -> None:
    """One out-of-scope card after an in-scope one is enough (every distinct region of the
    sorted block is checked, not only where equal neighbours sit)."""
    adds = entries_from_revocations(revs(card("440100"), card("440300")))
    delta = sign_delta(keys.gz, seeded.head("440100"), adds, cards_from_ids([]), NOW)
    assert "region 440300" in rejected(seeded, keys, delta.to_bytes(), KeyNotAllowed)


def test_key_not_allowed_for_a_psam_it_only_lifts(seeded: RevocationStore, keys: Keys) -> None:
    """A delta whose only PSAM change lifts another region's denial is still scope-checked
    (the PSAM check runs when either block is non-empty, over both)."""
    delta = sign_delta(
        keys.gz,
        seeded.head("440100"),
        entries_from_revocations([]),
        cards_from_ids([]),
        NOW,
        psam_removes=psam_columns(["1101000000000000000042"]),
    )
    assert "PSAMs: region 110100" in rejected(seeded, keys, delta.to_bytes(), KeyNotAllowed)


def test_the_first_unknown_reason_is_named_past_valid_ones(
    seeded: RevocationStore, keys: Keys
) -> None:
    """The message names the bad code, not a valid neighbour (1 and the highest are
    valid)."""
    for valid in (1, int(max(Reason))):
        adds = entries_from_revocations(revs(card(serial=1), card(serial=2)))
        bad = EntryColumns(adds.cards, np.array([valid, 99], np.uint8), adds.time)
        delta = sign_delta(keys.gz, seeded.head("440100"), bad, cards_from_ids([]), NOW)
        text = rejected(seeded, keys, delta.to_bytes(), MalformedDelta)
        assert text.endswith("unknown reason code 99"), text


def test_at_genesis_no_version_is_held() -> None:
    """A feed with no deltas holds no digest, not even for version 0: anything at version 0
    is an older copy (not counted as tampering), never a fork."""
    position = FeedPosition(FeedHead.genesis("440100"))
    assert position.held_digest(0) is None
    assert position.held_digest(1) is None


def test_parse_signed_decodes_and_names_malformed_bytes(keys: Keys) -> None:
    delta = build_delta(keys.gz, FeedHead.genesis("440100"), revs(card()))
    assert parse_signed(delta.to_bytes()) == delta
    with pytest.raises(MalformedDelta) as info:
        parse_signed(delta.to_bytes()[:-3])
    assert str(info.value).startswith("signed container truncated: signature needs 64 bytes")
    with pytest.raises(
        MalformedDelta, match="card count = 1 exceeds the limit 0"
    ):  # the caller's limits apply
        parse_signed(delta.to_bytes(), DecodeLimits(max_delta_entries=0))


def _chain(keys: Keys) -> tuple[list[Delta], FeedPosition]:
    """Guangzhou's v1..v3, and a position at v3 that retains v1 and v2."""
    deltas: list[Delta] = []
    head = FeedHead.genesis("440100")
    for _ in range(3):
        deltas.append(build_delta(keys.gz, head, revs(card()), issued_at=NOW))
        head = FeedHead("440100", deltas[-1].version, deltas[-1].digest)
    held = {d.version: d.digest for d in deltas}
    return deltas, FeedPosition(head, NOW, held.get)


def _snapshot(keys: Keys, head: FeedHead, *, versions: int = 1, **kw: Any) -> Snapshot:
    entries = entries_from_revocations(revs(card()))
    return sign_snapshot(keys.gz, head, entries, np.array([versions], np.uint64), NOW, **kw)


def _psams(*ids: str, reason: int = 1) -> EntryColumns:
    cards = psam_columns(list(ids))
    n = len(cards)
    return EntryColumns(cards, np.full(n, reason, np.uint8), np.full(n, NOW, np.int64))


CASES = [
    "replayed", "old_fork", "gap", "link", "snap_older", "snap_fork", "snap_same",
    "current_older", "current_newer", "current_fork", "region", "reason", "duplicate",
    "psam_region", "psam_reason", "psam_duplicate", "trust", "snap_region", "snap_version",
    "snap_reason", "snap_duplicate", "snap_psam_version", "snap_psam_region", "snap_trust",
    "unknown", "suite", "signature", "ceiling", "backdated", "future",
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_every_refusal_names_the_item_and_the_failing_value(keys: Keys, case: str) -> None:
    """STYLE: a refusal names the item (publisher and version) and the value that fails the
    rule; each case is one rule, and the position it was offered against is unchanged."""
    (d1, d2, d3), position = _chain(keys)
    head = position.head
    bare = FeedPosition(head, NOW)  # the same head, no older digest retained
    c = card()
    garbage = (b"\x01garbage",)
    other = FeedHead("440100", 3, bytes(32))
    nxt = sign_delta  # the next delta after ``head`` with the given blocks

    def delta(**kw: Any) -> Callable[[], object]:
        adds = kw.pop("adds", entries_from_revocations(revs(card())))
        removes = kw.pop("removes", cards_from_ids([]))
        made = nxt(keys.gz, head, adds, removes, NOW, **kw)
        return lambda: accept_delta(position, made, keys.ring)

    def snap(at: FeedHead = head, **kw: Any) -> Callable[[], object]:
        made = _snapshot(keys, at, **kw)
        return lambda: accept_snapshot(position, made, keys.ring)

    def current(s: Snapshot) -> Callable[[], object]:
        return lambda: accept_current_snapshot(head, s, keys.ring)

    d4 = build_delta(keys.gz, head, revs(card()), issued_at=NOW)
    stranger = build_delta(
        SigningKey.generate("440100", ["4401"], keys.suite), head, revs(card()), issued_at=NOW
    )
    forged = dataclasses.replace(d4, signature=bytes(64))
    early = build_delta(keys.gz, head, revs(card()), issued_at=NOW - 1)
    late = build_delta(keys.gz, head, revs(card()), issued_at=NOW + 301)
    other_id = 3 - keys.gz.suite_id  # the other of suites 1 and 2
    other_suite = dataclasses.replace(d4, header=dataclasses.replace(d4.header, suite_id=other_id))
    v2_fork = build_delta(keys.gz, FeedHead("440100", 1, d1.digest), revs(card()), issued_at=NOW)
    dup = entries_from_revocations(revs(c, c))
    one = entries_from_revocations(revs(c))
    bad_reason = EntryColumns(one.cards, np.array([99], np.uint8), one.time)
    cases: dict[str, tuple[Callable[[], object], type[DeltaRejected], str]] = {
        "replayed": (
            lambda: accept_delta(bare, d2, keys.ring),
            ReplayedDelta,
            "delta 440100 v2: at or below the head version 3",
        ),
        "old_fork": (
            lambda: accept_delta(position, v2_fork, keys.ring),
            ForkedFeed,
            "delta 440100 v2: a different delta is held for version 2",
        ),
        "gap": (
            lambda: accept_delta(
                position,
                build_delta(keys.gz, FeedHead("440100", 4, d3.digest), revs(card()), issued_at=NOW),
                keys.ring,
            ),
            VersionGap,
            "delta 440100 v5: expected version 4",
        ),
        "link": (
            lambda: accept_delta(
                position, build_delta(keys.gz, other, revs(card()), issued_at=NOW), keys.ring
            ),
            ForkedFeed,
            f"delta 440100 v4: previous digest {bytes(32).hex()[:16]} does not match the "
            f"head's {d3.digest.hex()[:16]}",
        ),
        "snap_older": (
            snap(FeedHead("440100", 2, d2.digest)),
            ReplayedDelta,
            "snapshot 440100 v2: older than the head version 3",
        ),
        "snap_fork": (
            snap(other),
            ForkedFeed,
            "snapshot 440100 v3: same version as the head, different digest",
        ),
        "snap_same": (
            snap(head),
            DuplicateDelta,
            "snapshot 440100 v3: this node is already at that version",
        ),
        "current_older": (
            current(_snapshot(keys, FeedHead("440100", 2, d2.digest))),
            ReplayedDelta,
            "snapshot 440100 v2: older than the head version 3",
        ),
        "current_newer": (
            current(_snapshot(keys, FeedHead("440100", 4, bytes(32)))),
            VersionGap,
            "snapshot 440100 v4: newer than the head version 3; apply it",
        ),
        "current_fork": (
            current(_snapshot(keys, other)),
            ForkedFeed,
            "snapshot 440100 v3: same version as the head, different digest",
        ),
        "region": (
            delta(adds=entries_from_revocations(revs(card("110100")))),
            KeyNotAllowed,
            "delta 440100 v4: region 110100 is outside the key's prefixes",
        ),
        "reason": (
            delta(adds=bad_reason),
            MalformedDelta,
            "delta 440100 v4: unknown reason code 99",
        ),
        "duplicate": (
            delta(adds=dup),
            DuplicateCard,
            f"delta 440100 v4: card {c} appears more than once",
        ),
        "psam_region": (
            delta(psam_adds=_psams("1101000000000000000042")),
            KeyNotAllowed,
            "delta 440100 v4 PSAMs: region 110100",
        ),
        "psam_reason": (
            delta(psam_adds=_psams("4401000000000000000042", reason=99)),
            MalformedDelta,
            "delta 440100 v4 PSAMs: unknown reason code 99",
        ),
        "psam_duplicate": (
            delta(
                psam_adds=_psams("4401000000000000000042"),
                psam_removes=psam_columns(["4401000000000000000042"]),
            ),
            DuplicateCard,
            "delta 440100 v4 PSAMs: card",
        ),
        "trust": (delta(trust=garbage), BadTrustRecord, "delta 440100 v4: trust record 0: "),
        "snap_region": (
            lambda: accept_snapshot(
                position,
                sign_snapshot(
                    keys.gz,
                    FeedHead("440100", 4, bytes(32)),
                    entries_from_revocations(revs(card("110100"))),
                    np.array([1], np.uint64),
                    NOW,
                ),
                keys.ring,
            ),
            KeyNotAllowed,
            "snapshot 440100 v4: region 110100",
        ),
        "snap_version": (
            snap(FeedHead("440100", 4, bytes(32)), versions=5),
            MalformedDelta,
            "snapshot 440100 v4: an entry claims a version after the snapshot's",
        ),
        "snap_reason": (
            lambda: accept_snapshot(
                position,
                sign_snapshot(
                    keys.gz,
                    FeedHead("440100", 4, bytes(32)),
                    bad_reason,
                    np.array([1], np.uint64),
                    NOW,
                ),
                keys.ring,
            ),
            MalformedDelta,
            "snapshot 440100 v4: unknown reason code 99",
        ),
        "snap_duplicate": (
            lambda: accept_snapshot(
                position,
                sign_snapshot(
                    keys.gz, FeedHead("440100", 4, bytes(32)), dup, np.ones(2, np.uint64), NOW
                ),
                keys.ring,
            ),
            DuplicateCard,
            f"snapshot 440100 v4: card {c} appears more than once",
        ),
        "snap_psam_version": (
            snap(
                FeedHead("440100", 4, bytes(32)),
                psams=_psams("4401000000000000000042"),
                psam_versions=np.array([5], np.uint64),
            ),
            MalformedDelta,
            "snapshot 440100 v4: a PSAM entry claims a version after the snapshot's",
        ),
        "snap_psam_region": (
            snap(
                FeedHead("440100", 4, bytes(32)),
                psams=_psams("1101000000000000000042"),
                psam_versions=np.array([1], np.uint64),
            ),
            KeyNotAllowed,
            "snapshot 440100 v4 PSAMs: region 110100",
        ),
        "unknown": (
            lambda: accept_delta(position, stranger, keys.ring),
            UnknownKey,
            f"440100 v4: key id {stranger.header.key_id.hex()} is not trusted",
        ),
        "suite": (
            lambda: accept_delta(position, other_suite, keys.ring),
            BadSignature,
            f"440100 v4: suite {other_id} does not match key {keys.gz.key_id.hex()} "
            f"(suite {keys.gz.suite_id})",
        ),
        "signature": (
            lambda: accept_delta(position, forged, keys.ring),
            BadSignature,
            f"440100 v4: signature does not verify with key {keys.gz.key_id.hex()}",
        ),
        "ceiling": (
            lambda: accept_delta(position, d4, keys.ring, AcceptPolicy(max_version=3)),
            VersionCeiling,
            "delta 440100 v4: version 4 is above the ceiling 3",
        ),
        "backdated": (
            lambda: accept_delta(position, early, keys.ring),
            Backdated,
            f"delta 440100 v4: issued at {NOW - 1}, before the head's {NOW} (v3)",
        ),
        "future": (
            lambda: accept_delta(position, late, keys.ring, AcceptPolicy(now=NOW)),
            FromTheFuture,
            f"delta 440100 v4: issued at {NOW + 301}, more than 300 s after",
        ),
        "snap_trust": (
            snap(FeedHead("440100", 4, bytes(32)), trust=garbage),
            BadTrustRecord,
            "snapshot 440100 v4: trust record 0: ",
        ),
    }
    call, kind, expected = cases[case]
    before = (position.head, position.issued_at, position.held_digest(2))
    with pytest.raises(DeltaRejected) as info:
        call()
    assert type(info.value) is kind, f"expected {kind.__name__}, got {info.value!r}"
    text = str(info.value)
    assert text == expected if case == "link" else text.startswith(expected), text
    assert (position.head, position.issued_at, position.held_digest(2)) == before


@pytest.mark.parametrize(
    ("setting", "value", "ok"),
    [
        ("max_skew", -1, False),
        ("max_skew", 0, True),
        ("max_version", 0, False),
        ("max_version", 1, True),
        ("max_version", MAX_FEED_VERSION, True),
        ("max_version", MAX_FEED_VERSION + 1, False),
    ],
)
def test_the_acceptance_policy_limits_at_and_beyond(setting: str, value: int, ok: bool) -> None:
    """A node's own settings are bounded too: no negative skew, a ceiling in
    1..MAX_FEED_VERSION; the refusal names the setting."""
    if ok:
        assert getattr(AcceptPolicy(**{setting: value}), setting) == value
        return
    with pytest.raises(ValueError, match=f"^{setting} must be "):
        AcceptPolicy(**{setting: value})


def test_a_head_of_another_feed_is_a_caller_error(keys: Keys) -> None:
    """Acceptance is asked about the item's own feed; another feed's head is a bug in the
    caller (ValueError naming both), never a refusal counted against the signer."""
    delta = build_delta(keys.gz, FeedHead.genesis("440100"), revs(card()))
    with pytest.raises(ValueError) as info:
        accept_delta(FeedHead.genesis("440300"), delta, keys.ring)
    assert str(info.value) == "head is for 440300, delta 440100 v1"
