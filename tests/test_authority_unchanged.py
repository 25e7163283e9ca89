"""Authority.publish leaves out what would change nothing, and publishes no delta at all when
that is everything: entering the same list twice must not move the feed (issue #7)."""

from __future__ import annotations

import pytest

from blacklist.authority import Authority, OutOfScope, Revocation
from blacklist.cardid import text_to_key
from blacklist.clock import ManualClock
from blacklist.entry import Reason
from blacklist.errors import CardIdError
from blacklist.signing import Keyring, SigningKey
from blacklist.store import RevocationStore
from tests.conftest import Keys, card

T = 1_749_000_000


@pytest.fixture
def gz(store: RevocationStore, keys: Keys, clock: ManualClock) -> Authority:
    return Authority(store, keys.gz, keys.ring, clock=clock)


def test_the_same_revocations_again_publish_nothing(store: RevocationStore, gz: Authority) -> None:
    revocations = [Revocation(card(), Reason.LOSS, T + i) for i in range(5)]
    delta, first = gz.publish(revocations)
    assert delta is not None and first.version == 1
    head = store.head("440100")

    again, result = gz.publish(
        [Revocation(r.card_id.lower(), r.reason, r.effective_time) for r in revocations]
    )
    assert again is None
    assert (result.publisher, result.version, result.added, result.changed) == ("440100", 1, 0, 0)
    assert store.head("440100") == head
    assert store.retained_versions("440100") == [1]


def test_another_reason_or_time_is_a_change_and_only_changes_are_published(
    store: RevocationStore, gz: Authority
) -> None:
    same, other_reason, other_time = card(), card(), card()
    gz.publish([Revocation(c, Reason.LOSS, T) for c in (same, other_reason, other_time)])
    new = card()
    delta, result = gz.publish(
        [
            Revocation(same, Reason.LOSS, T),
            Revocation(other_reason, Reason.DAMAGED, T),
            Revocation(other_time, Reason.LOSS, T + 1),
            Revocation(new, 2, T),  # a reason given by number
        ]
    )
    assert delta is not None and len(delta.adds) == 3
    assert (result.version, result.added, result.changed) == (2, 1, 2)
    [entry] = store.lookup_all(text_to_key(other_reason))
    assert (entry.reason, entry.effective_time, entry.version) == (Reason.DAMAGED, T, 2)
    [entry] = store.lookup_all(text_to_key(same))
    assert entry.version == 1  # left alone


def test_pending_keeps_only_changes_in_canonical_form(gz: Authority) -> None:
    held, fresh = card(), card()
    gz.publish([Revocation(held, Reason.EXPIRED, T)])
    wanted, gone = gz.pending(
        [Revocation(held.lower(), Reason.EXPIRED, T), Revocation(fresh.lower(), "loss", T)],
        [held.lower(), card()],
    )
    assert wanted == [Revocation(fresh, Reason.LOSS, T)]
    assert gone == [held]


def test_reinstating_cards_not_held_publishes_nothing(
    store: RevocationStore, gz: Authority
) -> None:
    kept = card()
    gz.publish([Revocation(kept, Reason.LOSS, T)])
    delta, result = gz.publish(reinstatements=[card(), card()])
    assert delta is None
    assert (result.version, result.removed, result.absent_removes) == (1, 0, 2)

    delta, result = gz.publish(reinstatements=[kept, card()])
    assert delta is not None and len(delta.removes) == 1
    assert (result.version, result.removed, result.absent_removes) == (2, 1, 1)


def test_refusals_still_apply_to_cards_that_would_change_nothing(gz: Authority) -> None:
    with pytest.raises(OutOfScope):
        gz.publish(reinstatements=[card("110100")])  # not held, but not ours either
    with pytest.raises(CardIdError):
        gz.publish(reinstatements=["440100-not-a-card"])


def test_a_card_another_feed_also_holds_is_compared_with_our_entry(
    store: RevocationStore, keys: Keys, clock: ManualClock
) -> None:
    # Overlapping scopes: 440000 may also sign 4401 cards, and its entry sorts first.
    province = SigningKey.generate("440000", ["44"])
    city = SigningKey.generate("440100", ["4401"])
    ring = Keyring([province.trusted(), city.trusted()])
    c = card()
    Authority(store, province, ring, clock=clock).publish([Revocation(c, Reason.DAMAGED, T)])
    gz = Authority(store, city, ring, clock=clock)
    assert gz.pending([Revocation(c, Reason.LOSS, T)])[0] != []
    gz.publish([Revocation(c, Reason.LOSS, T)])
    assert gz.pending([Revocation(c, Reason.LOSS, T)]) == ([], [])
    assert gz.publish([Revocation(c, Reason.LOSS, T)])[0] is None
