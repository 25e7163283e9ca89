"""Who changed which card or PSAM, when: the audit log of Admin.Revoke, Reinstate, RevokePsam
and ReinstatePsam (issue #5).

One record per card per accepted call, in the LMDB named database ``audit`` of the store's
environment. All integers big-endian::

    audit   key   time u64 (unix seconds) + sequence u32                            12 bytes
                  (sorts by time; the sequence orders records of the same second)
            value feed version u64, action u8, reason u8, subject (18),              28 bytes
                  then the operator as UTF-8 (the rest of the value); the subject is
                  the card key (cardid.py), or for the PSAM actions the PSAM key
                  (psam.py, 11 bytes) followed by 7 zero bytes

A fixed binary prefix rather than JSON because a large Revoke writes one record per card
(up to 100,000 per call): 28 bytes + the operator string instead of ~150 bytes of JSON, and
the card key is the same 18-byte form as the ``entries`` keys. The operator comes last so it
needs no length field.

The node writes a call's records with :meth:`AuditLog.stage` inside the write transaction
that applies the delta they describe (node/servicers.py through Authority and
RevocationStore.apply_delta), so the records and the delta commit together or not at all,
and a refused call writes none. :meth:`AuditLog.record` is the same in a transaction of its
own.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from blacklist.cardid import KEY_LENGTH, key_to_text, text_to_key
from blacklist.errors import StoreError
from blacklist.psam import PSAM_ID_LENGTH, PSAM_KEY_LENGTH, psam_key, psam_text

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
    PSAM_REVOKE = 3  # the subject is a PSAM id (psam.py), not a card
    PSAM_REINSTATE = 4


PSAM_ACTIONS = frozenset({AuditAction.PSAM_REVOKE, AuditAction.PSAM_REINSTATE})
_PSAM_PAD = bytes(KEY_LENGTH - PSAM_KEY_LENGTH)


def subject_key(action: AuditAction, subject: str) -> bytes:
    """The 18-byte subject slot: a card key, or a PSAM key padded with zeros."""
    if action in PSAM_ACTIONS:
        return psam_key(subject) + _PSAM_PAD
    return text_to_key(subject)


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
    slot = bytes(value[_HEAD.size : _VALUE_FIXED])
    card = psam_text(slot) if kind in PSAM_ACTIONS else key_to_text(slot)
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
        with self.env.begin(write=True) as txn:
            return self.stage(
                txn, action, changes, operator=operator, feed_version=feed_version, when=when
            )

    def stage(
        self,
        txn: Any,
        action: AuditAction,
        changes: Sequence[AuditChange],
        *,
        operator: str,
        feed_version: int,
        when: int,
    ) -> list[AuditRecord]:
        """Write the records in ``txn``, a write transaction of the same environment: the
        node passes the one that applies the delta they describe, so that both commit or
        neither does."""
        if when < 0:
            raise ValueError(f"audit time must be >= 0, got {when}")
        out: list[AuditRecord] = []
        seq = self._next_sequence(txn, when)
        if seq + len(changes) > _MAX_SEQ + 1:
            raise StoreError(f"more than {_MAX_SEQ + 1} audit records in second {when}")
        rows = []
        for change in changes:
            rec = AuditRecord(
                when, seq, action, change.card_id, change.reason, feed_version, operator
            )
            value = pack_value(
                action, subject_key(action, change.card_id), change.reason, feed_version, operator
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
        card_key = None
        if card_id is not None:  # a card, or a PSAM (22 characters)
            psam = len(card_id) == PSAM_ID_LENGTH
            card_key = subject_key(AuditAction.PSAM_REVOKE if psam else AuditAction.REVOKE, card_id)
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
