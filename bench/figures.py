"""Recording benchmark figures: into ``benchmark.extra_info`` (so the JSON keeps them) and
onto stderr, beside their baselines."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Iterable
from typing import Any


def timed(benchmark: Any) -> bool:
    """False under --benchmark-disable (the tiny, untimed run of `make test`)."""
    return not getattr(benchmark, "disabled", True)


def median(benchmark: Any) -> float | None:
    """The benchmark's median seconds per call, or None when timing is disabled."""
    stats = getattr(benchmark, "stats", None)
    return None if stats is None else float(stats.stats.median)


def record(benchmark: Any, **figures: float | int | str) -> None:
    benchmark.extra_info.update(figures)
    print(
        "\n  "
        + "  ".join(
            f"{k}={v:,.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
        ),
        file=sys.stderr,
    )


def progress(message: str, tag: str = "bench") -> None:
    """One progress line on stderr, timestamped (pytest -s shows it; the figures stay clean)."""
    print(f"[{tag} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median_range(values: Iterable[float], fmt: str = ",.0f") -> tuple[float, str]:
    """A headline figure over several runs (issue #15): the median, never the best run, and
    the range as text ("low-high") to go beside it under a ``*_range`` key."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("median_range of no runs")
    return statistics.median(ordered), f"{ordered[0]:{fmt}}-{ordered[-1]:{fmt}}"
