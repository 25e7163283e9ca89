"""Issue #14 figures: two of bench/test_sync.py's, with every key SM2/SM3 beside every key
Ed25519, in the same run.

* **Propagation over 4 hops** (``test_propagation_push_suite``): two six-node federations at
  once (``node/local/federation.py``, push), one all Ed25519, one all SM2; revocations at
  440100 alternate between them, one at a time, each timed until 110100 answers REVOKED
  (bench/test_sync.py's ``propagate``): ``sm2_p50_ms``/``sm2_p99_ms`` beside
  ``ed25519_p50_ms``/``ed25519_p99_ms``. Every hop verifies the delta's signature.
* **Bootstrap** (``test_bootstrap_suite``): a fresh city from an upstream holding BENCH_SCALE
  entries in snapshots (bench/snapshot_upstream.py), once with Ed25519 keys and once with
  SM2 keys: ``sm2_seconds`` beside ``ed25519_seconds`` (spawn until the heads equal the
  upstream's). A snapshot is verified once, so the suite's share is SM3 over its body.

Under ``--benchmark-disable`` (``make test``): 3 revocations each, BENCH_SCALE entries.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.conftest import PUBLISHERS, SCALE, progress
from bench.figures import timed
from bench.snapshot_upstream import MAP_SIZE_GIB, build_snapshot_upstream
from bench.test_sync import (
    BOOTSTRAP_TIMEOUT,
    HOPS,
    TARGET,
    Propagation,
    bootstrap_city,
    heads,
    percentile,
    propagate,
    record,
    running,
)
from node.local.federation import Federation
from node.local.process import NodeSpec, start_node, write_config

SUITES = {"ed25519": "ed25519", "sm2": "sm2-sm3"}  # figure prefix → signing suite


def test_propagation_push_suite(benchmark: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    count = 100 if timed(benchmark) else 3
    rng = np.random.default_rng(44)
    root = tmp_path_factory.mktemp("fed-suite")
    with (
        running(Federation(root / "ed25519", secure=False)) as ed25519,
        running(Federation(root / "sm2", secure=False, suite="sm2-sm3")) as sm2,
    ):
        feds = {"ed25519": ed25519, "sm2": sm2}
        for fed in feds.values():
            propagate(fed, 1, 0.0, rng)  # warm-up: the feed's first delta in every process

        def alternate() -> dict[str, Propagation]:
            out = {name: Propagation([], [], []) for name in feds}
            for _ in range(count):
                for name, fed in feds.items():
                    one = propagate(fed, 1, 0.0, rng)
                    out[name].ms.extend(one.ms)
                    out[name].revoke_ms.extend(one.revoke_ms)
            return out

        result = benchmark.pedantic(alternate, rounds=1, iterations=1)
    figures: dict[str, float | int | str] = {"hops": HOPS, "revocations": count}
    for name, p in result.items():
        assert len(p.ms) == count
        figures[f"{name}_p50_ms"] = percentile(p.ms, 50)
        figures[f"{name}_p99_ms"] = percentile(p.ms, 99)
        figures[f"{name}_revoke_p50_ms"] = percentile(p.revoke_ms, 50)
    record(benchmark, **figures)


def _bootstrap(root: Path, suite: str) -> tuple[float, float, int]:
    """Seconds until a fresh city's heads equal its upstream's, and until it was READY,
    for an upstream whose keys are of ``suite``; and the entries it took."""
    publishers = min(PUBLISHERS, max(1, SCALE // 1000))
    built = build_snapshot_upstream(root / "upstream" / "data", root / "keys", SCALE, publishers, suite)  # fmt: skip
    upstream = start_node(
        NodeSpec("440000", role="province", trusted_keys=built.public_keys, map_size_gib=MAP_SIZE_GIB),
        root / "upstream",
        ready_timeout=120,
    )  # fmt: skip
    try:
        want, entries = heads(upstream.grpc)
        assert len(want) == publishers and entries == built.entries
        config = write_config(
            NodeSpec(TARGET, trusted_keys=built.public_keys, upstreams=(upstream.grpc,),
                     map_size_gib=MAP_SIZE_GIB),
            root / "city",
        )  # fmt: skip
        progress(f"bootstrapping a fresh city from {entries:,} entries, {suite} keys")
        result = bootstrap_city(config, want, BOOTSTRAP_TIMEOUT)
        try:
            assert heads(result.node.grpc)[1] == built.entries
            assert result.node.stop() == 0, result.node.log_tail()
        finally:
            result.node.close()
        assert upstream.stop() == 0, upstream.log_tail()
    finally:
        upstream.close()
    for data_dir in (built.data_dir, root / "city" / "data"):
        shutil.rmtree(data_dir)  # ~60 bytes per entry each
    return result.seconds, result.ready_seconds, entries


def test_bootstrap_suite(benchmark: Any, tmp_path: Path) -> None:
    def both() -> dict[str, tuple[float, float, int]]:
        return {name: _bootstrap(tmp_path / name, suite) for name, suite in SUITES.items()}

    result = benchmark.pedantic(both, rounds=1, iterations=1)
    figures: dict[str, float | int | str] = {"entries": result["sm2"][2]}
    for name, (seconds, ready, entries) in result.items():
        figures[f"{name}_seconds"] = seconds
        figures[f"{name}_bootstrap_entries_per_s"] = entries / (seconds - ready)
    record(benchmark, **figures)
