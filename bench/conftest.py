"""Shared benchmark fixtures: a store loaded with BENCH_SCALE entries (default 1M; set
BENCH_SCALE=10000000 for the national size) and the naive baseline holding the same data."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bench.data import card_strings, make_dataset, unseen_cards
from bench.figures import progress
from blacklist.checker import Checker
from blacklist.delta import sign_delta
from blacklist.entryblock import CardColumns
from blacklist.signing import Keyring, SigningKey
from blacklist.store import RevocationStore

SCALE = int(os.environ.get("BENCH_SCALE", "1000000"))
PUBLISHERS = int(os.environ.get("BENCH_PUBLISHERS", "50"))


@dataclass
class Loaded:
    store: RevocationStore
    checker: Checker
    keys: dict[str, SigningKey]
    ring: Keyring
    naive: dict[str, tuple[int, int]]
    hits: list[str]
    misses: list[str]
    entries: int


@pytest.fixture(scope="session")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    data = make_dataset(SCALE, min(PUBLISHERS, max(1, SCALE // 1000)))
    keys = {p: SigningKey.generate(p, [p[:4]]) for p in data.publishers}
    ring = Keyring(k.trusted() for k in keys.values())
    path: Path = tmp_path_factory.mktemp("bench-store")
    store = RevocationStore(path, map_size=1 << 38)
    naive: dict[str, tuple[int, int]] = {}
    start = time.perf_counter()
    for n, (pub, entries) in enumerate(data.entries.items(), 1):
        delta = sign_delta(keys[pub], store.head(pub), entries, CardColumns.empty(), 0)
        store.apply_delta(delta, ring)
        ids = card_strings(entries.cards)
        naive.update(
            zip(ids, zip(entries.reason.tolist(), entries.time.tolist(), strict=True), strict=True)
        )
        if n % 10 == 0 or n == len(data.entries):
            progress(
                f"loaded {store.entry_count():,} of {SCALE:,} entries "
                f"({time.perf_counter() - start:.1f} s)"
            )
    rng = np.random.default_rng(99)
    every = list(naive)
    hits = [every[i] for i in rng.choice(len(every), size=min(10_000, len(every)), replace=False)]
    misses = unseen_cards(rng, data.publishers, 10_000)
    yield Loaded(store, Checker(store, ring), keys, ring, naive, hits, misses, len(every))
    store.close(save_index=False)


def pytest_benchmark_update_json(
    config: pytest.Config, benchmarks: list[object], output_json: dict[str, object]
) -> None:
    """The conditions of the run in every result file (bench/readme_table.py prints them
    beside each figure): the load average at the end and the scale."""
    output_json["load_average"] = list(os.getloadavg())
    output_json["bench_scale"] = SCALE


def per_call_seconds(fn: object, repeat: int = 7, number: int = 5) -> float:
    """Median seconds per call of ``fn`` (the baseline side of a figure), timed in-process."""
    import statistics
    import timeit

    assert callable(fn)
    times = timeit.repeat(fn, repeat=repeat, number=number)
    return statistics.median(times) / number
