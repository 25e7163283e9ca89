"""Decoding signed deltas and snapshots (the layout is :mod:`blacklist.delta`'s docstring):
open the container as far as its fixed header (:func:`open_envelope`), then decode the body
(:func:`decode_body`) with every declared count bounded by :class:`DecodeLimits`.

Decoding checks every length and raises :class:`CodecError` on anything that is not exactly
one canonical item; it never verifies anything — that is :mod:`blacklist.sync.accept`'s job,
which verifies the envelope's signature before the body is decoded.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from blacklist.binary import Reader
from blacklist.bitpack import unpack_uints
from blacklist.delta import (
    DIGEST_LENGTH,
    MAGIC,
    MAX_SIGNATURE,
    MAX_TRUST_RECORD,
    MAX_TRUST_RECORDS,
    SECTION_EXPIRY,
    SECTION_PSAM,
    SECTION_TRUST,
    Delta,
    Envelope,
    Header,
    Kind,
    Snapshot,
)
from blacklist.entryblock import MAX_ENTRIES, CardColumns, EntryColumns, read_cards, read_entries
from blacklist.errors import CodecError
from blacklist.expiry import read_expiry
from blacklist.signing import KEY_ID_LENGTH, SUITES


def _read_header(r: Reader) -> Header:
    kind = r.u8("kind")
    if kind not in (Kind.DELTA, Kind.SNAPSHOT):
        raise CodecError(f"unknown body kind {kind}")
    publisher = r.u32("publisher")
    if publisher > 999_999:
        raise CodecError(f"publisher code {publisher} has more than 6 digits")
    version = r.u64("version")
    link = r.raw(DIGEST_LENGTH, "link digest")
    issued_at = r.i64("issued_at")
    suite_id = r.u8("suite")
    if suite_id not in SUITES:
        # Its digest is not even defined: refuse before anything asks for it.
        raise CodecError(f"unknown signing suite id {suite_id}")
    return Header(
        kind=Kind(kind),
        publisher=f"{publisher:06d}",
        version=version,
        link=link,
        issued_at=issued_at,
        suite_id=suite_id,
        key_id=r.raw(KEY_ID_LENGTH, "key id"),
    )


def _read_versions(br: Reader, n: int) -> NDArray[np.uint64]:
    width = br.u8("version width")
    if width > 64:
        raise CodecError(f"version width {width} exceeds 64")
    if n == 0 and width != 0:
        raise CodecError("version width must be 0 for no entries")
    nbytes = (n * width + 7) // 8
    return unpack_uints(br.raw(nbytes, "versions"), n, width)


def _read_sections(br: Reader) -> tuple[bool, bool, bool]:
    flags = br.u8("sections")
    if flags & ~(SECTION_PSAM | SECTION_TRUST | SECTION_EXPIRY):
        raise CodecError(f"unknown section flags {flags:#04x}")
    return (
        bool(flags & SECTION_PSAM),
        bool(flags & SECTION_TRUST),
        bool(flags & SECTION_EXPIRY),
    )


def _check_psam_rows(cards: CardColumns, what: str) -> None:
    if len(cards) and int(cards.middle.max()) != 0:
        raise CodecError(f"{what}: a PSAM row has a non-zero middle part")


def _read_trust(br: Reader, present: bool, limit: int = MAX_TRUST_RECORDS) -> tuple[bytes, ...]:
    if not present:
        return ()
    count = br.uvarint("trust record count", limit=limit)
    if count == 0:
        raise CodecError("the trust section is flagged but empty")
    records = tuple(br.blob("trust record", limit=MAX_TRUST_RECORD) for _ in range(count))
    for a, b in itertools.pairwise(records):
        if not a < b:
            raise CodecError("trust records are not in strictly ascending order")
    if not records[0]:
        raise CodecError("an empty trust record")
    return records


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Ceilings on what one signed body may declare, checked before anything is allocated
    from a count (issue #11: a small message must not cost gigabytes). The codec's own
    bounds (one bit per card at least) still apply below these."""

    max_delta_entries: int = 5_000_000  # adds + removes of one delta (cards, then PSAMs)
    max_snapshot_entries: int = 50_000_000  # one publisher's whole set
    max_trust_records: int = MAX_TRUST_RECORDS  # the per-feed bound is trust_rules'

    def __post_init__(self) -> None:
        for name in ("max_delta_entries", "max_snapshot_entries", "max_trust_records"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if self.max_delta_entries > MAX_ENTRIES or self.max_snapshot_entries > MAX_ENTRIES:
            raise ValueError(f"entry limits cannot exceed the codec's {MAX_ENTRIES}")
        if self.max_trust_records > MAX_TRUST_RECORDS:
            raise ValueError(f"max_trust_records cannot exceed {MAX_TRUST_RECORDS}")


DEFAULT_LIMITS = DecodeLimits()


def open_envelope(data: bytes) -> Envelope:
    """The header, body and signature of a signed container; CodecError if it is not exactly
    one. Costs O(header): the body is not decoded."""
    r = Reader(data, "signed container")
    if r.raw(len(MAGIC), "magic") != MAGIC:
        raise CodecError("not a signed delta or snapshot (bad magic)")
    body = r.blob("body")
    signature = r.blob("signature", limit=MAX_SIGNATURE)
    r.expect_end()
    return Envelope(_read_header(Reader(body, "body")), body, signature)


def decode_body(envelope: Envelope, limits: DecodeLimits = DEFAULT_LIMITS) -> Delta | Snapshot:
    """Decode the body of an envelope (whose signature the caller has verified), with every
    declared count bounded by ``limits``. Raises CodecError."""
    header, body, signature = envelope.header, envelope.body, envelope.signature
    br = Reader(body, "body")
    _read_header(br)
    if header.kind is Kind.DELTA:
        budget = limits.max_delta_entries
        adds = read_entries(br, budget)
        removes = read_cards(br, budget - len(adds))
        has_psams, has_trust, has_ends = _read_sections(br)
        psam_adds, psam_removes = EntryColumns.empty(), CardColumns.empty()
        if has_psams:
            psam_adds = read_entries(br, budget)
            psam_removes = read_cards(br, budget - len(psam_adds))
            if not len(psam_adds) and not len(psam_removes):
                raise CodecError("the PSAM section is flagged but empty")
            _check_psam_rows(psam_adds.cards, "PSAM adds")
            _check_psam_rows(psam_removes, "PSAM removes")
        trust = _read_trust(br, has_trust, limits.max_trust_records)
        if has_ends:
            adds = read_expiry(br, adds)
        br.expect_end()
        return Delta(header, adds, removes, body, signature, psam_adds, psam_removes, trust)
    entries = read_entries(br, limits.max_snapshot_entries)
    versions = _read_versions(br, len(entries))
    has_psams, has_trust, has_ends = _read_sections(br)
    psams, psam_versions = EntryColumns.empty(), np.zeros(0, np.uint64)
    if has_psams:
        psams = read_entries(br, limits.max_snapshot_entries)
        if not len(psams):
            raise CodecError("the PSAM section is flagged but empty")
        _check_psam_rows(psams.cards, "PSAM entries")
        psam_versions = _read_versions(br, len(psams))
    trust = _read_trust(br, has_trust, limits.max_trust_records)
    if has_ends:
        entries = read_expiry(br, entries)
    br.expect_end()
    return Snapshot(header, entries, versions, body, signature, psams, psam_versions, trust)


def decode(data: bytes, limits: DecodeLimits = DEFAULT_LIMITS) -> Delta | Snapshot:
    """Parse a signed container. Raises CodecError on anything that is not exactly one.
    Verifies nothing: a node opens the envelope, verifies, then decodes the body
    (:func:`blacklist.sync.accept.accept_signed`)."""
    return decode_body(open_envelope(data), limits)


def decode_delta(data: bytes) -> Delta:
    item = decode(data)
    if not isinstance(item, Delta):
        raise CodecError("expected a delta, got a snapshot")
    return item


def decode_snapshot(data: bytes) -> Snapshot:
    item = decode(data)
    if not isinstance(item, Snapshot):
        raise CodecError("expected a snapshot, got a delta")
    return item
