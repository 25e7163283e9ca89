"""``python -m tests.faulty_node run --config X``: the node, with the LMDB read that confirms
a fingerprint hit made to raise for one card (``BLACKLIST_FAULT_CARD``), on the event loop's
thread only (where checks run; the writer thread reads the same card to publish it). For
the real-process fault test of tests/test_fail_closed.py: nothing else differs."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import lmdb

from blacklist.cardid import text_to_key
from blacklist.storereader import StoreReader
from node.cli.main import main

FAULTY = text_to_key(os.environ["BLACKLIST_FAULT_CARD"])


class _FaultyReads:
    """A read transaction whose reads of FAULTY's entries raise, on the main thread."""

    def __init__(self, txn: Any, path: object) -> None:
        self._txn, self._path = txn, path

    def get(self, key: bytes, default: Any = None, db: Any = None) -> Any:
        if key[: len(FAULTY)] == FAULTY and threading.current_thread() is threading.main_thread():
            raise lmdb.DiskError(f"{self._path}: injected read fault (tests/faulty_node.py)")
        return self._txn.get(key, default, db)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._txn, name)


_current, _renew = StoreReader.current_txn, StoreReader.renew_txn


def current_txn(self: StoreReader) -> Any:
    return _FaultyReads(_current(self), self.path)


def renew_txn(self: StoreReader) -> Any:
    return _FaultyReads(_renew(self), self.path)


# A check confirms a hit with a point get in its thread's transaction (blacklist/checker.py).
StoreReader.current_txn = current_txn  # type: ignore[method-assign]
StoreReader.renew_txn = renew_txn  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main())
