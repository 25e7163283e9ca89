"""Resident memory of a fingerprint index, measured in a fresh process (issue #15).

The serialized size (``FingerprintIndex.memory_bytes``) is what the bitmaps would take packed
tightly; CRoaring's containers live in C ``malloc`` memory with spare capacity, which
tracemalloc does not see. So the benchmark writes the index's persisted copy to a file and
runs this module in a new interpreter for each way, which reads its own VmRSS (/proc/self/status) and
glibc's in-use malloc bytes (mallinfo2) before and after holding the index, two ways:

* ``built``: rebuilt from its fingerprints with ``add_many`` in the chunks the store uses
  when it opens without a saved index (storeindex.build_index), the shape a running node has;
* ``loaded``: ``FingerprintIndex.from_bytes`` of the file, as a restart with a saved index.

Before each reading the collector runs and ``malloc_trim(0)`` gives freed heap back, so that
the build's numpy temporaries are not counted. The file's bytes and the fingerprint array are
read before the first reading and kept until after the second, so they are on both sides.
The RSS figure also counts heap the build freed but could not give back (fragmentation), which
the in-use malloc figure does not: both are reported.

python -m bench.index_rss FILE built|loaded  → one JSON line of figures
"""

from __future__ import annotations

import ctypes
import gc
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from blacklist.filters.roaring_index import FingerprintIndex
from blacklist.storeindex import _CHUNK

WAYS = ("built", "loaded")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


_LIBC = ctypes.CDLL(None)
_LIBC.mallinfo2.restype = _Mallinfo2


def _settle() -> None:
    gc.collect()
    _LIBC.malloc_trim(0)


def rss_bytes() -> int:
    """This process's resident set (VmRSS, reported by the kernel in kB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS line in /proc/self/status")


def malloc_in_use() -> int:
    """Bytes glibc's malloc has handed out and not had back (heap chunks plus mmapped ones)."""
    info = _LIBC.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def fingerprints_of(index: FingerprintIndex) -> np.ndarray[Any, np.dtype[np.uint32]]:
    """One fingerprint per entry the index represents (a shared one as often as it is held)."""
    parts = [
        np.asarray(index.bitmap.to_array(), dtype=np.uint32),
        np.asarray(index.shared.to_array(), dtype=np.uint32),
    ]
    extra = sorted(index._extra.items())
    if extra:
        fps, counts = zip(*extra, strict=True)
        parts.append(np.repeat(np.array(fps, np.uint32), counts))
    return np.concatenate(parts)


def measure(path: Path, way: str) -> dict[str, float | int]:
    """Bytes resident and in use by malloc for the index held ``way`` (built or loaded)."""
    data = path.read_bytes()
    saved, _ = FingerprintIndex.from_bytes(data)
    width, entries = saved.width, len(saved)
    fps = fingerprints_of(saved)
    # Keys come out of LMDB in key order, so their fingerprints arrive in no order.
    np.random.default_rng(0).shuffle(fps)
    del saved
    _settle()
    rss0, heap0 = rss_bytes(), malloc_in_use()
    if way == "built":
        index = FingerprintIndex(width)
        for start in range(0, len(fps), _CHUNK):
            index.add_many(fps[start : start + _CHUNK])
    else:
        index, _ = FingerprintIndex.from_bytes(data)
    _settle()
    rss1, heap1 = rss_bytes(), malloc_in_use()
    assert len(index) == entries
    return {"entries": entries, "rss_bytes": rss1 - rss0, "malloc_bytes": heap1 - heap0}


def measure_in_subprocess(index: FingerprintIndex, scratch: Path) -> dict[str, float | int]:
    """Write ``index``'s persisted copy under ``scratch`` and measure it each way in its own
    new interpreter (one way's freed pages would otherwise be reused by the other)."""
    path = scratch / "index.bin"
    path.write_bytes(index.to_bytes(0))
    figures: dict[str, float | int] = {}
    for way in WAYS:
        out = subprocess.run(
            [sys.executable, "-m", "bench.index_rss", str(path), way],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        for key, value in json.loads(out.splitlines()[-1]).items():
            figures[key if key == "entries" else f"{way}_{key}"] = value
    return figures


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[2] not in WAYS:
        sys.exit(f"usage: python -m bench.index_rss FILE {{{','.join(WAYS)}}}")
    print(json.dumps(measure(Path(sys.argv[1]), sys.argv[2])))
