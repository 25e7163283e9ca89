from __future__ import annotations

from pathlib import Path

import pytest

from blacklist.authority import Authority, OutOfScope, Revocation
from blacklist.checker import Checker, CheckStatus
from blacklist.clock import ManualClock
from blacklist.entry import Reason
from blacklist.errors import CardIdError
from blacklist.store import INDEX_FILE, RevocationStore
from tests.conftest import Keys, card

T = 1_749_000_000


@pytest.fixture
def gz(store: RevocationStore, keys: Keys, clock: ManualClock) -> Authority:
    return Authority(store, keys.gz, keys.ring, clock=clock)


def test_four_statuses(
    store: RevocationStore, keys: Keys, gz: Authority, clock: ManualClock
) -> None:
    revoked, fine = card(), card()
    gz.publish([Revocation(revoked, Reason.DAMAGED, T)])
    checker = Checker(store, keys.ring, clock=clock)

    r = checker.check(revoked.lower())
    assert r.status is CheckStatus.REVOKED
    assert (r.reason, r.effective_time, r.publisher, r.feed_version) == (
        Reason.DAMAGED,
        T,
        "440100",
        1,
    )
    assert r.entry is not None and r.entry.card_id == revoked

    ok = checker.check(fine)
    assert (ok.status, ok.publisher, ok.feed_version) == (CheckStatus.NOT_REVOKED, "440100", 1)
    assert checker.check(card("120100")).status is CheckStatus.UNKNOWN_ISSUER
    no_data = checker.check(card("110100"))
    assert (no_data.status, no_data.publisher) == (CheckStatus.NO_DATA, "110100")
    assert no_data.feed_age_seconds is None


def test_feed_age_grows_until_a_signed_head_statement(
    store: RevocationStore, keys: Keys, gz: Authority, clock: ManualClock
) -> None:
    gz.publish([Revocation(card(), Reason.LOSS, T)])
    checker = Checker(store, keys.ring, clock=clock)
    assert checker.check(card()).feed_age_seconds == 0
    clock.advance(90)
    assert checker.check(card()).feed_age_seconds == 90
    store.accept_statements([gz.head_statement()], keys.ring, clock(), 0)
    assert checker.check(card()).feed_age_seconds == 0


def test_reinstate_makes_card_valid_again(
    store: RevocationStore, keys: Keys, gz: Authority
) -> None:
    c = card()
    gz.publish([Revocation(c, Reason.TEMPORARY_LOSS, T)])
    checker = Checker(store, keys.ring)
    assert checker.check(c).revoked
    gz.publish(reinstatements=[c])
    assert checker.check(c).status is CheckStatus.NOT_REVOKED
    assert checker.check(c).feed_version == 2


def test_authority_refuses_out_of_scope(store: RevocationStore, gz: Authority) -> None:
    with pytest.raises(OutOfScope, match="110100"):
        gz.publish([Revocation(card("110100"), Reason.LOSS, T)])
    assert store.heads() == {}


def test_check_many_matches_check(store: RevocationStore, keys: Keys, gz: Authority) -> None:
    revoked = [card() for _ in range(50)]
    gz.publish([Revocation(c, Reason.LOSS, T) for c in revoked])
    batch = revoked[:20] + [card() for _ in range(30)] + [card("120100"), card("110100")]
    checker = Checker(store, keys.ring)
    result = checker.check_many(batch)
    assert len(result) == len(batch)
    assert set(result.revoked) == set(range(20))
    for i, c in enumerate(batch):
        single = checker.check(c)
        assert result[i].status is single.status
        assert result.statuses[i] == single.status
        assert result[i].entry == single.entry
    assert result.counts() == {
        CheckStatus.REVOKED: 20,
        CheckStatus.NOT_REVOKED: 30,
        CheckStatus.UNKNOWN_ISSUER: 1,
        CheckStatus.NO_DATA: 1,
    }


def test_answers_without_a_feed_name_version_zero_in_single_and_batch(
    store: RevocationStore, keys: Keys, gz: Authority
) -> None:
    """UNKNOWN_ISSUER (no publisher) and NO_DATA (a publisher, no feed yet) carry feed
    version 0 and no signed time, whether asked alone, in a batch, or again from the cache."""
    gz.publish([Revocation(card(), Reason.LOSS, T)])
    checker = Checker(store, keys.ring)
    expected = {
        card("120100"): (CheckStatus.UNKNOWN_ISSUER, None, 0, None),
        card("110100"): (CheckStatus.NO_DATA, "110100", 0, None),
    }
    for _ in range(2):  # the second time from the cached answers
        batch = checker.check_many(list(expected))
        for i, (c, want) in enumerate(expected.items()):
            for r in (checker.check(c), batch[i]):
                assert (r.status, r.publisher, r.feed_version, r.feed_checked_at) == want


@pytest.mark.parametrize("bad", ["", "440100", card() + "0", card()[:-1] + "G", card("990100")])
def test_malformed_ids_are_refused(store: RevocationStore, keys: Keys, bad: str) -> None:
    checker = Checker(store, keys.ring)
    with pytest.raises(CardIdError):
        checker.check(bad)
    with pytest.raises(CardIdError) as info:
        checker.check_many([card(), bad])
    assert info.value.index == 1


def test_index_is_saved_and_reloaded(tmp_path: Path, keys: Keys) -> None:
    path = tmp_path / "s"
    store = RevocationStore(path, map_size=1 << 28)
    Authority(store, keys.gz, keys.ring).publish([Revocation(card(), Reason.LOSS, T)] * 1)
    store.close()
    saved = (path / INDEX_FILE).read_bytes()
    reopened = RevocationStore(path, map_size=1 << 28)
    assert len(reopened.index) == 1
    assert reopened.index.to_bytes(reopened.generation) == saved
    reopened.close()


def test_stale_or_corrupt_index_is_rebuilt(tmp_path: Path, keys: Keys) -> None:
    path = tmp_path / "s"
    store = RevocationStore(path, map_size=1 << 28)
    gz = Authority(store, keys.gz, keys.ring)
    first = card()
    gz.publish([Revocation(first, Reason.LOSS, T)])
    store.save_index()
    second = card()
    gz.publish([Revocation(second, Reason.LOSS, T)])
    store.close(save_index=False)  # a crash: the saved index predates the second delta
    reopened = RevocationStore(path, map_size=1 << 28)
    assert Checker(reopened, keys.ring).check(second).revoked
    reopened.close(save_index=False)
    (path / INDEX_FILE).write_bytes(b"FPX2 junk")
    again = RevocationStore(path, map_size=1 << 28)
    assert Checker(again, keys.ring).check(first).revoked
    again.close()


def test_index_widens_as_entries_grow(tmp_path: Path, keys: Keys) -> None:
    store = RevocationStore(tmp_path / "s", map_size=1 << 28)
    assert store.index.width == 16
    gz = Authority(store, keys.gz, keys.ring)
    cards = [card() for _ in range(1000)]
    gz.publish([Revocation(c, Reason.LOSS, T) for c in cards])
    assert store.index.width == 18
    checker = Checker(store, keys.ring)
    assert checker.check_many(cards).counts() == {CheckStatus.REVOKED: 1000}
    store.close()


def test_new_keys_take_effect_at_the_next_check_whatever_the_store_epoch(
    store: RevocationStore, keys: Keys, gz: Authority
) -> None:
    """set_keys forgets every cached answer: a region whose publisher is no longer trusted
    answers UNKNOWN_ISSUER at once, at every store epoch (its sentinel matches none)."""
    from blacklist.signing import Keyring

    without_bj = Keyring(k.trusted() for k in (keys.gz, keys.sz, keys.gd))
    seen = set()
    for _ in range(4):
        checker = Checker(store, keys.ring)
        assert checker.check(card("110100")).status is CheckStatus.NO_DATA  # cached
        checker.set_keys(without_bj)
        assert checker.check(card("110100")).status is CheckStatus.UNKNOWN_ISSUER
        seen.add(store.epoch)
        gz.publish([Revocation(card(), Reason.LOSS, T)])
    assert 1 in seen  # where a sentinel of +1 would have matched


def test_a_region_first_seen_in_a_later_batch_of_the_same_snapshot_gets_its_own_answer(
    store: RevocationStore, keys: Keys, gz: Authority
) -> None:
    """Per-snapshot answers are cached per publisher slot; a batch that brings a new region
    (a new slot) while the snapshot is unchanged answers it from its own feed, not from the
    slots the earlier batch knew."""
    gz.publish([Revocation(card(), Reason.LOSS, T)])
    checker = Checker(store, keys.ring)
    first = checker.check_many([card("440100")])
    assert [first[0].status, first[0].publisher] == [CheckStatus.NOT_REVOKED, "440100"]
    later = checker.check_many([card("110100"), card("440100"), card("120100")])
    assert [(r.status, r.publisher, r.feed_version) for r in (later[i] for i in range(3))] == [
        (CheckStatus.NO_DATA, "110100", 0),
        (CheckStatus.NOT_REVOKED, "440100", 1),
        (CheckStatus.UNKNOWN_ISSUER, None, 0),
    ]


def test_a_stored_entry_answers_revoked_with_its_feed_even_when_its_region_is_untrusted(
    store: RevocationStore, keys: Keys, gz: Authority
) -> None:
    """No false negative: a card whose region no trusted key claims any more (keys changed,
    the entries stay) is still REVOKED, singly and in a batch, with the version of the feed
    that holds the entry, read from the batch's own snapshot."""
    from blacklist.signing import Keyring

    revoked, fine = card(), card()
    gz.publish([Revocation(revoked, Reason.DAMAGED, T)])
    without_gz = Keyring(k.trusted() for k in (keys.sz, keys.gd, keys.bj))
    batch = Checker(store, without_gz).check_many([fine, revoked])
    single = Checker(store, without_gz).check(revoked)
    for r in (batch[1], single):
        assert (r.status, r.publisher, r.feed_version) == (CheckStatus.REVOKED, "440100", 1)
        assert r.entry is not None and r.entry.card_id == revoked
    assert (batch[0].status, batch[0].publisher) == (CheckStatus.UNKNOWN_ISSUER, None)


def test_new_keys_change_a_batchs_answers_within_one_snapshot(
    store: RevocationStore, keys: Keys, gz: Authority
) -> None:
    """The per-snapshot slot answers belong to the old keys' slots: after set_keys, with no
    write in between, a batch answers with the new keys (UNKNOWN_ISSUER), not a stale slot."""
    from blacklist.signing import Keyring

    gz.publish([Revocation(card(), Reason.LOSS, T)])
    checker = Checker(store, keys.ring)
    assert checker.check_many([card("440100")])[0].status is CheckStatus.NOT_REVOKED
    checker.set_keys(Keyring(k.trusted() for k in (keys.sz, keys.gd, keys.bj)))
    after = checker.check_many([card("110100"), card("440100")])
    assert [after[0].status, after[1].status] == [CheckStatus.NO_DATA, CheckStatus.UNKNOWN_ISSUER]
