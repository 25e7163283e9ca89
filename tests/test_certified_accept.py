"""Certified keys in delta acceptance: the attack matrix at the delta level.

Each attack goes through a real RevocationStore and must be refused with its specific cause
and nothing applied; the legitimate paths (signing before a revocation, continuing a feed
under a newly certified key) must be accepted.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from blacklist.authority import Revocation, build_delta, entries_from_revocations
from blacklist.certs import RevocationReason, issue_certificate, issue_revocation
from blacklist.clock import ManualClock
from blacklist.delta import Delta, FeedHead, sign_snapshot
from blacklist.entry import Reason
from blacklist.rejections import (
    ALL_CAUSES,
    BadSignature,
    DeltaRejected,
    DuplicateDelta,
    KeyNotAllowed,
    KeyRevokedRejection,
    UnknownKey,
)
from blacklist.signing import Keyring, SigningKey
from blacklist.store import RevocationStore
from blacklist.sync.accept import accept_snapshot
from blacklist.trust import (
    CertifiedKeys,
    KeyRevoked,
    TrustAnchor,
    UnknownIssuer,
)
from tests.conftest import card

NOW = 1_750_000_000
DAY = 86_400
START, END = NOW - 365 * DAY, NOW + 365 * DAY
T_REVOKE = NOW + 1_000  # the old Guangzhou key is void from here on


# The suites of root, Guangdong, Beijing, Guangzhou and Guangzhou's rotated key (issue #14):
# each suite alone, and a federation half-way through moving to SM2, where an Ed25519 root
# certifies an SM2 province and Guangzhou rotates from Ed25519 to SM2.
HIERARCHIES = {
    "ed25519": ("ed25519",) * 5,
    "sm2-sm3": ("sm2-sm3",) * 5,
    "migrating": ("ed25519", "sm2-sm3", "ed25519", "ed25519", "sm2-sm3"),
}


class Ministry:
    """Root → Guangdong (44), Beijing (11) → Guangzhou (4401, old and rotated keys)."""

    def __init__(self, suites: tuple[str, ...] = HIERARCHIES["ed25519"]) -> None:
        self.suite = suites[3]  # Guangzhou's before the rotation: strangers' keys too
        root, gd, bj, gz, gz2 = suites
        self.root = SigningKey.generate("000000", [], root)
        self.anchor = TrustAnchor.of(self.root)
        self.gd = SigningKey.generate("440000", ["44"], gd)
        self.bj = SigningKey.generate("110000", ["11"], bj)
        self.gz = SigningKey.generate("440100", ["4401"], gz)
        self.gz2 = SigningKey.generate("440100", ["4401"], gz2)  # after the rotation
        self.gd_cert = issue_certificate(self.root, self.gd, ["44"], START, END, serial=1)
        self.bj_cert = issue_certificate(self.root, self.bj, ["11"], START, END, serial=2)
        self.gz_cert = issue_certificate(self.gd, self.gz, ["4401"], START, END, serial=10)
        self.gz2_cert = issue_certificate(self.gd, self.gz2, ["4401"], NOW, END, serial=11)
        self.gz_revoked = issue_revocation(
            self.gd, self.gz.key_id, T_REVOKE, RevocationReason.SUPERSEDED, serial=1
        )

    def keys(self, rotated: bool = False) -> CertifiedKeys:
        chains = [[self.gd_cert], [self.bj_cert], [self.gd_cert, self.gz_cert]]
        if rotated:
            chains.append([self.gd_cert, self.gz2_cert])
        revocations = [self.gz_revoked] if rotated else []
        return CertifiedKeys(self.anchor, chains, revocations, at=NOW)


@pytest.fixture(scope="module", params=sorted(HIERARCHIES))
def m(request: pytest.FixtureRequest) -> Ministry:
    return Ministry(HIERARCHIES[request.param])


def revs(*ids: str) -> list[Revocation]:
    return [Revocation(i, Reason.LOSS, NOW) for i in ids]


def state(store: RevocationStore) -> Any:
    return (
        store.heads(),
        list(store.iter_entries()),
        store.generation,
        len(store.index),
        {p: store.retained_versions(p) for p in store.feeds},
    )


def rejected(
    store: RevocationStore, keys: CertifiedKeys, delta: Delta, kind: type[DeltaRejected]
) -> DeltaRejected:
    before = state(store)
    with pytest.raises(DeltaRejected) as info:
        store.apply(delta.to_bytes(), keys)
    assert type(info.value) is kind, f"expected {kind.__name__}, got {info.value!r}"
    assert info.value.cause == kind.cause and kind.cause in ALL_CAUSES
    assert state(store) == before
    return info.value


def widened(key: SigningKey, *prefixes: str) -> SigningKey:
    """The same private key with a key file that claims more than its certificate grants."""
    return dataclasses.replace(key, prefixes=(*key.prefixes, *prefixes))


def test_key_revoked_is_a_listed_cause() -> None:
    assert KeyRevokedRejection.cause == "key_revoked" and "key_revoked" in ALL_CAUSES
    assert len(set(ALL_CAUSES)) == len(ALL_CAUSES)


def test_a_certified_city_feeds_its_own_cards(store: RevocationStore, m: Ministry) -> None:
    d1 = build_delta(m.gz, store.head("440100"), revs(card("440100")), issued_at=NOW)
    assert store.apply(d1.to_bytes(), m.keys()).version == 1


def test_a_city_signing_another_citys_cards(store: RevocationStore, m: Ministry) -> None:
    # Guangzhou's key is certified for 4401 only; Beijing's cards are not its to revoke.
    delta = build_delta(
        widened(m.gz, "1101"), store.head("440100"), revs(card("110100")), issued_at=NOW
    )
    err = rejected(store, m.keys(), delta, KeyNotAllowed)
    assert "110100" in str(err)


def test_a_province_signing_outside_its_prefix(store: RevocationStore, m: Ministry) -> None:
    delta = build_delta(
        widened(m.gd, "11"),
        store.head("440000"),
        revs(card("440100"), card("110100")),
        issued_at=NOW,
    )
    err = rejected(store, m.keys(), delta, KeyNotAllowed)
    assert "110100" in str(err)


def test_a_key_chained_to_a_self_made_root(store: RevocationStore, m: Ministry) -> None:
    fake_root = SigningKey.generate("000000", [], m.suite)
    fake_gd = SigningKey.generate("440000", ["44"], m.suite)
    fake_gz = SigningKey.generate("440100", ["4401"], m.suite)
    fake_chain = [
        issue_certificate(fake_root, fake_gd, ["44"], START, END, serial=1),
        issue_certificate(fake_gd, fake_gz, ["4401"], START, END, serial=2),
    ]
    delta = build_delta(fake_gz, store.head("440100"), revs(card("440100")), issued_at=NOW)
    # Whether or not the forged chain reached the node's chain set, the key is unknown.
    rejected(store, m.keys(), delta, UnknownKey)
    with_fake = m.keys().updated(chains=[fake_chain])
    assert fake_gz.key_id not in with_fake
    err = rejected(store, with_fake, delta, UnknownKey)
    assert isinstance(err.__cause__, UnknownIssuer)
    assert "pinned root" in str(err)


def test_a_key_used_after_its_revocation(
    store: RevocationStore, m: Ministry, clock: ManualClock
) -> None:
    clock.now = T_REVOKE + 2 * DAY  # the node's clock is past every issued_at below
    keys = m.keys(rotated=True)
    before = build_delta(m.gz, store.head("440100"), revs(card()), issued_at=T_REVOKE - 1)
    assert store.apply(before.to_bytes(), keys).version == 1  # signed while it was valid
    at = build_delta(m.gz, store.head("440100"), revs(card()), issued_at=T_REVOKE)
    err = rejected(store, keys, at, KeyRevokedRejection)
    assert isinstance(err.__cause__, KeyRevoked)
    assert str(T_REVOKE) in str(err)
    later = build_delta(m.gz, store.head("440100"), revs(card()), issued_at=T_REVOKE + DAY)
    rejected(store, keys, later, KeyRevokedRejection)


def test_a_forgery_naming_a_revoked_key_is_a_bad_signature(
    store: RevocationStore, m: Ministry
) -> None:
    delta = build_delta(m.gz, store.head("440100"), revs(card()), issued_at=T_REVOKE)
    forged = dataclasses.replace(delta, signature=bytes(64))
    err = rejected(store, m.keys(rotated=True), forged, BadSignature)
    assert str(err) == (f"440100 v1: signature does not verify with key {m.gz.key_id.hex()}"), err


def test_a_revoked_province_voids_its_cities(store: RevocationStore, m: Ministry) -> None:
    gd_revoked = issue_revocation(
        m.root, m.gd.key_id, T_REVOKE, RevocationReason.COMPROMISED, serial=5
    )
    keys = m.keys().updated(revocations=[gd_revoked])
    delta = build_delta(m.gz, store.head("440100"), revs(card()), issued_at=T_REVOKE + 1)
    rejected(store, keys, delta, KeyRevokedRejection)


def test_rotation_replay_and_continuation(
    store: RevocationStore, m: Ministry, clock: ManualClock
) -> None:
    clock.now = T_REVOKE + DAY
    old_keys = m.keys()
    d1 = build_delta(m.gz, store.head("440100"), revs(card()), issued_at=NOW)
    store.apply(d1.to_bytes(), old_keys)
    # The province certifies a new Guangzhou key and revokes the old one as of T_REVOKE.
    keys = m.keys(rotated=True)
    d2 = build_delta(m.gz2, store.head("440100"), revs(card()), issued_at=T_REVOKE + 10)
    assert store.apply(d2.to_bytes(), keys).version == 2
    # The old key's v1 still verifies (signed before T_REVOKE), but it is a held copy.
    rejected(store, keys, d1, DuplicateDelta)
    # The authority continues its feed under the new key.
    d3 = build_delta(m.gz2, store.head("440100"), revs(card()), issued_at=T_REVOKE + 20)
    result = store.apply(d3.to_bytes(), keys)
    assert (result.version, result.added) == (3, 1)
    assert store.head("440100").digest == d3.digest


def test_snapshot_resolved_as_of_its_issue_time(m: Ministry) -> None:
    keys = m.keys(rotated=True)
    d1 = build_delta(m.gz, FeedHead.genesis("440100"), revs(card()), issued_at=NOW)
    entries = entries_from_revocations(revs(card()))
    versions = np.ones(1, dtype=np.uint64)
    head = FeedHead("440100", 1, d1.digest)
    ok = sign_snapshot(m.gz, head, entries, versions, issued_at=T_REVOKE - 1)
    assert accept_snapshot(FeedHead.genesis("440100"), ok, keys) == head
    late = sign_snapshot(m.gz, head, entries, versions, issued_at=T_REVOKE)
    with pytest.raises(KeyRevokedRejection):
        accept_snapshot(FeedHead.genesis("440100"), late, keys)


def test_certified_keys_as_a_mapping(m: Ministry) -> None:
    keys = m.keys(rotated=True)
    # As of NOW both Guangzhou keys are valid; as of after T_REVOKE only the new one.
    assert {m.gd.key_id, m.bj.key_id, m.gz.key_id, m.gz2.key_id} == set(keys)
    later = keys.updated(at=T_REVOKE)
    assert m.gz.key_id not in later and m.gz2.key_id in later
    assert later.publishers()["440100"] == ("4401",)
    assert keys.key_at(SigningKey.generate("440100", ["4401"], m.suite).key_id, NOW) is None
    gz = keys.key_at(m.gz.key_id, T_REVOKE - 1)
    assert gz is not None and gz.prefixes == ("4401",) and gz.publisher == "440100"
    with pytest.raises(KeyRevoked):
        keys.key_at(m.gz.key_id, T_REVOKE)


def test_a_plain_keyring_still_works(
    store: RevocationStore, m: Ministry, clock: ManualClock
) -> None:
    clock.now = T_REVOKE + DAY
    ring = Keyring([m.gz.trusted()])
    delta = build_delta(m.gz, store.head("440100"), revs(card()), issued_at=T_REVOKE + DAY)
    assert store.apply(delta.to_bytes(), ring).version == 1
