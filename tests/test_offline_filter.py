"""The binary fuse filter (blacklist/filters/fuse.py) and the signed offline filter file
(blacklist/filters/offline.py, export.py): no false negatives, the stated false-positive
rate, the layout's limits, who may sign, expiry, and updates that ship only what moved."""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blacklist.certs import issue_certificate
from blacklist.chainverify import TrustAnchor
from blacklist.filters import export, fuse, offline, offline_read
from blacklist.filters.offline import Verdict
from blacklist.signing import SigningKey
from tests.filter_fixtures import ANCHOR, CHAINS, DAY, GD, GZ, ROOT, T, World, card, psam


# ---------------------------------------------------------------------------- fuse
@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 100, 1000, 30_000])
def test_every_key_is_a_member(n: int) -> None:
    keys = np.random.default_rng(n).integers(0, 2**64, n, dtype=np.uint64)
    f = fuse.build(keys)
    assert f.size == len(np.unique(keys))
    assert f.contains_many(keys).all()
    assert all(f.contains_hash(int(k)) for k in keys[:300])


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(
        st.one_of(
            st.integers(0, 2**64 - 1),
            st.integers(0, 64),  # small, close keys
            st.integers(2**64 - 64, 2**64 - 1),  # and at the top, where k + seed wraps
        ),
        max_size=400,
    )
)
def test_every_key_of_any_set_is_a_member(keys: list[int]) -> None:
    f = fuse.build(np.array(keys, dtype=np.uint64))
    assert f.size == len(set(keys))
    assert all(f.contains_hash(k) for k in keys)
    assert f.contains_many(np.array(keys, dtype=np.uint64)).all()


def test_duplicates_are_dropped_and_the_build_is_deterministic() -> None:
    keys = np.random.default_rng(3).integers(0, 2**64, 5000, dtype=np.uint64)
    f = fuse.build(np.concatenate((keys, keys[:100])))
    assert f.size == 5000
    assert f == fuse.build(keys[::-1].copy())


def test_false_positive_rate_and_size_are_binary_fuse_8s() -> None:
    rng = np.random.default_rng(8)
    f = fuse.build(rng.integers(0, 2**64, 200_000, dtype=np.uint64))
    rate = float(f.contains_many(rng.integers(0, 2**64, 400_000, dtype=np.uint64)).mean())
    # 2**-8 = 0.39%; 400k trials put 5 standard deviations at about +-0.05%.
    assert 0.0034 < rate < 0.0045
    assert f.bits_per_entry < 9.6  # 9.04 at 1M (bench); small sets pay a little more


def test_scalar_and_vector_queries_agree_on_non_members() -> None:
    rng = np.random.default_rng(5)
    f = fuse.build(rng.integers(0, 2**64, 3000, dtype=np.uint64))
    probes = rng.integers(0, 2**64, 5000, dtype=np.uint64)
    assert [f.contains_hash(int(k)) for k in probes] == f.contains_many(probes).tolist()


def test_an_empty_filter_contains_nothing_even_where_its_zero_bytes_match() -> None:
    f = fuse.build(np.zeros(0, dtype=np.uint64))
    probes = np.arange(2000, dtype=np.uint64)
    assert not f.contains_many(probes).any()
    assert not any(f.contains_hash(int(k)) for k in probes)


def test_the_largest_filter_keeps_its_product_below_2_to_the_32() -> None:
    # The query's 32-bit-pieces multiply (C and numpy) needs segment_count_length < 2**32.
    assert fuse.FuseLayout.for_size(fuse.MAX_KEYS).segment_count_length < 2**32
    assert fuse.FuseLayout.for_size(fuse.MAX_KEYS).segment_length == fuse.MAX_SEGMENT_LENGTH


@pytest.mark.parametrize(
    ("length", "ok"), [(1 << 18, True), ((1 << 18) + 1, False), (1 << 19, False), (3, False)]
)
def test_segment_length_limit(length: int, ok: bool, tmp_path: Path) -> None:
    w = World(tmp_path)
    w.publish("440100", [card(1)])
    f, _ = w.export()
    p = f.partitions[0]
    layout = fuse.FuseLayout(length, 1)
    cards = fuse.FuseFilter(p.cards.seed, layout, bytes(layout.array_length), p.cards.size)
    bad = dataclasses.replace(f, partitions=(dataclasses.replace(p, cards=cards),))
    if ok:
        assert offline_read.parse(bad.to_bytes()).partitions[0].cards.layout == layout
    else:
        with pytest.raises(offline.FilterFormatError, match="segment length"):
            offline_read.parse(bad.to_bytes())


# ---------------------------------------------------------------------------- answers
@pytest.fixture
def world(tmp_path: Path) -> World:
    w = World(tmp_path)
    w.publish("440100", [card(i) for i in range(200)], deny=[psam(7)])
    w.publish("440300", [card(i, "440304") for i in range(100)])
    w.publish("110100", [card(i, "110101") for i in range(10)])
    w.state("440100")
    return w


def test_answers_of_a_verified_filter(world: World) -> None:
    f, _ = world.export()
    g = offline_read.verify(f.to_bytes(), ANCHOR, now=T)
    assert g.check_card(card(3), T).verdict is Verdict.MAYBE_REVOKED
    assert g.check_card(card(3), T).publisher == "440100"
    assert g.check_card(card(3).lower(), T).verdict is Verdict.MAYBE_REVOKED
    assert g.check_card(card(1, "440304"), T).publisher == "440300"
    assert g.check_card(card(1, "110101"), T).verdict is Verdict.OUT_OF_SCOPE
    assert g.check_card("not a card", T).verdict is Verdict.MALFORMED
    assert g.check_card(None, T).verdict is Verdict.MALFORMED
    assert g.check_psam(psam(7), T).verdict is Verdict.MAYBE_REVOKED
    assert g.check_psam(psam(8), T).verdict is Verdict.NOT_REVOKED
    assert g.check_psam(card(3), T).verdict is Verdict.MALFORMED
    answer = g.check_card(card(3, "440105"), T)  # a region no partition holds
    assert answer.verdict is Verdict.NOT_REVOKED
    assert answer.false_positive_rate == 2**-8
    assert [p.publisher for p in g.partitions] == ["440100", "440300"]


def test_expiry_at_below_and_above(world: World) -> None:
    f, _ = world.export(valid=DAY)
    assert f.check_card(card(3), T + DAY - 1).verdict is Verdict.MAYBE_REVOKED
    assert f.check_card(card(3), T + DAY).verdict is Verdict.EXPIRED
    assert f.check_card(card(500), T + DAY + 1).verdict is Verdict.EXPIRED
    assert f.check_card("bad", T + DAY).verdict is Verdict.MALFORMED  # input first


def test_partitions_name_heads_and_signed_freshness(world: World) -> None:
    f, _ = world.export()
    by = {p.publisher: p for p in f.partitions}
    gz = by["440100"]
    assert (gz.version, gz.head_digest) == (1, world.store.head("440100").digest)
    assert gz.fresh_at == world.store.feeds["440100"].checked_at
    statement = world.store.statements.newest("440100")
    assert statement is not None and gz.statement == statement.to_bytes()
    assert by["440300"].statement == b""
    assert "110100" not in by  # another province's feed is not under 44
    assert gz.regions == (440100,)


# ---------------------------------------------------------------------------- signing
def test_signer_must_be_certified_for_the_scope(world: World) -> None:
    # A province key for 44 may sign 44 and 4401; a city key for 4401 may sign 4401 only.
    for scope, signer in (("44", "440000"), ("4401", "440000"), ("4401", "440100")):
        f, _ = world.export(scope, signer)
        assert offline_read.verify(f.to_bytes(), ANCHOR, now=T).scope == scope
    f, _ = world.export("44", "440100")
    with pytest.raises(offline.FilterSignerNotAllowed, match=r"\['4401'\].*'44'"):
        offline_read.verify(f.to_bytes(), ANCHOR, now=T)
    f, _ = world.export("4403", "440100")
    with pytest.raises(offline.FilterSignerNotAllowed):
        offline_read.verify(f.to_bytes(), ANCHOR, now=T)


def test_the_root_may_sign_any_scope(world: World) -> None:
    sources = export.sources_from_store(world.store, "44", {})
    parts = export.build_partitions(sources).partitions
    f = export.sign_filter(ROOT, [], "44", T, T + DAY, parts)
    assert offline_read.verify(f.to_bytes(), ANCHOR, now=T).signer == "000000"


def test_a_forged_or_foreign_filter_is_refused(world: World) -> None:
    f, _ = world.export()
    forged = dataclasses.replace(f, signature=bytes(64))
    with pytest.raises(offline.FilterSignatureError, match="does not verify"):
        offline_read.verify(forged.to_bytes(), ANCHOR, now=T)
    # Change what the header says: the signature no longer covers it.
    later = dataclasses.replace(f, expires_at=f.expires_at + 365 * DAY)
    with pytest.raises(offline.FilterSignatureError):
        offline_read.verify(later.to_bytes(), ANCHOR, now=T)
    other_root = TrustAnchor.of(SigningKey.generate("000000", [""]))
    with pytest.raises(offline.FilterSignatureError, match="chain"):
        offline_read.verify(f.to_bytes(), other_root, now=T)
    # A chain that certifies another key than the one named.
    wrong = dataclasses.replace(f, chain=tuple(c.to_bytes() for c in CHAINS["440100"]))
    with pytest.raises(offline.FilterSignatureError, match="certifies key"):
        offline_read.verify(wrong.to_bytes(), ANCHOR, now=T)


def test_an_expired_certificate_is_refused_at_now(world: World) -> None:
    short = issue_certificate(ROOT, GD, ["44"], T - DAY, T + 10, serial=9)
    sources = export.sources_from_store(world.store, "44", {})
    f = export.sign_filter(
        GD, [short], "44", T, T + DAY, export.build_partitions(sources).partitions
    )
    assert offline_read.verify(f.to_bytes(), ANCHOR, now=T + 10)
    with pytest.raises(offline.FilterSignatureError, match="expired"):
        offline_read.verify(f.to_bytes(), ANCHOR, now=T + 11)


def test_signing_refuses_a_chain_of_another_key() -> None:
    with pytest.raises(ValueError, match="leaf"):
        export.sign_filter(GZ, CHAINS["440000"], "4401", T, T + DAY, [])
    with pytest.raises(ValueError, match="before"):
        export.sign_filter(GD, CHAINS["440000"], "44", T, T, [])
    with pytest.raises(ValueError, match="scope"):
        export.sign_filter(GD, CHAINS["440000"], "4A", T, T + DAY, [])


def test_filter_magic_is_domain_separated() -> None:
    # A delta body starts with 1 or 2, a certificate with "K", a head statement with "H".
    assert offline.MAGIC[0] not in (1, 2, ord("K"), ord("H"))


# ---------------------------------------------------------------------------- updates
def test_an_update_rebuilds_and_ships_only_the_partition_that_moved(world: World) -> None:
    old, _ = world.export()
    world.clock.advance(30)
    world.state("440300")  # fresher, same head: taken over, not shipped
    world.publish("440100", [card(i, "440104") for i in range(1000, 2000)])
    new, built = world.export(previous=offline_read.parse(old.to_bytes()))
    assert built.rebuilt == ("440100",)
    assert "440300" in built.reused
    update = export.update_bytes(new, old)
    gz = next(p for p in new.partitions if p.publisher == "440100")
    assert len(gz.body) < len(update) < len(gz.body) + 2000
    applied = offline_read.verify(update, ANCHOR, now=T + 30, previous=old)
    assert applied.to_bytes() == new.to_bytes()
    sz = next(p for p in applied.partitions if p.publisher == "440300")
    assert sz.fresh_at == T + 30
    assert applied.check_card(card(1500, "440104"), T + 30).verdict is Verdict.MAYBE_REVOKED
    with pytest.raises(offline.FilterIntegrityError, match="update"):
        offline_read.parse(update)


# ---------------------------------------------------------------------------- no false negatives
_ops = st.lists(
    st.tuples(
        st.sampled_from(["440100", "440300", "440000"]),
        st.lists(st.integers(0, 400), max_size=40),
        st.lists(st.integers(0, 400), max_size=20),
    ),
    min_size=1,
    max_size=8,
)
_REGION = {"440100": "440101", "440300": "440304", "440000": "449900"}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_ops, lapse=st.booleans())
def test_no_false_negatives_after_revocations_and_reinstatements(
    ops: list[tuple[str, list[int], list[int]]], lapse: bool
) -> None:
    """Every card a store holds as revoked is MAYBE_REVOKED in the exported filter, after
    any sequence of revocations, reinstatements and (with ``lapse``) temporary losses that
    lapse while the clock moves, each file an update of the previous one; the store itself
    is checked against a plain dict of what should be revoked."""
    with tempfile.TemporaryDirectory() as tmp:
        w = World(Path(tmp))
        model: dict[str, int | None] = {}  # card -> end time (None: until reinstated)
        previous: offline.OfflineFilter | None = None
        for step, (publisher, revoke, reinstate) in enumerate(ops):
            region = _REGION[publisher]
            adds = sorted({card(i, region) for i in revoke})
            gone = sorted({card(i, region) for i in reinstate} - set(adds))
            now = int(w.clock())
            ends = now + 10 if lapse and step % 2 else None
            w.publish(publisher, adds, gone, expires_at=ends)
            model.update(dict.fromkeys(adds, ends))
            for c in gone:
                model.pop(c, None)
            if lapse:
                w.clock.advance(7)
                now = int(w.clock())
            live = {c for c, end in model.items() if end is None or end > now}
            f, _ = w.export(previous=previous)
            if previous is not None:
                f = offline_read.parse(export.update_bytes(f, previous), previous=previous)
            previous = f
            for c in live:
                assert f.check_card(c, now).verdict is Verdict.MAYBE_REVOKED, c
            assert {e.card_id for e in w.store.iter_entries("44")} == live
        w.store.close()


def test_every_revoked_card_of_a_real_store_is_maybe_revoked(world: World) -> None:
    world.publish(
        "440300", [card(i, "440305") for i in range(2000)], [card(i, "440304") for i in range(50)]
    )
    f, _ = world.export()
    entries = list(world.store.iter_entries("44"))
    assert len(entries) == 200 + 50 + 2000
    g = offline_read.verify(f.to_bytes(), ANCHOR, now=T)
    assert all(g.check_card(e.card_id, T).verdict is Verdict.MAYBE_REVOKED for e in entries)


def test_an_sm2_signer_signs_over_sm3(world: World) -> None:
    gd = SigningKey.generate("440000", ["4499"], "sm2-sm3")
    cert = issue_certificate(ROOT, gd, ["44"], T - DAY, T + DAY, serial=20)
    sources = export.sources_from_store(world.store, "44", {})
    f = export.sign_filter(
        gd, [cert], "44", T, T + DAY, export.build_partitions(sources).partitions
    )
    assert f.digest == gd.digest(f.header) != hashlib.sha256(f.header).digest()
    assert offline_read.verify(f.to_bytes(), ANCHOR, now=T).suite_id == gd.suite_id
    forged = dataclasses.replace(f, expires_at=f.expires_at + 1)
    with pytest.raises(offline.FilterSignatureError):
        offline_read.verify(forged.to_bytes(), ANCHOR, now=T)
