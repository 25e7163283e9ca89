"""The head statement: an authority's signed "as of time t my head is version v with digest
d" (DESIGN §5, "Freshness is signed"), its binary layout, signing, bounded decoding and the
rejections of :mod:`blacklist.sync.freshness`, which decides what one proves.

Binary layout (every integer big-endian)::

    field      encoding           meaning
    magic      4 bytes  b"HEAD"   what this is; see "domain separation" below
    format     u8       1         version of this layout
    publisher  u32                the publisher's 6-digit code as an integer
    version    u64                the publisher's head version at ``issued_at``
    digest     32 bytes           that head's digest (zeros for version 0, no deltas yet)
    issued_at  i64                unix seconds: "as of" this time
    suite      u8                 signing suite id (1 = Ed25519, 2 = SM2/SM3)
    key_id     8 bytes            which key signed it
    -- end of body (66 bytes); digest = the signer's suite's digest of it --
    sig_len    u8                 1..MAX_SIGNATURE
    signature  sig_len bytes      the suite's signature over the 32-byte digest

So a statement is at most MAX_STATEMENT_BYTES long, and its length is checked before
anything is read.

Domain separation: one key signs its feed's deltas and snapshots, its certificates and
revocations (a province's) and its head statements, always over its suite's digest of a
body. A delta or snapshot body starts with its kind byte (1 or 2, :mod:`blacklist.delta`), a certificate
or key revocation with ``K`` (0x4B, :mod:`blacklist.certs`), a head statement with ``H``
(0x48): no body of one kind is a body of another, so a signature made for one can never be
presented as one for another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar

from blacklist.binary import Reader, Writer
from blacklist.delta import DIGEST_LENGTH, FeedHead, publisher_code
from blacklist.errors import BlacklistError, CodecError
from blacklist.signing import KEY_ID_LENGTH, SigningKey

STATEMENT_MAGIC = b"HEAD"
FORMAT_VERSION = 1
BODY_LENGTH = 4 + 1 + 4 + 8 + DIGEST_LENGTH + 8 + 1 + KEY_ID_LENGTH  # 66
MAX_SIGNATURE = 128  # Ed25519: 64; SM2's r || s: 64 (blacklist/sm2.py)
MAX_STATEMENT_BYTES = BODY_LENGTH + 1 + MAX_SIGNATURE
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
    signature = key.sign_body(body)
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
