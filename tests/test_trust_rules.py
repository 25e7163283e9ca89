"""Trust records are bounded and conflict-free (issue #11 item 3 and its rule): what a
feed's trust section may carry (blacklist/sync/trust_rules.py), and a publisher directory
that starts from whatever the store holds (blacklist/publishers.py)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from blacklist.authority import build_delta
from blacklist.certs import (
    Certificate,
    KeyRevocation,
    RevocationReason,
    issue_certificate,
    issue_revocation,
)
from blacklist.checker import Checker, CheckStatus
from blacklist.clock import ManualClock
from blacklist.delta import FeedHead, sign_snapshot
from blacklist.entryblock import EntryColumns
from blacklist.publishers import PublisherDirectory
from blacklist.rejections import ALL_CAUSES, BadTrustRecord, ReplayedDelta, UnknownKey
from blacklist.signing import Keyring, SigningKey
from blacklist.store import RevocationStore
from blacklist.sync.accept import (
    AcceptPolicy,
    FeedPosition,
    accept_delta,
    accept_signed,
    accept_snapshot,
)
from blacklist.sync.trust_rules import check_trust_records
from blacklist.trust import (
    DEFAULT_MAX_TRUST_RECORDS,
    CertifiedKeys,
    ConflictingCertificates,
    KeyRevoked,
    PrefixClaim,
    PrefixConflict,
    ScopeViolation,
    TrustAnchor,
    UnknownIssuer,
    certified_keys_from_records,
    check_delegation,
    check_scope,
    effective_revocation,
    keyring_from_chains,
    verify_chain,
)
from node.metrics import NodeMetrics
from tests.conftest import card

NOW = 1_750_000_000
DAY = 86_400
START, END = NOW - 365 * DAY, NOW + 365 * DAY


class Tree:
    """Root → Guangdong (44) → Guangzhou (440100, 4401)."""

    def __init__(self) -> None:
        self.root = SigningKey.generate("000000", [])
        self.anchor = TrustAnchor.of(self.root)
        self.gd = SigningKey.generate("440000", ["44"])
        self.gz = SigningKey.generate("440100", ["4401"])
        self.gd_cert = issue_certificate(self.root, self.gd, ["44"], START, END, serial=1)
        self.gz_cert = issue_certificate(self.gd, self.gz, ["4401"], START, END, serial=10)

    def keys(
        self, records: list[bytes] | None = None, limit: int = DEFAULT_MAX_TRUST_RECORDS
    ) -> CertifiedKeys:
        return certified_keys_from_records(
            self.anchor,
            [[self.gd_cert], [self.gd_cert, self.gz_cert]],
            records or [],
            [],
            NOW,
            max_trust_records=limit,
        )

    def cert(
        self, issuer: SigningKey, publisher: str, prefixes: list[str], serial: int, nb: int = START
    ) -> tuple[SigningKey, Certificate]:
        key = SigningKey.generate(publisher, prefixes)
        return key, issue_certificate(issuer, key, prefixes, nb, END, serial=serial)


@pytest.fixture(scope="module")
def t() -> Tree:
    return Tree()


def refused(
    t: Tree, signer: SigningKey, records: list[bytes], keys: CertifiedKeys | Keyring
) -> str:
    """A delta of ``signer``'s feed carrying ``records`` is refused as bad_trust_record."""
    delta = build_delta(signer, FeedHead.genesis(signer.publisher), issued_at=NOW, trust=records)
    with pytest.raises(BadTrustRecord) as info:
        accept_delta(FeedHead.genesis(signer.publisher), delta, keys)
    assert info.value.cause == "bad_trust_record" and "bad_trust_record" in ALL_CAUSES
    return str(info.value)


def accepted(signer: SigningKey, records: list[bytes], keys: CertifiedKeys | Keyring) -> None:
    delta = build_delta(signer, FeedHead.genesis(signer.publisher), issued_at=NOW, trust=records)
    assert accept_delta(FeedHead.genesis(signer.publisher), delta, keys).version == 1


# --- acceptance -----------------------------------------------------------------------------


def test_a_city_handing_its_own_prefix_to_another_publisher_is_refused(t: Tree) -> None:
    """Issue #11 item 3: Guangzhou's key certifies 440101 for its own 4401."""
    _, rogue = t.cert(t.gz, "440101", ["4401"], 1)
    text = refused(t, t.gz, [rogue.to_bytes()], t.keys())
    assert "not strictly narrower" in text and "'4401'" in text and "440101" in text


def test_a_city_may_certify_its_rotation_and_narrower_prefixes(t: Tree) -> None:
    _, rotation = t.cert(t.gz, "440100", ["4401"], 2)
    _, sub = t.cert(t.gz, "440105", ["440105"], 3)
    accepted(t.gz, [rotation.to_bytes(), sub.to_bytes()], t.keys())


def test_a_certificate_claiming_a_prefix_another_publisher_holds_is_refused(t: Tree) -> None:
    """The province gave 440105 to publisher 440199; Guangzhou then certifies its own
    440105 for it: both would answer for one prefix."""
    _, held = t.cert(t.gd, "440199", ["440105"], 20)
    keys = t.keys([held.to_bytes()])
    _, clash = t.cert(t.gz, "440105", ["440105"], 4)
    text = refused(t, t.gz, [clash.to_bytes()], keys)
    assert "publishers 440105 and 440199 both claim region prefix '440105'" in text


def test_two_claims_in_one_record_set_are_refused(t: Tree) -> None:
    _, a = t.cert(t.gz, "440105", ["440107"], 5)
    _, b = t.cert(t.gz, "440106", ["440107"], 6)
    text = refused(t, t.gz, [a.to_bytes(), b.to_bytes()], t.keys())
    assert "both claim region prefix '440107'" in text
    assert "440105" in text and "440106" in text


def test_a_claim_in_one_record_set_names_its_prefix(t: Tree) -> None:
    """The refusal quotes the earlier claim of the same record set with its prefix (a claim
    built without it would name None)."""
    _, a = t.cert(t.gz, "440105", ["440107"], 5)
    _, b = t.cert(t.gz, "440106", ["440107"], 6)
    text = refused(t, t.gz, [a.to_bytes(), b.to_bytes()], t.keys())
    assert "claim to '440107'" in text and "certified by 440100" in text


def test_a_reassignment_carried_in_one_record_set_is_accepted(t: Tree) -> None:
    """Rule 6's exception within one record set (a snapshot of the certifier's feed carries
    both certificates): the same certifier moved 440107 from 440105 to 440106 later."""
    _, old = t.cert(t.gz, "440105", ["440107"], 5)
    _, new = t.cert(t.gz, "440106", ["440107"], 6, nb=START + DAY)
    accepted(t.gz, [old.to_bytes(), new.to_bytes()], t.keys())


def test_every_earlier_claim_is_checked_past_an_allowed_one(t: Tree) -> None:
    """Rule 6 looks at every claim on the prefix: 440105's own earlier claim and a
    reassignment do not hide that 440106 and 440105's new key were given 440107 at the same
    ``not_before`` by one certifier (in this order: the rule's own, not the feed's)."""
    _, a = t.cert(t.gz, "440105", ["440107"], 5)
    _, b = t.cert(t.gz, "440106", ["440107"], 6, nb=START + DAY)
    _, c = t.cert(t.gz, "440105", ["440107"], 7, nb=START + DAY)
    keys = t.keys()
    before = keys.claims(pending=True)
    records = [a.to_bytes(), b.to_bytes(), c.to_bytes()]
    with pytest.raises(BadTrustRecord) as info:
        check_trust_records(t.gz.trusted(), "delta 440100 v1", records, keys)
    assert "publishers 440105 and 440106 both claim region prefix '440107'" in str(info.value)
    assert keys.claims(pending=True) == before


def test_a_plain_keyring_finds_a_record_issued_by_the_publishers_other_key(t: Tree) -> None:
    """Rule 4 without certificates (a plain keyring): a record issued by another of the
    publisher's own keys travels in its feed."""
    other = SigningKey.generate("440100", ["4401"])
    ring = Keyring([t.gz.trusted(), other.trusted()])
    _, sub = t.cert(other, "440105", ["440105"], 8)
    accepted(t.gz, [sub.to_bytes()], ring)
    stranger = SigningKey.generate("440100", ["4401"])
    _, theirs = t.cert(stranger, "440105", ["440105"], 9)
    assert "not a key of publisher 440100" in refused(t, t.gz, [theirs.to_bytes()], ring)


def _tampered(cert: Certificate) -> bytes:
    data = bytearray(cert.to_bytes())
    data[-1] ^= 0x01  # the signature's last byte: still decodes, no longer verifies
    return bytes(data)


@pytest.mark.parametrize("case", ["undecodable", "foreign", "signature", "feed_count", "clash"])
def test_every_trust_refusal_names_the_item_and_the_record(t: Tree, case: str) -> None:
    """The refusal names the item (its label) and what is wrong with which record, whatever
    rule refuses it (STYLE: the failing value in the message); the keys are unchanged."""
    label = "snapshot 440100 v9"
    keys = t.keys()
    stranger = SigningKey.generate("440100", ["4401"])
    _, a = t.cert(t.gz, "440105", ["440107"], 5)
    _, b = t.cert(t.gz, "440106", ["440107"], 6)
    records, expected = {
        "undecodable": ([t.gz_cert.to_bytes(), b"\x01garbage"], ": trust record 1: "),
        "foreign": (
            [t.cert(stranger, "440105", ["440105"], 9)[1].to_bytes()],
            "(nor its certificate's issuer)",
        ),
        "signature": ([_tampered(a)], f": {a.label}: signature does not verify"),
        "feed_count": (
            [t.cert(t.gz, "440100", ["4401"], 400 + i)[1].to_bytes() for i in range(2)],
            "would hold 3 trust records, at most 2",
        ),
        "clash": ([a.to_bytes(), b.to_bytes()], "both claim region prefix '440107'"),
    }[case]
    if case == "feed_count":
        keys = t.keys(limit=2)
    before = keys.claims(pending=True)
    with pytest.raises(BadTrustRecord) as info:
        check_trust_records(t.gz.trusted(), label, records, keys)
    text = str(info.value)
    assert text.startswith(f"{label}: ") and expected in text, text
    assert keys.claims(pending=True) == before


def test_a_snapshot_from_the_wire_carries_its_feeds_certificate(t: Tree) -> None:
    """accept_signed checks a snapshot's trust section against the node's keys: the feed's
    own certificate (issued by its certifier, not by the signing key) travels in it."""
    records = [t.gz_cert.to_bytes()]
    empty = EntryColumns.empty()
    snap = sign_snapshot(
        t.gz, FeedHead("440100", 1, bytes(32)), empty, np.zeros(0, np.uint64), NOW, trust=records
    )
    got = accept_signed(snap.to_bytes(), lambda p: FeedPosition(FeedHead.genesis(p)), t.keys())
    assert (got.head.version, got.item.trust) == (1, tuple(records))
    with pytest.raises(BadTrustRecord):  # and the same rules as for a delta: a bound of 0
        accept_signed(snap.to_bytes(), lambda p: FeedPosition(FeedHead.genesis(p)), t.keys(limit=0))


def test_a_self_issued_certificate_is_refused(t: Tree) -> None:
    selfie = issue_certificate(t.gz, t.gz, ["4401"], START, END, serial=7)
    assert "self-issued" in refused(t, t.gz, [selfie.to_bytes()], t.keys())


@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_records_per_item_at_below_and_above_the_limit(t: Tree, extra: int) -> None:
    limit = 4
    # The feed's own certificate is among what it carries (and holds): it counts.
    others = [t.cert(t.gz, "440100", ["4401"], 100 + i)[1] for i in range(limit - 1 + extra)]
    records = [c.to_bytes() for c in (t.gz_cert, *others)]
    keys = t.keys(limit=limit)
    if extra > 0:
        text = refused(t, t.gz, records, keys)
        assert f"{limit + extra} trust records, at most {limit}" in text
    else:
        accepted(t.gz, records, keys)


@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_records_held_for_a_feed_at_below_and_above_the_limit(t: Tree, extra: int) -> None:
    """The bound is per feed: what the store holds for it counts, repeated records once."""
    limit = 4
    # The feed already holds its own certificate (gz_cert) and two it issued.
    held = [t.cert(t.gz, "440100", ["4401"], 200 + i)[1].to_bytes() for i in range(2)]
    keys = t.keys(held, limit=limit)
    assert len(keys.feed_records("440100")) == 3
    new = [t.cert(t.gz, "440100", ["4401"], 300 + i)[1].to_bytes() for i in range(1 + extra)]
    records = [*held, *new]  # a snapshot repeats what the feed holds
    if extra > 0:
        assert f"would hold {limit + extra} trust records, at most {limit}" in refused(
            t, t.gz, records, keys
        )
    else:
        accepted(t.gz, records, keys)


def test_a_snapshot_is_held_to_the_same_rules(t: Tree) -> None:
    _, rogue = t.cert(t.gz, "440101", ["4401"], 8)
    head = FeedHead("440100", 3, b"\x07" * 32)
    snapshot = sign_snapshot(
        t.gz, head, EntryColumns.empty(), np.empty(0, np.uint64), NOW, trust=[rogue.to_bytes()]
    )
    with pytest.raises(BadTrustRecord, match="not strictly narrower"):
        accept_snapshot(FeedHead.genesis("440100"), snapshot, t.keys())


def test_plain_keyrings_get_the_same_rules(t: Tree) -> None:
    """Bare configured keys: no certificates behind the claims, the default bound."""
    ring = Keyring([t.gd.trusted(), t.gz.trusted()])
    _, clash = t.cert(t.gd, "440101", ["4401"], 9)
    with pytest.raises(BadTrustRecord, match="both claim region prefix '4401'"):
        check_trust_records(t.gd.trusted(), "delta 440000 v1", [clash.to_bytes()], ring)


# --- starting from what the store holds -----------------------------------------------------


def test_a_store_with_conflicting_claims_starts(t: Tree) -> None:
    """Records an older node accepted: the province gave 440105 to 440199, and Guangzhou
    certified 440105 for its own sub-publisher. The directory keeps the claim nearer the
    root and reports the other; it never raises (today: ValueError at start-up)."""
    _, held = t.cert(t.gd, "440199", ["440105"], 20)
    _, clash = t.cert(t.gz, "440105", ["440105"], 4)
    keys = t.keys([held.to_bytes(), clash.to_bytes()])
    directory = PublisherDirectory.from_keys(keys)
    assert directory.publisher_of("440105") == "440199"
    assert directory.publisher_of("440101") == "440100"
    assert [type(e) for e in directory.dropped] == [PrefixConflict]
    text = str(directory.dropped[0])
    assert directory.dropped[0].cause == "prefix_conflict"
    assert "'440105'" in text and "440199" in text and "440105's claim" in text


def test_an_old_stores_same_prefix_certificate_is_simply_untrusted(t: Tree) -> None:
    """Guangzhou's certificate of 440101 for 4401 (accepted before this rule): its chain now
    fails the delegation rule, so it claims nothing."""
    rogue_key, rogue = t.cert(t.gz, "440101", ["4401"], 1)
    keys = t.keys([rogue.to_bytes()])
    assert rogue_key.key_id not in keys
    assert any(isinstance(e, ScopeViolation) for e in keys.errors)
    assert PublisherDirectory.from_keys(keys).publisher_of("440101") == "440100"


def test_bare_keys_claiming_one_prefix_resolve_by_code(t: Tree) -> None:
    other = SigningKey.generate("440101", ["4401"])
    for order in ([t.gz, other], [other, t.gz]):
        directory = PublisherDirectory.from_keys(Keyring(k.trusted() for k in order))
        assert directory.publisher_of("440123") == "440100"
        assert len(directory.dropped) == 1 and "440101" in str(directory.dropped[0])
    assert PublisherDirectory({"440100": ["4401"], "440101": ["4401"]}).dropped


def test_an_honest_reassignment_works_at_every_step(tmp_path: Path, t: Tree) -> None:
    """The province certifies 440101 for 4401 (440100 still holds it), then revokes the old
    key: accepted at each step, and the directory follows without a crash."""
    clock = ManualClock(NOW)
    store = RevocationStore(tmp_path / "s", clock=clock, map_size=1 << 26)
    try:
        keys = t.keys()
        gz_card = card("440100")
        store.apply(
            build_delta(t.gz, store.head("440100"), [], [], NOW).to_bytes(), keys
        )  # Guangzhou publishes
        new_key, new = t.cert(t.gd, "440101", ["4401"], 30, nb=NOW)
        step1 = build_delta(t.gd, store.head("440000"), [], [], NOW, trust=[new.to_bytes()])
        store.apply(step1.to_bytes(), keys)
        keys = t.keys(store.trust.records())
        directory = PublisherDirectory.from_keys(keys)
        assert directory.publisher_of("440123") == "440101"  # the newer certificate
        assert len(directory.dropped) == 1 and "440100" in str(directory.dropped[0])
        checker = Checker(store, keys, clock=clock)  # does not raise
        assert checker.check(gz_card).status is CheckStatus.NO_DATA  # 440101 has no feed yet
        revoke = issue_revocation(t.gd, t.gz.key_id, NOW + 1, RevocationReason.RETIRED, 1)
        step2 = build_delta(t.gd, store.head("440000"), [], [], NOW, trust=[revoke.to_bytes()])
        store.apply(step2.to_bytes(), keys)
        clock.advance(10)
        keys = certified_keys_from_records(
            t.anchor, [[t.gd_cert], [t.gd_cert, t.gz_cert]], store.trust.records(), [], NOW + 10
        )
        directory = PublisherDirectory.from_keys(keys)
        assert directory.publisher_of("440123") == "440101" and directory.dropped == ()
        assert t.gz.key_id not in keys and new_key.key_id in keys
        checker.set_keys(keys)
        store.apply(build_delta(new_key, store.head("440101"), [], [], NOW + 10).to_bytes(), keys)
    finally:
        store.close()


def test_the_trust_keeper_logs_and_counts_dropped_claims(
    tmp_path: Path, t: Tree, caplog: pytest.LogCaptureFixture
) -> None:
    from node.trust_keeper import TrustKeeper

    class Material:
        def keys(self, records: list[bytes], at: int) -> CertifiedKeys:
            return t.keys(records)

    class Config:
        trust_refresh_interval = 60.0

        def trust_material(self) -> Material:
            return Material()

    _, held = t.cert(t.gd, "440199", ["440105"], 20)
    _, clash = t.cert(t.gz, "440105", ["440105"], 4)
    clock = ManualClock(NOW)
    store = RevocationStore(tmp_path / "s", clock=clock, map_size=1 << 26)
    metrics = NodeMetrics(CollectorRegistry())
    try:
        keeper = TrustKeeper(Config(), store, metrics, clock)  # type: ignore[arg-type]
        gauge = metrics.registry.get_sample_value("blacklist_trust_dropped_claims")
        assert gauge == 0
        # An older node's records land: the keeper rebuilds, logs once and counts.
        with store.env.begin(write=True) as txn:
            done = [
                store.trust.stage(txn, "440000", [held.to_bytes()])[0],
                store.trust.stage(txn, "440100", [clash.to_bytes()])[0],
            ]
        for remember in done:
            remember()
        with caplog.at_level(logging.WARNING, logger="node.trust"):
            keeper.refresh("feed")
            keeper.refresh("timer")
        warnings = [r for r in caplog.records if "prefix_conflict" in r.getMessage()]
        assert len(warnings) == 1 and "'440105'" in warnings[0].getMessage()
        assert metrics.registry.get_sample_value("blacklist_trust_dropped_claims") == 1
    finally:
        store.close()


def test_a_claim_not_valid_yet_still_counts(t: Tree) -> None:
    """The province's grant of 440105 to 440199 takes effect tomorrow: a claim beside it
    today would become a conflict then."""
    _, pending = t.cert(t.gd, "440199", ["440105"], 21, nb=NOW + DAY)
    keys = t.keys([pending.to_bytes()])
    assert PublisherDirectory.from_keys(keys).publisher_of("440105") == "440100"  # not yet
    _, clash = t.cert(t.gz, "440105", ["440105"], 4)
    assert "both claim region prefix '440105'" in refused(t, t.gz, [clash.to_bytes()], keys)


def test_a_record_set_that_revokes_the_holder_may_reassign(t: Tree) -> None:
    """One certifier granting one prefix to two publishers at once is refused, unless the
    same record set revokes the key that held it."""
    _, twin = t.cert(t.gd, "440101", ["4401"], 22, nb=t.gz_cert.not_before)
    assert "both claim region prefix '4401'" in refused(t, t.gd, [twin.to_bytes()], t.keys())
    revoke = issue_revocation(t.gd, t.gz.key_id, NOW, RevocationReason.RETIRED, 2)
    accepted(t.gd, [twin.to_bytes(), revoke.to_bytes()], t.keys())


def test_a_worker_refreshing_keys_over_conflicting_records_keeps_answering(
    tmp_path: Path, t: Tree
) -> None:
    """A serving worker (a following checker) rebuilds its keys when trust records change;
    an older node's conflicting records must not kill it at that refresh (issue #11 item 3:
    today ValueError in the publisher directory)."""
    from blacklist.follower import FollowingChecker, StoreFollower

    # The writer's clock is the certificates' (NOW): acceptance checks a certificate at the
    # node's clock too (issue #11), so the wall clock would find them expired.
    writer = RevocationStore(tmp_path / "w", map_size=1 << 26, clock=ManualClock(NOW))
    follower = StoreFollower(tmp_path / "w", env=writer.env, background=False)
    checker = FollowingChecker(follower, t.keys(), keys_for=t.keys)
    try:
        assert checker.check(card("440105")).publisher == "440100"
        _, held = t.cert(t.gd, "440199", ["440105"], 20)
        _, clash = t.cert(t.gz, "440105", ["440105"], 4)
        with writer.env.begin(write=True) as txn:
            done = [
                writer.trust.stage(txn, "440000", [held.to_bytes()])[0],
                writer.trust.stage(txn, "440100", [clash.to_bytes()])[0],
            ]
        for remember in done:
            remember()
        writer.apply(build_delta(t.gd, writer.head("440000"), issued_at=NOW).to_bytes(), t.keys())
        answer = checker.check(card("440105"))  # refreshes the keys, and answers
        assert follower.trust_version == 1
        assert (answer.publisher, answer.status) == ("440199", CheckStatus.NO_DATA)
        assert checker.check(card("440101")).publisher == "440100"
    finally:
        follower.close()
        writer.close()


def test_a_certifier_cannot_switch_off_another_publishers_key(t: Tree) -> None:
    """Beijing certifies Guangzhou's public key for a Beijing prefix: the key would then be
    certified for two publishers, hence trusted for neither (Guangzhou's feed would stop).
    Refused; a rotation certificate of the same key for its own publisher is not."""
    bj = SigningKey.generate("110000", ["11"])
    bj_cert = issue_certificate(t.root, bj, ["11"], START, END, serial=3)
    keys = certified_keys_from_records(
        t.anchor, [[t.gd_cert], [bj_cert], [t.gd_cert, t.gz_cert]], [], [], NOW
    )
    hijack = issue_certificate(bj, dataclasses.replace(t.gz, publisher="110100"), ["1101"],
                               START, END, serial=40)  # fmt: skip
    text = refused(t, bj, [hijack.to_bytes()], keys)
    assert "already certified for 440100" in text and "one key publishes one feed" in text
    renewal = issue_certificate(t.gd, t.gz, ["4401"], NOW, END, serial=41)
    accepted(t.gd, [renewal.to_bytes()], keys)
    # Within one record set too: a new key named for two publishers.
    fresh = SigningKey.generate("440105", ["440105"])
    a = issue_certificate(t.gz, fresh, ["440105"], START, END, serial=42)
    b = issue_certificate(t.gz, dataclasses.replace(fresh, publisher="440106"), ["440106"],
                          START, END, serial=43)  # fmt: skip
    assert "already certified for 440105" in refused(t, t.gz, [a.to_bytes(), b.to_bytes()], keys)


# --- the certified keys' own rules (killing the mutation run's survivors in trust.py) ---------


def test_an_updated_view_keeps_the_configured_record_bound(t: Tree) -> None:
    """CertifiedKeys.updated (a key refresh) keeps the node's per-feed bound, never the
    default."""
    keys = t.keys(limit=3).updated(at=NOW + 1)
    assert (keys.max_trust_records, keys.at) == (3, NOW + 1)


def test_a_key_certified_for_two_publishers_at_once_is_refused(t: Tree) -> None:
    """One public key certified for two publishers answers for neither
    (ConflictingCertificates, naming the key and both publishers)."""
    twin = dataclasses.replace(t.gz, publisher="440105")
    other = issue_certificate(t.gd, twin, ["440105"], START, END, serial=30)
    keys = t.keys([other.to_bytes()])
    with pytest.raises(ConflictingCertificates) as info:
        keys.key_at(t.gz.key_id, NOW)
    assert str(info.value) == (
        f"key {t.gz.key_id.hex()} is certified for publishers ['440100', '440105'] at {NOW}"
    )


def test_the_records_that_belong_in_each_feed(t: Tree) -> None:
    """What the per-feed bound counts: a publisher's own certificates, what its keys issued
    (certificates and revocations), and for the root what the pinned key issued."""
    sub_key, sub = t.cert(t.gz, "440105", ["440105"], 31)
    gone = issue_revocation(t.gz, sub_key.key_id, NOW, RevocationReason.SUPERSEDED, serial=32)
    keys = t.keys([sub.to_bytes(), gone.to_bytes()])
    assert keys.feed_records("440100") == {t.gz_cert.digest, sub.digest, gone.digest}
    assert keys.feed_records("440000") == {t.gd_cert.digest, t.gz_cert.digest}
    assert keys.feed_records(t.anchor.publisher) == {t.gd_cert.digest}
    assert keys.feed_records("440105") == {sub.digest}


def test_claims_not_valid_yet_count_only_when_asked(t: Tree) -> None:
    """claims() is what holds at ``at``; pending=True adds certificates whose not_before is
    still ahead, and a certificate valid from exactly ``at`` is counted once, as current."""
    _, now_cert = t.cert(t.gz, "440105", ["440105"], 33, nb=NOW)
    _, later = t.cert(t.gz, "440106", ["440106"], 34, nb=NOW + DAY)
    keys = t.keys([now_cert.to_bytes(), later.to_bytes()])
    current = {(c.publisher, c.prefix) for c in keys.claims()}
    pending = [(c.publisher, c.prefix) for c in keys.claims(pending=True)]
    assert ("440105", "440105") in current and ("440106", "440106") not in current
    assert pending.count(("440105", "440105")) == 1 and ("440106", "440106") in pending


# --- the publisher directory's choice (killing the mutation run's survivors) -----------------


def _claim(publisher: str, nb: int, serial: int = 1, prefix: str = "4401") -> PrefixClaim:
    return PrefixClaim(prefix, publisher, bytes([serial]) * 8, 1, "440000", b"\x01" * 8, nb, serial)


def test_the_directory_prefers_the_higher_serial_at_one_not_before() -> None:
    """Rule 2's second half: between two certificates of one not_before, the higher serial
    (the certifier's later word) answers, in either order."""
    old, new = _claim("440105", 10, serial=1), _claim("440106", 10, serial=2)
    for claims in ([old, new], [new, old]):
        directory = PublisherDirectory.from_claims(claims)
        assert directory.publisher_of("440101") == "440106"
        assert len(directory.dropped) == 1


def test_the_directory_reports_each_losing_publisher_once() -> None:
    """X held 4401, lost it to Y, won it back with a newer certificate; Z's claim is older
    still and Y has a second chain: the conflicts name Y and Z once each, in rank order, and
    never X against itself."""
    claims = [
        _claim("440105", 10, serial=1),  # X
        _claim("440106", 20, serial=2),  # Y beats X
        _claim("440105", 30, serial=3),  # X again, beats Y
        _claim("440107", 5, serial=4),  # Z loses
        _claim("440106", 20, serial=5),  # Y's second chain
    ]
    directory = PublisherDirectory.from_claims(claims)
    assert directory.publisher_of("440101") == "440105"
    texts = [str(c) for c in directory.dropped]
    assert len(texts) == 2, texts
    assert texts[0].startswith("region prefix '4401' is claimed by publishers 440105 and 440106")
    assert texts[1].startswith("region prefix '4401' is claimed by publishers 440105 and 440107")


def test_a_publisher_with_two_chains_to_one_prefix_is_no_conflict() -> None:
    """A rotation in progress: two keys of one publisher claim its prefix; the stronger
    claim is kept, nothing is dropped."""
    directory = PublisherDirectory.from_claims([_claim("440100", 10, 1), _claim("440100", 20, 2)])
    assert (directory.publisher_of("440101"), directory.dropped) == ("440100", ())


def test_configured_scopes_conflict_names_uncertified_keys() -> None:
    """Configured (uncertified) keys carry no key id and no certifier: the lower publisher
    code answers, and the message says so plainly."""
    directory = PublisherDirectory({"440300": ["4401"], "440100": ["4401"]})
    assert directory.publisher_of("440101") == "440100"
    assert [str(c) for c in directory.dropped] == [
        "region prefix '4401' is claimed by publishers 440100 and 440300: publisher 440300's "
        "claim to '4401' (key ) is dropped, publisher 440100's claim to '4401' (key ) answers"
    ]


def test_the_effective_revocation_is_the_certifiers_earliest(t: Tree) -> None:
    """Only the key that vouched may withdraw (another key's revocation, or one whose
    signature fails, is skipped, never the end of the search); of the certifier's, the
    earliest stands, and of two at one instant the first held."""
    gz, gd = t.gz.key_id, t.gd.trusted()

    def rev(issuer: SigningKey, at: int, serial: int) -> KeyRevocation:
        return issue_revocation(issuer, gz, at, RevocationReason.COMPROMISED, serial=serial)

    by_root = rev(t.root, NOW - 3 * DAY, 1)
    forged = dataclasses.replace(rev(t.gd, NOW - 4 * DAY, 2), signature=bytes(64))
    late, early, tie = rev(t.gd, NOW, 3), rev(t.gd, NOW - DAY, 4), rev(t.gd, NOW - DAY, 5)
    later_still = rev(t.gd, NOW + DAY, 6)
    held = [by_root, forged, late, later_still, early, tie]
    assert effective_revocation(gz, gd, held) == early
    assert effective_revocation(gz, gd, [by_root, forged]) is None


def test_the_national_scope_admits_provinces_and_the_ministry_only(t: Tree) -> None:
    """Under the pinned root: any province's publisher, the ministry's own rotation, and
    nothing outside the province list (99 is none); the refusal names the scope."""
    ministry = SigningKey.generate("000000", ["11"])
    check_scope(issue_certificate(t.root, ministry, ["11"], START, END, serial=40), None)
    check_scope(t.gd_cert, None)
    stray = issue_certificate(
        t.root, SigningKey.generate("990000", ["11"]), ["11"], START, END, serial=41
    )
    with pytest.raises(ScopeViolation) as info:
        check_scope(stray, None)
    assert str(info.value) == f"{stray.label}: publisher 990000 is outside the national scope"
    assert info.value.certificate == stray


@pytest.mark.parametrize("case", ["publisher", "prefix", "delegation"])
def test_a_scope_refusal_names_the_issuers_scope_and_the_certificate(t: Tree, case: str) -> None:
    sz = SigningKey.generate("440300", ["4403"])
    cert = {
        "publisher": issue_certificate(t.gd, SigningKey.generate("110100", ["44"]), ["44"], START, END, serial=42),
        "prefix": issue_certificate(t.gd, sz, ["11"], START, END, serial=43),
        "delegation": issue_certificate(t.gz, SigningKey.generate("440105", ["4401"]), ["4401"], START, END, serial=44),
    }[case]  # fmt: skip
    issuer, scope = (t.gz, ("4401",)) if case == "delegation" else (t.gd, ("44",))
    with pytest.raises(ScopeViolation) as info:
        check_delegation(cert, issuer.publisher, scope)
    text = str(info.value)
    assert text.startswith(f"{cert.label}: ") and f"the issuer's scope {list(scope)}" in text
    if case == "delegation":
        assert text.endswith(
            f"(publisher {issuer.publisher}), and the certificate is not the issuer's own rotation"
        )
    assert info.value.certificate == cert


def test_a_province_rotation_is_a_valid_chain(t: Tree) -> None:
    """A certifier's own rotation (same publisher, same prefixes: not narrower) is the one
    grant besides narrower prefixes (check_delegation with the issuer's publisher)."""
    gd2 = SigningKey.generate("440000", ["44"])
    rotation = issue_certificate(t.gd, gd2, ["44"], START, END, serial=45)
    key = verify_chain([t.gd_cert, rotation], t.anchor, [], NOW)
    assert (key.key_id, key.publisher, key.prefixes) == (gd2.key_id, "440000", ("44",))


def test_the_trust_anchor_is_a_ministry_key_with_a_public_key(t: Tree) -> None:
    with pytest.raises(ValueError, match=r"^the trust anchor needs a public key$"):
        TrustAnchor(t.root.suite_id, b"")
    with pytest.raises(ValueError, match=r"^a root key publishes for 000000, not 440000$"):
        TrustAnchor.of(t.gd)


def test_a_chain_refusal_names_the_expected_issuer(t: Tree) -> None:
    """UnknownIssuer names whom the certificate should have been issued by: the pinned root
    key for the first link, the previous certificate's key after it."""
    with pytest.raises(UnknownIssuer) as info:
        verify_chain([t.gz_cert], t.anchor, [], NOW)
    assert f"is not the pinned root key ({t.anchor.key_id.hex()})" in str(info.value)
    _, stray = t.cert(t.gz, "440105", ["440105"], 46)
    with pytest.raises(UnknownIssuer) as info:
        verify_chain([t.gd_cert, stray], t.anchor, [], NOW)
    assert f"is not the key of {t.gd_cert.label} ({t.gd.key_id.hex()})" in str(info.value)


def test_a_certifiers_revocation_is_found_past_another_keys(t: Tree) -> None:
    """The revocation index looks at every revocation of the key: one by a key that never
    certified it (skipped) does not hide its certifier's; the refusal names the reason."""
    by_root = issue_revocation(t.root, t.gz.key_id, NOW - DAY, RevocationReason.RETIRED, 47)
    by_gd = issue_revocation(t.gd, t.gz.key_id, NOW - DAY, RevocationReason.COMPROMISED, 48)
    with pytest.raises(KeyRevoked) as info:
        verify_chain([t.gd_cert, t.gz_cert], t.anchor, [by_root, by_gd], NOW)
    assert f"(compromised, revocation #{by_gd.serial})" in str(info.value)


def test_a_plain_keyring_key_is_not_certified_for_a_second_publisher(t: Tree) -> None:
    """Rule 7 with a plain keyring too: the province certifying Guangzhou's key for another
    publisher is refused, naming the publisher the key already signs for."""
    ring = Keyring([t.gd.trusted(), t.gz.trusted()])
    twin = dataclasses.replace(t.gz, publisher="440105")
    cert = issue_certificate(t.gd, twin, ["440105"], START, END, serial=49)
    with pytest.raises(BadTrustRecord) as info:
        check_trust_records(t.gd.trusted(), "delta 440000 v1", [cert.to_bytes()], ring)
    assert "but it is already certified for 440100 (one key publishes one feed)" in str(info.value)


def test_an_old_copy_signed_before_its_key_expired_is_only_an_older_copy(t: Tree) -> None:
    """Only an item that moves a feed forward is held to the node's clock: a copy older
    than the head, signed while Guangzhou's certificate was valid, is ReplayedDelta (not
    counted as tampering) after the certificate expired, and the position is unchanged."""
    v1 = build_delta(t.gz, FeedHead.genesis("440100"), issued_at=NOW)
    v2 = build_delta(t.gz, FeedHead("440100", 1, v1.digest), issued_at=NOW)
    position = FeedPosition(FeedHead("440100", 3, bytes(32)), NOW)
    late = AcceptPolicy(now=END + DAY)
    with pytest.raises(ReplayedDelta):
        accept_delta(position, v2, t.keys(), late)
    assert position == FeedPosition(FeedHead("440100", 3, bytes(32)), NOW)
    with pytest.raises(UnknownKey, match="expired"):  # moving the feed forward: refused
        accept_delta(position, build_delta(t.gz, position.head, issued_at=NOW), t.keys(), late)


def test_keyring_from_chains_leaves_out_a_key_certified_for_two_publishers(t: Tree) -> None:
    """Each of the key's chains gets a ConflictingCertificates naming its leaf certificate
    (the last of the chain, however long) and both publishers; the key is in neither
    publisher's keyring."""
    sub_key, sub = t.cert(t.gz, "440105", ["440105"], 53)
    twin = dataclasses.replace(sub_key, publisher="440106")
    other = issue_certificate(t.gd, twin, ["440106"], START, END, serial=50)
    chains = [[t.gd_cert], [t.gd_cert, t.gz_cert], [t.gd_cert, t.gz_cert, sub], [t.gd_cert, other]]
    ring, errors = keyring_from_chains(chains, t.anchor, [], NOW)
    assert sub_key.key_id not in ring and t.gz.key_id in ring
    assert [str(e) for e in errors] == [
        f"{leaf.label}: key {sub_key.key_id.hex()} is certified for publishers ['440105', '440106']"
        for leaf in (sub, other)
    ]
    assert [e.certificate for e in errors] == [sub, other]


def test_the_root_signs_only_when_its_empty_chain_is_configured(t: Tree) -> None:
    """The empty chain names the anchor itself: configured, the root key is a signing key of
    publisher 000000 (claimed, certified for it); not configured, it is not."""
    root_id = t.anchor.key_id
    keys = certified_keys_from_records(t.anchor, [[], [t.gd_cert]], [], [], NOW)
    assert keys.key_at(root_id, NOW) is not None
    assert keys.certified_publishers(root_id) == {"000000"}
    claimed = keys.claimed(root_id)
    assert claimed is not None and claimed.publisher == "000000"
    assert t.keys().key_at(root_id, NOW) is None


def test_a_claim_carries_its_chain_depth_certifier_and_certificate(t: Tree) -> None:
    """What the publisher directory ranks by (publishers.py): the chain's length, the leaf
    certificate's certifier, not_before and serial."""
    claims = {(c.publisher, c.prefix): c for c in t.keys().claims()}
    gz, gd = claims["440100", "4401"], claims["440000", "44"]
    assert (gz.depth, gz.issuer_publisher, gz.issuer_key_id) == (2, "440000", t.gd.key_id)
    assert (gz.not_before, gz.serial, gd.depth, gd.serial) == (START, 10, 1, 1)
    assert gd.issuer_publisher == "000000"


def test_a_key_no_chain_names_has_no_version_limit(t: Tree) -> None:
    assert t.keys().version_limit(SigningKey.generate("440100", ["4401"]).key_id, NOW) is None


@pytest.mark.parametrize("order", ["expired_first", "revoked_first"])
def test_a_revocation_is_the_reason_given_when_any_chain_is_revoked(t: Tree, order: str) -> None:
    """Of several chains that all fail (one not valid yet, one revoked), the certifier's
    revocation is the reason reported (its explicit word), whatever the order."""
    # The province's rotated key certifies Guangzhou from tomorrow (newest: its chain is
    # tried first); its current key revoked Guangzhou's key yesterday (two chains of one
    # depth, two certifiers).
    gd2 = SigningKey.generate("440000", ["44"])
    gd2_cert = issue_certificate(t.root, gd2, ["44"], START, END + 2 * DAY, serial=54)
    stale = issue_certificate(gd2, t.gz, ["4401"], NOW + DAY, END + DAY, serial=51)
    revoked = issue_revocation(t.gd, t.gz.key_id, NOW - DAY, RevocationReason.COMPROMISED, 52)
    chains = [[gd2_cert, stale], [t.gd_cert, t.gz_cert]]
    if order == "revoked_first":
        chains.reverse()
    keys = certified_keys_from_records(t.anchor, [[t.gd_cert], *chains], [], [revoked], NOW)
    assert sum(1 for c in keys.chains if c and c[-1].key_id == t.gz.key_id) == 2
    with pytest.raises(KeyRevoked):
        keys.key_at(t.gz.key_id, NOW)
