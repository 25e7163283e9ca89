"""Synthetic revocation data for benchmarks: real city codes, random 64-bit serials, a
plausible mix of reasons, effective times spread over years."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from blacklist.cardbatch import matrix_from_columns, rows_to_str
from blacklist.entryblock import CardColumns, EntryColumns
from blacklist.regions import city_codes

STANDARD_MIDDLE = int("D156000005", 36)
# Loss reports dominate real lists; cancellations and expiries follow.
REASON_WEIGHTS = np.array([0.10, 0.35, 0.08, 0.15, 0.12, 0.15, 0.05])
EPOCH_2015 = 1_420_070_400
YEAR = 365 * 86_400

# The naive lookup a developer writes first: validate with a regex, then a dict.
NAIVE_RE = re.compile(r"[1-6][0-9]{5}[0-9A-Za-z]{10}[0-9A-Fa-f]{16}")


def naive_check(table: dict[str, tuple[int, int]], card_id: str) -> tuple[int, int] | None:
    if NAIVE_RE.fullmatch(card_id) is None:
        raise ValueError(f"invalid card id {card_id!r}")
    return table.get(card_id.upper())


@dataclass
class Dataset:
    publishers: list[str]
    entries: dict[str, EntryColumns]  # per publisher

    def total(self) -> int:
        return sum(len(e) for e in self.entries.values())


def cities(count: int) -> list[str]:
    codes = city_codes()
    step = max(1, len(codes) // count)
    return codes[::step][:count]


def city_entries(
    rng: np.random.Generator, region: str, n: int, start: int = EPOCH_2015, span: int = 10 * YEAR
) -> EntryColumns:
    cards = CardColumns(
        np.full(n, int(region), dtype=np.uint32),
        np.full(n, STANDARD_MIDDLE, dtype=np.uint64),
        rng.integers(0, 2**64, size=n, dtype=np.uint64),
    )
    reasons = (rng.choice(7, size=n, p=REASON_WEIGHTS) + 1).astype(np.uint8)
    times = (start + rng.integers(0, span, size=n)).astype(np.int64)
    return EntryColumns(cards, reasons, times)


def make_dataset(total: int, publishers: int, seed: int = 1) -> Dataset:
    rng = np.random.default_rng(seed)
    pubs = cities(publishers)
    per = np.full(len(pubs), total // len(pubs))
    per[: total - int(per.sum())] += 1
    return Dataset(pubs, {p: city_entries(rng, p, int(n)) for p, n in zip(pubs, per, strict=True)})


def card_strings(cards: CardColumns) -> list[str]:
    return rows_to_str(matrix_from_columns(cards.region, cards.middle, cards.serial))


def unseen_cards(rng: np.random.Generator, publishers: list[str], n: int) -> list[str]:
    """Random valid cards of known publishers (almost surely not revoked)."""
    regions = rng.choice(np.array([int(p) for p in publishers], dtype=np.uint32), size=n)
    cards = CardColumns(
        regions,
        np.full(n, STANDARD_MIDDLE, dtype=np.uint64),
        rng.integers(0, 2**64, size=n, dtype=np.uint64),
    )
    return card_strings(cards)
