"""An upstream node's files for the bootstrap benchmark, built with the library before the
node starts (minutes of Admin.Revoke calls otherwise): keys as an operator's files, one
signed delta per publisher applied to its store, and each publisher's signed snapshot kept
beside it.

Only a publisher's own node holds its key, so in a federation each authority signs its own
snapshot (``Authority.maybe_snapshot``) and the snapshots travel up; here the benchmark holds
every key and signs them all in place, which leaves the same store. The store keeps no
deltas (``retain_deltas=0``): the history of a long-running feed has been compacted away by
retention, so a fresh child can only start from the snapshots (plan reason "bootstrap").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from bench.data import make_dataset
from bench.figures import progress
from blacklist.authority import Authority
from blacklist.delta import sign_delta
from blacklist.entryblock import CardColumns
from blacklist.signing import Keyring, SigningKey
from blacklist.store import RevocationStore
from node.keyfiles import write_key_pair

MAP_SIZE_GIB = 64


@dataclass(frozen=True)
class SnapshotUpstream:
    data_dir: Path
    public_keys: tuple[Path, ...]
    publishers: tuple[str, ...]
    entries: int
    snapshot_bytes: int  # all publishers' snapshots together


def build_snapshot_upstream(
    data_dir: Path, keys_dir: Path, total: int, publishers: int, suite: str = "ed25519"
) -> SnapshotUpstream:
    """``total`` revocations of ``publishers`` cities (bench/data.py) in ``data_dir``, with
    a signed snapshot of every feed and no retained deltas; public keys (of signing suite
    ``suite``) in ``keys_dir``."""
    data = make_dataset(total, publishers, seed=11)
    keys = {p: SigningKey.generate(p, [p[:4]], suite) for p in data.publishers}
    public = tuple(write_key_pair(k, keys_dir)[1] for k in keys.values())
    ring = Keyring(k.trusted() for k in keys.values())
    start = time.perf_counter()
    store = RevocationStore(data_dir, map_size=MAP_SIZE_GIB << 30, retain_deltas=0)
    snapshot_bytes = 0
    try:
        for n, (pub, entries) in enumerate(data.entries.items(), 1):
            delta = sign_delta(keys[pub], store.head(pub), entries, CardColumns.empty(), 0)
            store.apply_delta(delta, ring)
            snapshot = Authority(store, keys[pub], ring).maybe_snapshot()
            assert snapshot is not None, f"no snapshot policy fired for {pub}"
            snapshot_bytes += len(snapshot.to_bytes())
            if n % 10 == 0 or n == len(data.entries):
                progress(
                    f"snapshot upstream: {store.entry_count():,} of {total:,} entries, "
                    f"{n} snapshots ({time.perf_counter() - start:.1f} s)"
                )
        entries_held = store.entry_count()
    finally:
        store.close()  # saves the index, so that the node starts without rebuilding it
    return SnapshotUpstream(data_dir, public, tuple(data.publishers), entries_held, snapshot_bytes)
