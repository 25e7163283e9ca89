"""A node's ``/metrics`` page read from outside, as Prometheus would: for ``up``'s link
check, the demo, and the benchmarks (bench/), which count what a node did between two reads.
"""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

# Every sample of one page, by name and label set.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, timeout: float = 10.0) -> Samples:
    """Every sample of a Prometheus text exposition, keyed by name and label set."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode("utf-8")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over every label set that includes ``labels`` (0 if none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)
