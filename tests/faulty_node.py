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
_find = StoreReader.find_answering


def find(
    self: StoreReader, card_key: bytes, publisher: bytes | None, txn: Any, now: float
) -> tuple[bytes, bytes] | None:
    if card_key == FAULTY and threading.current_thread() is threading.main_thread():
        raise lmdb.DiskError(f"{self.path}: injected read fault (tests/faulty_node.py)")
    return _find(self, card_key, publisher, txn, now)


StoreReader.find_answering = find  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main())
