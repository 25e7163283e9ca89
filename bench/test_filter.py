"""The signed offline filter (issue #16 part 2): bits per entry, false positives over 1M
non-members, build seconds and the update after 1,000 new revocations in one city, beside
the 28-bit roaring fingerprint set (what a node's index would ship) as the baseline.

    BENCH_SCALE=1000000 .venv/bin/pytest bench/test_filter.py -s --benchmark-only
    BENCH_SCALE=10000000 ...                      # the 10M build (several minutes)

Members are BENCH_SCALE real card hashes (XXH64 of canonical ids, bench/data.py's cities);
non-members are 1M unseen cards of the same cities, so each is routed to its city's
partition exactly as a terminal's lookup is.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyroaring
import pytest
from numpy.typing import NDArray

from bench.conftest import SCALE
from bench.data import Dataset, city_entries, make_dataset, unseen_cards
from bench.figures import record
from blacklist.cardbatch import matrix_from_columns, parse_many, region_codes
from blacklist.delta import FeedHead, sign_delta
from blacklist.entryblock import CardColumns
from blacklist.filters import export, fuse, offline_read
from blacklist.filters.fingerprint import fingerprints, xxh64_rows
from blacklist.signing import SigningKey

NON_MEMBERS = 1_000_000
CITIES = 50
NEW_REVOCATIONS = 1_000
ROARING_WIDTH = 28


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return make_dataset(SCALE, min(CITIES, max(1, SCALE // 1000)))


def _source(publisher: str, keys: NDArray[np.uint64], version: int) -> export.PartitionSource:
    digest = version.to_bytes(32, "big")
    return export.PartitionSource(
        FeedHead(publisher, version, digest),
        0,
        b"",
        (int(publisher),),
        keys,
        np.zeros(0, dtype=np.uint64),
    )


def test_filter_offline(benchmark: Any, dataset: Dataset) -> None:
    members = {p: export.card_keys(e.cards) for p, e in dataset.entries.items()}
    every = np.concatenate(list(members.values()))
    n = len(every)
    built: list[fuse.FuseFilter] = []
    seconds: list[float] = []

    def build() -> None:
        t0 = time.perf_counter()
        built.append(fuse.build(every))
        seconds.append(time.perf_counter() - t0)

    benchmark.pedantic(build, rounds=1, iterations=1)
    one = built[-1]
    # The whole file: one partition per city, signed.
    key = SigningKey.generate("440000", ["44"])
    t0 = time.perf_counter()
    parts = export.build_partitions([_source(p, k, 1) for p, k in members.items()])
    file_build_seconds = time.perf_counter() - t0
    f = export.sign_filter(key, [], "44", 1, 2, parts.partitions)
    data = f.to_bytes()
    # False positives over 1M non-members, each looked up in its own city's partition.
    matrix = parse_many(unseen_cards(np.random.default_rng(16), dataset.publishers, NON_MEMBERS))
    keys = xxh64_rows(matrix)
    regions = region_codes(matrix)
    hits = 0
    for p in f.partitions:
        hits += int(p.cards.contains_many(keys[regions == int(p.publisher)]).sum())
    rate = hits / len(keys)
    # Baseline: the roaring bitmap of 28-bit fingerprints of the same cards.
    fps = np.concatenate(
        [
            fingerprints(matrix_from_columns(e.cards.region, e.cards.middle, e.cards.serial), 28)
            for e in dataset.entries.values()
        ]
    )
    bitmap = pyroaring.BitMap(fps)
    roaring_bits = 8 * len(bitmap.serialize()) / n
    roaring_rate = float(np.isin(fingerprints(matrix, ROARING_WIDTH), fps).mean())
    # An update after 1,000 new revocations in one city.
    city = dataset.publishers[0]
    added = city_entries(np.random.default_rng(5), city, NEW_REVOCATIONS)
    new = export.card_keys(added.cards)
    sources = [
        _source(p, np.concatenate((k, new)) if p == city else k, 2 if p == city else 1)
        for p, k in members.items()
    ]
    previous = offline_read.parse(data)
    rebuilt = export.build_partitions(sources, previous)
    g = export.sign_filter(key, [], "44", 1, 2, rebuilt.partitions)
    update = export.update_bytes(g, previous)
    city_key = SigningKey.generate(city, [city[:4]])
    delta = sign_delta(city_key, FeedHead.genesis(city), added, CardColumns.empty(), 0)
    assert rebuilt.rebuilt == (city,)
    record(
        benchmark,
        entries=n,
        filter_bits_per_entry=one.bits_per_entry,
        filter_false_positive_rate=rate,
        single_filter_false_positive_rate=float(one.contains_many(keys).mean()),
        filter_build_seconds=seconds[-1],
        file_build_seconds=file_build_seconds,
        file_bits_per_entry=8 * len(data) / n,
        file_bytes=len(data),
        partitions=len(f.partitions),
        update_bytes=len(update),
        update_city_entries=len(members[city]) + NEW_REVOCATIONS,
        update_delta_bytes=len(delta.to_bytes()),
        roaring_bits_per_entry=roaring_bits,
        roaring_false_positive_rate=roaring_rate,
    )
