"""The front half of a single-card check: validate, canonicalise, hash, find the region view.

``probe(card_id, views)`` returns ``(views.get(canon[:6]), canon, xxh64(canon))`` where
``canon`` is the canonical upper-case ASCII id (:func:`blacklist.cardid.canonical_bytes`)
and the hash is XXH64 with seed 0 (:mod:`blacklist.filters.fingerprint`).

Why one function: ``Checker.check`` must not be slower than a naive regex + ``upper`` +
``dict.get`` lookup. Done in Python, these steps are five or six C calls, each paying
~50–100 ns of interpreter overhead on the slow terminal hardware; the C extension
``blacklist._speedups`` does them in one call. When the extension is not built (the
compile is optional at install time) the pure-Python :func:`python_probe` gives the same
results, only slower; the tests compare the two.

Either way a malformed id raises the :class:`~blacklist.errors.CardIdError` produced by
:func:`blacklist.cardid.diagnose`, so the message does not depend on which path ran.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

import numpy as np
from numpy.typing import NDArray
from xxhash import xxh64_intdigest

from blacklist.cardbatch import matrix_from_keys, parse_many, region_codes
from blacklist.cardid import canonical_bytes, diagnose, text_to_key
from blacklist.filters.fingerprint import fingerprint_shift, fingerprints
from blacklist.regions import PROVINCE_PREFIXES

V = TypeVar("V")

# provinces[p] != 0 iff p is a valid two-digit province prefix. Built from
# PROVINCE_PREFIXES, the single source of truth, for the C code to index.
_PROVINCES: Final = bytes(1 if i in PROVINCE_PREFIXES else 0 for i in range(100))


def python_probe(card_id: object, views: dict[bytes, V]) -> tuple[V | None, bytes, int]:
    """Pure-Python :func:`probe`: the fallback when the C extension is unavailable."""
    canon = canonical_bytes(card_id)
    digest: int = xxh64_intdigest(canon)
    return views.get(canon[:6]), canon, digest


def python_members(container: Any, fingerprints: NDArray[np.uint32]) -> list[int]:
    """Pure-Python :func:`members`."""
    return [i for i, fp in enumerate(fingerprints.tolist()) if fp in container]


def python_scan(
    card_ids: Sequence[str], width: int, container: Any
) -> tuple[NDArray[np.uint8], NDArray[np.uint32], list[int]]:
    """Pure-Python :func:`scan`, vectorised with numpy (cardbatch.py, fingerprint.py)."""
    matrix = parse_many(card_ids)
    return matrix, region_codes(matrix), python_members(container, fingerprints(matrix, width))


try:
    from blacklist._speedups import card_key as _c_card_key
    from blacklist._speedups import key_fingerprints as _c_key_fingerprints
    from blacklist._speedups import members as _c_members
    from blacklist._speedups import probe as _c_probe
    from blacklist._speedups import scan as _c_scan
except ImportError:  # not compiled (no compiler at install time): the fallback takes over
    HAVE_SPEEDUPS = False
else:
    HAVE_SPEEDUPS = True


def _speedups_members(container: Any, fingerprints: NDArray[np.uint32]) -> list[int]:
    """Indices ``i`` with ``fingerprints[i] in container`` (the check_many membership loop)."""
    return _c_members(container, np.ascontiguousarray(fingerprints, dtype=np.uint32))


def _speedups_probe(card_id: object, views: dict[bytes, V]) -> tuple[V | None, bytes, int]:
    """Validate ``card_id``; return ``(views.get(canon[:6]), canon, xxh64(canon))``.

    Raises CardIdError (from :func:`~blacklist.cardid.diagnose`) for a malformed id.
    """
    try:
        return _c_probe(card_id, views, _PROVINCES)
    except ValueError:
        raise diagnose(card_id) from None


def _speedups_scan(
    card_ids: Sequence[str], width: int, container: Any
) -> tuple[NDArray[np.uint8], NDArray[np.uint32], list[int]]:
    """The front half of check_many in one C pass: the canonical ``(n, 32)`` matrix, each
    id's region code, and the indices whose fingerprint (top ``width`` bits) is in
    ``container``. Raises CardIdError naming the first malformed id and its index."""
    try:
        canon, regions, hits = _c_scan(card_ids, _PROVINCES, fingerprint_shift(width), container)
    except ValueError as exc:
        index = int(exc.args[0])
        raise diagnose(card_ids[index], index) from None
    except TypeError:
        return python_scan(card_ids, width, container)
    matrix = np.frombuffer(canon, dtype=np.uint8).reshape(-1, 32)
    return matrix, np.frombuffer(regions, dtype=np.uint32), hits


ProbeFn = Callable[[object, dict[bytes, Any]], tuple[Any, bytes, int]]
ScanFn = Callable[
    [Sequence[str], int, Any], tuple[NDArray[np.uint8], NDArray[np.uint32], list[int]]
]


def python_key_fingerprints(keys: NDArray[np.uint8], width: int) -> NDArray[np.uint32]:
    """Fingerprints of ``(n, 18)`` binary keys via the canonical text (numpy)."""
    return fingerprints(matrix_from_keys(keys), width)


def _speedups_key_fingerprints(keys: NDArray[np.uint8], width: int) -> NDArray[np.uint32]:
    """Fingerprints of ``(n, 18)`` binary keys, computed in one C pass."""
    if not len(keys):
        return np.zeros(0, dtype=np.uint32)
    # Keys come from range-checked columns (cardbatch.keys_from_columns), so every one
    # renders as a card id; the C loop relies on that rather than checking again.
    raw = _c_key_fingerprints(np.ascontiguousarray(keys), fingerprint_shift(width))
    return np.frombuffer(raw, dtype=np.uint32)


key_fingerprints: Callable[[NDArray[np.uint8], int], NDArray[np.uint32]] = (
    _speedups_key_fingerprints if HAVE_SPEEDUPS else python_key_fingerprints
)
card_key: Callable[[bytes], bytes] = _c_card_key if HAVE_SPEEDUPS else text_to_key
probe: ProbeFn = _speedups_probe if HAVE_SPEEDUPS else python_probe


# What ``probe_in`` tests a fingerprint against: (bitmap, shift), one tuple so that a caller
# reads the two together (a thread never pairs one index's bitmap with another's width).
IndexState = tuple[Any, int]


def python_probe_in(
    card_id: object, views: dict[bytes, Any], _: bytes, index: IndexState
) -> tuple[Any, bytes, bool]:
    """Pure-Python :func:`probe_in`."""
    view, canon, digest = python_probe(card_id, views)
    return view, canon, (digest >> index[1]) in index[0]


ProbeInFn = Callable[[object, dict[bytes, Any], bytes, IndexState], tuple[Any, bytes, bool]]
try:
    from blacklist._speedups import probe_in as _c_probe_in
except ImportError:  # not compiled, or built before probe_in: the fallback
    _probe_in: ProbeInFn = python_probe_in
else:
    _probe_in = _c_probe_in

# ``probe`` and the index test of Checker.check in one C call, without a Python frame (a
# frame is ~15% of a miss): ``probe_in(card_id, views, PROVINCES, index)`` returns
# ``(view, canon, hit)`` and raises a bare ValueError (C) or the CardIdError itself
# (fallback) for a malformed id; the caller raises ``diagnose(card_id)`` for either, as
# :func:`probe` does.
probe_in: ProbeInFn = _probe_in
PROVINCES = _PROVINCES
scan: ScanFn = _speedups_scan if HAVE_SPEEDUPS else python_scan
members = _speedups_members if HAVE_SPEEDUPS else python_members
