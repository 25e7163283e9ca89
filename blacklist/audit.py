"""Who changed which card, when: the audit log of Admin.Revoke and Admin.Reinstate (issue #5).

One record per card per accepted call, in the LMDB named database ``audit`` of the store's
environment. All integers big-endian::

    audit   key   time u64 (unix seconds) + sequence u32                            12 bytes
                  (sorts by time; the sequence orders records of the same second)
            value feed version u64, action u8, reason u8, card key (18, cardid.py),  28 bytes
                  then the operator as UTF-8 (the rest of the value)

A fixed binary prefix rather than JSON because a large Revoke writes one record per card
(up to 100,000 per call): 28 bytes + the operator string instead of ~150 bytes of JSON, and
the card key is the same 18-byte form as the ``entries`` keys. The operator comes last so it
needs no length field.

Records are written by :meth:`AuditLog.record` in a write transaction of their own, on the
node's writer thread right after the delta they describe committed (node/servicers.py), so
a refused call writes none. A crash between the two commits loses those records; the delta
itself stays signed and retained (archive.py).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from blacklist.cardid import KEY_LENGTH, key_to_text, text_to_key
from blacklist.errors import StoreError

AUDIT_DB = b"audit"
_KEY = struct.Struct(">QI")
_HEAD = struct.Struct(">QBB")
KEY_SIZE = _KEY.size
_VALUE_FIXED = _HEAD.size + KEY_LENGTH
_MAX_SEQ = 0xFFFF_FFFF


class AuditAction(enum.IntEnum):
    """Values are part of the stored layout."""

    REVOKE = 1
    REINSTATE = 2


@dataclass(frozen=True, slots=True)
class AuditRecord:
    time: int  # unix seconds
    sequence: int
    action: AuditAction
    card_id: str  # canonical text
    reason: int  # a blacklist.entry.Reason value; 0 for a reinstatement
    feed_version: int  # the feed version the call produced
    operator: str

    @property
    def key(self) -> bytes:
        return _KEY.pack(self.time, self.sequence)


def pack_value(
    action: AuditAction, card_key: bytes, reason: int, feed_version: int, operator: str
) -> bytes:
    return _HEAD.pack(feed_version, action, reason) + card_key + operator.encode()


def decode_record(key: bytes, value: bytes) -> AuditRecord:
    if len(key) != KEY_SIZE or len(value) < _VALUE_FIXED:
        raise StoreError(f"audit record {key.hex()} is malformed ({len(value)}-byte value)")
    time, seq = _KEY.unpack(key)
    version, action, reason = _HEAD.unpack_from(value)
    try:
        kind = AuditAction(action)
    except ValueError:
        raise StoreError(f"audit record {key.hex()} has unknown action {action}") from None
    card = key_to_text(bytes(value[_HEAD.size : _VALUE_FIXED]))
    operator = bytes(value[_VALUE_FIXED:]).decode()
    return AuditRecord(time, seq, kind, card, reason, version, operator)


@dataclass(frozen=True, slots=True)
class AuditChange:
    """One card of an accepted call, before it is stamped with a time and sequence."""

    card_id: str  # canonical text
    reason: int = 0


class AuditLog:
    """The ``audit`` database of a store's LMDB environment."""

    def __init__(self, env: Any) -> None:
        self.env = env
        self._db = env.open_db(AUDIT_DB)

    def record(
        self,
        action: AuditAction,
        changes: Sequence[AuditChange],
        *,
        operator: str,
        feed_version: int,
        when: int,
    ) -> list[AuditRecord]:
        """Append one record per change at time ``when`` (one write transaction)."""
        if when < 0:
            raise ValueError(f"audit time must be >= 0, got {when}")
        out: list[AuditRecord] = []
        with self.env.begin(write=True) as txn:
            seq = self._next_sequence(txn, when)
            if seq + len(changes) > _MAX_SEQ + 1:
                raise StoreError(f"more than {_MAX_SEQ + 1} audit records in second {when}")
            rows = []
            for change in changes:
                rec = AuditRecord(
                    when, seq, action, change.card_id, change.reason, feed_version, operator
                )
                value = pack_value(
                    action, text_to_key(change.card_id), change.reason, feed_version, operator
                )
                rows.append((rec.key, value))
                out.append(rec)
                seq += 1
            txn.cursor(db=self._db).putmulti(rows, overwrite=False)
        return out

    def _next_sequence(self, txn: Any, when: int) -> int:
        cursor = txn.cursor(db=self._db)
        # The last record before second ``when + 1``, if any.
        found = cursor.prev() if cursor.set_range(_KEY.pack(when + 1, 0)) else cursor.last()
        if not found:
            return 0
        time, seq = _KEY.unpack(cursor.key())
        return seq + 1 if time == when else 0

    def records(
        self,
        *,
        card_id: str | None = None,
        since: int = 0,
        until: int | None = None,
        after: bytes | None = None,
    ) -> Iterator[AuditRecord]:
        """Records in time order with ``since <= time <= until``, optionally of one card,
        starting after the key ``after`` (a page token). A card filter scans the time range."""
        start = _KEY.pack(since, 0)
        if after is not None and after >= start:
            start = after + b"\x00"  # the smallest key greater than ``after``
        card_key = text_to_key(card_id) if card_id is not None else None
        with self.env.begin(buffers=False) as txn:
            cursor = txn.cursor(db=self._db)
            if not cursor.set_range(start):
                return
            for key, value in cursor:
                if until is not None and _KEY.unpack(key)[0] > until:
                    break
                if card_key is not None and value[_HEAD.size : _VALUE_FIXED] != card_key:
                    continue
                yield decode_record(key, value)

    def count(self) -> int:
        with self.env.begin() as txn:
            return int(txn.stat(self._db)["entries"])


__all__ = [
    "KEY_SIZE",
    "AuditAction",
    "AuditChange",
    "AuditLog",
    "AuditRecord",
    "decode_record",
    "pack_value",
]
