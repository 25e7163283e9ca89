"""The signed offline filter for POS that hold no database (issue #16 part 2): its binary
layout, and the answers it gives; decoding and verification are
:mod:`blacklist.filters.offline_read`. Building one from a store is
:mod:`blacklist.filters.export`; the reference reader in C is ``reader/offline_filter.c``.

What a filter answers, for a card id (or a PSAM id) at a time ``now``:

* ``NOT_REVOKED``: certain, as of the feeds the file covers (each partition names the feed
  head and the publisher's signed freshness). Zero false negatives: every card revoked in
  the exporter's store under the scope is in its publisher's partition.
* ``MAYBE_REVOKED``: revoked, or a false positive (rate :data:`FALSE_POSITIVE_RATE`,
  2**-8 = 0.39% per partition consulted): confirm online, or refuse the card.
* ``OUT_OF_SCOPE``: the id's region is not under the file's scope (another province's card).
* ``MALFORMED``: not a card id (the rules of :mod:`blacklist.cardid` / :mod:`blacklist.psam`).
* ``EXPIRED``: ``now`` is at or after ``expires_at``: the file says nothing any more.

Checked in that order: MALFORMED, EXPIRED, OUT_OF_SCOPE, then the partitions.

Binary layout (every integer big-endian; ``str`` = u8 length + ASCII)::

    header (signed: the exporter signs its suite's digest of the header: SHA-256 for
      Ed25519, SM3 for SM2, as every signed object of the project)
      magic        4 bytes b"FLTR"   first byte 0x46 ("F"): no delta (1, 2), certificate
                                     ("K") or head statement ("H") body starts so, so no
                                     signature of one passes for another (domain separation)
      format       u8  1
      scope        str               1..6 digits: the region prefix covered
      issued_at    i64               unix seconds: when it was exported
      expires_at   i64               unix seconds: EXPIRED from then on (> issued_at)
      signer       u32               the exporting key's publisher code
      suite        u8                its signing suite (1 = Ed25519)
      key_id       8 bytes           its key id (blacklist.signing.key_id_of)
      partitions   u32 count (<= 65,535), then per partition:
        publisher    u32             the publisher whose entries these are
        version      u64             its feed head covered ...
        head_digest  32 bytes        ... and that head's digest
        fresh_at     i64             the signed moment the exporter's copy is fresh as of
                                     (the publisher's head statement, or its head delta)
        statement    u8 length + the publisher's newest head statement as signed (0: none)
        regions      u32 count (<= 1,000,000), count × u32 region codes, ascending:
                                     the 6-digit regions it holds cards or PSAMs in
        cards        filter descriptor (below) of the card filter
        psams        filter descriptor of the PSAM filter
        body_digest  32 bytes        SHA-256 of the partition's body
      filter descriptor: size u32 (keys), seed u64, segment_length u32 (a power of two,
        1..2**18), segment_count u32 (>= 1); segment_count × segment_length < 2**32;
        array_length = (segment_count + 2) × segment_length
    -- end of the signed header --
    chain        u8 count (<= 8), count × (u32 length + certificate), root-most first
    signature    u8 length (1..255) + the signature over the suite's digest of the header
    bodies       per partition, in order: u8 present (1, or 0 in an update: "the body with
                 this body_digest from the previous file"), then if present the card
                 filter's array_length bytes and the PSAM filter's
    trailer      32 bytes: SHA-256 of every byte before it (integrity of this file)

A filter's keys are the project's card hash, XXH64 (seed 0) of the 32-byte canonical
upper-case id (:mod:`blacklist.filters.fingerprint`), and for a PSAM XXH64 of its 22-byte
canonical id; the filter is :mod:`blacklist.filters.fuse`. A filter of size 0 contains
nothing (its bytes are zero and are not consulted).

Who may sign (the filter-signing permission): a key certified, through a chain from the
pinned root, for a prefix of the filter's scope, the same scope rule as for feeds. A
province key certified for "44" may sign a filter for "44" or "4401"; a city key for
"4401" may sign "4401" but not "44"; the root signs any. :func:`verify` refuses others
(:class:`FilterSignerNotAllowed`).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Final

import xxhash

from blacklist.binary import Writer
from blacklist.cardid import canonical_bytes
from blacklist.errors import BlacklistError, CardIdError, CodecError
from blacklist.filters.fuse import FALSE_POSITIVE_RATE, FuseFilter
from blacklist.psam import PsamIdError, canonical_psam
from blacklist.signing import digest_of

MAGIC: Final = b"FLTR"
FORMAT_VERSION: Final = 1
MAX_PARTITIONS: Final = 65_535
MAX_REGIONS: Final = 1_000_000
MAX_CHAIN: Final = 8
MAX_CERTIFICATE_BYTES: Final = 4096
TRAILER_LENGTH: Final = 32
_I64_MAX = 2**63 - 1

__all__ = ["FALSE_POSITIVE_RATE", "OfflineFilter", "Verdict"]


class FilterError(BlacklistError):
    """Why a filter file is refused."""


class FilterFormatError(FilterError, CodecError):
    """The bytes are not a filter file (truncated, a bad field, trailing bytes)."""


class FilterIntegrityError(FilterError):
    """The trailer or a partition body's digest does not match: the file is damaged."""


class FilterSignatureError(FilterError):
    """The signature does not verify, or the chain does not certify the signing key."""


class FilterSignerNotAllowed(FilterError):
    """A certified key, but not for this filter's scope."""


class Verdict(enum.IntEnum):
    NOT_REVOKED = 1
    MAYBE_REVOKED = 2
    OUT_OF_SCOPE = 3
    MALFORMED = 4
    EXPIRED = 5


@dataclass(frozen=True)
class Partition:
    """One publisher's part of a filter: what it covers, and its two filters."""

    publisher: str
    version: int
    head_digest: bytes
    fresh_at: int
    statement: bytes = field(repr=False)
    regions: tuple[int, ...]
    cards: FuseFilter
    psams: FuseFilter

    @cached_property
    def body(self) -> bytes:
        return self.cards.fingerprints + self.psams.fingerprints

    @cached_property
    def body_digest(self) -> bytes:
        return hashlib.sha256(self.body).digest()


@dataclass(frozen=True)
class Answer:
    verdict: Verdict
    publisher: str | None  # the partition that said "maybe", else None
    fresh_at: int  # the oldest freshness of the file's partitions (0: no partition)
    expires_at: int
    false_positive_rate: float = FALSE_POSITIVE_RATE


@dataclass(frozen=True)
class OfflineFilter:
    scope: str
    issued_at: int
    expires_at: int
    signer: str
    suite_id: int
    key_id: bytes
    partitions: tuple[Partition, ...]
    chain: tuple[bytes, ...] = ()
    signature: bytes = field(default=b"", repr=False)

    @cached_property
    def header(self) -> bytes:
        return _header(self)

    @cached_property
    def digest(self) -> bytes:
        """What the exporter signs: its suite's digest of the header."""
        return digest_of(self.suite_id, self.header)

    @cached_property
    def _by_region(self) -> dict[int, tuple[Partition, ...]]:
        out: dict[int, list[Partition]] = {}
        for p in self.partitions:
            for r in p.regions:
                out.setdefault(r, []).append(p)
        return {r: tuple(ps) for r, ps in out.items()}

    @property
    def fresh_at(self) -> int:
        return min((p.fresh_at for p in self.partitions), default=0)

    def to_bytes(self, omit: frozenset[bytes] = frozenset()) -> bytes:
        """The file; bodies whose digest is in ``omit`` are left out (an update)."""
        w = Writer()
        w.raw(self.header)
        w.u8(len(self.chain))
        for cert in self.chain:
            w.u32(len(cert))
            w.raw(cert)
        w.u8(len(self.signature))
        w.raw(self.signature)
        for p in self.partitions:
            if p.body_digest in omit:
                w.u8(0)
            else:
                w.u8(1)
                w.raw(p.body)
        data = w.getvalue()
        return data + hashlib.sha256(data).digest()

    def _answer(self, verdict: Verdict, publisher: str | None = None) -> Answer:
        return Answer(verdict, publisher, self.fresh_at, self.expires_at)

    def check_card(self, card_id: object, now: int) -> Answer:
        try:
            canon = canonical_bytes(card_id)
        except CardIdError:
            return self._answer(Verdict.MALFORMED)
        return self._lookup(canon, xxhash.xxh64_intdigest(canon), now, psam=False)

    def check_psam(self, psam_id: object, now: int) -> Answer:
        try:
            canon = canonical_psam(psam_id).encode("ascii")
        except PsamIdError:
            return self._answer(Verdict.MALFORMED)
        return self._lookup(canon, xxhash.xxh64_intdigest(canon), now, psam=True)

    def _lookup(self, canon: bytes, key: int, now: int, *, psam: bool) -> Answer:
        if now >= self.expires_at:
            return self._answer(Verdict.EXPIRED)
        if not canon.startswith(self.scope.encode("ascii")):
            return self._answer(Verdict.OUT_OF_SCOPE)
        for p in self._by_region.get(int(canon[:6]), ()):
            if (p.psams if psam else p.cards).contains_hash(key):
                return self._answer(Verdict.MAYBE_REVOKED, p.publisher)
        return self._answer(Verdict.NOT_REVOKED)


# ---------------------------------------------------------------------------- encoding
def _write_filter(w: Writer, f: FuseFilter) -> None:
    w.u32(f.size)
    w.u64(f.seed)
    w.u32(f.layout.segment_length)
    w.u32(f.layout.segment_count)


def _header(f: OfflineFilter) -> bytes:
    w = Writer()
    w.raw(MAGIC)
    w.u8(FORMAT_VERSION)
    w.u8(len(f.scope))
    w.raw(f.scope.encode("ascii"))
    w.i64(f.issued_at)
    w.i64(f.expires_at)
    w.u32(int(f.signer))
    w.u8(f.suite_id)
    w.raw(f.key_id)
    w.u32(len(f.partitions))
    for p in f.partitions:
        w.u32(int(p.publisher))
        w.u64(p.version)
        w.raw(p.head_digest)
        w.i64(p.fresh_at)
        w.u8(len(p.statement))
        w.raw(p.statement)
        w.u32(len(p.regions))
        for r in p.regions:
            w.u32(r)
        _write_filter(w, p.cards)
        _write_filter(w, p.psams)
        w.raw(p.body_digest)
    return w.getvalue()


def check_scope_text(scope: str) -> str:
    if not (1 <= len(scope) <= 6 and scope.isascii() and scope.isdigit()):
        raise ValueError(f"filter scope {scope!r} is not a region prefix of 1..6 digits")
    return scope


# ---------------------------------------------------------------------------- decoding
def check_expiry(issued_at: int, expires_at: int) -> None:
    if not 0 <= issued_at < expires_at <= _I64_MAX:
        raise ValueError(f"issued_at {issued_at} must be before expires_at {expires_at}")
