"""What a node keeps of each feed's history, to serve children: retained deltas and the
latest snapshot, exactly as the publisher signed them, plus an in-memory summary of them
(version, previous digest, size) for sync planning.

LMDB databases (opened by the store, written inside its transactions)::

    deltas     key publisher u24 + version u64 → signed delta container
    snapshots  key publisher u24               → signed snapshot container

Retention follows blacklist.sync.plan.retention_cut: recent deltas up to a count or about
twice the snapshot's size, whichever comes first, never those a snapshot-bootstrapped child
still needs.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from blacklist.binary import Reader
from blacklist.delta import Delta, FeedHead, Snapshot, publisher_code
from blacklist.errors import CodecError
from blacklist.sync.plan import FeedHistory, RetainedDelta, retention_cut

_U64 = struct.Struct(">Q")


def _pub3(publisher: str) -> bytes:
    return publisher_code(publisher).to_bytes(3, "big")


def peek(data: bytes) -> tuple[int, int, bytes]:
    """(kind, version, link digest) of a signed container without decoding its blocks."""
    r = Reader(memoryview(data)[:128], "container header")
    if r.raw(4, "magic") != b"CRL1":
        raise CodecError("not a signed container")
    r.uvarint("body length")
    kind = r.u8("kind")
    r.u32("publisher")
    version = r.u64("version")
    return kind, version, r.raw(32, "link")


class Archive:
    def __init__(self, env: Any, max_count: int) -> None:
        self.env = env
        self.max_count = max_count
        self.deltas_db = env.open_db(b"deltas")
        self.snapshots_db = env.open_db(b"snapshots")
        # publisher → version → summary; publisher → (snapshot version, size)
        self._retained: dict[str, dict[int, RetainedDelta]] = {}
        self._snapshots: dict[str, tuple[int, int]] = {}
        self._load()

    def _load(self) -> None:
        with self.env.begin(buffers=True) as txn:
            for key, value in txn.cursor(db=self.deltas_db):
                pub = f"{int.from_bytes(key[:3], 'big'):06d}"
                version = _U64.unpack(key[3:])[0]
                _, _, link = peek(bytes(value[:128]))
                self._retained.setdefault(pub, {})[version] = RetainedDelta(
                    version, link, len(value)
                )
            for key, value in txn.cursor(db=self.snapshots_db):
                pub = f"{int.from_bytes(key, 'big'):06d}"
                _, version, _ = peek(bytes(value[:128]))
                self._snapshots[pub] = (version, len(value))

    # --------------------------------------------------------------- reading
    def history(self, publisher: str, head: FeedHead) -> FeedHistory:
        snap = self._snapshots.get(publisher)
        return FeedHistory(
            head,
            dict(self._retained.get(publisher, {})),
            snap[0] if snap else None,
            snap[1] if snap else None,
        )

    def delta(self, publisher: str, version: int) -> bytes | None:
        with self.env.begin() as txn:
            raw = txn.get(_pub3(publisher) + _U64.pack(version), db=self.deltas_db)
            return bytes(raw) if raw is not None else None

    def deltas(self, publisher: str, first: int, last: int) -> list[bytes]:
        pub = _pub3(publisher)
        with self.env.begin() as txn:
            out = []
            for v in range(first, last + 1):
                raw = txn.get(pub + _U64.pack(v), db=self.deltas_db)
                if raw is None:
                    raise KeyError(f"delta {publisher} v{v} is not retained")
                out.append(bytes(raw))
            return out

    def versions(self, publisher: str) -> list[int]:
        return sorted(self._retained.get(publisher, {}))

    def snapshot(self, publisher: str) -> bytes | None:
        with self.env.begin() as txn:
            raw = txn.get(_pub3(publisher), db=self.snapshots_db)
            return bytes(raw) if raw is not None else None

    def snapshot_version(self, publisher: str) -> int | None:
        snap = self._snapshots.get(publisher)
        return snap[0] if snap else None

    # --------------------------------------------------------------- writing (inside a txn)
    # Each writer returns a function that updates the in-memory summary; the store calls it
    # after the transaction commits, so an aborted write leaves the summary as it was.
    def add_delta(self, txn: Any, delta: Delta, head: FeedHead) -> Callable[[], None]:
        pub = _pub3(delta.publisher)
        data = delta.to_bytes()
        txn.put(pub + _U64.pack(delta.version), data, db=self.deltas_db)
        entry = RetainedDelta(delta.version, delta.prev_digest, len(data))
        retained = dict(self._retained.get(delta.publisher, {}))
        retained[delta.version] = entry
        snap = self._snapshots.get(delta.publisher)
        history = FeedHistory(head, retained, *(snap if snap else (None, None)))
        cut = retention_cut(history, self.max_count)
        for v in cut:
            txn.delete(pub + _U64.pack(v), db=self.deltas_db)
            del retained[v]

        def commit() -> None:
            self._retained[delta.publisher] = retained

        return commit

    def replace_with_snapshot(
        self, txn: Any, snapshot: Snapshot, data: bytes
    ) -> Callable[[], None]:
        """A snapshot starts the history afresh: it is kept, older deltas are dropped."""
        pub = _pub3(snapshot.publisher)
        cursor = txn.cursor(db=self.deltas_db)
        if cursor.set_range(pub):
            while cursor.key()[:3] == pub and cursor.delete():
                pass
        txn.put(pub, data, db=self.snapshots_db)

        def commit() -> None:
            self._retained[snapshot.publisher] = {}
            self._snapshots[snapshot.publisher] = (snapshot.version, len(data))

        return commit

    def keep_snapshot(self, txn: Any, snapshot: Snapshot, data: bytes) -> Callable[[], None]:
        """Store a (verified) snapshot of the current head, e.g. one the authority just made,
        and prune deltas it makes unnecessary."""
        pub = _pub3(snapshot.publisher)
        txn.put(pub, data, db=self.snapshots_db)
        retained = dict(self._retained.get(snapshot.publisher, {}))
        head = FeedHead(snapshot.publisher, snapshot.version, snapshot.head_digest)
        history = FeedHistory(head, retained, snapshot.version, len(data))
        for v in retention_cut(history, self.max_count):
            txn.delete(pub + _U64.pack(v), db=self.deltas_db)
            del retained[v]

        def commit() -> None:
            self._retained[snapshot.publisher] = retained
            self._snapshots[snapshot.publisher] = (snapshot.version, len(data))

        return commit
