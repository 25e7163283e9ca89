"""Who changed which card or PSAM, when: the audit log of Admin.Revoke, Reinstate, RevokePsam
and ReinstatePsam (issue #5).

One record per card per accepted call, in the LMDB named database ``audit`` of the store's
environment. All integers big-endian::

    audit   key   time u64 (unix seconds) + sequence u32                            12 bytes
                  (sorts by time; the sequence orders records of the same second)
            value feed version u64, action u8, reason u8, subject (18),              28 bytes
                  then the operator as UTF-8 (the rest of the value); the subject is
                  the card key (cardid.py), or for the PSAM actions the PSAM key
                  (psam.py, 11 bytes) followed by 7 zero bytes. A revocation with an
                  end time (issue #17) sets bit 7 of the action byte, and its end time
                  (i64) follows the subject, before the operator: records written before
                  end times existed keep their layout and read as they did.

Two indexes answer "what happened to this card (or PSAM)" without walking the log (issue #11
item 8: a card filter used to scan every record, on the event loop). Their rows are written
by :meth:`AuditLog.stage` in the same write transaction as the records, so a record and its
index row commit together or not at all::

    audit_card  key   card key (18) + audit key (12), value empty              30 bytes
    audit_psam  key   PSAM key (11) + audit key (12), value empty              23 bytes

A store of schema 2 (no indexes) is migrated at open (store.py): :meth:`AuditLog.build_index`
indexes the existing records once, in chunks, reporting progress.

A fixed binary prefix rather than JSON because a large Revoke writes one record per card
(up to 100,000 per call): 28 bytes + the operator string instead of ~150 bytes of JSON, and
the card key is the same 18-byte form as the ``entries`` keys. The operator comes last so it
needs no length field.

The node writes a call's records with :meth:`AuditLog.stage` inside the write transaction
that applies the delta they describe (node/grpc/admin.py through Authority and
RevocationStore.apply_delta), so the records and the delta commit together or not at all,
and a refused call writes none. :meth:`AuditLog.record` is the same in a transaction of its
own.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from blacklist.cardid import KEY_LENGTH, key_to_text, text_to_key
from blacklist.errors import StoreError
from blacklist.psam import PSAM_ID_LENGTH, PSAM_KEY_LENGTH, psam_key, psam_text

AUDIT_DB = b"audit"
CARD_INDEX_DB = b"audit_card"
PSAM_INDEX_DB = b"audit_psam"
_KEY = struct.Struct(">QI")
_HEAD = struct.Struct(">QBB")
KEY_SIZE = _KEY.size
_VALUE_FIXED = _HEAD.size + KEY_LENGTH
_MAX_SEQ = 0xFFFF_FFFF
_MIGRATE_CHUNK = 1 << 16  # records indexed per write transaction when migrating
_HAS_END = 0x80  # action byte flag: an end time follows the subject
_END = struct.Struct(">q")


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
    expires_at: int | None = None  # a revocation's end time, if it lapses

    @property
    def key(self) -> bytes:
        return _KEY.pack(self.time, self.sequence)


def pack_value(
    action: AuditAction,
    card_key: bytes,
    reason: int,
    feed_version: int,
    operator: str,
    expires_at: int | None = None,
) -> bytes:
    if expires_at is None:
        return _HEAD.pack(feed_version, action, reason) + card_key + operator.encode()
    head = _HEAD.pack(feed_version, action | _HAS_END, reason)
    return head + card_key + _END.pack(expires_at) + operator.encode()


def decode_record(
    key: bytes, value: bytes, subject: tuple[bytes, str] | None = None
) -> AuditRecord:
    """One stored record. ``subject``: (its 18-byte slot, its text) when the caller knows
    whose record it is (a query by card or PSAM), which saves rendering the key per record
    (most of the cost of a page); a record of anyone else is a corrupt index."""
    if len(key) != KEY_SIZE or len(value) < _VALUE_FIXED:
        raise StoreError(f"audit record {key.hex()} is malformed ({len(value)}-byte value)")
    time, seq = _KEY.unpack(key)
    version, action, reason = _HEAD.unpack_from(value)
    fixed, end = _VALUE_FIXED, None
    if action & _HAS_END:
        if len(value) < _VALUE_FIXED + _END.size:
            raise StoreError(f"audit record {key.hex()} is malformed (end time cut short)")
        end = _END.unpack_from(value, _VALUE_FIXED)[0]
        fixed, action = _VALUE_FIXED + _END.size, action & ~_HAS_END
    try:
        kind = AuditAction(action)
    except ValueError:
        raise StoreError(f"audit record {key.hex()} has unknown action {action}") from None
    slot = bytes(value[_HEAD.size : _VALUE_FIXED])
    if subject is not None:
        if slot != subject[0]:
            raise StoreError(f"audit record {key.hex()} is not of {subject[1]}: corrupt index")
        card = subject[1]
    else:
        card = psam_text(slot) if kind in PSAM_ACTIONS else key_to_text(slot)
    operator = bytes(value[fixed:]).decode()
    return AuditRecord(time, seq, kind, card, reason, version, operator, end)


@dataclass(frozen=True, slots=True)
class AuditChange:
    """One card of an accepted call, before it is stamped with a time and sequence."""

    card_id: str  # canonical text
    reason: int = 0
    expires_at: int | None = None  # a revocation's end time (issue #17)


class AuditLog:
    """The ``audit`` database of a store's LMDB environment."""

    def __init__(self, env: Any) -> None:
        self.env = env
        self._db = env.open_db(AUDIT_DB)
        self._by_card = env.open_db(CARD_INDEX_DB)
        self._by_psam = env.open_db(PSAM_INDEX_DB)

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
        index = []
        psam = action in PSAM_ACTIONS
        for change in changes:
            end = change.expires_at
            rec = AuditRecord(
                when, seq, action, change.card_id, change.reason, feed_version, operator, end
            )
            subject = subject_key(action, change.card_id)
            value = pack_value(action, subject, change.reason, feed_version, operator, end)
            rows.append((rec.key, value))
            index.append(((subject[:PSAM_KEY_LENGTH] if psam else subject) + rec.key, b""))
            out.append(rec)
            seq += 1
        txn.cursor(db=self._db).putmulti(rows, overwrite=False)
        index.sort()  # sequential page writes
        txn.cursor(db=self._by_psam if psam else self._by_card).putmulti(index)
        return out

    def _index_row(self, key: bytes, value: bytes) -> tuple[Any, bytes]:
        """(index database, index key) of one stored record."""
        action = value[_HEAD.size - 2]
        slot = bytes(value[_HEAD.size : _VALUE_FIXED])
        if action in PSAM_ACTIONS:
            return self._by_psam, slot[:PSAM_KEY_LENGTH] + bytes(key)
        return self._by_card, slot + bytes(key)

    def build_index(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Index every stored record (the migration from schema 2), in write transactions of
        ``_MIGRATE_CHUNK`` records each; ``progress(done, total)`` after each. Rows already
        there are written again unchanged, so an interrupted run simply runs again. Returns
        the number of records indexed."""
        total = self.count()
        done = 0
        after: bytes | None = None
        while True:
            with self.env.begin(write=True) as txn:
                cursor = txn.cursor(db=self._db)
                found = cursor.set_range(after + b"\x00") if after else cursor.first()
                rows: dict[Any, list[tuple[bytes, bytes]]] = {self._by_card: [], self._by_psam: []}
                n = 0
                while found and n < _MIGRATE_CHUNK:
                    key, value = cursor.item()
                    db, row = self._index_row(key, value)
                    rows[db].append((row, b""))
                    after = bytes(key)
                    n += 1
                    found = cursor.next()
                for db, items in rows.items():
                    items.sort()
                    txn.cursor(db=db).putmulti(items)
            done += n
            if progress is not None:
                progress(done, total)
            if n < _MIGRATE_CHUNK:
                return done

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
        """Records in time order with ``since <= time <= until``, optionally of one card or
        PSAM (from its index: the cost is that subject's records, not the log's), starting
        after the key ``after`` (a page token), all from one read transaction."""
        with self.env.begin(buffers=False) as txn:
            yield from self._records_in(txn, card_id, since, until, after)

    def page(
        self,
        size: int,
        *,
        card_id: str | None = None,
        since: int = 0,
        until: int | None = None,
        after: bytes | None = None,
        pause: Callable[[], object] | None = None,
        pause_every: int = 64,
    ) -> tuple[list[AuditRecord], bool]:
        """At most ``size`` records as :meth:`records` lists them, and whether more follow;
        one short read transaction (Admin.ListAudit runs it on a reader thread).
        ``pause()`` is called every ``pause_every`` records (the node gives up the GIL there,
        so that its event loop answering checks never waits long for it)."""
        with self.env.begin(buffers=False) as txn:
            out: list[AuditRecord] = []
            for rec in self._records_in(txn, card_id, since, until, after):
                if len(out) == size:
                    return out, True
                if pause is not None and len(out) % pause_every == pause_every - 1:
                    pause()
                out.append(rec)
            return out, False

    def _records_in(
        self, txn: Any, card_id: str | None, since: int, until: int | None, after: bytes | None
    ) -> Iterator[AuditRecord]:
        start = _KEY.pack(since, 0)
        if after is not None and after >= start:
            start = after + b"\x00"  # the smallest key greater than ``after``
        last = _KEY.pack(until, _MAX_SEQ) if until is not None else None
        if card_id is None:
            cursor = txn.cursor(db=self._db)
            if not cursor.set_range(start):
                return
            for key, value in cursor:
                if last is not None and key > last:
                    return
                yield decode_record(key, value)
            return
        if len(card_id) == PSAM_ID_LENGTH:  # a card, or a PSAM (22 characters)
            db, subject = self._by_psam, psam_key(card_id)
            whose = (subject + _PSAM_PAD, psam_text(subject))
        else:
            db, subject = self._by_card, text_to_key(card_id)
            whose = (subject, key_to_text(subject))  # canonical, as a full decode gives
        cursor = txn.cursor(db=db)
        if not cursor.set_range(subject + start):
            return
        get = txn.get
        for row in cursor.iternext(values=False):
            key = row[len(subject) :]
            if row[: len(subject)] != subject or (last is not None and key > last):
                return
            value = get(key, db=self._db)
            if value is None:
                raise StoreError(f"audit index row {row.hex()} names no record")
            yield decode_record(key, value, whose)

    def count(self) -> int:
        with self.env.begin() as txn:
            return int(txn.stat(self._db)["entries"])


__all__ = [
    "CARD_INDEX_DB",
    "KEY_SIZE",
    "PSAM_INDEX_DB",
    "AuditAction",
    "AuditChange",
    "AuditLog",
    "AuditRecord",
    "decode_record",
    "pack_value",
]
