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

Binary layout (every integer big-endian)::

    field      encoding           meaning
    magic      4 bytes  b"HEAD"   what this is; see "domain separation" below
    format     u8       1         version of this layout
    publisher  u32                the publisher's 6-digit code as an integer
    version    u64                the publisher's head version at ``issued_at``
    digest     32 bytes           that head's digest (zeros for version 0, no deltas yet)
    issued_at  i64                unix seconds: "as of" this time
    suite      u8                 signing suite id (1 = Ed25519)
    key_id     8 bytes            which key signed it
    -- end of body (66 bytes); digest = SHA-256(body) --
    sig_len    u8                 1..MAX_SIGNATURE
    signature  sig_len bytes      the suite's signature over the 32-byte digest

So a statement is at most MAX_STATEMENT_BYTES long, and its length is checked before
anything is read.

Domain separation: one key signs its feed's deltas and snapshots, its certificates and
revocations (a province's) and its head statements, always over SHA-256 of a body. A delta
or snapshot body starts with its kind byte (1 or 2, :mod:`blacklist.delta`), a certificate
or key revocation with ``K`` (0x4B, :mod:`blacklist.certs`), a head statement with ``H``
(0x48): no body of one kind is a body of another, so a signature made for one can never be
presented as one for another.

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

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar

from blacklist.delta import DIGEST_LENGTH, FeedHead, publisher_code
from blacklist.errors import BlacklistError, CodecError
from blacklist.signing import KEY_ID_LENGTH, SigningKey, TrustedKey
from blacklist.trust import KeyRevoked, KeysAtTime, TrustError
from blacklist.wire import Reader, Writer

STATEMENT_MAGIC = b"HEAD"
FORMAT_VERSION = 1
BODY_LENGTH = 4 + 1 + 4 + 8 + DIGEST_LENGTH + 8 + 1 + KEY_ID_LENGTH  # 66
MAX_SIGNATURE = 128  # Ed25519: 64; a DER SM2 signature: at most 72
MAX_STATEMENT_BYTES = BODY_LENGTH + 1 + MAX_SIGNATURE
DEFAULT_INTERVAL = 60.0  # seconds between an authority's scheduled statements
DEFAULT_MAX_SKEW = 300  # seconds a statement's time may be ahead of this node's clock
_I64_MAX = 2**63 - 1


# ---------------------------------------------------------------------------- rejections
class StatementRejected(BlacklistError):
    """Why a head statement was refused; ``cause`` is a stable metrics label. A refused
    statement changes nothing."""

    cause: ClassVar[str] = "rejected"


class MalformedStatement(StatementRejected):
    cause = "malformed"


class StatementUnknownKey(StatementRejected):
    """Signed with a key id this node does not trust (as of the statement's time)."""

    cause = "unknown_key"


class StatementKeyRevoked(StatementRejected):
    """The key was revoked as of a time at or before the statement's, or may not stand
    behind the version it names."""

    cause = "key_revoked"


class StatementBadSignature(StatementRejected):
    cause = "bad_signature"


class StatementKeyNotAllowed(StatementRejected):
    """A trusted key, but another publisher's."""

    cause = "key_not_allowed"


class StatementFromFuture(StatementRejected):
    """Dated more than the allowed skew after this node's clock."""

    cause = "too_far_ahead"


class StatementTimeBackwards(StatementRejected):
    """Not newer than the newest statement held. Normal when two copies cross on different
    paths (the older arrives second); it proves nothing new, so it is not kept."""

    cause = "time_backwards"


class StatementFork(StatementRejected):
    """Contradicts what this node holds of the feed, all of it signed by the publisher: two
    digests for one version, or a head claimed at a time that a signed delta contradicts."""

    cause = "fork"


ALL_STATEMENT_CAUSES: tuple[str, ...] = tuple(
    c.cause
    for c in (
        MalformedStatement,
        StatementUnknownKey,
        StatementKeyRevoked,
        StatementBadSignature,
        StatementKeyNotAllowed,
        StatementFromFuture,
        StatementTimeBackwards,
        StatementFork,
    )
)
# Causes that only a forger or a publisher signing two histories can produce (the rest
# happen in the normal course: late copies, clocks, rotations).
TAMPERING_CAUSES = ("bad_signature", "key_not_allowed", "fork", "malformed")


# ---------------------------------------------------------------------------- the statement
@dataclass(frozen=True)
class HeadStatement:
    publisher: str
    version: int
    digest: bytes
    issued_at: int
    suite_id: int
    key_id: bytes
    signature: bytes = field(repr=False)

    @cached_property
    def body(self) -> bytes:
        return _body(
            self.publisher, self.version, self.digest, self.issued_at, self.suite_id, self.key_id
        )

    @property
    def head(self) -> FeedHead:
        return FeedHead(self.publisher, self.version, self.digest)

    def to_bytes(self) -> bytes:
        return self.body + bytes([len(self.signature)]) + self.signature

    def newer_than(self, other: HeadStatement) -> bool:
        """Later in time, or at the same second a later version (a publication and the
        statement after it may share a second)."""
        return (self.issued_at, self.version) > (other.issued_at, other.version)


def _body(
    publisher: str, version: int, digest: bytes, issued_at: int, suite_id: int, key_id: bytes
) -> bytes:
    if len(digest) != DIGEST_LENGTH or len(key_id) != KEY_ID_LENGTH:
        raise ValueError("a head statement's digest is 32 bytes and its key id 8")
    w = Writer()
    w.raw(STATEMENT_MAGIC)
    w.u8(FORMAT_VERSION)
    w.u32(publisher_code(publisher))
    w.u64(version)
    w.raw(digest)
    w.i64(issued_at)
    w.u8(suite_id)
    w.raw(key_id)
    return w.getvalue()


def sign_statement(key: SigningKey, head: FeedHead, issued_at: int) -> HeadStatement:
    """The publisher's signed "as of ``issued_at`` my head is ``head``"."""
    if key.publisher != head.publisher:
        raise ValueError(f"a key of {key.publisher} cannot state the head of {head.publisher}")
    if not 0 <= issued_at <= _I64_MAX:
        raise ValueError(f"issued_at {issued_at} is not a unix time")
    body = _body(head.publisher, head.version, head.digest, issued_at, key.suite_id, key.key_id)
    signature = key.sign(hashlib.sha256(body).digest())
    return HeadStatement(
        head.publisher, head.version, head.digest, issued_at, key.suite_id, key.key_id, signature
    )


def decode_statement(data: bytes) -> HeadStatement:
    """Parse a head statement; :class:`MalformedStatement` for anything that is not exactly
    one (too long, truncated, wrong magic or format, trailing bytes). Verifies nothing."""
    if len(data) > MAX_STATEMENT_BYTES:
        raise MalformedStatement(
            f"a head statement of {len(data)} bytes (at most {MAX_STATEMENT_BYTES})"
        )
    try:
        r = Reader(bytes(data), "head statement")
        if r.raw(len(STATEMENT_MAGIC), "magic") != STATEMENT_MAGIC:
            raise CodecError("not a head statement (bad magic)")
        fmt = r.u8("format")
        if fmt != FORMAT_VERSION:
            raise CodecError(f"head statement format {fmt}, this code reads {FORMAT_VERSION}")
        code = r.u32("publisher")
        if code > 999_999:
            raise CodecError(f"publisher code {code} has more than 6 digits")
        version = r.u64("version")
        digest = r.raw(DIGEST_LENGTH, "digest")
        issued_at = r.i64("issued_at")
        suite_id = r.u8("suite")
        key_id = r.raw(KEY_ID_LENGTH, "key id")
        length = r.u8("signature length")
        if not 1 <= length <= MAX_SIGNATURE:
            raise CodecError(f"signature length {length} (1..{MAX_SIGNATURE})")
        signature = r.raw(length, "signature")
        r.expect_end()
    except CodecError as exc:
        raise MalformedStatement(str(exc)) from exc
    if issued_at < 0:
        raise MalformedStatement(f"issued_at {issued_at} is before 1970")
    return HeadStatement(
        f"{code:06d}", version, bytes(digest), issued_at, suite_id, bytes(key_id), bytes(signature)
    )


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
    digest = hashlib.sha256(s.body).digest()
    key: TrustedKey | None
    if isinstance(keys, KeysAtTime):
        try:
            key = keys.key_at(s.key_id, s.issued_at)
        except KeyRevoked as exc:
            claimed = keys.claimed(s.key_id)
            if claimed is not None and not claimed.verify(digest, s.signature):
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
    if key.suite_id != s.suite_id or not key.verify(digest, s.signature):
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
