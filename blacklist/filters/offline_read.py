"""Reading a signed offline filter (blacklist/filters/offline.py has its layout and model):
:func:`parse` checks its integrity, as the C reader does (``reader/offline_filter.c``), and
:func:`verify` also its authenticity: the certificate chain from the pinned root and the
signer's permission for the filter's scope."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from blacklist.binary import Reader
from blacklist.certs import Certificate, KeyRevocation
from blacklist.chainverify import TrustAnchor, TrustError, decode_chain, verify_chain
from blacklist.delta import DIGEST_LENGTH
from blacklist.errors import CodecError
from blacklist.filters.fuse import MAX_SEGMENT_LENGTH, FuseFilter, FuseLayout
from blacklist.filters.offline import (
    FORMAT_VERSION,
    MAGIC,
    MAX_CERTIFICATE_BYTES,
    MAX_CHAIN,
    MAX_PARTITIONS,
    MAX_REGIONS,
    TRAILER_LENGTH,
    FilterFormatError,
    FilterIntegrityError,
    FilterSignatureError,
    FilterSignerNotAllowed,
    OfflineFilter,
    Partition,
    check_scope_text,
)
from blacklist.signing import KEY_ID_LENGTH, TrustedKey


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
