"""The second list kind (PSAM denials) and trust records travelling in feeds: codec,
acceptance, store, authority and checker, without a network."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from blacklist.authority import Authority, OutOfScope, PsamChanges, Revocation, build_delta
from blacklist.certs import RevocationReason, issue_certificate, issue_revocation
from blacklist.checker import Checker
from blacklist.clock import ManualClock
from blacklist.delta import FeedHead, sign_snapshot
from blacklist.deltadecode import decode, decode_delta
from blacklist.entry import Reason
from blacklist.entryblock import CardColumns, EntryColumns
from blacklist.errors import CodecError
from blacklist.psam import PsamIdError, canonical_psam, psam_columns, psam_key, psam_text
from blacklist.rejections import BadTrustRecord, DuplicateCard, KeyNotAllowed, KeyRevokedRejection
from blacklist.signing import SigningKey
from blacklist.store import RevocationStore
from blacklist.trust import CertifiedKeys, TrustAnchor, certified_keys_from_records
from tests.conftest import Keys, card

NOW = 1_750_000_000
DAY = 86_400
PSAM = "4401000123456789ABCDEF"
PSAM_SZ = "4403000000000000000042"


def psam(region: str = "440100", serial: int = 1) -> str:
    return f"{region}{serial:016X}"


# ---------------------------------------------------------------------------- ids
def test_psam_ids_parse_to_canonical_and_back() -> None:
    assert canonical_psam(PSAM.lower()) == PSAM
    assert psam_text(psam_key(PSAM)) == PSAM


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("440100", "length 6"),
        (PSAM + "0", "length 23"),
        ("44010X0123456789ABCDEF", "region"),
        ("4401000123456789ABCDEG", "hex"),
        ("9901000123456789ABCDEF", "no province"),
        (12345, "expected text"),
    ],
)
def test_malformed_psam_ids_name_the_problem(value: object, problem: str) -> None:
    with pytest.raises(PsamIdError, match=problem):
        canonical_psam(value)


@given(st.sampled_from(["110100", "440100", "650100"]), st.integers(0, 2**64 - 1))
def test_psam_key_round_trips(region: str, serial: int) -> None:
    text = f"{region}{serial:016X}"
    assert psam_text(psam_key(text)) == text


# ---------------------------------------------------------------------------- codec
def _gz_delta(keys: Keys, **kw: object) -> bytes:
    return build_delta(keys.gz, FeedHead.genesis("440100"), issued_at=NOW, **kw).to_bytes()  # type: ignore[arg-type]


def test_a_delta_carries_psams_and_trust_records(keys: Keys) -> None:
    records = (b"KREVxx", b"KCRTyy")
    changes = PsamChanges([Revocation(PSAM, Reason.LOSS, NOW)], [psam(serial=7)])
    data = _gz_delta(keys, psams=changes, trust=records)
    delta = decode_delta(data)
    assert [delta.psam_adds.cards.serial.tolist(), delta.psam_removes.serial.tolist()] == [
        [0x0123456789ABCDEF],
        [7],
    ]
    assert delta.trust == tuple(sorted(records))
    assert delta.to_bytes() == data


def test_a_delta_without_sections_costs_one_byte(keys: Keys) -> None:
    plain = decode_delta(_gz_delta(keys, revocations=[Revocation(card(), Reason.LOSS, NOW)]))
    assert plain.body[-1] == 0  # the sections byte
    assert len(plain.psam_adds) == 0 and plain.trust == ()


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        (b"\x08", "unknown section flags"),
        (b"\x04\x00", "the expiry section is flagged but empty"),
        (b"\x02\x00", "flagged but empty"),
        (b"\x02\x02\x01b\x01a", "ascending"),
        (b"", "sections"),
    ],
)
def test_bad_sections_do_not_decode(keys: Keys, tail: bytes, message: str) -> None:
    good = decode_delta(_gz_delta(keys))
    body = good.body[:-1] + tail
    from blacklist.binary import Writer

    w = Writer()
    w.raw(b"CRL1")
    w.blob(body)
    w.blob(good.signature)
    with pytest.raises(CodecError, match=message):
        decode(w.getvalue())


def test_a_psam_row_with_a_middle_part_does_not_decode(keys: Keys) -> None:
    bad = EntryColumns(
        CardColumns(
            np.array([440100], np.uint32), np.array([5], np.uint64), np.array([1], np.uint64)
        ),
        np.array([2], np.uint8),
        np.array([NOW], np.int64),
    )
    from blacklist.delta import sign_delta

    delta = sign_delta(
        keys.gz,
        FeedHead.genesis("440100"),
        EntryColumns.empty(),
        CardColumns.empty(),
        NOW,
        psam_adds=bad,
    )
    with pytest.raises(CodecError, match="non-zero middle"):
        decode(delta.to_bytes())


# ---------------------------------------------------------------------------- store
@pytest.fixture
def gz(store: RevocationStore, keys: Keys, clock: ManualClock) -> Authority:
    return Authority(store, keys.gz, keys.ring, clock=clock)


def test_psam_denials_apply_check_and_lift(
    gz: Authority, store: RevocationStore, keys: Keys
) -> None:
    checker = Checker(store, keys.ring)
    assert checker.psam_denial(PSAM) is None
    delta, result = gz.publish_psams([Revocation(PSAM.lower(), Reason.LOSS, NOW)])
    assert delta is not None and result.psams_denied == 1
    denial = checker.psam_denial(PSAM)
    assert denial is not None and (denial.card_id, denial.reason, denial.publisher) == (
        PSAM,
        Reason.LOSS,
        "440100",
    )
    # the same denial again changes nothing, and signs nothing
    again, _ = gz.publish_psams([Revocation(PSAM, Reason.LOSS, NOW)])
    assert again is None and store.head("440100").version == 1
    lifted, result = gz.publish_psams(lifted=[PSAM, psam(serial=99)])
    assert lifted is not None and (result.psams_removed, result.absent_removes) == (1, 1)
    assert checker.psam_denial(PSAM) is None


def test_psam_denials_survive_a_reopen(
    gz: Authority, store: RevocationStore, tmp_path: Path, keys: Keys
) -> None:
    gz.publish_psams([Revocation(PSAM, Reason.DAMAGED, NOW)])
    store.close()
    again = RevocationStore(tmp_path / "store", map_size=1 << 30)
    try:
        entry = Checker(again, keys.ring).psam_denial(PSAM)
        assert entry is not None and entry.reason is Reason.DAMAGED
    finally:
        again.close()


def test_an_authority_denies_only_psams_in_its_scope(gz: Authority) -> None:
    with pytest.raises(OutOfScope, match="PSAM 4403"):
        gz.publish_psams([Revocation(PSAM_SZ, Reason.LOSS, NOW)])


def test_a_psam_outside_the_signing_key_scope_is_refused(
    store: RevocationStore, keys: Keys
) -> None:
    rogue = dataclasses.replace(keys.gz, prefixes=("4401", "4403"))  # claims Shenzhen too
    delta = build_delta(
        rogue,
        FeedHead.genesis("440100"),
        issued_at=NOW,
        psams=PsamChanges([Revocation(PSAM_SZ, Reason.LOSS, NOW)]),
    )
    with pytest.raises(KeyNotAllowed, match="region 440300"):
        store.apply_delta(delta, keys.ring)
    assert store.head("440100").version == 0 and len(store.psams) == 0


def test_a_psam_twice_in_one_delta_is_refused(store: RevocationStore, keys: Keys) -> None:
    delta = build_delta(
        keys.gz,
        FeedHead.genesis("440100"),
        issued_at=NOW,
        psams=PsamChanges([Revocation(PSAM, Reason.LOSS, NOW)], [PSAM]),
    )
    with pytest.raises(DuplicateCard):
        store.apply_delta(delta, keys.ring)
    assert len(store.psams) == 0


def test_a_snapshot_carries_psams_and_trust_records(
    store: RevocationStore, keys: Keys, tmp_path: Path, clock: ManualClock
) -> None:
    gz = Authority(store, keys.gz, keys.ring, clock=clock)
    gz.publish([Revocation(card(), Reason.LOSS, NOW)])
    gz.publish_psams([Revocation(PSAM, Reason.LOSS, NOW)])
    entries, versions = store.feed_entries("440100")
    psams, psam_versions = store.psams.feed_psams("440100")
    snap = sign_snapshot(
        keys.gz,
        store.head("440100"),
        entries,
        versions,
        NOW,
        psams=psams,
        psam_versions=psam_versions,
    )
    fresh = RevocationStore(tmp_path / "fresh", map_size=1 << 30)
    try:
        result = fresh.apply(decode(snap.to_bytes()).to_bytes(), keys.ring)
        assert result.psams_denied == 1
        entry = Checker(fresh, keys.ring).psam_denial(PSAM)
        assert entry is not None and entry.version == 2
    finally:
        fresh.close()


# ---------------------------------------------------------------------------- trust records
class Hierarchy:
    def __init__(self) -> None:
        self.root = SigningKey.generate("000000", [])
        self.anchor = TrustAnchor.of(self.root)
        self.gd = SigningKey.generate("440000", ["44"])
        self.gz = SigningKey.generate("440100", ["4401"])
        self.gz2 = SigningKey.generate("440100", ["4401"])
        start, end = NOW - 365 * DAY, NOW + 365 * DAY
        self.gd_cert = issue_certificate(self.root, self.gd, ["44"], start, end, serial=1)
        self.gz_cert = issue_certificate(self.gd, self.gz, ["4401"], start, end, serial=10)
        self.gz2_cert = issue_certificate(self.gd, self.gz2, ["4401"], NOW, end, serial=11)
        self.revoke_gz = issue_revocation(
            self.gd, self.gz.key_id, NOW + 100, RevocationReason.COMPROMISED, serial=1
        )

    def keys(self, records: list[bytes] = []) -> CertifiedKeys:  # noqa: B006
        return certified_keys_from_records(
            self.anchor, [[], [self.gd_cert]], records, [], NOW + 200
        )


@pytest.fixture(scope="module")
def h() -> Hierarchy:
    return Hierarchy()


def test_a_certificate_in_the_province_feed_lets_a_city_key_in(
    store: RevocationStore, h: Hierarchy
) -> None:
    keys = h.keys()
    assert h.gz.key_id not in keys
    delta = build_delta(
        h.gd, FeedHead.genesis("440000"), issued_at=NOW, trust=[h.gz_cert.to_bytes()]
    )
    assert store.apply_delta(delta, keys).trust_records == 1
    keys = h.keys(store.trust.records())
    assert keys[h.gz.key_id].prefixes == ("4401",)
    city = build_delta(
        h.gz, FeedHead.genesis("440100"), [Revocation(card(), Reason.LOSS, NOW)], issued_at=NOW
    )
    store.apply_delta(city, keys)


def test_a_key_revocation_in_the_province_feed_stops_later_deltas(
    store: RevocationStore, h: Hierarchy
) -> None:
    records = [h.gz_cert.to_bytes(), h.gz2_cert.to_bytes()]
    store.apply_delta(
        build_delta(h.gd, FeedHead.genesis("440000"), issued_at=NOW, trust=records), h.keys()
    )
    keys = h.keys(store.trust.records())
    first = build_delta(
        h.gz, FeedHead.genesis("440100"), [Revocation(card(), Reason.LOSS, NOW)], issued_at=NOW
    )
    store.apply_delta(first, keys)
    revoke = build_delta(
        h.gd, store.head("440000"), issued_at=NOW + 150, trust=[h.revoke_gz.to_bytes()]
    )
    store.apply_delta(revoke, keys)
    keys = h.keys(store.trust.records())
    late = build_delta(
        h.gz, store.head("440100"), [Revocation(card(), Reason.LOSS, NOW)], issued_at=NOW + 101
    )
    with pytest.raises(KeyRevokedRejection):
        store.apply_delta(late, keys)
    assert store.head("440100").version == 1
    # the feed continues under the newly certified key
    rotated = build_delta(
        h.gz2, store.head("440100"), [Revocation(card(), Reason.LOSS, NOW)], issued_at=NOW + 101
    )
    store.apply_delta(rotated, keys)
    assert store.head("440100").version == 2


@pytest.mark.parametrize("case", ["foreign_issuer", "beyond_scope", "garbage", "forged"])
def test_bad_trust_records_reject_the_whole_delta(
    store: RevocationStore, h: Hierarchy, case: str
) -> None:
    other = SigningKey.generate("440300", ["4403"])
    record = {
        "foreign_issuer": issue_certificate(h.root, other, ["4403"], NOW, NOW + DAY, 5).to_bytes(),
        "beyond_scope": issue_certificate(
            h.gd, other, ["4403", "11"], NOW, NOW + DAY, 5
        ).to_bytes(),
        "garbage": b"KCRT\x01nonsense",
        "forged": dataclasses.replace(h.gz_cert, signature=bytes(64)).to_bytes(),
    }[case]
    delta = build_delta(h.gd, FeedHead.genesis("440000"), issued_at=NOW, trust=[record])
    with pytest.raises(BadTrustRecord):
        store.apply_delta(delta, h.keys())
    assert store.head("440000").version == 0 and len(store.trust) == 0


def test_chains_are_found_through_loose_certificates(h: Hierarchy) -> None:
    keys = certified_keys_from_records(
        h.anchor, [], [h.gz_cert.to_bytes(), h.gd_cert.to_bytes()], [], NOW
    )
    assert {keys[h.gz.key_id].publisher, keys[h.gd.key_id].publisher} == {"440100", "440000"}
    orphan = certified_keys_from_records(h.anchor, [], [h.gz_cert.to_bytes()], [], NOW)
    assert h.gz.key_id not in orphan


def test_publish_trust_skips_records_already_published(tmp_path: Path, h: Hierarchy) -> None:
    store = RevocationStore(tmp_path / "gd", map_size=1 << 30, clock=ManualClock(NOW))
    try:
        gd = Authority(store, h.gd, h.keys(), clock=ManualClock(NOW))
        first, _ = gd.publish_trust([h.gz_cert.to_bytes()])
        again, _ = gd.publish_trust([h.gz_cert.to_bytes()])
        assert first is not None and again is None and store.head("440000").version == 1
    finally:
        store.close()


def test_psam_columns_validate() -> None:
    with pytest.raises(PsamIdError):
        psam_columns(["nonsense"])


# ---------------------------------------------------------------------------- audit
def test_audit_records_commit_with_their_delta_or_not_at_all(
    gz: Authority, store: RevocationStore
) -> None:
    from blacklist.audit import AuditAction, AuditChange

    def audit(txn: object, delta: object) -> None:
        store.audit.stage(
            txn,
            AuditAction.PSAM_REVOKE,
            [AuditChange(PSAM, 2)],
            operator="op",
            feed_version=1,
            when=NOW,
        )

    def audit_then_fail(txn: object, delta: object) -> None:
        audit(txn, delta)
        raise RuntimeError("the disk filled up")

    with pytest.raises(RuntimeError):
        gz.publish_psams([Revocation(PSAM, Reason.LOSS, NOW)], also=audit_then_fail)
    assert store.head("440100").version == 0 and store.audit.count() == 0
    assert len(store.psams) == 0
    gz.publish_psams([Revocation(PSAM, Reason.LOSS, NOW)], also=audit)
    [record] = list(store.audit.records(card_id=PSAM))
    assert (record.card_id, record.action, record.operator) == (PSAM, AuditAction.PSAM_REVOKE, "op")
    assert list(store.audit.records(card_id=card())) == []


def test_a_rotated_certifier_snapshots_what_its_old_key_issued(
    tmp_path: Path, h: Hierarchy
) -> None:
    """After the province's own key rotates, its snapshot (signed with the new key) still
    carries the certificates its old key issued, and its new certificate (issued by the
    root) travels in its own feed; a record from an unrelated key does not."""
    gd2 = SigningKey.generate("440000", ["44"])
    gd2_cert = issue_certificate(h.root, gd2, ["44"], NOW - DAY, NOW + DAY, serial=9)
    store = RevocationStore(tmp_path / "gd", map_size=1 << 30, clock=ManualClock(NOW))
    try:
        old = Authority(store, h.gd, h.keys(), clock=ManualClock(NOW))
        old.publish_trust([h.gz_cert.to_bytes()])
        # The new key's own certificate, published under the old key before the switch.
        store.apply_delta(
            build_delta(h.gd, store.head("440000"), issued_at=NOW, trust=[gd2_cert.to_bytes()]),
            h.keys(store.trust.records()),
        )
        keys = h.keys(store.trust.records())
        assert keys[gd2.key_id].publisher == "440000"
        new = Authority(store, gd2, keys, clock=ManualClock(NOW + 1))
        entries, versions = store.feed_entries("440000")
        snap = sign_snapshot(
            gd2,
            store.head("440000"),
            entries,
            versions,
            NOW + 1,
            trust=store.trust.records("440000"),
        )
        store.keep_snapshot(snap, keys)  # old-key and root-issued records: accepted
        fresh = RevocationStore(tmp_path / "fresh", map_size=1 << 30, clock=ManualClock(NOW))
        try:
            assert fresh.apply_snapshot(snap, keys).trust_records == 2
        finally:
            fresh.close()
        stranger = issue_certificate(
            h.gz, SigningKey.generate("440100", ["4401"]), ["4401"], NOW, NOW + DAY, 3
        )
        bad = build_delta(gd2, store.head("440000"), issued_at=NOW + 2, trust=[stranger.to_bytes()])
        with pytest.raises(BadTrustRecord, match="not a key of publisher 440000"):
            store.apply_delta(bad, keys)
        assert new.publisher == "440000"
    finally:
        store.close()
