"""Issue #11 figure: catch-up of a child 50 MiB of deltas behind, at the default limits.

An upstream (a relay, so it holds the deltas and no snapshot: a child can only catch up by
deltas) is built with the library before it starts: signed deltas of 100,000 revocations
each (one Admin.Revoke's worth, per-second times within an hour, bench/data.py), for five
cities, until they add up to ``CATCH_UP_BYTES``. A fresh city with an empty data directory
is spawned with that upstream; ``seconds`` runs from the spawn until its heads (version and
digest of every feed) equal the upstream's. Every answer it receives fits the 16 MiB it
states (node/grpc/sync.py, blacklist/sync/budget.py), so it takes several GetUpdates
rounds (``get_updates_rounds``). ``received_bytes_per_entry`` is
``blacklist_sync_received_bytes_total`` at the child per entry; ``apply_seconds`` the
child's verify + commit time in all (``blacklist_delta_apply_seconds_sum``).

Baselines in the same run: ``baseline_seconds``, the same bytes (every retained delta,
concatenated) copied over one raw gRPC server stream in 1 MiB messages by a process that
does nothing else (bench/byte_stream.py); and ``lmdb_read_seconds``, reading them out of
the upstream's LMDB (the archive, in this process, before the node starts).

Under ``--benchmark-disable`` (``make test``) the upstream holds BENCH_SCALE entries (one
answer's worth), so the run is tiny; the figure is the timed run's.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench import byte_stream
from bench.conftest import SCALE
from bench.data import cities, city_entries
from bench.figures import median_range, progress, timed
from bench.grpc_load import ServerProcess, python_command
from bench.test_sync import heads, record, wait_until
from blacklist.delta import sign_delta
from blacklist.entryblock import CardColumns
from blacklist.signing import Keyring, SigningKey
from blacklist.store import RevocationStore
from node.configfields import DEFAULT_MAX_MESSAGE_BYTES
from node.keyfiles import write_key_pair
from node.local.process import LocalNode, NodeSpec, start_node, write_config
from node.local.scrape import sample, scrape

CATCH_UP_BYTES = 50 << 20
PER_DELTA = 100_000
PUBLISHERS = 5
MAP_SIZE_GIB = 8
TIMEOUT = 600.0
ROOT = Path(__file__).resolve().parent.parent


def build_relay(
    data_dir: Path, keys_dir: Path, target_bytes: int, max_entries: int
) -> dict[str, Any]:
    """A relay's store holding signed deltas of PUBLISHERS cities (round robin), until
    their bytes reach ``target_bytes`` or their entries ``max_entries``."""
    pubs = cities(PUBLISHERS)
    keys = {p: SigningKey.generate(p, [p[:4]]) for p in pubs}
    public = tuple(write_key_pair(k, keys_dir)[1] for k in keys.values())
    ring = Keyring(k.trusted() for k in keys.values())
    rng = np.random.default_rng(17)
    store = RevocationStore(data_dir, map_size=MAP_SIZE_GIB << 30, retain_deltas=1_000_000)
    total_bytes = entries = deltas = 0
    now = int(time.time())
    try:
        while total_bytes < target_bytes and entries < max_entries:
            pub = pubs[deltas % len(pubs)]
            n = min(PER_DELTA, max_entries - entries)
            batch = city_entries(rng, pub, n, start=now - 3600, span=3600)
            delta = sign_delta(keys[pub], store.head(pub), batch, CardColumns.empty(), now)
            store.apply_delta(delta, ring)
            total_bytes += len(delta.to_bytes())
            entries += n
            deltas += 1
            if deltas % 10 == 0:
                progress(f"relay: {deltas} deltas, {total_bytes / 2**20:.1f} MiB")
        entries = store.entry_count()
        t0 = time.perf_counter()
        blob = b"".join(
            b"".join(store.archive.deltas(p, 1, store.head(p).version)) for p in store.feeds
        )
        lmdb_seconds = time.perf_counter() - t0
        assert len(blob) == total_bytes and not any(store.archive.snapshot(p) for p in store.feeds)
    finally:
        store.close()
    return {
        "public": public,
        "entries": entries,
        "deltas": deltas,
        "bytes": total_bytes,
        "blob": blob,
        "lmdb_read_seconds": lmdb_seconds,
    }


def raw_stream_seconds(address: str, expected: int) -> float:
    options = [
        ("grpc.max_receive_message_length", DEFAULT_MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", DEFAULT_MAX_MESSAGE_BYTES),
    ]
    with grpc.insecure_channel(address, options=options) as channel:
        read = channel.unary_stream(byte_stream.METHOD)
        grpc.channel_ready_future(channel).result(timeout=10)
        t0 = time.perf_counter()
        got = sum(len(part) for part in read(b"", timeout=120))
        seconds = time.perf_counter() - t0
    assert got == expected, (got, expected)
    return seconds


def test_catch_up(benchmark: Any, tmp_path: Path) -> None:
    assert byte_stream.MAX_MESSAGE == DEFAULT_MAX_MESSAGE_BYTES
    target = CATCH_UP_BYTES if timed(benchmark) else 1
    built = build_relay(
        tmp_path / "relay" / "data", tmp_path / "keys", target, 10**9 if timed(benchmark) else SCALE
    )
    blob_path = tmp_path / "deltas.bin"
    blob_path.write_bytes(built.pop("blob"))
    baselines = []
    stream = ServerProcess(
        python_command("-m", "bench.byte_stream", str(blob_path)),
        cwd=ROOT,
        log=tmp_path / "byte_stream.log",
    )
    try:
        baselines = [raw_stream_seconds(stream.address, built["bytes"]) for _ in range(3)]
    finally:
        assert stream.stop() == 0
    relay = start_node(
        NodeSpec(
            "440000", role="province", trusted_keys=built["public"], map_size_gib=MAP_SIZE_GIB
        ),
        tmp_path / "relay",
        ready_timeout=120,
    )
    child: LocalNode | None = None
    try:
        want, relay_entries = heads(relay.grpc)
        assert relay_entries == built["entries"]
        config = write_config(
            NodeSpec(
                "110100",
                trusted_keys=built["public"],
                upstreams=(relay.grpc,),
                map_size_gib=MAP_SIZE_GIB,
            ),
            tmp_path / "child",
        )
        progress(
            f"catching up {built['bytes'] / 2**20:.1f} MiB of deltas "
            f"({built['entries']:,} entries in {built['deltas']} deltas)"
        )

        def catch_up() -> tuple[LocalNode, float, float]:
            t0 = time.perf_counter()
            node = LocalNode.spawn(config, name="behind-city")
            node.wait_ready(120)
            ready = time.perf_counter() - t0
            wait_until(lambda: heads(node.grpc)[0] == want, TIMEOUT, "the child's heads", 0.05)
            return node, ready, time.perf_counter() - t0

        child, ready, seconds = benchmark.pedantic(catch_up, rounds=1, iterations=1)
        assert heads(child.grpc)[1] == built["entries"]
        child_samples = scrape(child.metrics_url)
        relay_samples = scrape(relay.metrics_url)
        received = sample(child_samples, "blacklist_sync_received_bytes_total")
        # Verify + commit at the child (blacklist_delta_apply_seconds): where the time goes.
        apply_seconds = sample(child_samples, "blacklist_delta_apply_seconds_sum")
        snapshots = sample(
            child_samples, "blacklist_snapshot_transfers_total", direction="received"
        )
        rounds = sample(
            relay_samples, "grpc_server_handled_total", grpc_method="GetUpdates", grpc_code="OK"
        )
        assert snapshots == 0, snapshots  # by deltas, every one
        assert received >= built["bytes"], (received, built["bytes"])
        assert child.stop() == 0, child.log_tail()
        assert relay.stop() == 0, relay.log_tail()
        record(
            benchmark,
            catch_up_mib=built["bytes"] / 2**20,
            entries=built["entries"],
            deltas=built["deltas"],
            seconds=seconds,
            sync_seconds=seconds - ready,
            ready_seconds=ready,
            baseline_seconds=statistics.median(baselines),
            baseline_seconds_range=median_range(baselines, ".2f")[1],
            lmdb_read_seconds=built["lmdb_read_seconds"],
            apply_seconds=apply_seconds,
            get_updates_rounds=int(rounds),
            received_bytes_per_entry=received / built["entries"],
            signed_bytes_per_entry=built["bytes"] / built["entries"],
            max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES,
        )
    finally:
        if child is not None:
            child.close()
        relay.close()
