"""The newest verified head statement of each publisher (blacklist/sync/freshness.py), kept
so that a restarted node still knows how fresh its copies are, how far behind it is, and
has the statements to forward to its children and its upstream.

LMDB database (opened by the store, written in a write transaction on the writer thread)::

    statements  key   publisher code (u24)                              3 bytes
                value the statement as signed (sync/head_statement.py)  <= 195 bytes

One record per publisher, replaced only by a newer verified statement. A node's freshness
itself (``fresh_as_of``) is the ``checked_at`` of the feed's record in the ``feeds``
database (records.py), written in the same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from blacklist.records import _pub3
from blacklist.sync.freshness import HeadStatement, StatementRejected, decode_statement

STATEMENTS_DB = b"statements"
log = logging.getLogger("blacklist.statements")


@dataclass(frozen=True, slots=True)
class StatementResult:
    """What became of one received statement: kept (``accepted``), a copy of the one held
    (neither accepted nor rejected), or refused with ``rejection``."""

    statement: HeadStatement
    accepted: bool = False
    rejection: StatementRejected | None = None

    @property
    def duplicate(self) -> bool:
        return not self.accepted and self.rejection is None


class HeadStatements:
    def __init__(self, env: Any) -> None:
        self.env = env
        self.db = env.open_db(STATEMENTS_DB)
        self._newest: dict[str, HeadStatement] = {}
        self._raw: set[bytes] = set()
        with env.begin() as txn:
            for key, value in txn.cursor(db=self.db):
                publisher = f"{int.from_bytes(key, 'big'):06d}"
                try:
                    self._newest[publisher] = decode_statement(bytes(value))
                    self._raw.add(bytes(value))
                except StatementRejected as exc:  # verified when written: a damaged store
                    log.warning("ignoring the stored head statement of %s: %s", publisher, exc)

    def __len__(self) -> int:
        return len(self._newest)

    def newest(self, publisher: str) -> HeadStatement | None:
        return self._newest.get(publisher)

    def holds(self, data: bytes) -> bool:
        """Whether ``data`` is, byte for byte, a statement held (the common case at every
        pull: a set lookup, no decoding, no trip to the writer thread)."""
        return data in self._raw

    def all(self) -> dict[str, HeadStatement]:
        """Publisher → its newest verified statement."""
        return dict(self._newest)

    def stage(self, txn: Any, statement: HeadStatement) -> Callable[[], None]:
        """Write ``statement`` as its publisher's newest in ``txn``; return what to do after
        the commit (remember it)."""
        txn.put(_pub3(statement.publisher), statement.to_bytes(), db=self.db)

        def done() -> None:
            old = self._newest.get(statement.publisher)
            if old is not None:
                self._raw.discard(old.to_bytes())
            self._newest[statement.publisher] = statement
            self._raw.add(statement.to_bytes())

        return done
