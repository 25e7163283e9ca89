"""The signed offline filter for POS that hold no database (issue #16 part 2): its binary
layout, decoding, verification and the answers it gives. Building one from a store is
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
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Final

import xxhash

from blacklist.binary import Reader, Writer
from blacklist.cardid import canonical_bytes
from blacklist.certs import Certificate, KeyRevocation
from blacklist.chainverify import TrustAnchor, TrustError, decode_chain, verify_chain
from blacklist.delta import DIGEST_LENGTH
from blacklist.errors import BlacklistError, CardIdError, CodecError
from blacklist.filters.fuse import FALSE_POSITIVE_RATE, MAX_SEGMENT_LENGTH, FuseFilter, FuseLayout
from blacklist.psam import PsamIdError, canonical_psam
from blacklist.signing import KEY_ID_LENGTH, TrustedKey, digest_of

MAGIC: Final = b"FLTR"
FORMAT_VERSION: Final = 1
MAX_PARTITIONS: Final = 65_535
MAX_REGIONS: Final = 1_000_000
MAX_CHAIN: Final = 8
MAX_CERTIFICATE_BYTES: Final = 4096
TRAILER_LENGTH: Final = 32
_I64_MAX = 2**63 - 1

__all__ = ["FALSE_POSITIVE_RATE", "OfflineFilter", "Verdict", "verify"]


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
@dataclass(frozen=True)
class _Descriptor:
    size: int
    seed: int
    layout: FuseLayout


def _read_filter(r: Reader, what: str) -> _Descriptor:
    size = r.u32(f"{what} size")
    seed = r.u64(f"{what} seed")
    length = r.u32(f"{what} segment length")
    count = r.u32(f"{what} segment count")
    if length < 1 or length > MAX_SEGMENT_LENGTH or length & (length - 1):
        raise FilterFormatError(f"{what}: segment length {length} is not a power of two <= 2**18")
    if count < 1 or count * length >= 2**32:
        raise FilterFormatError(f"{what}: segment count {count} (x {length}) out of range")
    return _Descriptor(size, seed, FuseLayout(length, count))


@dataclass(frozen=True)
class _RawPartition:
    fields: tuple[str, int, bytes, int, bytes, tuple[int, ...]]
    cards: _Descriptor
    psams: _Descriptor
    body_digest: bytes


def _read_partition(r: Reader, i: int) -> _RawPartition:
    what = f"partition {i}"
    code = r.u32(f"{what} publisher")
    if code > 999_999:
        raise FilterFormatError(f"{what}: publisher code {code} has more than 6 digits")
    version = r.u64(f"{what} version")
    digest = r.raw(DIGEST_LENGTH, f"{what} head digest")
    fresh_at = r.i64(f"{what} fresh_at")
    statement = r.raw(r.u8(f"{what} statement length"), f"{what} statement")
    count = r.u32(f"{what} region count")
    if count > MAX_REGIONS or count * 4 > r.remaining:
        raise FilterFormatError(f"{what}: {count} regions (at most {MAX_REGIONS}, or truncated)")
    regions = tuple(r.u32(f"{what} region") for _ in range(count))
    if any(b <= a for a, b in itertools.pairwise(regions)) or any(x > 999_999 for x in regions):
        raise FilterFormatError(f"{what}: regions are not ascending 6-digit codes")
    cards = _read_filter(r, f"{what} card filter")
    psams = _read_filter(r, f"{what} PSAM filter")
    body_digest = r.raw(DIGEST_LENGTH, f"{what} body digest")
    fields = (f"{code:06d}", version, bytes(digest), fresh_at, bytes(statement), regions)
    return _RawPartition(fields, cards, psams, bytes(body_digest))


@dataclass(frozen=True)
class _Parsed:
    head: tuple[str, int, int, str, int, bytes]
    partitions: tuple[_RawPartition, ...]
    header: bytes
    chain: tuple[bytes, ...]
    signature: bytes
    bodies: tuple[bytes | None, ...]


def _parse(data: bytes) -> _Parsed:
    """Structure only: every length checked, the trailer checked first."""
    if len(data) < TRAILER_LENGTH:
        raise FilterFormatError(f"a filter file of {len(data)} bytes")
    if hashlib.sha256(data[:-TRAILER_LENGTH]).digest() != data[-TRAILER_LENGTH:]:
        raise FilterIntegrityError("the file's SHA-256 trailer does not match: it is damaged")
    r = Reader(data[:-TRAILER_LENGTH], "filter file")
    try:
        if r.raw(len(MAGIC), "magic") != MAGIC:
            raise FilterFormatError("not a filter file (bad magic)")
        fmt = r.u8("format")
        if fmt != FORMAT_VERSION:
            raise FilterFormatError(f"filter format {fmt}, this code reads {FORMAT_VERSION}")
        scope_raw = r.raw(r.u8("scope length"), "scope")
        try:
            scope = check_scope_text(scope_raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise FilterFormatError(f"scope {scope_raw!r} is not 1..6 digits") from exc
        issued_at, expires_at = r.i64("issued_at"), r.i64("expires_at")
        if not 0 <= issued_at < expires_at:
            raise FilterFormatError(f"issued_at {issued_at} is not before expires_at {expires_at}")
        signer = r.u32("signer")
        if signer > 999_999:
            raise FilterFormatError(f"signer code {signer} has more than 6 digits")
        suite_id = r.u8("suite")
        key_id = r.raw(KEY_ID_LENGTH, "key id")
        count = r.u32("partition count")
        if count > MAX_PARTITIONS:
            raise FilterFormatError(f"{count} partitions (at most {MAX_PARTITIONS})")
        partitions = tuple(_read_partition(r, i) for i in range(count))
        header = bytes(data[: r.pos])
        links = r.u8("chain length")
        if links > MAX_CHAIN:
            raise FilterFormatError(f"a chain of {links} certificates (at most {MAX_CHAIN})")
        chain = []
        for i in range(links):
            length = r.u32(f"certificate {i} length")
            if length > MAX_CERTIFICATE_BYTES:
                raise FilterFormatError(f"certificate {i} of {length} bytes")
            chain.append(bytes(r.raw(length, f"certificate {i}")))
        sig_len = r.u8("signature length")
        if sig_len < 1:
            raise FilterFormatError("an unsigned filter (signature length 0)")
        signature = bytes(r.raw(sig_len, "signature"))
        bodies: list[bytes | None] = []
        for i, p in enumerate(partitions):
            present = r.u8(f"partition {i} present")
            if present > 1:
                raise FilterFormatError(f"partition {i}: present flag {present}")
            n = p.cards.layout.array_length + p.psams.layout.array_length
            bodies.append(bytes(r.raw(n, f"partition {i} body")) if present else None)
        r.expect_end()
    except CodecError as exc:
        if isinstance(exc, FilterFormatError):
            raise
        raise FilterFormatError(str(exc)) from exc
    head = (scope, issued_at, expires_at, f"{signer:06d}", suite_id, bytes(key_id))
    return _Parsed(head, partitions, header, tuple(chain), signature, tuple(bodies))


def _filter(d: _Descriptor, data: bytes) -> FuseFilter:
    return FuseFilter(d.seed, d.layout, data, d.size)


def _assemble(parsed: _Parsed, previous: OfflineFilter | None) -> OfflineFilter:
    old = {p.body_digest: p.body for p in previous.partitions} if previous else {}
    partitions = []
    for i, (raw, body) in enumerate(zip(parsed.partitions, parsed.bodies, strict=True)):
        if body is None:
            body = old.get(raw.body_digest)
            if body is None:
                raise FilterIntegrityError(
                    f"partition {i} ({raw.fields[0]}) is omitted but the previous file has "
                    f"no body {raw.body_digest.hex()[:16]}"
                    + ("" if previous else ": this is an update, apply it to a previous file")
                )
        if hashlib.sha256(body).digest() != raw.body_digest:
            raise FilterIntegrityError(f"partition {i} ({raw.fields[0]}): body digest mismatch")
        split = raw.cards.layout.array_length
        cards, psams = _filter(raw.cards, body[:split]), _filter(raw.psams, body[split:])
        partitions.append(Partition(*raw.fields, cards, psams))
    f = OfflineFilter(*parsed.head, tuple(partitions), parsed.chain, parsed.signature)
    if f.header != parsed.header:  # one encoding only
        raise FilterFormatError("the header is not in canonical form")
    return f


def parse(data: bytes, previous: OfflineFilter | None = None) -> OfflineFilter:
    """A filter from its bytes, integrity checked (what the C reader checks: the trailer,
    every body's digest, the structure) but *not* authenticated: see :func:`verify`.
    ``previous``: the file an update applies to (its bodies fill the omitted ones)."""
    return _assemble(_parse(bytes(data)), previous)


def verify_signer(
    f: OfflineFilter,
    anchor: TrustAnchor,
    revocations: Sequence[KeyRevocation] = (),
    *,
    now: int | None = None,
) -> TrustedKey:
    """The certified key that signed ``f``, or why not: the chain verifies from the pinned
    root as of ``issued_at`` (and, with ``now``, no certificate expired by then), its leaf is
    the header's key, that key is certified for a prefix of the scope, and its signature
    verifies over its suite's digest of the header."""
    try:
        chain: list[Certificate] = decode_chain(f.chain)
        key = verify_chain(chain, anchor, revocations, f.issued_at, now=now)
    except TrustError as exc:
        raise FilterSignatureError(f"the filter's certificate chain: {exc}") from exc
    if key.key_id != f.key_id or key.suite_id != f.suite_id:
        raise FilterSignatureError(
            f"the chain certifies key {key.key_id.hex()}, the filter names {f.key_id.hex()}"
        )
    if not any(f.scope.startswith(p) for p in key.prefixes):
        raise FilterSignerNotAllowed(
            f"key {key.key_id.hex()} of {key.publisher} is certified for {list(key.prefixes)}, "
            f"not for the filter's scope {f.scope!r}"
        )
    if not key.verify_body(f.header, f.signature):
        raise FilterSignatureError(f"the signature of key {key.key_id.hex()} does not verify")
    return key


def verify(
    data: bytes,
    anchor: TrustAnchor,
    revocations: Sequence[KeyRevocation] = (),
    *,
    now: int | None = None,
    previous: OfflineFilter | None = None,
) -> OfflineFilter:
    """:func:`parse`, then :func:`verify_signer`: the filter a terminal may use."""
    f = parse(data, previous)
    verify_signer(f, anchor, revocations, now=now)
    return f


def check_expiry(issued_at: int, expires_at: int) -> None:
    if not 0 <= issued_at < expires_at <= _I64_MAX:
        raise ValueError(f"issued_at {issued_at} must be before expires_at {expires_at}")
