"""Acceptance bounded by what the node knows (issue #11 items 1, 6, 10, 11): each test is an
attack or an accident that got through before, and asserts the specific refusal, that the
store did not change, and that it still accepts the honest next item."""

from __future__ import annotations

import dataclasses
import hashlib
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.hostile import decode_bomb
from blacklist.authority import Revocation, build_delta, entries_from_revocations
from blacklist.binary import Writer
from blacklist.cardid import text_to_key
from blacklist.certs import RevocationReason, issue_certificate, issue_revocation
from blacklist.clock import ManualClock
from blacklist.delta import MAGIC, FeedHead, sign_delta, sign_snapshot
from blacklist.deltadecode import DecodeLimits, open_envelope
from blacklist.entry import Reason
from blacklist.entryblock import CardColumns, EntryColumns
from blacklist.rejections import (
    NORMAL_CAUSES,
    TAMPERING_CAUSES,
    Backdated,
    BadSignature,
    DeltaRejected,
    DuplicateDelta,
    ForkedFeed,
    FromTheFuture,
    KeyNotAllowed,
    KeyRevokedRejection,
    MalformedDelta,
    ReplayedDelta,
    UnknownKey,
    VersionCeiling,
    VersionGap,
)
from blacklist.signing import Keyring, SigningKey
from blacklist.store import RevocationStore
from blacklist.sync.accept import (
    MAX_FEED_VERSION,
    AcceptPolicy,
    FeedPosition,
    accept_snapshot,
)
from blacklist.sync.ingest import Outcome, outcome_of
from blacklist.trust import CertifiedKeys, TrustAnchor
from tests.conftest import Keys, card

NOW = 1_750_000_000
DAY = 86_400
SKEW = 300


def revs(*ids: str) -> list[Revocation]:
    return [Revocation(i, Reason.LOSS, NOW) for i in ids]


def state(store: RevocationStore) -> Any:
    return (
        store.heads(),
        {p: (f.issued_at, f.entries) for p, f in store.feeds.items()},
        list(store.iter_entries()),
        store.generation,
        len(store.index),
        {p: store.retained_versions(p) for p in store.feeds},
    )


def refused(store: RevocationStore, keys: Any, data: bytes, kind: type[DeltaRejected]) -> str:
    before = state(store)
    with pytest.raises(DeltaRejected) as info:
        store.apply(data, keys)
    assert type(info.value) is kind, f"expected {kind.__name__}, got {info.value!r}"
    assert state(store) == before
    return str(info.value)


# Every bound here under both signing suites (conftest.SUITE_NAMES): ``keys`` and every key
# this module makes are of the suite of the run.
_SUITE = {"name": "ed25519"}


@pytest.fixture(autouse=True)
def _each_suite(signing_suite: str) -> None:
    _SUITE["name"] = signing_suite


@pytest.fixture(scope="module")
def keys(keys_each_suite: Keys) -> Keys:
    return keys_each_suite


def _key(publisher: str, prefixes: list[str]) -> SigningKey:
    return SigningKey.generate(publisher, prefixes, _SUITE["name"])


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def store(tmp_path: Path, clock: ManualClock) -> Any:
    s = RevocationStore(
        tmp_path / "store", clock=clock, map_size=1 << 30, acceptance=AcceptPolicy(max_skew=SKEW)
    )
    yield s
    s.close()


# ---------------------------------------------------------------------------- time (item 1)
def test_issued_at_never_goes_back_from_the_head(store: RevocationStore, keys: Keys) -> None:
    d1 = build_delta(keys.gz, store.head("440100"), revs(card()), issued_at=NOW - 10)
    store.apply(d1.to_bytes(), keys.ring)
    assert store.feeds["440100"].issued_at == NOW - 10
    back = build_delta(keys.gz, store.head("440100"), revs(card()), issued_at=NOW - 11)
    assert "before the head's" in refused(store, keys.ring, back.to_bytes(), Backdated)
    same = build_delta(keys.gz, store.head("440100"), revs(card()), issued_at=NOW - 10)
    assert store.apply(same.to_bytes(), keys.ring).version == 2  # the same second is fine


@pytest.mark.parametrize(("ahead", "ok"), [(SKEW - 1, True), (SKEW, True), (SKEW + 1, False)])
def test_issued_at_at_most_the_skew_ahead_of_the_clock(
    store: RevocationStore, keys: Keys, ahead: int, ok: bool
) -> None:
    delta = build_delta(keys.gz, store.head("440100"), revs(card()), issued_at=NOW + ahead)
    if ok:
        assert store.apply(delta.to_bytes(), keys.ring).version == 1
    else:
        assert "300 s after" in refused(store, keys.ring, delta.to_bytes(), FromTheFuture)


def test_a_snapshot_cannot_be_dated_before_the_head(store: RevocationStore, keys: Keys) -> None:
    d1 = build_delta(keys.gz, store.head("440100"), revs(card()), issued_at=NOW)
    store.apply(d1.to_bytes(), keys.ring)
    head = FeedHead("440100", 9, hashlib.sha256(b"v9").digest())
    snap = sign_snapshot(
        keys.gz, head, EntryColumns.empty(), np.zeros(0, np.uint64), issued_at=NOW - 1
    )
    refused(store, keys.ring, snap.to_bytes(), Backdated)


# ---------------------------------------------------------------------------- versions (item 1)
@pytest.mark.parametrize(
    ("version", "ok"),
    [(MAX_FEED_VERSION - 1, True), (MAX_FEED_VERSION, True), (MAX_FEED_VERSION + 1, False)],
)
def test_a_version_ceiling_keeps_every_feed_continuable(
    store: RevocationStore, keys: Keys, version: int, ok: bool
) -> None:
    head = FeedHead("440100", version, hashlib.sha256(b"far").digest())
    snap = sign_snapshot(keys.gz, head, EntryColumns.empty(), np.zeros(0, np.uint64), NOW)
    if not ok:
        refused(store, keys.ring, snap.to_bytes(), VersionCeiling)
        return
    store.apply(snap.to_bytes(), keys.ring)
    after = build_delta(keys.gz, store.head("440100"), revs(card()), issued_at=NOW)
    if version < MAX_FEED_VERSION:
        assert store.apply(after.to_bytes(), keys.ring).version == version + 1
    else:  # a clear refusal, never an overflow: no honest feed gets near 2**48 versions
        refused(store, keys.ring, after.to_bytes(), VersionCeiling)


def test_the_largest_u64_version_is_refused_and_the_authority_publishes_on(
    store: RevocationStore, keys: Keys
) -> None:
    """Issue #11 item 1: a snapshot at 2**64 - 1 once left the authority unable to sign."""
    real = build_delta(keys.gz, store.head("440100"), revs(card()), issued_at=NOW)
    store.apply(real.to_bytes(), keys.ring)
    top = FeedHead("440100", 2**64 - 1, bytes(32))
    snap = sign_snapshot(keys.gz, top, EntryColumns.empty(), np.zeros(0, np.uint64), NOW)
    refused(store, keys.ring, snap.to_bytes(), VersionCeiling)
    nxt = build_delta(keys.gz, store.head("440100"), revs(card()), issued_at=NOW)
    assert store.apply(nxt.to_bytes(), keys.ring).version == 2


class Certified:
    """Root → Guangdong (44) → Guangzhou (4401) and its rotated key, as CertifiedKeys."""

    def __init__(self) -> None:
        self.root = _key("000000", [])
        self.gd = _key("440000", ["44"])
        self.gz = _key("440100", ["4401"])
        self.gz2 = _key("440100", ["4401"])
        start, end = NOW - 365 * DAY, NOW + 365 * DAY
        self.gd_cert = issue_certificate(self.root, self.gd, ["44"], start, end, serial=1)
        self.gz_cert = issue_certificate(self.gd, self.gz, ["4401"], start, end, serial=10)
        self.gz2_cert = issue_certificate(self.gd, self.gz2, ["4401"], start, end, serial=11)
        self.anchor = TrustAnchor.of(self.root)

    def keys(self, *revocations: Any) -> CertifiedKeys:
        chains = [(self.gd_cert, self.gz_cert), (self.gd_cert, self.gz2_cert)]
        return CertifiedKeys(self.anchor, chains, revocations, at=NOW)


def test_a_thief_of_a_revoked_key_cannot_rewrite_the_feed_with_a_snapshot(
    store: RevocationStore, clock: ManualClock
) -> None:
    """The attack of issue #11 item 1: the old key is revoked as of T, naming version 1 as
    the last it stands behind; a thief signs an empty snapshot dated T-1 at a huge version."""
    c = Certified()
    keys = c.keys()
    d1 = build_delta(c.gz, store.head("440100"), revs(card(), card()), issued_at=NOW)
    store.apply(d1.to_bytes(), keys)
    t_revoke = NOW + 100
    revoked = issue_revocation(
        c.gd, c.gz.key_id, t_revoke, RevocationReason.COMPROMISED, 5, last_version=1
    )
    keys = c.keys(revoked)
    clock.now = t_revoke + 10
    d2 = build_delta(c.gz2, store.head("440100"), revs(card()), issued_at=t_revoke + 5)
    store.apply(d2.to_bytes(), keys)
    for version in (3, 1000, MAX_FEED_VERSION):
        head = FeedHead("440100", version, hashlib.sha256(b"thief").digest())
        snap = sign_snapshot(
            c.gz, head, EntryColumns.empty(), np.zeros(0, np.uint64), issued_at=t_revoke - 1
        )
        message = refused(store, keys, snap.to_bytes(), KeyRevokedRejection)
        assert "up to 1 only" in message
    # The same dated T-1 delta for version 3: refused by the key's version bound.
    d3 = build_delta(c.gz, store.head("440100"), revs(card()), issued_at=t_revoke + 5)
    d3_backdated = build_delta(c.gz, store.head("440100"), revs(card()), issued_at=t_revoke - 1)
    refused(store, keys, d3.to_bytes(), KeyRevokedRejection)
    refused(store, keys, d3_backdated.to_bytes(), KeyRevokedRejection)
    assert len(list(store.iter_entries())) == 3
    honest = build_delta(c.gz2, store.head("440100"), revs(card()), issued_at=t_revoke + 6)
    assert store.apply(honest.to_bytes(), keys).version == 3


def test_a_version_bound_also_holds_for_a_snapshot_without_a_head(
    tmp_path: Path, clock: ManualClock
) -> None:
    """A fresh node (no head, so no issued_at floor) still refuses the thief's snapshot."""
    c = Certified()
    revoked = issue_revocation(
        c.gd, c.gz.key_id, NOW - 50, RevocationReason.COMPROMISED, 5, last_version=7
    )
    keys = c.keys(revoked)
    fresh = RevocationStore(tmp_path / "fresh", clock=clock, map_size=1 << 28)
    try:
        for version, ok in ((6, True), (7, True), (8, False)):
            head = FeedHead("440100", version, hashlib.sha256(b"x").digest())
            snap = sign_snapshot(
                c.gz, head, EntryColumns.empty(), np.zeros(0, np.uint64), issued_at=NOW - 60
            )
            position = FeedPosition(FeedHead.genesis("440100"))
            if ok:
                assert accept_snapshot(position, snap, keys, AcceptPolicy(now=NOW)) == head
            else:
                with pytest.raises(KeyRevokedRejection):
                    accept_snapshot(position, snap, keys, AcceptPolicy(now=NOW))
                refused(fresh, keys, snap.to_bytes(), KeyRevokedRejection)
    finally:
        fresh.close()


# ---------------------------------------------------------------------------- who may sign
def test_a_key_signs_only_its_own_publishers_feed(store: RevocationStore) -> None:
    """Without the region check firing first: the key is certified for 4401 too, but it is
    Shenzhen's key, and the delta is Guangzhou's feed."""
    sz = _key("440300", ["4401", "4403"])
    ring = Keyring([sz.trusted()])
    header_gz = dataclasses.replace(sz, publisher="440100")
    delta = build_delta(header_gz, store.head("440100"), revs(card("440100")), issued_at=NOW)
    assert "signs for publisher 440300" in refused(store, ring, delta.to_bytes(), KeyNotAllowed)


def test_a_snapshot_out_of_its_keys_scope_and_a_rollback_are_refused(
    store: RevocationStore, keys: Keys
) -> None:
    for i in range(3):
        d = build_delta(keys.gz, store.head("440100"), revs(card()), issued_at=NOW + i)
        store.apply(d.to_bytes(), keys.ring)
    head = store.head("440100")
    outside = entries_from_revocations(revs(card("110100")))
    ahead = FeedHead("440100", head.version + 1, hashlib.sha256(b"n").digest())
    snap = sign_snapshot(keys.gz, ahead, outside, np.ones(1, np.uint64), NOW + 5)
    assert "outside the key's prefixes" in refused(store, keys.ring, snap.to_bytes(), KeyNotAllowed)
    old_head = FeedHead("440100", 1, hashlib.sha256(b"old").digest())
    rollback = sign_snapshot(keys.gz, old_head, EntryColumns.empty(), np.zeros(0, np.uint64), NOW)
    refused(store, keys.ring, rollback.to_bytes(), ReplayedDelta)


# ---------------------------------------------------------------------------- decode bomb (6)
def bomb(key_id: bytes, cards: int) -> bytes:
    return decode_bomb(key_id, cards, issued_at=NOW)


def test_an_unsigned_bomb_is_refused_before_its_body_is_decoded(
    store: RevocationStore, keys: Keys
) -> None:
    data = bomb(keys.gz.key_id, 8_000_000)  # 1 MB declaring 8M cards
    tracemalloc.start()
    try:
        refused(store, keys.ring, data, BadSignature)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Decoding 8M cards would allocate hundreds of MB of columns; opening the envelope and
    # hashing the body costs about the message itself (copies of 1 MB).
    assert peak < 8 * len(data), peak
    refused(store, keys.ring, bomb(b"\x01" * 8, 8_000_000), UnknownKey)


@pytest.mark.parametrize(("n", "ok"), [(99, True), (100, True), (101, False)])
def test_a_signed_delta_declaring_more_than_the_limit_is_refused(
    tmp_path: Path, clock: ManualClock, keys: Keys, n: int, ok: bool
) -> None:
    limits = DecodeLimits(max_delta_entries=100)
    s = RevocationStore(
        tmp_path / "s", clock=clock, map_size=1 << 28, acceptance=AcceptPolicy(limits=limits)
    )
    try:
        delta = build_delta(
            keys.gz, s.head("440100"), revs(*(card() for _ in range(n))), issued_at=NOW
        )
        if ok:
            assert s.apply(delta.to_bytes(), keys.ring).added == n
        else:
            message = refused(s, keys.ring, delta.to_bytes(), MalformedDelta)
            assert "card count = 101 exceeds the limit 100" in message
    finally:
        s.close()


# ---------------------------------------------------------------------------- canonical (11)
def test_a_padded_length_prefix_is_not_a_second_encoding(
    store: RevocationStore, keys: Keys
) -> None:
    delta = build_delta(keys.gz, store.head("440100"), revs(card()), issued_at=NOW)
    data = delta.to_bytes()
    envelope = open_envelope(data)
    body_len = Writer()
    body_len.uvarint(len(envelope.body))
    honest_prefix = body_len.getvalue()
    padded_prefix = bytes([*(b | 0x80 for b in honest_prefix), 0x00])
    padded = MAGIC + padded_prefix + data[len(MAGIC) + len(honest_prefix) :]
    assert "padded" in refused(store, keys.ring, padded, MalformedDelta)
    assert store.apply(data, keys.ring).version == 1


# ---------------------------------------------------------------------------- normal vs tamper
def test_copies_older_copies_and_gaps_are_normal_forks_are_not(
    store: RevocationStore, keys: Keys
) -> None:
    deltas = []
    for i in range(3):
        d = build_delta(keys.gz, store.head("440100"), revs(card()), issued_at=NOW + i)
        store.apply(d.to_bytes(), keys.ring)
        deltas.append(d)
    copy = refused(store, keys.ring, deltas[1].to_bytes(), DuplicateDelta)
    assert "already held" in copy
    second_v2 = build_delta(
        keys.gz, FeedHead("440100", 1, deltas[0].digest), revs(card()), issued_at=NOW + 1
    )
    refused(store, keys.ring, second_v2.to_bytes(), ForkedFeed)
    gap = build_delta(
        keys.gz,
        FeedHead("440100", 4, hashlib.sha256(b"v4").digest()),
        revs(card()),
        issued_at=NOW + 3,
    )
    refused(store, keys.ring, gap.to_bytes(), VersionGap)
    # A copy is recognised before any signature work: a held body with a bad signature is
    # still only a copy (nothing of it is used).
    broken = dataclasses.replace(deltas[2], signature=bytes(64))
    refused(store, keys.ring, broken.to_bytes(), DuplicateDelta)
    outcomes = {
        type(e).__name__: outcome_of(e)
        for e in (
            DuplicateDelta("x"),
            ReplayedDelta("x"),
            VersionGap("x"),
            ForkedFeed("x"),
            BadSignature("x"),
        )
    }
    assert outcomes == {
        "DuplicateDelta": Outcome.DUPLICATE,
        "ReplayedDelta": Outcome.STALE,
        "VersionGap": Outcome.BEHIND,
        "ForkedFeed": Outcome.REJECTED,
        "BadSignature": Outcome.REJECTED,
    }
    assert outcome_of(None) is Outcome.APPLIED
    assert set(NORMAL_CAUSES) == {"duplicate", "replay", "version_gap"}
    assert not set(NORMAL_CAUSES) & set(TAMPERING_CAUSES)


def test_an_older_copy_no_longer_held_is_stale(
    tmp_path: Path, clock: ManualClock, keys: Keys
) -> None:
    s = RevocationStore(tmp_path / "s", clock=clock, map_size=1 << 28, retain_deltas=0)
    try:
        d1 = build_delta(keys.gz, s.head("440100"), revs(card()), issued_at=NOW)
        s.apply(d1.to_bytes(), keys.ring)
        d2 = build_delta(keys.gz, s.head("440100"), revs(card()), issued_at=NOW)
        s.apply(d2.to_bytes(), keys.ring)
        refused(s, keys.ring, d1.to_bytes(), ReplayedDelta)  # nothing held to compare with
        refused(s, keys.ring, d2.to_bytes(), DuplicateDelta)  # the head's digest is known
    finally:
        s.close()


# ---------------------------------------------------------------------------- one transaction
PSAM = "4401000123456789ABCDEF"


def held_everything(store: RevocationStore) -> Any:
    return (state(store), len(store.psams), len(store.trust), store.audit.count())


def test_entries_psams_trust_and_audit_commit_together_or_not_at_all(
    tmp_path: Path, keys: Keys, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic (not a randomly timed kill -9): the last write before the commit fails;
    nothing of the delta stays, in memory or on disk; without the failure all of it lands."""
    store = RevocationStore(tmp_path / "store", clock=clock, map_size=1 << 30)
    from blacklist.audit import AuditAction, AuditChange
    from blacklist.psam import psam_columns

    city = _key("440101", ["440101"])
    cert = issue_certificate(keys.gz, city, ["440101"], NOW - DAY, NOW + DAY, serial=1)
    psam_adds = EntryColumns(
        psam_columns([PSAM]), np.array([Reason.LOSS], np.uint8), np.array([NOW], np.int64)
    )
    delta = sign_delta(
        keys.gz,
        store.head("440100"),
        entries_from_revocations(revs(card())),
        CardColumns.empty(),
        NOW,
        psam_adds=psam_adds,
        trust=[cert.to_bytes()],
    )

    def audit_in(s: RevocationStore) -> Any:
        change = AuditChange(card(), int(Reason.LOSS))
        return lambda txn: s.audit.stage(
            txn, AuditAction.REVOKE, [change], operator="op", feed_version=1, when=NOW
        )

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk full at the last write")

    before = held_everything(store)
    with monkeypatch.context() as m:
        m.setattr(store.archive, "add_delta", fail)
        with pytest.raises(OSError, match="disk full"):
            store.apply_delta(delta, keys.ring, also=audit_in(store))
    assert held_everything(store) == before
    store.close()
    reopened = RevocationStore(tmp_path / "store", clock=clock, map_size=1 << 30)
    try:
        assert held_everything(reopened) == before
        reopened.apply_delta(delta, keys.ring, also=audit_in(reopened))
        assert (len(reopened.psams), len(reopened.trust), reopened.audit.count()) == (1, 1, 1)
        assert reopened.entry_count() == 1
    finally:
        reopened.close()


def test_an_authority_whose_clock_steps_back_publishes_on(
    store: RevocationStore, keys: Keys, clock: ManualClock
) -> None:
    """Every node refuses an item dated before the head, so the authority never dates one
    so: after a small NTP step back it signs at its head's time until its clock passes it.
    A clock further behind than the skew stops it with a clear error, nothing applied."""
    from blacklist.authority import Authority

    gz = Authority(store, keys.gz, keys.ring, clock=clock)
    gz.publish(revs(card()))
    assert store.feeds["440100"].issued_at == NOW
    clock.now = NOW - 60
    gz.publish(revs(card()))
    assert (store.head("440100").version, store.feeds["440100"].issued_at) == (2, NOW)
    clock.now = NOW - SKEW - 1
    before = state(store)
    with pytest.raises(FromTheFuture):
        gz.publish(revs(card()))
    assert state(store) == before
    clock.now = NOW + 10
    gz.publish(revs(card()))
    assert (store.head("440100").version, store.feeds["440100"].issued_at) == (3, NOW + 10)


def test_a_backdated_reinstatement_by_an_expired_key_is_refused(
    store: RevocationStore, clock: ManualClock
) -> None:
    """Issue #11 item 1: a reinstatement dated before the key's expiry was accepted 31 days
    after it. A certificate is checked at the node's clock too, for anything that moves a
    feed forward; a copy of the key's old, honest work is still recognised."""
    c = Certified()
    expires = NOW + DAY
    short = issue_certificate(c.gd, c.gz, ["4401"], NOW - DAY, expires, serial=12)
    keys = CertifiedKeys(c.anchor, [(c.gd_cert, short)], [], at=NOW)
    revoked_card = card()
    d1 = build_delta(c.gz, store.head("440100"), revs(revoked_card), issued_at=NOW)
    store.apply(d1.to_bytes(), keys)
    clock.now = expires + 31 * DAY
    keys = CertifiedKeys(c.anchor, [(c.gd_cert, short)], [], at=int(clock.now))
    reinstate = build_delta(
        c.gz, store.head("440100"), reinstatements=[revoked_card], issued_at=expires - 1
    )
    message = refused(store, keys, reinstate.to_bytes(), UnknownKey)
    assert "expired" in message
    held = store.lookup(text_to_key(revoked_card))
    assert held is not None and held.reason is Reason.LOSS  # still revoked
    refused(store, keys, d1.to_bytes(), DuplicateDelta)


def test_a_revocation_naming_the_last_digest_refuses_another_history_at_that_version(
    store: RevocationStore, clock: ManualClock
) -> None:
    """``keys revoke --last-version N --last-digest D``: at version N only the delta with
    digest D (the real one) stands; a thief's other delta for N is refused, dated as it may."""
    c = Certified()
    keys = c.keys()
    d1 = build_delta(c.gz, store.head("440100"), revs(card()), issued_at=NOW)
    store.apply(d1.to_bytes(), keys)
    real_v2 = build_delta(c.gz, store.head("440100"), revs(card()), issued_at=NOW + 1)
    thief_v2 = build_delta(c.gz, store.head("440100"), revs(card()), issued_at=NOW + 1)
    revoked = issue_revocation(
        c.gd,
        c.gz.key_id,
        NOW + 100,
        RevocationReason.COMPROMISED,
        6,
        last_version=2,
        last_digest=real_v2.digest,
    )
    keys = c.keys(revoked)
    clock.now = NOW + 200
    assert "with digest" in refused(store, keys, thief_v2.to_bytes(), KeyRevokedRejection)
    assert store.apply(real_v2.to_bytes(), keys).version == 2


def test_a_snapshot_at_the_last_version_must_reproduce_the_named_head(
    tmp_path: Path, clock: ManualClock
) -> None:
    """The last-digest rule for snapshots: at version N only a snapshot of the head the
    revocation names (its link = the digest of delta N) stands, on a fresh node too."""
    c = Certified()
    real = hashlib.sha256(b"the real v2").digest()
    revoked = issue_revocation(
        c.gd, c.gz.key_id, NOW - 50, RevocationReason.COMPROMISED, 7,
        last_version=2, last_digest=real,
    )  # fmt: skip
    keys = c.keys(revoked)
    genesis = FeedPosition(FeedHead.genesis("440100"))
    policy = AcceptPolicy(now=NOW)
    empty, none = EntryColumns.empty(), np.zeros(0, np.uint64)
    other = sign_snapshot(c.gz, FeedHead("440100", 2, bytes(32)), empty, none, NOW - 60)
    with pytest.raises(KeyRevokedRejection, match="with digest"):
        accept_snapshot(genesis, other, keys, policy)
    honest = sign_snapshot(c.gz, FeedHead("440100", 2, real), empty, none, NOW - 60)
    assert accept_snapshot(genesis, honest, keys, policy) == FeedHead("440100", 2, real)


def test_revocations_naming_two_digests_for_version_one_leave_the_key_no_version(
    clock: ManualClock,
) -> None:
    """Two revocations that name different heads for the key's last version 1 contradict each
    other about it: the key then stands behind one version less (0), so no snapshot at
    version 1 signed by it stands, whichever head it names."""
    c = Certified()
    heads = [hashlib.sha256(b"one v1").digest(), hashlib.sha256(b"another v1").digest()]
    revocations = [
        issue_revocation(
            c.gd,
            c.gz.key_id,
            NOW - 50,
            RevocationReason.COMPROMISED,
            7 + n,
            last_version=1,
            last_digest=digest,
        )
        for n, digest in enumerate(heads)
    ]
    keys = c.keys(*revocations)
    genesis = FeedPosition(FeedHead.genesis("440100"))
    empty, none = EntryColumns.empty(), np.zeros(0, np.uint64)
    for digest in heads:
        snap = sign_snapshot(c.gz, FeedHead("440100", 1, digest), empty, none, NOW - 60)
        with pytest.raises(KeyRevokedRejection):
            accept_snapshot(genesis, snap, keys, AcceptPolicy(now=NOW))


def test_a_certificate_not_valid_yet_is_a_pending_claim_even_after_a_valid_chain() -> None:
    """claims(pending=True) weighs every chain that becomes valid later, wherever it stands
    among the chains (after a valid one, after one that fails), so that a claim cannot slip in beside one that is not valid *yet*."""
    c = Certified()
    later = _key("440100", ["4401"])
    pending = issue_certificate(c.gd, later, ["4401"], NOW + DAY, NOW + 365 * DAY, serial=12)
    # A pending chain that will never verify (outside Guangdong's scope) stands before it.
    stray = _key("110100", ["1101"])
    broken = issue_certificate(c.gd, stray, ["1101"], NOW + DAY, NOW + 365 * DAY, serial=13)
    chains = [(c.gd_cert, c.gz_cert), (c.gd_cert, broken), (c.gd_cert, pending)]
    keys = CertifiedKeys(c.anchor, chains, (), at=NOW)
    assert stray.key_id not in {claim.key_id for claim in keys.claims(pending=True)}
    assert later.key_id not in {claim.key_id for claim in keys.claims()}
    claims = [claim for claim in keys.claims(pending=True) if claim.key_id == later.key_id]
    assert [(claim.prefix, claim.serial, claim.not_before) for claim in claims] == [
        ("4401", 12, NOW + DAY)
    ]


def test_each_chain_of_a_key_claims_only_the_prefixes_its_own_certificate_grants() -> None:
    """A key certified twice for different prefixes makes one claim per prefix, each with the
    certificate (serial, not_before) that grants it: what the directory weighs."""
    c = Certified()
    narrow = issue_certificate(c.gd, c.gz, ["440105"], NOW - DAY, NOW + DAY, serial=12)
    keys = CertifiedKeys(c.anchor, [(c.gd_cert, c.gz_cert), (c.gd_cert, narrow)], (), at=NOW)
    claims = sorted(
        (claim.prefix, claim.serial) for claim in keys.claims() if claim.key_id == c.gz.key_id
    )
    assert claims == [("4401", 10), ("440105", 12)]


def test_a_trust_record_that_does_not_decode_does_not_hide_the_records_after_it() -> None:
    """Stored records that no longer decode are skipped one by one; the certificates after
    one still certify their keys."""
    from blacklist.trust import certified_keys_from_records

    c = Certified()
    records = [b"\x00not a record", c.gd_cert.to_bytes(), c.gz_cert.to_bytes()]
    keys = certified_keys_from_records(c.anchor, [], records, [], NOW)
    assert keys[c.gz.key_id].prefixes == ("4401",)


def test_the_root_key_certified_for_a_second_publisher_is_refused_naming_the_root() -> None:
    """A certificate that puts the pinned root key under another publisher conflicts with the
    root's own (empty) chain: the key is dropped, and the error names the root key for the
    anchor's side (it has no certificate label) and the certificate for the other."""
    from blacklist.trust import ConflictingCertificates, keyring_from_chains

    c = Certified()
    root_as_sz = dataclasses.replace(c.root, publisher="440300", prefixes=("4403",))
    cert = issue_certificate(c.gd, root_as_sz, ["4403"], NOW - DAY, NOW + DAY, serial=20)
    ring, errors = keyring_from_chains([(), (c.gd_cert, cert)], c.anchor, [], NOW)
    assert c.root.key_id not in ring
    assert all(isinstance(e, ConflictingCertificates) for e in errors)
    assert [str(e).split(":")[0] for e in errors] == [
        "the pinned root key",
        "certificate 440300#20",
    ]
    assert all("['000000', '440300']" in str(e) for e in errors)


def test_a_refusal_at_the_last_version_names_both_digests_by_their_first_16_hex_digits() -> None:
    """The operator compares the two histories from the message: the digest the revocation
    names and the one offered, each clipped to 16 hex digits (64 bits), nothing else."""
    c = Certified()
    real = hashlib.sha256(b"the real v2").digest()
    revoked = issue_revocation(
        c.gd, c.gz.key_id, NOW - 50, RevocationReason.COMPROMISED, 7,
        last_version=2, last_digest=real,
    )  # fmt: skip
    offered = hashlib.sha256(b"the thief's v2").digest()
    empty, none = EntryColumns.empty(), np.zeros(0, np.uint64)
    snap = sign_snapshot(c.gz, FeedHead("440100", 2, offered), empty, none, NOW - 60)
    with pytest.raises(KeyRevokedRejection) as refused_at:
        accept_snapshot(
            FeedPosition(FeedHead.genesis("440100")), snap, c.keys(revoked), AcceptPolicy(now=NOW)
        )
    assert str(refused_at.value).endswith(
        f"stands behind version 2 only with digest {real.hex()[:16]}, not {offered.hex()[:16]}"
    )
