"""The README's benchmark table, made from the result files the benchmark commands write
(issue #15: no figure typed by hand).

Each row names a benchmark, the figure's ``extra_info`` key, the baseline's key (measured in
the same run) and the command that writes the result file. The newest file among
``bench/results/readme-*.json`` (pytest-benchmark JSON, by its ``datetime``; committed so that
anyone can regenerate the table) that holds the row's
benchmark supplies the figure, its ``*_range`` when the benchmark records one, the baseline,
and the file's date, load average and scale (bench/conftest.py adds those two). A row no file
holds says which command to run. ``python -m bench.report --readme`` rewrites the table
between the markers in README.md; ``make bench-readme`` runs it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BEGIN = "<!-- bench-table:begin (python -m bench.report --readme writes this table) -->"
END = "<!-- bench-table:end -->"

PYTEST = "BENCH_SCALE=1000000 .venv/bin/pytest"


def command(test_file: str, select: str = "", scale: str = PYTEST) -> str:
    """The command that writes the result file ``bench/results/readme-<file>[-<select>].json``
    (a selection ``-k`` writes its own file, so that it does not replace the whole file's)."""
    name = test_file.removeprefix("test_").removesuffix(".py").replace("_", "-")
    name += f"-{select}" if select else ""
    k = f" -k {select}" if select else ""
    return (
        f"{scale} bench/{test_file}{k} --benchmark-only -p no:cacheprovider "
        f"--benchmark-json=bench/results/readme-{name}.json"
    )


@dataclass(frozen=True)
class Row:
    what: str
    benchmark: str  # the benchmark's name in the JSON
    key: str
    baseline_key: str | None
    baseline: str  # what the baseline is
    target: str
    command: str
    unit: str = ""
    digits: int = 0


CORE = command("test_core.py")
NODE = command("test_node.py")
LATENCY = command("test_latency_under_sync.py", "steady")
BIG = command("test_latency_under_sync.py", "big")
ROWS: tuple[Row, ...] = (
    Row("check, a miss", "test_check_hit_and_miss", "miss_ns", "naive_miss_ns",
        "naive regex + dict", "≤ 0.8× naive", CORE, " ns"),
    Row("check, a hit", "test_check_hit_and_miss", "hit_ns", "naive_hit_ns",
        "naive regex + dict", "≤ 1.5× naive", CORE, " ns"),
    Row("index memory, serialized", "test_index_memory", "index_bytes_per_entry",
        "baseline_bytes_per_entry", "dict of the same entries", "≤ 2.5 B", CORE, " B/entry", 2),
    Row("index memory, resident (VmRSS in a fresh process)", "test_index_memory",
        "index_resident_bytes_per_entry", "index_bytes_per_entry", "its serialized size",
        "reported", CORE, " B/entry", 2),
    Row("delta apply rate, 100k-entry delta", "test_delta_apply_rate", "entries_per_s",
        "baseline_entries_per_s", "bare LMDB putmulti, one transaction", "≥ 0.5× bare", CORE,
        " entries/s"),
    Row("delta size", "test_delta_size", "delta_bytes_per_entry", "crl_bytes_per_entry",
        "DER X.509 delta CRL", "≤ 10 B", CORE, " B/entry", 2),
    Row("CheckCard at saturation (h2load)", "test_node_check_card_valid", "rps", "baseline_rps",
        "empty grpc.aio handler", "≥ 0.95×", NODE, " calls/s"),
    Row("BatchCheck packed, 1,000 ids", "test_node_batch_check_packed[1000]", "cards_per_s",
        "redis_cards_per_s", "Redis SMISMEMBER (redis-benchmark), same ids", "≥ 1× Redis",
        command("test_node.py", "packed"), " cards/s"),
    Row("BatchCheck packed, 10,000 ids", "test_node_batch_check_packed[10000]", "cards_per_s",
        "redis_cards_per_s", "Redis SMISMEMBER (redis-benchmark), same ids", "reported",
        command("test_node.py", "packed"), " cards/s"),
    Row("CheckCard p99 at half load, 1 worker, 100k-card delta every 10 s",
        "test_check_card_latency_under_sync_1_worker_big_deltas", "p99_us", "p99_us_no_writes",
        "the same load without writes", "≤ 1.5×", BIG, " µs"),
    Row("CheckCard p99 at half load, 2 workers, 100k-card delta every 10 s",
        "test_check_card_latency_under_sync_2_workers_big_deltas", "p99_us", "p99_us_no_writes",
        "the same load without writes", "≤ 1.5×", BIG, " µs"),
    Row("CheckCard p99 at half load, 1 worker, 1,000-card deltas at 5/s",
        "test_check_card_latency_under_sync_1_worker", "p99_us", "p99_us_no_writes",
        "the same load without writes", "≤ 1.5×", LATENCY, " µs"),
    Row("CheckCard p99 at half load, 2 workers, 1,000-card deltas at 5/s",
        "test_check_card_latency_under_sync_2_workers", "p99_us", "p99_us_no_writes",
        "the same load without writes", "≤ 1.5×", LATENCY, " µs"),
    Row("2 serving processes (`workers = 2`)", "test_check_card_with_one_and_two_workers",
        "rps_2_workers", "rps_1_worker", "1 process", "≥ 1.4×", command("test_workers.py"),
        " calls/s"),
    Row("propagation over 4 hops, push, p99", "test_propagation_push", "p99_ms",
        "baseline_p99_ms", "one CheckCard round trip", "≤ 250 ms", command("test_sync.py"),
        " ms", 1),
    Row("bootstrap of a fresh city from snapshots", "test_bootstrap_from_snapshots", "seconds",
        "baseline_seconds", "copy data.mdb", "≤ 60 s", command("test_sync.py"), " s", 1),
    Row("delta verification, 2-certificate chain", "test_delta_verification_with_chain",
        "verifications_per_s", "baseline_verifications_per_s", "the signature alone",
        "reported", command("test_trust.py"), " /s"),
    Row("CheckCard over mutual TLS", "test_tls_check_card", "rps", "baseline_rps",
        "plain text", "≥ 0.8×", command("test_tls.py"), " calls/s"),
    Row("catch-up of a child 50 MiB behind", "test_catch_up", "seconds", "baseline_seconds",
        "the same bytes over one raw gRPC stream", "reported", command("test_catch_up.py"),
        " s", 1),
    Row("offline filter", "test_filter_offline", "filter_bits_per_entry",
        "roaring_bits_per_entry", "28-bit roaring fingerprints", "≤ 9.1 bits",
        command("test_filter.py"), " bits/card", 2),
    Row("edge replica `check`, a miss, in-process", "test_edge_check", "edge_ns_per_check",
        "grpc_ns_per_check", "CheckCard over gRPC", "≥ 100× faster", command("test_edge.py"),
        " ns"),
)  # fmt: skip


@dataclass(frozen=True)
class Result:
    """One pytest-benchmark file: its benchmarks' extra_info by name, and when it ran."""

    path: Path
    datetime: str
    load_average: str
    scale: str
    figures: dict[str, dict[str, Any]]


def read_results(paths: Iterable[Path]) -> list[Result]:
    """The result files, newest first (unreadable or foreign JSON files are skipped)."""
    results = []
    for path in paths:
        try:
            report = json.loads(path.read_text())
            figures = {b["name"]: b.get("extra_info", {}) for b in report["benchmarks"]}
        except (OSError, ValueError, KeyError, TypeError):
            continue
        load = report.get("load_average")
        results.append(
            Result(
                path,
                str(report.get("datetime", "?")),
                " / ".join(f"{x:.1f}" for x in load) if load else "?",
                str(report.get("bench_scale", "?")),
                figures,
            )
        )
    return sorted(results, key=lambda r: r.datetime, reverse=True)


def _number(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def render_row(row: Row, results: list[Result]) -> str:
    found = next(
        (r for r in results if row.key in r.figures.get(row.benchmark, {})),
        None,
    )
    if found is None:
        return f"| {row.what} | not in bench/results | {row.baseline} | | {row.target} | | `{row.command}` |"
    info = found.figures[row.benchmark]
    value = float(info[row.key])
    figure = _number(value, row.digits) + row.unit
    if f"{row.key}_range" in info:
        figure += f" (runs {info[f'{row.key}_range']})"
    base_cell, ratio = row.baseline, ""
    if row.baseline_key and row.baseline_key in info:
        base = float(info[row.baseline_key])
        base_cell = f"{row.baseline}: {_number(base, row.digits)}{row.unit}"
        if f"{row.baseline_key}_range" in info:
            base_cell += f" (runs {info[f'{row.baseline_key}_range']})"
        ratio = f"{value / base:.2f}×" if base else ""
    source = (
        f"{found.path.name}, {found.datetime[:16].replace('T', ' ')} UTC, "
        f"load {found.load_average}, {_scale(found, info)}"
    )
    return (
        f"| {row.what} | {figure} | {base_cell} | {ratio} | {row.target} | {source} "
        f"| `{row.command}` |"
    )


def _scale(result: Result, info: dict[str, Any]) -> str:
    entries = info.get("entries")
    if isinstance(entries, int | float):
        return f"{int(entries):,} entries"
    return f"BENCH_SCALE {result.scale}"


def table(results: list[Result]) -> str:
    lines = [
        "| what | figure (median; range of runs) | baseline, same run | ratio | target "
        "| result file | command |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [render_row(row, results) for row in ROWS]
    return "\n".join(lines)


def result_files(results_dir: Path) -> list[Path]:
    """The files the table's commands write (``readme-*.json``; committed, unlike the
    ``latest.json`` of ``make bench``)."""
    return sorted(results_dir.glob("readme-*.json"))


def rewrite(readme: Path, results_dir: Path) -> bool:
    """Put the table made from ``results_dir``'s files between the markers in ``readme``;
    True if the file changed. The markers must be there, once each, in order."""
    text = readme.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start or text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError(f"{readme} needs the lines {BEGIN!r} and {END!r}, once each, in order")
    body = table(read_results(result_files(results_dir)))
    new = text[: start + len(BEGIN)] + "\n" + body + "\n" + text[end:]
    if new != text:
        readme.write_text(new)
    return new != text
