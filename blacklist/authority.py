"""The publishing side: an authority turns revocations and reinstatements of cards in its own
scope into the next signed delta of its feed, and applies it to its own store through the same
acceptance checks every other node runs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from blacklist.cardbatch import columns_from_matrix, keys_from_matrix, parse_many, rows_to_str
from blacklist.cardid import KEY_LENGTH, text_to_key
from blacklist.clock import Clock, system_clock
from blacklist.delta import Delta, FeedHead, Snapshot, sign_delta, sign_snapshot
from blacklist.entry import Reason
from blacklist.entryblock import CardColumns, EntryColumns
from blacklist.errors import BlacklistError
from blacklist.psam import PSAM_ID_LENGTH, canonical_psam, psam_columns, psam_key
from blacklist.records import decode_entry
from blacklist.signing import SigningKey, TrustedKey
from blacklist.store import ApplyResult, RevocationStore
from blacklist.sync.freshness import HeadStatement, sign_statement, statement_time
from blacklist.sync.plan import should_snapshot

# What a feed holds of a card: reason, effective time, end time (None: none).
Held = tuple[Reason, int, int | None]

# Writes in the transaction that applies a delta, given it and the delta (the audit log).
AlsoWrite = Callable[[Any, Delta], object]


class OutOfScope(BlacklistError, ValueError):
    """A card outside the authority's region prefixes."""


@dataclass(frozen=True, slots=True)
class Revocation:
    card_id: str
    reason: Reason
    effective_time: int
    expires_at: int | None = None  # when it lapses by itself (issue #17); None: never


def cards_from_ids(card_ids: Sequence[str]) -> CardColumns:
    region, middle, serial = columns_from_matrix(parse_many(card_ids))
    return CardColumns(region, middle, serial)


def entries_from_revocations(revocations: Sequence[Revocation]) -> EntryColumns:
    cards = cards_from_ids([r.card_id for r in revocations])
    reasons = np.array([Reason.parse(r.reason) for r in revocations], dtype=np.uint8)
    times = np.array([r.effective_time for r in revocations], dtype=np.int64)
    ends = np.array([r.expires_at or 0 for r in revocations], dtype=np.int64)
    return EntryColumns(cards, reasons, times, ends)


def check_scope(key: SigningKey, ids: Iterable[str]) -> None:
    """Card or PSAM ids (both start with their region code) within the key's prefixes."""
    for card in ids:
        if not card[:6].startswith(key.prefixes):
            what = "PSAM" if len(card) == PSAM_ID_LENGTH else "card"
            raise OutOfScope(
                f"{what} {card} (region {card[:6]}) is outside this authority's prefixes "
                f"{list(key.prefixes)}"
            )


@dataclass(frozen=True, slots=True)
class PsamChanges:
    """The PSAM side of a delta: denials (PSAM id as ``card_id``) and lifted denials."""

    denials: Sequence[Revocation] = ()
    lifted: Sequence[str] = ()


NO_PSAM_CHANGES = PsamChanges()


def _psam_block(key: SigningKey, changes: PsamChanges) -> tuple[EntryColumns, CardColumns]:
    denied = [canonical_psam(r.card_id) for r in changes.denials]
    lifted = [canonical_psam(p) for p in changes.lifted]
    check_scope(key, denied)
    check_scope(key, lifted)
    adds = EntryColumns(
        psam_columns(denied),
        np.array([Reason.parse(r.reason) for r in changes.denials], dtype=np.uint8),
        np.array([r.effective_time for r in changes.denials], dtype=np.int64),
    )
    return adds, psam_columns(lifted)


def build_delta(
    key: SigningKey,
    head: FeedHead,
    revocations: Sequence[Revocation] = (),
    reinstatements: Sequence[str] = (),
    issued_at: int = 0,
    *,
    psams: PsamChanges = NO_PSAM_CHANGES,
    trust: Sequence[bytes] = (),
) -> Delta:
    """The signed delta after ``head`` (pure: no store, no clock)."""
    canon = rows_to_str(parse_many([r.card_id for r in revocations]))
    gone = rows_to_str(parse_many(list(reinstatements)))
    check_scope(key, canon)
    check_scope(key, gone)
    adds = entries_from_revocations(
        [
            Revocation(c, r.reason, r.effective_time, r.expires_at)
            for c, r in zip(canon, revocations, strict=True)
        ]
    )
    psam_adds, psam_removes = _psam_block(key, psams)
    return sign_delta(
        key,
        head,
        adds,
        cards_from_ids(gone),
        issued_at,
        psam_adds=psam_adds,
        psam_removes=psam_removes,
        trust=trust,
    )


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

    def set_keys(self, keys: Mapping[bytes, TrustedKey]) -> None:
        """New trusted keys (new certificates or revocations arrived): this authority's own
        deltas are judged by them too, so a revoked signing key stops publishing."""
        self.keys = keys

    def publish(
        self,
        revocations: Sequence[Revocation] = (),
        reinstatements: Sequence[str] = (),
        *,
        snapshot: bool = True,
    ) -> tuple[Delta | None, ApplyResult]:
        """Sign and apply the next delta. ``snapshot=False`` leaves the snapshot policy to
        the caller (a node sends the delta on first, then calls :meth:`maybe_snapshot`).

        Only what :meth:`pending` keeps goes into the delta; when that is nothing, no delta
        is signed (``None``) and the result names the unchanged head, so that entering the
        same list twice leaves the feed version where it was. Reinstatements of cards the
        feed does not hold count as ``absent_removes`` either way."""
        wanted, gone = self.pending(revocations, reinstatements)
        delta, result = self.publish_pending(wanted, gone, snapshot=snapshot)
        absent = len(reinstatements) - len(gone)
        if absent:
            result = dataclasses.replace(result, absent_removes=result.absent_removes + absent)
        return delta, result

    def publish_pending(
        self,
        revocations: Sequence[Revocation] = (),
        reinstatements: Sequence[str] = (),
        *,
        snapshot: bool = True,
        also: AlsoWrite | None = None,
    ) -> tuple[Delta | None, ApplyResult]:
        """:meth:`publish` of what :meth:`pending` returned, without looking again (a caller
        that needs the changes themselves, such as the audit log, asks once). ``also(txn,
        delta)`` writes in the delta's own transaction (the audit records)."""
        head = self.store.head(self.publisher)
        if not revocations and not reinstatements:
            return None, ApplyResult(self.publisher, head.version, 0, 0, 0, 0)
        delta = build_delta(self.key, head, revocations, reinstatements, self._issued_at())
        result = self._apply(delta, also)
        if snapshot:
            self.maybe_snapshot()
        return delta, result

    def pending(
        self, revocations: Sequence[Revocation] = (), reinstatements: Sequence[str] = ()
    ) -> tuple[list[Revocation], list[str]]:
        """The part of a request that would change this feed, with canonical ids: the
        revocations that differ from the entry the feed holds for the card (absent, or
        another reason or effective time) and the reinstatements of cards it holds. A
        malformed or out-of-scope card raises, as :func:`build_delta` does, even if it
        would change nothing."""
        matrix = parse_many([*(r.card_id for r in revocations), *reinstatements])
        cards = rows_to_str(matrix)
        check_scope(self.key, cards)
        held = self._held(cards, keys_from_matrix(matrix).tobytes())
        wanted = []
        for card, r in zip(cards, revocations, strict=False):
            reason = Reason.parse(r.reason)
            if held.get(card) != (reason, r.effective_time, r.expires_at):
                wanted.append(Revocation(card, reason, r.effective_time, r.expires_at))
        return wanted, [card for card in cards[len(revocations) :] if card in held]

    def _held(self, cards: Sequence[str], keys: bytes) -> dict[str, Held]:
        """(reason, effective time, end time) of this feed's entry for each of ``cards`` it
        holds and that is not over by the store's clock; ``keys`` are their binary keys."""
        held: dict[str, Held] = {}
        now = self._clock()
        shared = []  # cards where another feed's entry sorts first (overlapping scopes)
        # In key order: neighbouring lookups share B-tree pages (cards arrive in any order).
        order = sorted(range(len(cards)), key=lambda i: keys[i * KEY_LENGTH : (i + 1) * KEY_LENGTH])
        with self.store.read_txn() as txn:
            for i in order:
                card = cards[i]
                found = self.store.find_live(keys[i * KEY_LENGTH : (i + 1) * KEY_LENGTH], txn, now)
                if found is not None:
                    entry = decode_entry(*found, card)
                    if entry.publisher == self.publisher:
                        held[card] = (entry.reason, entry.effective_time, entry.expires_at)
                    else:
                        shared.append(card)
        for card in shared:
            for entry in self.store.lookup_all(text_to_key(card)):
                if entry.publisher == self.publisher:
                    held[card] = (entry.reason, entry.effective_time, entry.expires_at)
        return held

    def maybe_snapshot(self) -> Snapshot | None:
        """Sign and keep a snapshot of the feed when the policy asks for one (see
        blacklist.sync.plan.should_snapshot), so children can always bootstrap."""
        history = self.store.history(self.publisher)
        if not should_snapshot(history, self.store.archive.max_count or 1000):
            return None
        entries, versions = self.store.feed_entries(self.publisher)
        psams, psam_versions = self.store.psams.feed_psams(self.publisher)
        snapshot = sign_snapshot(
            self.key,
            self.store.head(self.publisher),
            entries,
            versions,
            self._issued_at(),
            psams=psams,
            psam_versions=psam_versions,
            trust=self.store.trust.records(self.publisher),
        )
        self.store.keep_snapshot(snapshot, self.keys)
        return snapshot

    def _issued_at(self) -> int:
        """This authority's clock, but never before its head's ``issued_at``: every node
        refuses an item dated before the head (``backdated``), so a clock stepped back by
        NTP must not stop the authority publishing."""
        feed = self.store.feeds.get(self.publisher)
        return max(int(self._clock()), feed.issued_at if feed else 0)

    def head_statement(self) -> HeadStatement:
        """Sign "as of now my head is ..." (DESIGN §5, "Freshness is signed"); it creates no
        feed version. Dated by this authority's clock, but never before its head's
        ``issued_at`` or its previous statement, so a clock stepped back is no replay."""
        head = self.store.head(self.publisher)
        feed = self.store.feeds.get(self.publisher)
        t = statement_time(
            self.store.statements.newest(self.publisher),
            head,
            feed.issued_at if feed else 0,
            int(self._clock()),
        )
        return sign_statement(self.key, head, t)

    def _apply(self, delta: Delta, also: AlsoWrite | None) -> ApplyResult:
        if also is None:
            return self.store.apply_delta(delta, self.keys)
        return self.store.apply_delta(delta, self.keys, also=lambda txn: also(txn, delta))

    def publish_psams(
        self,
        denials: Sequence[Revocation] = (),
        lifted: Sequence[str] = (),
        *,
        snapshot: bool = True,
        also: AlsoWrite | None = None,
    ) -> tuple[Delta | None, ApplyResult]:
        """Deny PSAMs (``Revocation.card_id`` holds the PSAM id) or lift their denials, as
        the next delta; like :meth:`publish`, only changes go in, and nothing is signed when
        nothing changes. A lift of a PSAM this feed does not deny counts as absent."""
        denied = [canonical_psam(r.card_id) for r in denials]
        gone = [canonical_psam(p) for p in lifted]
        check_scope(self.key, [*denied, *gone])
        wanted = []
        for psam, r in zip(denied, denials, strict=True):
            reason = Reason.parse(r.reason)
            if self._psam_held(psam) != (reason, r.effective_time):
                wanted.append(Revocation(psam, reason, r.effective_time))
        held = [p for p in gone if self._psam_held(p) is not None]
        return self._publish_other(
            PsamChanges(wanted, held), (), len(gone) - len(held), snapshot, also
        )

    def _psam_held(self, psam: str) -> tuple[Reason, int] | None:
        entry = self.store.psams.held_by(psam_key(psam), self.publisher)
        return (entry.reason, entry.effective_time) if entry is not None else None

    def publish_trust(
        self, records: Sequence[bytes], *, snapshot: bool = True
    ) -> tuple[Delta | None, ApplyResult]:
        """Publish certificates and key revocations this authority issued in its feed, so
        that they reach every node (DESIGN §6); records the store already holds are left
        out, and nothing is signed when none is new."""
        known = set(self.store.trust.records(self.publisher))
        new = [r for r in records if bytes(r) not in known]
        return self._publish_other(NO_PSAM_CHANGES, new, 0, snapshot, None)

    def _publish_other(
        self,
        psams: PsamChanges,
        trust: Sequence[bytes],
        absent: int,
        snapshot: bool,
        also: AlsoWrite | None,
    ) -> tuple[Delta | None, ApplyResult]:
        head = self.store.head(self.publisher)
        if not psams.denials and not psams.lifted and not trust:
            return None, ApplyResult(self.publisher, head.version, 0, 0, 0, absent)
        delta = build_delta(self.key, head, issued_at=self._issued_at(), psams=psams, trust=trust)
        result = self._apply(delta, also)
        if snapshot:
            self.maybe_snapshot()
        return delta, dataclasses.replace(result, absent_removes=absent)
