"""Certificates and key revocations that arrived in feeds (DESIGN §6: they travel with the
certifier's feed), kept so that a node restarted later still knows them.

LMDB database (opened by the store, written inside the transaction of the delta or
snapshot that carried them)::

    trust   key   publisher code (u24) + SHA-256 of the record (32)     35 bytes
            value the record as signed (X.509 DER, or the binary layout of certs_binary.py)

Records are only ever added: a certificate stays useful to verify what its key signed
while it was valid, and a revocation must outlive everything. Acceptance
(:func:`blacklist.sync.trust_rules.check_trust_records`) has already checked that each was issued and signed
by a key of its feed's publisher (or is that publisher's own certificate); whether chains
of them are valid *now* is for :class:`blacklist.trust.CertifiedKeys`, rebuilt by the node
when :attr:`changes` moves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

from blacklist.records import _pub3

TRUST_DB = b"trust"


class TrustRecords:
    def __init__(self, env: Any, txn: Any = None) -> None:
        """``txn``: read the rows in this read transaction (a follower catching up reads
        every table of one snapshot), else in one of its own."""
        self.env = env
        self.db = env.open_db(TRUST_DB)
        self._by_publisher: dict[str, dict[bytes, bytes]] = {}
        self.changes = 0  # bumped whenever a new record lands
        if txn is None:
            with env.begin() as own:
                self._load(own)
        else:
            self._load(txn)

    def _load(self, txn: Any) -> None:
        for key, value in txn.cursor(db=self.db):
            pub = f"{int.from_bytes(key[:3], 'big'):06d}"
            self._by_publisher.setdefault(pub, {})[bytes(key[3:])] = bytes(value)

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_publisher.values())

    def records(self, publisher: str | None = None) -> list[bytes]:
        """One publisher's records (sorted), or every publisher's."""
        if publisher is not None:
            return sorted(self._by_publisher.get(publisher, {}).values())
        return sorted(r for by in self._by_publisher.values() for r in by.values())

    def stage(
        self, txn: Any, publisher: str, records: Iterable[bytes]
    ) -> tuple[Callable[[], None], int]:
        """Write the records this node did not hold in ``txn``; return (remember them after
        the commit, how many were new)."""
        known = self._by_publisher.get(publisher, {})
        pub = _pub3(publisher)
        new: dict[bytes, bytes] = {}
        for record in records:
            digest = hashlib.sha256(record).digest()
            if digest not in known and digest not in new:
                txn.put(pub + digest, record, db=self.db)
                new[digest] = bytes(record)

        def done() -> None:
            if new:
                self._by_publisher.setdefault(publisher, {}).update(new)
                self.changes += 1

        return done, len(new)
