"""Who is whom: the national federation from ``blacklist/data/regions.tsv``.

The ministry (000000) relays and publishes nothing (as in ``node/federation.py``); each
province publishes its pooling prefix (``44`` → ``4499``) and follows the ministry; each
prefecture-level city publishes its own prefix and follows its province. A city's prefix
is its first four digits, or its whole code where several cities share those four (the
county-level cities directly under a province, ``4290xx``), so no two publishers claim
one prefix.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from blacklist.regions import MINISTRY_CODE, known_regions
from blacklist.signing import SigningKey


@dataclass(frozen=True, slots=True)
class NodeSpec:
    code: str
    tier: str  # "ministry" | "province" | "city"
    upstreams: tuple[str, ...]
    prefix: str | None  # what it signs for (None: publishes nothing)

    def card_region(self) -> str:
        """A region code its cards carry (a pooling code for a province)."""
        assert self.prefix is not None
        return self.code if self.tier == "city" else (self.prefix + "00")[:6]


def national(
    provinces: int | None = None, cities_per_province: int | None = None
) -> list[NodeSpec]:
    """The ministry, the provinces and their cities; ``provinces`` and
    ``cities_per_province`` cut it down (the first ones in code order) for small runs."""
    regions = known_regions()
    province_codes = sorted(r.code for r in regions if r.level == "province")
    if provinces is not None:
        province_codes = province_codes[:provinces]
    cities: dict[str, list[str]] = {p: [] for p in province_codes}
    for r in regions:
        if r.level == "city" and r.parent in cities:
            cities[r.parent].append(r.code)
    shared = Counter(c[:4] for cs in cities.values() for c in cs)
    specs = [NodeSpec(MINISTRY_CODE, "ministry", (), None)]
    for p in province_codes:
        specs.append(NodeSpec(p, "province", (MINISTRY_CODE,), p[:2] + "99"))
    for p in province_codes:
        chosen = sorted(cities[p])[:cities_per_province]
        for c in chosen:
            prefix = c[:4] if shared[c[:4]] == 1 else c
            specs.append(NodeSpec(c, "city", (p,), prefix))
    return specs


def signing_keys(specs: list[NodeSpec], rng: random.Random) -> dict[str, SigningKey]:
    """One Ed25519 key per publisher, drawn from ``rng`` so that a seed fixes every digest
    (Ed25519 signatures are deterministic, RFC 8032 §5.1.6)."""
    keys = {}
    for spec in specs:
        if spec.prefix is not None:
            keys[spec.code] = SigningKey(1, rng.randbytes(32), spec.code, (spec.prefix,))
    return keys
