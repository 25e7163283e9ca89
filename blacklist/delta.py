"""Signed deltas and snapshots: the binary layout, signing and decoding.

Container (what travels between nodes and what the store retains)::

    field      encoding                 meaning
    magic      4 bytes  b"CRL1"         format and version of this layout
    body       uvarint length + bytes   the signed part; digest = the suite's digest of the
                                        body (SHA-256 for Ed25519, SM3 for SM2, signing.py)
    signature  uvarint length + bytes   the suite's signature over the 32-byte digest

Body::

    kind       u8        1 = delta, 2 = snapshot
    publisher  u32       the publisher's 6-digit code as an integer (000000 = ministry)
    version    u64       delta: its number in the feed (head + 1);
                         snapshot: the feed version it reproduces
    link       32 bytes  delta: digest of the previous delta (zeros before version 1);
                         snapshot: digest of the delta at ``version`` (the head it reproduces)
    issued_at  i64       unix seconds when the publisher produced it
    suite      u8        signing suite id (1 = Ed25519, 2 = SM2/SM3); an unknown one does
                         not decode
    key_id     8 bytes   which key signed it
    delta:     adds (entry block, see entryblock.py), then removes (card block)
    snapshot:  entries (entry block), then each entry's version: u8 width + packed, in
               entry-block order
    sections   u8        which optional sections follow: bit 0 PSAM, bit 1 trust, bit 2
                         expiry; other bits zero. A section is flagged exactly when it
                         is not empty.
    PSAM       delta: PSAM adds (entry block), then PSAM removes (card block);
               snapshot: PSAM entries (entry block), then their versions as above.
               PSAM rows have middle 0 (see psam.py): the second list kind, the deny list
               of terminals' secure modules, under the same signature and scope rules.
    trust      uvarint count (>= 1), then count blobs (uvarint length + bytes, at most
               MAX_TRUST_RECORD each), strictly ascending: certificates and key
               revocations the publisher issued (certs.py), so that they travel with its
               feed (DESIGN §6). A snapshot carries all the publisher has issued.
    expiry     the end times of the adds (delta) or entries (snapshot), see expiry.py;
               flagged exactly when one of them has an end time (issue #17). Bodies from
               before end times never set the bit, so they keep their bytes and digests.

A feed has one suite at a time, the one its items' headers name, and every digest of an
item is in the suite its own header names: a link is the previous delta's digest *in that
delta's suite*, never recomputed. So a feed whose authority rotates from an Ed25519 key to
an SM2 key (issue #14) continues across the change: the first SM2 delta's link is the
SHA-256 digest of the last Ed25519 delta, its own digest is SM3, and old bodies keep their
bytes, digests and signatures.

Blocks are canonical (sorted, fixed encodings), so one set of changes has exactly one body.
This module writes and signs; :mod:`blacklist.deltadecode` reads, checking every length and
raising :class:`CodecError`, and never verifies anything — that is
:mod:`blacklist.sync.accept`'s job.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from blacklist.binary import Writer
from blacklist.bitpack import pack_uints
from blacklist.entryblock import (
    CardColumns,
    EntryColumns,
    write_cards,
    write_entries,
)
from blacklist.expiry import has_end_times, write_expiry
from blacklist.feedhead import DIGEST_LENGTH as DIGEST_LENGTH
from blacklist.feedhead import ZERO_DIGEST as ZERO_DIGEST
from blacklist.feedhead import FeedHead as FeedHead
from blacklist.feedhead import publisher_code as publisher_code
from blacklist.signing import KEY_ID_LENGTH, SigningKey, digest_of

MAGIC = b"CRL1"
MAX_SIGNATURE = 1024
MAX_TRUST_RECORD = 4096
MAX_TRUST_RECORDS = 10_000
SECTION_PSAM = 1
SECTION_TRUST = 2
SECTION_EXPIRY = 4


class Kind(enum.IntEnum):
    DELTA = 1
    SNAPSHOT = 2


@dataclass(frozen=True)
class Header:
    kind: Kind
    publisher: str
    version: int
    link: bytes
    issued_at: int
    suite_id: int
    key_id: bytes


class _Signed:
    """What deltas and snapshots share: a header, a signed body and its signature."""

    header: Header
    body: bytes
    signature: bytes

    @property
    def publisher(self) -> str:
        return self.header.publisher

    @property
    def version(self) -> int:
        return self.header.version

    @cached_property
    def digest(self) -> bytes:
        """The body's digest in the suite its header names (SHA-256 or SM3)."""
        return digest_of(self.header.suite_id, self.body)

    def to_bytes(self) -> bytes:
        return _container(self.body, self.signature)


@dataclass(frozen=True)
class Delta(_Signed):
    header: Header
    adds: EntryColumns
    removes: CardColumns
    body: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    psam_adds: EntryColumns = field(default_factory=EntryColumns.empty)
    psam_removes: CardColumns = field(default_factory=CardColumns.empty)
    trust: tuple[bytes, ...] = ()

    @property
    def prev_digest(self) -> bytes:
        return self.header.link


@dataclass(frozen=True)
class Snapshot(_Signed):
    header: Header
    entries: EntryColumns
    versions: NDArray[np.uint64]
    body: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    psams: EntryColumns = field(default_factory=EntryColumns.empty)
    psam_versions: NDArray[np.uint64] = field(default_factory=lambda: np.zeros(0, np.uint64))
    trust: tuple[bytes, ...] = ()

    @property
    def head_digest(self) -> bytes:
        return self.header.link


def _container(body: bytes, signature: bytes) -> bytes:
    w = Writer()
    w.raw(MAGIC)
    w.blob(body)
    w.blob(signature)
    return w.getvalue()


def _write_header(w: Writer, h: Header) -> None:
    if len(h.link) != DIGEST_LENGTH or len(h.key_id) != KEY_ID_LENGTH:
        raise ValueError("link must be 32 bytes and key id 8 bytes")
    w.u8(h.kind)
    w.u32(publisher_code(h.publisher))
    w.u64(h.version)
    w.raw(h.link)
    w.i64(h.issued_at)
    w.u8(h.suite_id)
    w.raw(h.key_id)


def sign_delta(
    key: SigningKey,
    head: FeedHead,
    adds: EntryColumns,
    removes: CardColumns,
    issued_at: int,
    *,
    psam_adds: EntryColumns | None = None,
    psam_removes: CardColumns | None = None,
    trust: Sequence[bytes] = (),
) -> Delta:
    """The delta that follows ``head``: version head+1, linked to head's digest, signed.

    Cards and PSAMs are sorted here and trust records put in canonical order, so callers
    may pass them in any order.
    """
    header = Header(
        Kind.DELTA,
        head.publisher,
        head.version + 1,
        head.digest,
        issued_at,
        key.suite_id,
        key.key_id,
    )
    psam_adds = (psam_adds or EntryColumns.empty()).sorted()
    psam_removes = (psam_removes or CardColumns.empty()).sorted()
    _refuse_psam_ends(psam_adds)
    records = canonical_trust(trust)
    w = Writer()
    _write_header(w, header)
    adds, removes = adds.sorted(), removes.sorted()
    write_entries(w, adds)
    write_cards(w, removes)
    has_psams = len(psam_adds) > 0 or len(psam_removes) > 0
    ends = has_end_times(adds)
    w.u8(_sections(has_psams, bool(records), ends))
    if has_psams:
        write_entries(w, psam_adds)
        write_cards(w, psam_removes)
    _write_trust(w, records)
    if ends:
        write_expiry(w, adds)
    body = w.getvalue()
    return Delta(
        header,
        adds,
        removes,
        body,
        key.sign_body(body),
        psam_adds,
        psam_removes,
        records,
    )


def _sections(psams: bool, trust: bool, ends: bool) -> int:
    return (
        (SECTION_PSAM if psams else 0)
        | (SECTION_TRUST if trust else 0)
        | (SECTION_EXPIRY if ends else 0)
    )


def _refuse_psam_ends(psams: EntryColumns) -> None:
    if has_end_times(psams):
        raise ValueError("a PSAM denial cannot carry an end time (only card entries lapse)")


def canonical_trust(records: Iterable[bytes]) -> tuple[bytes, ...]:
    """Trust records in their one canonical order: sorted, without duplicates."""
    out = tuple(sorted({bytes(r) for r in records}))
    if len(out) > MAX_TRUST_RECORDS:
        raise ValueError(f"{len(out)} trust records, at most {MAX_TRUST_RECORDS}")
    for r in out:
        if not 0 < len(r) <= MAX_TRUST_RECORD:
            raise ValueError(f"a trust record of {len(r)} bytes (1..{MAX_TRUST_RECORD})")
    return out


def _write_trust(w: Writer, records: tuple[bytes, ...]) -> None:
    if records:
        w.uvarint(len(records))
        for r in records:
            w.blob(r)


def _write_versions(w: Writer, versions: NDArray[np.uint64]) -> None:
    width = int(versions.max()).bit_length() if len(versions) else 0
    w.u8(width)
    w.raw(pack_uints(versions, width))


def _sorted_with_versions(
    entries: EntryColumns, versions: NDArray[np.uint64], what: str
) -> tuple[EntryColumns, NDArray[np.uint64]]:
    if len(versions) != len(entries):
        raise ValueError(f"{len(versions)} versions for {len(entries)} {what}")
    order = entries.sort_order()
    return entries.take(order), np.asarray(versions, dtype=np.uint64)[order]


def sign_snapshot(
    key: SigningKey,
    head: FeedHead,
    entries: EntryColumns,
    versions: NDArray[np.uint64],
    issued_at: int,
    *,
    psams: EntryColumns | None = None,
    psam_versions: NDArray[np.uint64] | None = None,
    trust: Sequence[bytes] = (),
) -> Snapshot:
    """A signed image of a whole feed at ``head`` (entries in any order; sorted here)."""
    entries, versions = _sorted_with_versions(entries, versions, "entries")
    psams, psam_versions = _sorted_with_versions(
        psams or EntryColumns.empty(),
        np.zeros(0, np.uint64) if psam_versions is None else psam_versions,
        "PSAMs",
    )
    _refuse_psam_ends(psams)
    records = canonical_trust(trust)
    header = Header(
        Kind.SNAPSHOT,
        head.publisher,
        head.version,
        head.digest,
        issued_at,
        key.suite_id,
        key.key_id,
    )
    w = Writer()
    _write_header(w, header)
    write_entries(w, entries)
    _write_versions(w, versions)
    ends = has_end_times(entries)
    w.u8(_sections(len(psams) > 0, bool(records), ends))
    if len(psams):
        write_entries(w, psams)
        _write_versions(w, psam_versions)
    _write_trust(w, records)
    if ends:
        write_expiry(w, entries)
    body = w.getvalue()
    return Snapshot(
        header,
        entries,
        versions,
        body,
        key.sign_body(body),
        psams,
        psam_versions,
        records,
    )


@dataclass(frozen=True)
class Envelope(_Signed):
    """A signed container opened only as far as its fixed header: enough to find the key
    and verify the signature before the body, which an attacker sizes, is decoded
    (DESIGN §5: cheapest checks first; boulder's storer: parse, verify, then use)."""

    header: Header
    body: bytes = field(repr=False)
    signature: bytes = field(repr=False)
