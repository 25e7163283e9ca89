"""Administrative division codes (GB/T 2260 style) as they appear in card ids.

The first two digits of a region code name a province-level division. The set of valid
province-level prefixes lives here and only here: it changes when the State Council
reorganises divisions, and every parser consults this table.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

# Province-level prefixes allowed in a card id's region code (the table:
# 11–15, 21–23, 31–37, 41–46, 50–54, 61–65).
PROVINCE_PREFIXES: frozenset[int] = frozenset(
    [*range(11, 16), *range(21, 24), *range(31, 38), *range(41, 47), *range(50, 55), *range(61, 66)]
)

# The ministry publishes national feeds under this code; it is a publisher id, not a region
# that a card id can carry.
MINISTRY_CODE = "000000"


def is_valid_province_prefix(two_digits: int) -> bool:
    return two_digits in PROVINCE_PREFIXES


@dataclass(frozen=True, slots=True)
class RegionInfo:
    code: str
    level: str  # "province" or "city"
    parent: str
    name: str


@cache
def known_regions() -> tuple[RegionInfo, ...]:
    """Real province and prefecture codes shipped with the package (for demos and benchmarks)."""
    text = resources.files("blacklist").joinpath("data/regions.tsv").read_text("utf-8")
    rows = [line for line in text.splitlines() if line and not line.startswith("#")]
    reader = csv.DictReader(rows, delimiter="\t")
    return tuple(
        RegionInfo(r["code"], r["level"], r["parent"], r["name"])
        for r in reader
        if int(r["code"][:2]) in PROVINCE_PREFIXES
    )


def city_codes() -> list[str]:
    return [r.code for r in known_regions() if r.level == "city"]
