"""Signed freshness: head statements, and how old a node's copy of a feed provably is.

A feed's deltas say what changed; they cannot say that *nothing* changed since. So each
authority signs, on a schedule and after every publication, a small **head statement**:
"publisher P, as of time t my head is version v with digest d" (DESIGN §5, "Freshness is
signed"; the same idea as a CRL's thisUpdate, DNSSEC signature expiry or RRDP's
notification serial). Statements travel with sync, unchanged by relays, and every node
verifies them with the same keys as deltas. A node's copy of a feed is **fresh as of** the
newest signed time at which the publisher's head was one this node has reached: the newest
statement whose version the node's head has reached, or the head's own ``issued_at`` (a
delta is itself a signed "at issued_at my head was this"). ``feed_age_seconds`` is measured
from there. A relay that withholds deltas can withhold statements too, but it cannot make a
statement newer: the age of a frozen feed grows, whatever the relay says.

Acceptance (:func:`accept_statement`) checks, cheapest first and the first failure winning:
a byte-identical copy of the newest statement held is a duplicate (no work, no change);
the key is known and trusted as of the statement's time (a :class:`~blacklist.trust.
CertifiedKeys` resolves it as of ``issued_at``, as for deltas), the signature verifies, the
key is the publisher's and may stand behind that version; the time is not more than
``max_skew`` ahead of this node's clock and not older than the newest statement held; and
the statement agrees with what this node holds (a head that never goes back and has one
digest per version, the same digest at a version it holds, and no claim that contradicts
the time of a delta it holds), else it is a fork: the publisher's key signed two histories.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from blacklist.delta import FeedHead
from blacklist.signing import TrustedKey
from blacklist.sync.head_statement import (
    ALL_STATEMENT_CAUSES,
    BODY_LENGTH,
    FORMAT_VERSION,
    MAX_SIGNATURE,
    MAX_STATEMENT_BYTES,
    STATEMENT_MAGIC,
    TAMPERING_CAUSES,
    HeadStatement,
    MalformedStatement,
    StatementBadSignature,
    StatementFork,
    StatementFromFuture,
    StatementKeyNotAllowed,
    StatementKeyRevoked,
    StatementRejected,
    StatementTimeBackwards,
    StatementUnknownKey,
    decode_statement,
    sign_statement,
)
from blacklist.trust import KeyRevoked, KeysAtTime, TrustError

DEFAULT_INTERVAL = 60.0  # seconds between an authority's scheduled statements
DEFAULT_MAX_SKEW = 300  # seconds a statement's time may be ahead of this node's clock


# ---------------------------------------------------------------------------- what a node holds
DigestAt = Callable[[int], bytes | None]


def _no_digest(version: int) -> bytes | None:
    return None


@dataclass(frozen=True)
class FeedFreshness:
    """What a node knows of one publisher's feed, for judging statements about it.

    ``head`` and ``head_issued_at``: the node's head and its signed ``issued_at`` (0 when
    the node holds no delta of the feed). ``newest``: the newest verified statement, which
    may be ahead of the head (it proves the feed moved on). ``fresh_as_of``: the newest
    signed time at which the publisher's head was one this node has reached (0: never).
    ``digest_at``: digests of versions below the head that the node still holds.
    """

    head: FeedHead
    head_issued_at: int = 0
    newest: HeadStatement | None = None
    fresh_as_of: int = 0
    digest_at: DigestAt = field(default=_no_digest, compare=False, repr=False)

    @property
    def lag(self) -> int:
        """Versions the node's head is behind the newest statement (0 if none)."""
        if self.newest is None:
            return 0
        return max(0, self.newest.version - self.head.version)

    def age(self, now: float) -> float | None:
        """Seconds since ``fresh_as_of`` (None if the node never knew the feed current)."""
        return max(0.0, now - self.fresh_as_of) if self.fresh_as_of else None


def _statement_key(s: HeadStatement, keys: Mapping[bytes, TrustedKey]) -> TrustedKey:
    """The signing key as trusted at the statement's time, its signature checked, as
    :mod:`blacklist.accept` does for deltas (a revoked key's forgery is a bad signature)."""
    label = f"head statement {s.publisher} v{s.version} at {s.issued_at}"
    key: TrustedKey | None
    if isinstance(keys, KeysAtTime):
        try:
            key = keys.key_at(s.key_id, s.issued_at)
        except KeyRevoked as exc:
            claimed = keys.claimed(s.key_id)
            if claimed is not None and not claimed.verify_body(s.body, s.signature):
                raise StatementBadSignature(
                    f"{label}: signature does not verify with key {s.key_id.hex()}"
                ) from exc
            raise StatementKeyRevoked(f"{label}: {exc}") from exc
        except TrustError as exc:
            raise StatementUnknownKey(f"{label}: key id {s.key_id.hex()}: {exc}") from exc
    else:
        key = keys.get(s.key_id)
    if key is None:
        raise StatementUnknownKey(f"{label}: key id {s.key_id.hex()} is not trusted")
    if key.suite_id != s.suite_id or not key.verify_body(s.body, s.signature):
        raise StatementBadSignature(f"{label}: signature does not verify with key {s.key_id.hex()}")
    if key.publisher != s.publisher:
        raise StatementKeyNotAllowed(
            f"{label}: key {s.key_id.hex()} signs for publisher {key.publisher}"
        )
    if key.max_version is not None and s.version > key.max_version:
        raise StatementKeyRevoked(
            f"{label}: key {s.key_id.hex()} may stand behind versions up to {key.max_version}"
        )
    return key


def _check_consistent(state: FeedFreshness, s: HeadStatement) -> None:
    """The statement against the signed facts the node holds (all the publisher's word)."""
    head = state.head
    label = f"head statement {s.publisher} v{s.version} at {s.issued_at}"
    if s.version == head.version:
        if s.digest != head.digest:
            raise StatementFork(
                f"{label}: digest {s.digest.hex()[:16]} differs from the held head's "
                f"{head.digest.hex()[:16]}"
            )
        return
    if s.version < head.version:
        held = state.digest_at(s.version)
        if held is not None and held != s.digest:
            raise StatementFork(
                f"{label}: digest {s.digest.hex()[:16]} differs from the held delta's "
                f"{held.hex()[:16]}"
            )
        if s.issued_at > state.head_issued_at:
            raise StatementFork(
                f"{label}: claims an older head after v{head.version} was issued at "
                f"{state.head_issued_at}"
            )
        return
    if state.head_issued_at and s.issued_at < state.head_issued_at:
        raise StatementFork(
            f"{label}: claims a head beyond v{head.version} before that version was issued "
            f"at {state.head_issued_at}"
        )


def accept_statement(
    state: FeedFreshness,
    statement: HeadStatement,
    keys: Mapping[bytes, TrustedKey],
    now: float,
    max_skew: int,
) -> FeedFreshness:
    """The node's freshness of the feed after ``statement``, or the :class:`StatementRejected`
    that refuses it. A byte-identical copy of the newest statement held returns ``state``
    itself (a duplicate: normal, since statements arrive on several paths; the body is
    compared, so nothing needs verifying)."""
    s = statement
    if s.publisher != state.head.publisher:
        raise ValueError(f"state is for {state.head.publisher}, statement for {s.publisher}")
    if state.newest is not None and state.newest.body == s.body:
        return state  # the same claim (a randomised suite may sign it differently)
    _statement_key(s, keys)
    label = f"head statement {s.publisher} v{s.version} at {s.issued_at}"
    if s.issued_at > now + max_skew:
        raise StatementFromFuture(
            f"{label}: {s.issued_at - int(now)} s ahead of this node's clock (at most {max_skew})"
        )
    if state.newest is not None and not s.newer_than(state.newest):
        if (s.issued_at, s.version) == (state.newest.issued_at, state.newest.version):
            raise StatementFork(f"{label}: a second statement of that version and time")
        raise StatementTimeBackwards(
            f"{label}: not newer than the statement held (v{state.newest.version} at "
            f"{state.newest.issued_at})"
        )
    newest = state.newest
    if newest is not None and (
        s.version < newest.version or (s.version == newest.version and s.digest != newest.digest)
    ):
        # A head only moves forward, and one version has one digest: the publisher's key
        # signed two histories (or two heads at once).
        raise StatementFork(
            f"{label}: contradicts the statement held (v{newest.version} "
            f"{newest.digest.hex()[:16]} at {newest.issued_at})"
        )
    _check_consistent(state, s)
    fresh = state.fresh_as_of
    if s.version == state.head.version:
        fresh = max(fresh, s.issued_at)
    return FeedFreshness(state.head, state.head_issued_at, s, fresh, state.digest_at)


def fresh_after_apply(
    previous: int, head: FeedHead, issued_at: int, newest: HeadStatement | None
) -> int:
    """``fresh_as_of`` once the node's head moved to ``head`` by a verified delta or
    snapshot issued at ``issued_at``: that item is itself the publisher's signed word that
    ``head`` was current then, and a statement held for exactly this head (received while
    the node was behind) now counts too. Never earlier than before: what was current then
    is still known, the node only moved forward."""
    fresh = max(previous, issued_at)
    if newest is not None and newest.version == head.version and newest.digest == head.digest:
        fresh = max(fresh, newest.issued_at)
    return fresh


def plan_statement_push(
    mine: Mapping[str, HeadStatement], theirs: Mapping[str, HeadStatement]
) -> list[HeadStatement]:
    """The statements to send up: those this node holds that are newer than the upstream's
    (or that it lacks), so that the ministry and other provinces learn a city's freshness."""
    return [
        s for p, s in sorted(mine.items()) if (held := theirs.get(p)) is None or s.newer_than(held)
    ]


def statement_time(
    newest: HeadStatement | None, head: FeedHead, head_issued_at: int, now: int
) -> int:
    """The time an authority puts on its next statement: its clock, but never before its
    head's ``issued_at`` nor its previous statement (a clock stepped back must not make
    the authority's own statements look like replays)."""
    t = max(now, head_issued_at)
    if newest is not None and newest.publisher == head.publisher:
        t = max(t, newest.issued_at)
    return t


def _field_cost(data: bytes) -> int:
    """Bytes one ``repeated bytes`` element costs in a protobuf message: tag, length, data."""
    length = len(data)
    varint = 1
    while length >= 0x80:
        length >>= 7
        varint += 1
    return 1 + varint + len(data)


def statements_within(held: list[bytes], room: int, start: int) -> tuple[list[bytes], int]:
    """The statements one GetUpdates answer carries in ``room`` bytes, beginning at
    ``start`` (mod their number) and wrapping, and where the next answer begins: at a small
    message limit every publisher's statement still comes round, in turn."""
    if not held:
        return [], 0
    first = start % len(held)
    chosen: list[bytes] = []
    for data in (*held[first:], *held[:first]):
        cost = _field_cost(data)
        if cost > room:
            break
        chosen.append(data)
        room -= cost
    return chosen, first + len(chosen)


def push_batches(statements: list[bytes], max_bytes: int, max_count: int) -> list[list[bytes]]:
    """Statements to push up, split so that each request stays within ``max_bytes`` of
    payload and ``max_count`` statements (the upstream's limits)."""
    batches: list[list[bytes]] = []
    batch: list[bytes] = []
    used = 0
    for data in statements:
        cost = _field_cost(data)
        if batch and (used + cost > max_bytes or len(batch) >= max_count):
            batches.append(batch)
            batch, used = [], 0
        batch.append(data)
        used += cost
    if batch:
        batches.append(batch)
    return batches


__all__ = [
    "ALL_STATEMENT_CAUSES",
    "BODY_LENGTH",
    "DEFAULT_INTERVAL",
    "DEFAULT_MAX_SKEW",
    "FORMAT_VERSION",
    "MAX_SIGNATURE",
    "MAX_STATEMENT_BYTES",
    "STATEMENT_MAGIC",
    "TAMPERING_CAUSES",
    "DigestAt",
    "FeedFreshness",
    "HeadStatement",
    "MalformedStatement",
    "StatementBadSignature",
    "StatementFork",
    "StatementFromFuture",
    "StatementKeyNotAllowed",
    "StatementKeyRevoked",
    "StatementRejected",
    "StatementTimeBackwards",
    "StatementUnknownKey",
    "accept_statement",
    "decode_statement",
    "fresh_after_apply",
    "plan_statement_push",
    "push_batches",
    "sign_statement",
    "statement_time",
    "statements_within",
]
