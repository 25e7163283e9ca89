"""Hostile inputs for benchmarks and tests (issue #11 item 6): the decode bomb.

A delta body whose card block declares ``cards`` removes in one group with the smallest legal
encoding (one bit per card): 12.5 MB of unsigned bytes declare 100M cards, which a decoder
that trusts counts would turn into gigabytes of columns. The layout is blacklist/delta.py's
body and blacklist/entryblock.py's card block; the signature is zeros.
"""

from __future__ import annotations

from blacklist.binary import Writer
from blacklist.delta import MAGIC, Kind


def decode_bomb(key_id: bytes, cards: int, *, issued_at: int, publisher: int = 440100) -> bytes:
    w = Writer()
    w.u8(Kind.DELTA)
    w.u32(publisher)
    w.u64(1)  # version
    w.raw(bytes(32))  # previous digest
    w.i64(issued_at)
    w.u8(1)  # suite: Ed25519
    w.raw(key_id)
    w.uvarint(0)  # adds: no cards, no groups, min time 0, widths 0
    w.uvarint(0)
    w.svarint(0)
    w.u8(0)
    w.u8(0)
    w.uvarint(cards)  # removes: one group of ``cards`` serials
    w.uvarint(1)
    w.uvarint(publisher)
    w.uvarint(0)
    w.uvarint(cards)
    w.raw(b"\xff" * (cards // 8))
    body = w.getvalue()
    container = Writer()
    container.raw(MAGIC)
    container.blob(body)
    container.blob(bytes(64))
    return container.getvalue()
