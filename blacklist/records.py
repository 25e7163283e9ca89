"""The stored records of the store's LMDB databases, and their (de)coding.

entries  value: reason u8, effective time i64, version u64 (17 bytes), then for an entry
                that lapses its end time i64 (25 bytes; schema 4, issue #17)
feeds    value: version u64, digest 32, entries u64, key id 8, issued i64,
                applied i64, checked i64 (see FeedState)
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from blacklist.cardid import KEY_LENGTH, key_to_text, text_to_key
from blacklist.entry import Entry, Reason
from blacklist.feedhead import FeedHead, publisher_code

_ENTRY = struct.Struct(">BqQ")
VALUE_LENGTH = _ENTRY.size  # a stored entry value without an end time
_ENTRY_ENDS = struct.Struct(">BqQq")
_FEED = struct.Struct(">Q32sQ8sqqq")  # version, digest, entries, key id, issued, applied, checked
_ENTRY_DTYPE = np.dtype([("reason", "u1"), ("time", ">i8"), ("version", ">u8")])


@dataclass(frozen=True, slots=True)
class FeedState:
    """What this node holds of one publisher's feed."""

    head: FeedHead
    entries: int
    key_id: bytes
    issued_at: int  # when the publisher produced the head delta
    applied_at: int  # when this node last applied a delta or snapshot of it
    # Fresh as of: the newest time the publisher *signed* at which its head was one this
    # node has reached (a head statement, or the head's own issued_at; see
    # blacklist/sync/freshness.py). A feed's age is measured from it, never from this
    # node's clock or an upstream's unsigned word.
    checked_at: int

    @property
    def publisher(self) -> str:
        return self.head.publisher

    @property
    def version(self) -> int:
        return self.head.version

    def pack(self) -> bytes:
        return _FEED.pack(
            self.head.version,
            self.head.digest,
            self.entries,
            self.key_id,
            self.issued_at,
            self.applied_at,
            self.checked_at,
        )

    @classmethod
    def unpack(cls, publisher: str, raw: bytes) -> FeedState:
        version, digest, entries, key_id, issued, applied, checked = _FEED.unpack(raw)
        return cls(FeedHead(publisher, version, digest), entries, key_id, issued, applied, checked)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    publisher: str
    version: int
    added: int  # entries that were not there before
    changed: int  # entries that were there and were overwritten
    removed: int  # entries deleted
    absent_removes: int  # removes of cards this node did not hold
    psams_denied: int = 0  # PSAM denials added or changed
    psams_removed: int = 0  # PSAM denials lifted
    trust_records: int = 0  # certificates and key revocations new to this node


def _pub3(publisher: str) -> bytes:
    return publisher_code(publisher).to_bytes(3, "big")


# An entry's stored key: the card key, then its publisher's u24 code (storeschema.py).
ENTRY_KEY_LENGTH = KEY_LENGTH + 3


def entry_key(card_id: str, publisher: str) -> bytes:
    """The stored key of ``publisher``'s entry for ``card_id`` (canonical text): where a
    listing resumes (``iter_entries(start_after=...)``)."""
    return text_to_key(card_id) + _pub3(publisher)


_REASONS = {r.value: r for r in Reason}
_PUBLISHERS: dict[bytes, str] = {}  # 3-byte code → "440100", filled as met (a few hundred)


def _publisher_text(code: bytes) -> str:
    text = _PUBLISHERS.get(code)
    if text is None:
        text = _PUBLISHERS[bytes(code)] = f"{int.from_bytes(code, 'big'):06d}"
    return text


def decode_entry(key: bytes, value: bytes, card_text: str | None = None) -> Entry:
    """An Entry from a stored record; ``card_text`` saves rebuilding the id from the key."""
    if len(value) == _ENTRY.size:
        reason, time, version = _ENTRY.unpack(value)
        ends = None
    else:
        reason, time, version, ends = _ENTRY_ENDS.unpack(value)
    return Entry(
        card_text if card_text is not None else key_to_text(key[:KEY_LENGTH]),
        _REASONS[reason],
        time,
        _publisher_text(key[KEY_LENGTH:]),
        version,
        ends,
    )


def value_end(value: bytes) -> int | None:
    """The end time of a stored entry value, if it has one (without decoding the rest)."""
    if len(value) == _ENTRY.size:
        return None
    return int.from_bytes(value[_ENTRY.size :], "big", signed=True)


def lapsed_value(value: bytes, now: float) -> bool:
    """A stored entry that is over by ``now``: at its end time exactly, it is over."""
    end = value_end(value)
    return end is not None and now >= end


def pack_values(
    reason: NDArray[np.uint8],
    time: NDArray[np.int64],
    version: NDArray[np.uint64],
    ends: NDArray[np.int64],
) -> list[bytes]:
    """Stored values: 17 bytes for an entry without an end time, 25 with one."""
    n = len(reason)
    vals = np.empty(n, dtype=_ENTRY_DTYPE)
    vals["reason"] = reason
    vals["time"] = time
    vals["version"] = version
    out = _rows(vals.view(np.uint8).reshape(n, _ENTRY.size)) if n else []
    for i in np.flatnonzero(ends).tolist():
        out[i] += int(ends[i]).to_bytes(8, "big", signed=True)
    return out


def unpack_values(
    values: list[bytes],
) -> tuple[NDArray[np.uint8], NDArray[np.int64], NDArray[np.uint64], NDArray[np.int64]]:
    """Columns (reason, time, version, end time or 0) of stored values of either length."""
    n = len(values)
    ends = np.zeros(n, dtype=np.int64)
    long = [i for i, v in enumerate(values) if len(v) != _ENTRY.size]
    if long:
        for i in long:
            ends[i] = int.from_bytes(values[i][_ENTRY.size :], "big", signed=True)
        values = [v[: _ENTRY.size] for v in values]
    vals = np.frombuffer(b"".join(values), dtype=_ENTRY_DTYPE)
    return (
        vals["reason"].astype(np.uint8),
        vals["time"].astype(np.int64),
        vals["version"].astype(np.uint64),
        ends,
    )


@contextlib.contextmanager
def _abort_on_error(txn: Any) -> Iterator[None]:
    """Abort a write transaction on any exception; the body commits it itself."""
    try:
        yield
    except BaseException:
        txn.abort()
        raise


def _rows(matrix: NDArray[np.uint8]) -> list[bytes]:
    """Each row of a 2-D uint8 array as a bytes object (a void view converts in C)."""
    width = matrix.shape[1]
    return list(np.ascontiguousarray(matrix).view(f"V{width}").ravel().tolist())
