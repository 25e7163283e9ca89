"""Signed deltas and snapshots: the binary layout, signing and decoding.

Container (what travels between nodes and what the store retains)::

    field      encoding                 meaning
    magic      4 bytes  b"CRL1"         format and version of this layout
    body       uvarint length + bytes   the signed part; digest = SHA-256(body)
    signature  uvarint length + bytes   the suite's signature over the 32-byte digest

Body::

    kind       u8        1 = delta, 2 = snapshot
    publisher  u32       the publisher's 6-digit code as an integer (000000 = ministry)
    version    u64       delta: its number in the feed (head + 1);
                         snapshot: the feed version it reproduces
    link       32 bytes  delta: digest of the previous delta (zeros before version 1);
                         snapshot: digest of the delta at ``version`` (the head it reproduces)
    issued_at  i64       unix seconds when the publisher produced it
    suite      u8        signing suite id (1 = Ed25519)
    key_id     8 bytes   which key signed it
    delta:     adds (entry block, see entryblock.py), then removes (card block)
    snapshot:  entries (entry block), then each entry's version: u8 width + packed, in
               entry-block order

Blocks are canonical (sorted, fixed encodings), so one set of changes has exactly one body.
Decoding checks every length and raises :class:`CodecError`; it never verifies anything —
that is :mod:`blacklist.accept`'s job.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from blacklist.bitpack import pack_uints, unpack_uints
from blacklist.entryblock import (
    CardColumns,
    EntryColumns,
    read_cards,
    read_entries,
    write_cards,
    write_entries,
)
from blacklist.errors import CodecError
from blacklist.signing import KEY_ID_LENGTH, SigningKey
from blacklist.wire import Reader, Writer

MAGIC = b"CRL1"
DIGEST_LENGTH = 32
ZERO_DIGEST = bytes(DIGEST_LENGTH)
MAX_SIGNATURE = 1024


class Kind(enum.IntEnum):
    DELTA = 1
    SNAPSHOT = 2


def publisher_code(publisher: str) -> int:
    if len(publisher) != 6 or not publisher.isdigit() or not publisher.isascii():
        raise ValueError(f"publisher {publisher!r} is not a 6-digit code")
    return int(publisher)


@dataclass(frozen=True, slots=True)
class FeedHead:
    """Where one publisher's feed stands: its latest version and that delta's digest."""

    publisher: str
    version: int
    digest: bytes

    @classmethod
    def genesis(cls, publisher: str) -> FeedHead:
        """The head of a feed that has no deltas yet."""
        return cls(publisher, 0, ZERO_DIGEST)


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
        return hashlib.sha256(self.body).digest()

    def to_bytes(self) -> bytes:
        return _container(self.body, self.signature)


@dataclass(frozen=True)
class Delta(_Signed):
    header: Header
    adds: EntryColumns
    removes: CardColumns
    body: bytes = field(repr=False)
    signature: bytes = field(repr=False)

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


def _read_header(r: Reader) -> Header:
    kind = r.u8("kind")
    if kind not in (Kind.DELTA, Kind.SNAPSHOT):
        raise CodecError(f"unknown body kind {kind}")
    publisher = r.u32("publisher")
    if publisher > 999_999:
        raise CodecError(f"publisher code {publisher} has more than 6 digits")
    return Header(
        kind=Kind(kind),
        publisher=f"{publisher:06d}",
        version=r.u64("version"),
        link=r.raw(DIGEST_LENGTH, "link digest"),
        issued_at=r.i64("issued_at"),
        suite_id=r.u8("suite"),
        key_id=r.raw(KEY_ID_LENGTH, "key id"),
    )


def sign_delta(
    key: SigningKey,
    head: FeedHead,
    adds: EntryColumns,
    removes: CardColumns,
    issued_at: int,
) -> Delta:
    """The delta that follows ``head``: version head+1, linked to head's digest, signed.

    ``adds`` and ``removes`` are sorted here, so callers may pass them in any order.
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
    return _seal_delta(key, header, adds.sorted(), removes.sorted())


def _seal_delta(key: SigningKey, header: Header, adds: EntryColumns, removes: CardColumns) -> Delta:
    w = Writer()
    _write_header(w, header)
    write_entries(w, adds)
    write_cards(w, removes)
    body = w.getvalue()
    return Delta(header, adds, removes, body, key.sign(hashlib.sha256(body).digest()))


def sign_snapshot(
    key: SigningKey,
    head: FeedHead,
    entries: EntryColumns,
    versions: NDArray[np.uint64],
    issued_at: int,
) -> Snapshot:
    """A signed image of a whole feed at ``head`` (entries in any order; sorted here)."""
    if len(versions) != len(entries):
        raise ValueError(f"{len(versions)} versions for {len(entries)} entries")
    order = entries.sort_order()
    entries = entries.take(order)
    versions = np.asarray(versions, dtype=np.uint64)[order]
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
    width = int(versions.max()).bit_length() if len(versions) else 0
    w.u8(width)
    w.raw(pack_uints(versions, width))
    body = w.getvalue()
    return Snapshot(header, entries, versions, body, key.sign(hashlib.sha256(body).digest()))


def decode(data: bytes) -> Delta | Snapshot:
    """Parse a signed container. Raises CodecError on anything that is not exactly one."""
    r = Reader(data, "signed container")
    if r.raw(len(MAGIC), "magic") != MAGIC:
        raise CodecError("not a signed delta or snapshot (bad magic)")
    body = r.blob("body")
    signature = r.blob("signature", limit=MAX_SIGNATURE)
    r.expect_end()
    br = Reader(body, "body")
    header = _read_header(br)
    if header.kind is Kind.DELTA:
        adds = read_entries(br)
        removes = read_cards(br)
        br.expect_end()
        return Delta(header, adds, removes, body, signature)
    entries = read_entries(br)
    width = br.u8("version width")
    if width > 64:
        raise CodecError(f"version width {width} exceeds 64")
    nbytes = (len(entries) * width + 7) // 8
    versions = unpack_uints(br.raw(nbytes, "versions"), len(entries), width)
    br.expect_end()
    return Snapshot(header, entries, versions, body, signature)


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
