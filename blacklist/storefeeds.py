"""What a store keeps of its feeds besides their entries, as part of
:class:`~blacklist.store.RevocationStore`: the retained history it serves to children
(archive.py), the acceptance position of each feed, and the verified head statements that
prove a feed fresh (headstatements.py, blacklist/sync/freshness.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from blacklist.archive import Archive
from blacklist.clock import Clock
from blacklist.delta import FeedHead, Snapshot
from blacklist.deltadecode import open_envelope
from blacklist.headstatements import HeadStatements, StatementResult
from blacklist.records import FeedState, _abort_on_error
from blacklist.signing import TrustedKey
from blacklist.sync.accept import AcceptPolicy, FeedPosition, accept_current_snapshot
from blacklist.sync.freshness import (
    FeedFreshness,
    HeadStatement,
    StatementRejected,
    accept_statement,
    fresh_after_apply,
)
from blacklist.sync.plan import FeedHistory


class FeedKeeping:
    """The store's feed history and freshness; the attributes below are RevocationStore's."""

    env: Any
    archive: Archive
    statements: HeadStatements
    feeds: dict[str, FeedState]
    generation: int
    epoch: int
    _clock: Clock
    _acceptance: AcceptPolicy

    def head(self, publisher: str) -> FeedHead:
        raise NotImplementedError

    def _write_feed(self, txn: Any, feed: FeedState, new_regions: set[int]) -> None:
        raise NotImplementedError

    def _bump_generation(self, txn: Any) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ history
    def position(self, publisher: str) -> FeedPosition:
        """What acceptance needs of a feed held here: head, its ``issued_at``, and the
        digests of retained older versions (to tell a copy from a fork)."""
        feed = self.feeds.get(publisher)
        if feed is None:
            return FeedPosition(FeedHead.genesis(publisher))

        def digest_at(version: int) -> bytes | None:
            data = self.archive.delta(publisher, version)
            return open_envelope(data).digest if data is not None else None

        return FeedPosition(feed.head, feed.issued_at, digest_at)

    def policy(self) -> AcceptPolicy:
        """The acceptance policy as of now, by this store's clock."""
        return dataclasses.replace(self._acceptance, now=int(self._clock()))

    def retained_delta(self, publisher: str, version: int) -> bytes | None:
        return self.archive.delta(publisher, version)

    def retained_versions(self, publisher: str) -> list[int]:
        return self.archive.versions(publisher)

    def history(self, publisher: str) -> FeedHistory:
        return self.archive.history(publisher, self.head(publisher))

    def histories(self) -> dict[str, FeedHistory]:
        return {p: self.history(p) for p in self.feeds}

    def keep_snapshot(self, snapshot: Snapshot, keys: Mapping[bytes, TrustedKey]) -> None:
        """Store a snapshot of a feed's current head, to serve children (verified first)."""
        accept_current_snapshot(self.head(snapshot.publisher), snapshot, keys)
        txn = self.env.begin(write=True)
        with _abort_on_error(txn):
            archived = self.archive.keep_snapshot(txn, snapshot, snapshot.to_bytes())
            self._bump_generation(txn)
            txn.commit()
        archived()
        self.generation += 1
        self.epoch += 1

    # ------------------------------------------------------------------ freshness
    def freshness(self, publisher: str) -> FeedFreshness:
        """What this node knows of a feed's freshness (blacklist/sync/freshness.py)."""
        feed = self.feeds.get(publisher)
        head = feed.head if feed else FeedHead.genesis(publisher)

        def digest_at(version: int) -> bytes | None:
            # The digest of version v is the previous-digest of the retained delta v + 1.
            after = self.archive.history(publisher, head).retained.get(version + 1)
            return after.prev_digest if after is not None else None

        return FeedFreshness(
            head,
            feed.issued_at if feed else 0,
            self.statements.newest(publisher),
            feed.checked_at if feed else 0,
            digest_at,
        )

    def accept_statements(
        self,
        statements: list[HeadStatement],
        keys: Mapping[bytes, TrustedKey],
        now: float,
        max_skew: int,
    ) -> list[StatementResult]:
        """Verify head statements and keep, in one write transaction, each that is newer than
        the one held, with the freshness it proves (a feed's ``checked_at``). Refused ones
        change nothing and come back with their rejection; duplicates with neither."""
        states: dict[str, FeedFreshness] = {}
        results: list[StatementResult] = []
        for statement in statements:
            state = states.get(statement.publisher) or self.freshness(statement.publisher)
            try:
                after = accept_statement(state, statement, keys, now, max_skew)
            except StatementRejected as exc:
                results.append(StatementResult(statement, rejection=exc))
                continue
            if after is state:
                results.append(StatementResult(statement))
                continue
            states[statement.publisher] = after
            results.append(StatementResult(statement, accepted=True))
        if not states:
            return results
        updated: list[FeedState] = []
        done = []
        with self.env.begin(write=True) as txn:
            for publisher, state in states.items():
                assert state.newest is not None
                done.append(self.statements.stage(txn, state.newest))
                feed = self.feeds.get(publisher)
                if feed is not None and state.fresh_as_of != feed.checked_at:
                    feed = dataclasses.replace(feed, checked_at=state.fresh_as_of)
                    self._write_feed(txn, feed, set())
                    updated.append(feed)
            self._bump_generation(txn)
        for remember in done:
            remember()
        for feed in updated:
            self.feeds[feed.publisher] = feed
        self.generation += 1
        self.epoch += 1
        return results

    def _fresh_after(self, previous: FeedState | None, head: FeedHead, issued_at: int) -> int:
        return fresh_after_apply(
            previous.checked_at if previous else 0,
            head,
            issued_at,
            self.statements.newest(head.publisher),
        )
