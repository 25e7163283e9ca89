"""The publishing side: an authority turns revocations and reinstatements of cards in its own
scope into the next signed delta of its feed, and applies it to its own store through the same
acceptance checks every other node runs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from blacklist.cardbatch import columns_from_matrix, parse_many, rows_to_str
from blacklist.clock import Clock, system_clock
from blacklist.delta import Delta, FeedHead, Snapshot, sign_delta, sign_snapshot
from blacklist.entry import Reason
from blacklist.entryblock import CardColumns, EntryColumns
from blacklist.errors import BlacklistError
from blacklist.signing import SigningKey, TrustedKey
from blacklist.store import ApplyResult, RevocationStore
from blacklist.sync.plan import should_snapshot


class OutOfScope(BlacklistError, ValueError):
    """A card outside the authority's region prefixes."""


@dataclass(frozen=True, slots=True)
class Revocation:
    card_id: str
    reason: Reason
    effective_time: int


def cards_from_ids(card_ids: Sequence[str]) -> CardColumns:
    region, middle, serial = columns_from_matrix(parse_many(card_ids))
    return CardColumns(region, middle, serial)


def entries_from_revocations(revocations: Sequence[Revocation]) -> EntryColumns:
    cards = cards_from_ids([r.card_id for r in revocations])
    reasons = np.array([Reason.parse(r.reason) for r in revocations], dtype=np.uint8)
    times = np.array([r.effective_time for r in revocations], dtype=np.int64)
    return EntryColumns(cards, reasons, times)


def check_scope(key: SigningKey, card_ids: Iterable[str]) -> None:
    for card in card_ids:
        if not card[:6].startswith(key.prefixes):
            raise OutOfScope(
                f"card {card} (region {card[:6]}) is outside this authority's prefixes "
                f"{list(key.prefixes)}"
            )


def build_delta(
    key: SigningKey,
    head: FeedHead,
    revocations: Sequence[Revocation] = (),
    reinstatements: Sequence[str] = (),
    issued_at: int = 0,
) -> Delta:
    """The signed delta after ``head`` (pure: no store, no clock)."""
    canon = rows_to_str(parse_many([r.card_id for r in revocations]))
    gone = rows_to_str(parse_many(list(reinstatements)))
    check_scope(key, canon)
    check_scope(key, gone)
    adds = entries_from_revocations(
        [Revocation(c, r.reason, r.effective_time) for c, r in zip(canon, revocations, strict=True)]
    )
    return sign_delta(key, head, adds, cards_from_ids(gone), issued_at)


class Authority:
    """Publishes this node's own feed into its store."""

    def __init__(
        self,
        store: RevocationStore,
        key: SigningKey,
        keys: Mapping[bytes, TrustedKey],
        *,
        clock: Clock = system_clock,
    ) -> None:
        if key.key_id not in keys:
            raise ValueError(f"the signing key {key.key_id.hex()} is not among the trusted keys")
        self.store = store
        self.key = key
        self.keys = keys
        self._clock = clock

    @property
    def publisher(self) -> str:
        return self.key.publisher

    def publish(
        self,
        revocations: Sequence[Revocation] = (),
        reinstatements: Sequence[str] = (),
        *,
        snapshot: bool = True,
    ) -> tuple[Delta, ApplyResult]:
        """Sign and apply the next delta. ``snapshot=False`` leaves the snapshot policy to
        the caller (a node sends the delta on first, then calls :meth:`maybe_snapshot`)."""
        delta = build_delta(
            self.key,
            self.store.head(self.publisher),
            revocations,
            reinstatements,
            int(self._clock()),
        )
        result = self.store.apply_delta(delta, self.keys)
        if snapshot:
            self.maybe_snapshot()
        return delta, result

    def maybe_snapshot(self) -> Snapshot | None:
        """Sign and keep a snapshot of the feed when the policy asks for one (see
        blacklist.sync.plan.should_snapshot), so children can always bootstrap."""
        history = self.store.history(self.publisher)
        if not should_snapshot(history, self.store.archive.max_count or 1000):
            return None
        entries, versions = self.store.feed_entries(self.publisher)
        snapshot = sign_snapshot(
            self.key, self.store.head(self.publisher), entries, versions, int(self._clock())
        )
        self.store.keep_snapshot(snapshot, self.keys)
        return snapshot
