"""Card ids in bulk: :mod:`blacklist.cardid` vectorised over numpy matrices.

``check_many`` parses thousands of ids per call and the index is rebuilt from millions of
stored binary keys, so the work happens in a few whole-batch operations instead of a
Python loop per id. Every function here gives, row for row, exactly what its scalar
counterpart in :mod:`blacklist.cardid` gives; the tests hold them to that.

Representations (``n`` ids)::

    matrix   (n, 32) uint8   canonical upper-case ASCII text, one id per row
    keys     (n, 18) uint8   the binary key of cardid.py, one key per row
    columns  region (n,) uint32, middle (n,) uint64, serial (n,) uint64
             the three fields of the key as integers (the delta codec stores these)

Functions taking a matrix expect canonical text such as :func:`parse_many` returns; like
:func:`blacklist.cardid.text_to_key` they do not validate it again.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Final

import numpy as np
from numpy.typing import NDArray

from blacklist.cardid import CARD_ID_LENGTH, KEY_LENGTH, canonical_bytes, diagnose, text_to_key
from blacklist.errors import CardIdError
from blacklist.regions import PROVINCE_PREFIXES

__all__ = [
    "columns_from_keys",
    "columns_from_matrix",
    "keys_from_columns",
    "keys_from_matrix",
    "matrix_from_columns",
    "matrix_from_keys",
    "parse_many",
    "region_codes",
    "rows_to_str",
]

REGION_MAX: Final = 999_999
MIDDLE_LIMIT: Final = 36**10  # exclusive
_DIGITS36 = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_HEXDIGITS = b"0123456789ABCDEF"
_REGION = slice(0, 6)
_MIDDLE = slice(6, 16)
_SERIAL = slice(16, 32)

# Rows per pass of the conversion functions: keeps their temporaries (up to ~200 bytes a
# row) in cache and bounded when the index is rebuilt from 10M keys.
_CHUNK_ROWS = 1 << 14

# --- parse_many tables -------------------------------------------------------------------
#
# The fast path joins the batch with b"\n" and runs one bytes.translate over it: letters
# are upper-cased, digits and upper-case letters kept, and every other byte (the "\n"
# separators included) becomes 0xFF. After that each byte is a digit, an upper-case
# letter or 0xFF, so one "<=" per position checks its character class: a region position
# must be <= "9", a serial position <= "F", a middle position <= "Z".
_INVALID = 0xFF
_SEPARATOR = "\n"


def _normalise_table() -> bytes:
    table = bytearray([_INVALID]) * 256
    for c in b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        table[c] = c
    for c in b"abcdefghijklmnopqrstuvwxyz":
        table[c] = c - 32
    return bytes(table)


_NORMALISE = _normalise_table()
# One row of the joined batch: 32 id bytes and the separator, which any value passes (the
# length check below makes sure it is a separator).
_ROW_LIMITS = np.array([ord("9")] * 6 + [ord("Z")] * 10 + [ord("F")] * 16 + [0xFF], dtype=np.uint8)
_STRIDE = CARD_ID_LENGTH + len(_SEPARATOR)
# Below this many ids the vectorised path's fixed cost (about 7 µs) exceeds the scalar
# parser's (about 0.5 µs an id), measured on the 2-core build machine.
_VECTORISE_FROM = 16
# keys_from_matrix converts fewer rows than this one by one (the C card_key when built).
_ROWWISE_BELOW = 32
try:
    from blacklist._speedups import card_key as _row_key
except ImportError:  # not compiled: the scalar conversion, still cheaper for a few rows
    _row_key = text_to_key


def _province_table() -> NDArray[np.bool_]:
    # Indexed by the first two bytes of a row read as one little-endian uint16, so the
    # province check is a single lookup per id.
    table = np.zeros(1 << 16, dtype=np.bool_)
    for p in PROVINCE_PREFIXES:
        tens, units = b"%02d" % p
        table[tens | units << 8] = True
    return table


_PROVINCE_OK = _province_table()

_limits_lock = threading.Lock()
_tiled_limits: NDArray[np.uint8] = np.tile(_ROW_LIMITS, 1024)


def _limits_for(size: int) -> NDArray[np.uint8]:
    """``_ROW_LIMITS`` repeated over ``size`` bytes: comparing two flat contiguous arrays
    is several times faster than broadcasting a 33-byte row over an (n, 33) view."""
    global _tiled_limits
    limits = _tiled_limits
    if limits.size < size:
        with _limits_lock:
            limits = _tiled_limits
            if limits.size < size:
                # Grow geometrically so a stream of growing batches re-tiles rarely.
                rows = max(-(-size // _STRIDE), 2 * limits.size // _STRIDE)
                limits = _tiled_limits = np.tile(_ROW_LIMITS, rows)
    return limits[:size]


def parse_many(ids: Sequence[str]) -> NDArray[np.uint8]:
    """Validate every id and return the canonical ``(n, 32)`` uint8 matrix.

    Row ``i`` equals ``canonical_bytes(ids[i])``. If any id is invalid this raises the
    :class:`CardIdError` that :func:`blacklist.cardid.diagnose` gives for the first
    invalid one, with ``index`` set to its position in ``ids``.
    """
    n = len(ids)
    if n < _VECTORISE_FROM:
        return _parse_each(ids)
    try:
        # TypeError: an item is not a str; UnicodeEncodeError: an item is not ASCII.
        raw = _SEPARATOR.join(ids).encode("ascii")
    except (TypeError, UnicodeEncodeError):
        return _parse_each(ids)
    # With the total length right and every id byte a valid character (which the "\n"
    # separator is not), the n - 1 separators can only sit between 32-byte ids.
    size = _STRIDE * n - len(_SEPARATOR)
    if len(raw) != size:
        return _parse_each(ids)
    text = raw.translate(_NORMALISE)
    flat = np.frombuffer(text, dtype=np.uint8)
    first_two = np.ndarray((n,), dtype="<u2", buffer=text, strides=(_STRIDE,))
    if not (flat <= _limits_for(size)).all() or not _PROVINCE_OK.take(first_two).all():
        return _parse_each(ids)
    rows = np.ndarray((n, CARD_ID_LENGTH), dtype=np.uint8, buffer=text, strides=(_STRIDE, 1))
    return rows.copy()


def _parse_each(ids: Sequence[object]) -> NDArray[np.uint8]:
    """The scalar parser over each id: for small batches, where the fixed cost of the
    vectorised path dominates, and to find the first invalid id of a rejected batch so the
    error is exactly the scalar one."""
    parsed = []
    for index, value in enumerate(ids):
        if not isinstance(value, str):
            raise diagnose(value, index)
        try:
            parsed.append(canonical_bytes(value))
        except CardIdError:
            raise diagnose(value, index) from None
    # A batch the fast path rejected ends here only if the two disagree (a bug): the
    # scalar parser is the rule.
    return np.frombuffer(b"".join(parsed), dtype=np.uint8).reshape(-1, CARD_ID_LENGTH).copy()


def rows_to_str(matrix: NDArray[np.uint8]) -> list[str]:
    """The rows of a canonical matrix as ``str``."""
    _check_shape(matrix, CARD_ID_LENGTH, "matrix")
    text = np.ascontiguousarray(matrix).tobytes().decode("ascii")
    return [text[i : i + CARD_ID_LENGTH] for i in range(0, len(text), CARD_ID_LENGTH)]


# --- matrix <-> columns ------------------------------------------------------------------


def _digit_values() -> NDArray[np.uint8]:
    # Value of a base-36 digit (hex digits are a prefix of it); both cases, as int(x, 36).
    table = np.zeros(256, dtype=np.uint8)
    for value, c in enumerate(_DIGITS36):
        table[c] = table[c | 0x20] = value
    return table


_DIGIT_VALUE = _digit_values()
_POW10 = np.array([10**k for k in range(5, -1, -1)], dtype=np.uint32)
_ASCII_ZERO_REGION = np.array(ord("0") * sum(10**k for k in range(6)), dtype=np.uint32)
_POW36 = np.array([36**k for k in range(9, -1, -1)], dtype=np.uint64)
_POW16 = np.array([16**k for k in range(15, -1, -1)], dtype=np.uint64)


def _check_shape(array: NDArray[np.uint8], width: int, name: str) -> None:
    if array.dtype != np.uint8 or array.ndim != 2 or array.shape[1] != width:
        raise ValueError(
            f"expected {name} as an (n, {width}) uint8 array, got {array.shape} {array.dtype}"
        )


def _region_chunk(rows: NDArray[np.uint8]) -> NDArray[np.uint32]:
    # sum((c - 48) * 10**k) == sum(c * 10**k) - 48 * 111111; uint32 cannot overflow here.
    region: NDArray[np.uint32] = np.matmul(rows[:, _REGION], _POW10)
    region -= _ASCII_ZERO_REGION
    return region


def region_codes(matrix: NDArray[np.uint8]) -> NDArray[np.uint32]:
    """The region code (first 6 digits) of each row as an integer."""
    _check_shape(matrix, CARD_ID_LENGTH, "matrix")
    n = matrix.shape[0]
    region = np.empty(n, dtype=np.uint32)
    for start in range(0, n, _CHUNK_ROWS):
        stop = start + _CHUNK_ROWS
        region[start:stop] = _region_chunk(matrix[start:stop])
    return region


def columns_from_matrix(
    matrix: NDArray[np.uint8],
) -> tuple[NDArray[np.uint32], NDArray[np.uint64], NDArray[np.uint64]]:
    """(region, middle, serial) of each row: the three integer fields of the binary key."""
    _check_shape(matrix, CARD_ID_LENGTH, "matrix")
    n = matrix.shape[0]
    region = np.empty(n, dtype=np.uint32)
    middle = np.empty(n, dtype=np.uint64)
    serial = np.empty(n, dtype=np.uint64)
    for start in range(0, n, _CHUNK_ROWS):
        part = slice(start, start + _CHUNK_ROWS)
        rows = matrix[part]
        region[part] = _region_chunk(rows)
        np.matmul(_DIGIT_VALUE.take(rows[:, _MIDDLE]), _POW36, out=middle[part])
        np.matmul(_DIGIT_VALUE.take(rows[:, _SERIAL]), _POW16, out=serial[part])
    return region, middle, serial


def _digit_pairs(digits: bytes) -> NDArray[np.uint8]:
    # Row v holds the two digits of v in base len(digits): one lookup makes two characters.
    base = len(digits)
    return np.array(
        [[digits[v // base], digits[v % base]] for v in range(base * base)], dtype=np.uint8
    )


_DEC3 = np.array([list(b"%03d" % v) for v in range(1000)], dtype=np.uint8)
_B36_PAIRS = _digit_pairs(_DIGITS36)
_HEX_PAIRS = _digit_pairs(_HEXDIGITS)
_C_1000 = np.array(1000, dtype=np.uint32)
_C_1296 = np.array(36 * 36, dtype=np.uint64)


def _columns_out_of_range(
    region: NDArray[np.integer], middle: NDArray[np.integer], serial: NDArray[np.integer]
) -> NDArray[np.bool_]:
    bad: NDArray[np.bool_] = (region > REGION_MAX) | (middle >= MIDDLE_LIMIT)
    for column in (region, middle, serial):
        if column.dtype.kind == "i":
            bad |= column < 0
    return bad


def _as_columns(
    region: NDArray[np.integer], middle: NDArray[np.integer], serial: NDArray[np.integer]
) -> tuple[NDArray[np.integer], NDArray[np.integer], NDArray[np.integer]]:
    columns = tuple(np.asarray(c) for c in (region, middle, serial))
    shapes = {c.shape for c in columns}
    if len(shapes) != 1 or len(columns[0].shape) != 1:
        raise ValueError(f"columns must be 1-D arrays of one length, got shapes {sorted(shapes)}")
    for c in columns:
        if c.dtype.kind not in "iu":
            raise ValueError(f"columns must be integer arrays, got {c.dtype}")
    return columns[0], columns[1], columns[2]


def _checked_columns(
    region: NDArray[np.integer], middle: NDArray[np.integer], serial: NDArray[np.integer]
) -> tuple[NDArray[np.integer], NDArray[np.integer], NDArray[np.integer]]:
    """Columns as arrays; CardIdError for the first row out of range (no id has it)."""
    region, middle, serial = _as_columns(region, middle, serial)
    bad = _columns_out_of_range(region, middle, serial)
    if bad.any():
        i = int(bad.argmax())
        value = (int(region[i]), int(middle[i]), int(serial[i]))
        raise CardIdError("columns out of range (region, middle, serial)", value, i)
    return region, middle, serial


def matrix_from_columns(
    region: NDArray[np.integer], middle: NDArray[np.integer], serial: NDArray[np.integer]
) -> NDArray[np.uint8]:
    """The canonical ``(n, 32)`` matrix of (region, middle, serial) columns.

    Raises :class:`CardIdError` for the first row whose region is above 999999 or whose
    middle is not below 36**10 (no card id has them).
    """
    region, middle, serial = _checked_columns(region, middle, serial)
    return _matrix_from_valid_columns(
        region.astype(np.uint32, copy=False),
        middle.astype(np.uint64, copy=False),
        serial.astype(np.uint64, copy=False),
    )


def _matrix_from_valid_columns(
    region: NDArray[np.uint32], middle: NDArray[np.uint64], serial: NDArray[np.uint64]
) -> NDArray[np.uint8]:
    n = region.shape[0]
    matrix = np.empty((n, CARD_ID_LENGTH), dtype=np.uint8)
    for start in range(0, n, _CHUNK_ROWS):
        part = slice(start, start + _CHUNK_ROWS)
        rows = matrix[part]
        k = rows.shape[0]
        thousands, units = np.divmod(region[part], _C_1000)
        rows[:, 0:3] = _DEC3.take(thousands, axis=0)
        rows[:, 3:6] = _DEC3.take(units, axis=0)
        # Middle: five base-1296 digits, least significant first, two characters each.
        rest = middle[part]
        for pos in range(14, 4, -2):
            rest, pair = np.divmod(rest, _C_1296)
            rows[:, pos : pos + 2] = _B36_PAIRS.take(pair, axis=0)
        # Serial: its eight big-endian bytes, two hex characters each.
        serial_bytes = serial[part].astype(">u8").view(np.uint8)
        rows[:, _SERIAL] = _HEX_PAIRS.take(serial_bytes, axis=0).reshape(k, 16)
    return matrix


# --- keys <-> columns --------------------------------------------------------------------


def _columns_from_key_bytes(
    keys: NDArray[np.uint8],
) -> tuple[NDArray[np.uint32], NDArray[np.uint64], NDArray[np.uint64]]:
    n = keys.shape[0]
    # Left-pad each big-endian field to a whole integer width, then reinterpret.
    padded = np.zeros((n, 12), dtype=np.uint8)
    padded[:, 1:4] = keys[:, 0:3]
    padded[:, 5:12] = keys[:, 3:10]
    region = padded[:, 0:4].copy().view(">u4").reshape(n).astype(np.uint32)
    middle = padded[:, 4:12].copy().view(">u8").reshape(n).astype(np.uint64)
    serial = np.ascontiguousarray(keys[:, 10:18]).view(">u8").reshape(n).astype(np.uint64)
    return region, middle, serial


def columns_from_keys(
    keys: NDArray[np.uint8],
) -> tuple[NDArray[np.uint32], NDArray[np.uint64], NDArray[np.uint64]]:
    """(region, middle, serial) of each ``(n, 18)`` binary key (no range check)."""
    _check_shape(keys, KEY_LENGTH, "keys")
    return _columns_from_key_bytes(keys)


def keys_from_columns(
    region: NDArray[np.integer], middle: NDArray[np.integer], serial: NDArray[np.integer]
) -> NDArray[np.uint8]:
    """The ``(n, 18)`` binary keys of (region, middle, serial) columns.

    Raises :class:`CardIdError` for the first row out of range, as
    :func:`matrix_from_columns` does: such a key could not be turned back into an id.
    """
    region, middle, serial = _checked_columns(region, middle, serial)
    n = region.shape[0]
    keys = np.empty((n, KEY_LENGTH), dtype=np.uint8)
    keys[:, 0:3] = region.astype(">u4").view(np.uint8).reshape(n, 4)[:, 1:]
    keys[:, 3:10] = middle.astype(">u8").view(np.uint8).reshape(n, 8)[:, 1:]
    keys[:, 10:18] = serial.astype(">u8").view(np.uint8).reshape(n, 8)
    return keys


# --- matrix <-> keys ---------------------------------------------------------------------


def keys_from_matrix(matrix: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The ``(n, 18)`` binary keys of a canonical matrix; row ``i`` is ``text_to_key``."""
    if len(matrix) < _ROWWISE_BELOW and matrix.shape[1:] == (CARD_ID_LENGTH,):
        # A batch's fingerprint hits are a dozen rows: the columns' fixed cost (~50 µs of
        # numpy calls) is ten times a row-by-row conversion in C (~0.3 µs a row).
        raw = np.ascontiguousarray(matrix, dtype=np.uint8).tobytes()
        keys = b"".join(
            [_row_key(raw[i : i + CARD_ID_LENGTH]) for i in range(0, len(raw), CARD_ID_LENGTH)]
        )
        return np.frombuffer(bytearray(keys), dtype=np.uint8).reshape(-1, KEY_LENGTH)
    return keys_from_columns(*columns_from_matrix(matrix))


def matrix_from_keys(keys: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The canonical matrix of ``(n, 18)`` binary keys; row ``i`` is ``key_to_text``.

    Raises :class:`CardIdError` (as ``key_to_text`` does, with the item index) for the
    first key whose region is above 999999 or whose middle is not below 36**10.
    """
    _check_shape(keys, KEY_LENGTH, "keys")
    region, middle, serial = _columns_from_key_bytes(keys)
    bad = _columns_out_of_range(region, middle, serial)
    if bad.any():
        i = int(bad.argmax())
        raise CardIdError("binary key out of range", keys[i].tobytes(), i)
    return _matrix_from_valid_columns(region, middle, serial)
