"""Synthetic national-size revocation lists (issue #6): a few hundred real city publishers,
random 64-bit serials, a plausible mix of reasons and effective times over years.

Everything is drawn as whole numpy columns from one seeded generator, so 10M entries take a
few seconds and the same (total, publishers, seed) always gives the same list::

    data = scale_dataset(10_000_000)          # 300 cities, seed 1
    for publisher, entries in data.by_publisher():
        ...                                   # EntryColumns, one feed each

What is modelled, and why:

* **Publishers** are prefecture-level codes from the project's own table
  (``blacklist/data/regions.tsv``, via :func:`blacklist.regions.city_codes`): 347 cities,
  of which ``publishers`` are chosen at random.
* **List size per city** follows population, which spans two orders of magnitude between
  prefectures: lognormal weights (sigma 0.9), so a few big cities hold several percent of
  the list each and most hold a fraction of a percent.
* **Reasons**: loss reports dominate (挂失, 临时挂失), then card replacement and
  cancellation (注销: death, emigration, moving the insurance elsewhere), expiry,
  damage. The shares are :data:`REASON_SHARES`.
* **Effective times** run from 2015 to 2026 and grow over the years (more cards in
  circulation, more reports): the density rises linearly, so 2025 has about three times
  the entries of 2015. A temporary loss is lifted or turned into a loss within weeks, so a
  temporary loss still listed is recent: within the last :data:`TEMPORARY_WINDOW`.
* **Card ids**: the standard middle part (``D156000005``) and a uniformly random 64-bit
  serial. Two equal cards among 10M are a chance of about 3 in a million; the generator
  does not check for it (a store applies a duplicate as one card).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from bench.data import STANDARD_MIDDLE, card_strings
from blacklist.entry import Reason
from blacklist.entryblock import CardColumns, EntryColumns
from blacklist.regions import city_codes

PUBLISHERS = 300
START = 1_420_070_400  # 2015-01-01T00:00:00Z
END = 1_798_761_600  # 2027-01-01T00:00:00Z
TEMPORARY_WINDOW = 60 * 86_400
SIZE_SIGMA = 0.9
REASON_SHARES: dict[Reason, float] = {
    Reason.LOSS: 0.38,
    Reason.TEMPORARY_LOSS: 0.20,
    Reason.REPLACED: 0.14,
    Reason.CANCELLED: 0.12,
    Reason.EXPIRED: 0.08,
    Reason.DAMAGED: 0.05,
    Reason.OTHER: 0.03,
}
# Density of effective times rises linearly from 1 at START to this at END.
GROWTH = 3.0


@dataclass(frozen=True)
class ScaleDataset:
    """One national list as columns, grouped by publisher (rows of a publisher are
    contiguous, publishers in ascending code order)."""

    publishers: list[str]
    counts: NDArray[np.int64]  # entries per publisher, same order
    entries: EntryColumns

    def __len__(self) -> int:
        return len(self.entries)

    def by_publisher(self) -> Iterator[tuple[str, EntryColumns]]:
        """Each publisher's feed, as a view of its contiguous rows."""
        ends = np.cumsum(self.counts)
        for pub, end, n in zip(self.publishers, ends.tolist(), self.counts.tolist(), strict=True):
            yield pub, self.entries.take(np.arange(end - n, end))

    def card_ids(self, indices: NDArray[np.intp] | None = None) -> list[str]:
        """Canonical card id strings (all rows, or the given ones)."""
        cards = self.entries.cards if indices is None else self.entries.cards.take(indices)
        return card_strings(cards)


def choose_publishers(count: int, rng: np.random.Generator) -> list[str]:
    codes = city_codes()
    if not 1 <= count <= len(codes):
        raise ValueError(f"publishers must be 1..{len(codes)} (real city codes), not {count}")
    picked = rng.choice(len(codes), size=count, replace=False)
    return sorted(codes[i] for i in picked.tolist())


def effective_times(rng: np.random.Generator, reasons: NDArray[np.uint8]) -> NDArray[np.int64]:
    """Times with a linearly rising density over [START, END) (inverse-CDF sampling of
    f(x) ∝ 1 + (GROWTH - 1)·x on [0, 1)); temporary losses in the last weeks only."""
    n = len(reasons)
    u = rng.random(n)
    g = GROWTH - 1.0
    x = (np.sqrt(1.0 + g * (2.0 + g) * u) - 1.0) / g
    times = START + (x * (END - START)).astype(np.int64)
    temporary = reasons == Reason.TEMPORARY_LOSS
    times[temporary] = END - rng.integers(1, TEMPORARY_WINDOW, size=int(temporary.sum()))
    return times


def scale_dataset(total: int, publishers: int = PUBLISHERS, seed: int = 1) -> ScaleDataset:
    """``total`` entries over ``publishers`` real cities, deterministic in ``seed``."""
    if total < 0:
        raise ValueError(f"total must be >= 0, not {total}")
    rng = np.random.default_rng(seed)
    pubs = choose_publishers(publishers, rng)
    weights = rng.lognormal(0.0, SIZE_SIGMA, size=len(pubs))
    counts = rng.multinomial(total, weights / weights.sum()).astype(np.int64)
    region = np.repeat(np.array([int(p) for p in pubs], dtype=np.uint32), counts)
    serial = rng.integers(0, 2**64, size=total, dtype=np.uint64)
    codes = np.array([int(r) for r in REASON_SHARES], dtype=np.uint8)
    shares = np.array(list(REASON_SHARES.values()))
    reasons = codes[rng.choice(len(codes), size=total, p=shares / shares.sum())]
    cards = CardColumns(region, np.full(total, STANDARD_MIDDLE, dtype=np.uint64), serial)
    return ScaleDataset(pubs, counts, EntryColumns(cards, reasons, effective_times(rng, reasons)))


def unseen_card_ids(data: ScaleDataset, n: int, seed: int = 2) -> list[str]:
    """Valid cards of the dataset's publishers that are (almost surely) not on the list,
    drawn in proportion to each city's list size, as a terminal's traffic would be."""
    rng = np.random.default_rng(seed)
    codes = np.array([int(p) for p in data.publishers], dtype=np.uint32)
    p = data.counts / max(1, int(data.counts.sum()))
    regions = codes[rng.choice(len(codes), size=n, p=p)] if data.counts.sum() else codes[:0]
    cards = CardColumns(
        regions,
        np.full(len(regions), STANDARD_MIDDLE, dtype=np.uint64),
        rng.integers(0, 2**64, size=len(regions), dtype=np.uint64),
    )
    return card_strings(cards)
