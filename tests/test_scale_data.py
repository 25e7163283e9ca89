"""The synthetic national list of bench/scale.py: real codes, plausible shares, deterministic."""

from __future__ import annotations

import numpy as np

from bench.scale import END, REASON_SHARES, START, TEMPORARY_WINDOW, scale_dataset
from blacklist.cardid import CardId
from blacklist.entry import Reason
from blacklist.regions import city_codes

N = 200_000


def test_publishers_are_real_city_codes_and_rows_are_grouped() -> None:
    data = scale_dataset(N)
    assert len(data.publishers) == 300
    assert set(data.publishers) <= set(city_codes())
    assert data.publishers == sorted(set(data.publishers))
    assert int(data.counts.sum()) == len(data) == N
    for pub, entries in data.by_publisher():
        assert len(entries) and set(entries.cards.region.tolist()) == {int(pub)}
    ids = data.card_ids(np.arange(0, N, 997))
    assert all(CardId.parse(i).region in data.publishers for i in ids)


def test_shares_are_plausible() -> None:
    data = scale_dataset(N)
    reasons = data.entries.reason
    for reason, share in REASON_SHARES.items():
        assert abs(float(np.mean(reasons == reason)) - share) < 0.01, reason
    loss = np.isin(reasons, [Reason.LOSS, Reason.TEMPORARY_LOSS])
    assert loss.mean() > 0.5  # loss reports dominate
    times = data.entries.time
    assert int(times.min()) >= START and int(times.max()) < END
    temporary = times[reasons == Reason.TEMPORARY_LOSS]
    assert int(temporary.min()) >= END - TEMPORARY_WINDOW
    # Growing over the years: more entries in the last third of the span than in the first.
    span = END - START
    assert np.sum(times >= END - span // 3) > 2 * np.sum(times < START + span // 3)
    # City sizes differ by population: the biggest holds many times the smallest.
    assert data.counts.max() > 10 * data.counts.min()


def test_deterministic_by_seed() -> None:
    a, b = scale_dataset(5_000, 40, seed=7), scale_dataset(5_000, 40, seed=7)
    assert a.publishers == b.publishers and np.array_equal(a.counts, b.counts)
    assert a.entries == b.entries
    c = scale_dataset(5_000, 40, seed=8)
    assert not np.array_equal(a.entries.cards.serial, c.entries.cards.serial)
