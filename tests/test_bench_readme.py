"""The README's benchmark table is made from result files (issue #15): bench/readme_table.py
and ``python -m bench.report --readme`` against small fixture files; bench-compare's rows
each beside their peer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.compare_report import PEERS, markdown, peer_cell
from bench.readme_table import BEGIN, END, ROWS, read_results, result_files, rewrite, table
from bench.report import cli

README = f"# Project\n\nText before.\n\n{BEGIN}\nold hand-typed table\n{END}\n\nText after.\n"


def result_file(
    path: Path, when: str, info: dict[str, Any], name: str = "test_index_memory"
) -> Path:
    path.write_text(
        json.dumps(
            {
                "datetime": when,
                "load_average": [1.25, 2.5, 3.75],
                "bench_scale": 1_000_000,
                "benchmarks": [{"name": name, "extra_info": info}],
            }
        )
    )
    return path


def index_figures(resident: float) -> dict[str, Any]:
    return {
        "entries": 1_000_000,
        "index_bytes_per_entry": 2.0,
        "index_resident_bytes_per_entry": resident,
        "baseline_bytes_per_entry": 200.0,
    }


def rows_of(text: str) -> dict[str, str]:
    return {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()}


def test_the_table_is_made_from_the_fixture_file(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    result_file(results / "readme-core.json", "2026-12-04T23:10:00", index_figures(4.8))
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert rewrite(readme, results)
    text = readme.read_text()
    assert "old hand-typed table" not in text
    assert text.startswith("# Project\n\nText before.\n\n" + BEGIN + "\n")
    assert text.endswith(END + "\n\nText after.\n")
    rows = rows_of(text)
    resident = rows["index memory, resident (VmRSS in a fresh process)"]
    assert "| 4.80 B/entry |" in resident
    assert "its serialized size: 2.00 B/entry | 2.40× |" in resident
    assert "readme-core.json, 2026-12-04 23:10 UTC, load 1.2 / 2.5 / 3.8, 1,000,000 entries" in (
        resident
    )
    serialized = rows["index memory, serialized"]
    assert "| 2.00 B/entry |" in serialized and "| 0.01× |" in serialized
    # A row no file holds names the command that writes its file.
    apply = rows["delta apply rate, 100k-entry delta"]
    assert "not in bench/results" in apply
    assert "--benchmark-json=bench/results/readme-core.json" in apply
    # Every row is there, once.
    assert len([r for r in text.splitlines() if r.startswith("| ")]) == len(ROWS) + 1
    assert not rewrite(readme, results)  # the same files: the same table


def test_the_newest_file_holding_the_figure_wins_and_ranges_go_beside(tmp_path: Path) -> None:
    result_file(tmp_path / "a.json", "2026-12-01T10:00:00", index_figures(3.0))
    result_file(tmp_path / "b.json", "2026-12-03T10:00:00", index_figures(4.0))
    # Newer still, but without the figure: skipped for that row.
    result_file(tmp_path / "c.json", "2026-12-04T10:00:00", {"entries": 5}, "test_delta_size")
    (tmp_path / "junk.json").write_text("not json")
    apply = {"entries_per_s": 400_000.0, "entries_per_s_range": "390,000-410,000"}
    apply |= {"baseline_entries_per_s": 800_000.0, "baseline_range": "700,000-900,000"}
    result_file(tmp_path / "d.json", "2026-11-30T10:00:00", apply, "test_delta_apply_rate")
    results = read_results(sorted(tmp_path.glob("*.json")))
    assert [r.path.name for r in results] == ["c.json", "b.json", "a.json", "d.json"]
    rows = rows_of(table(results))
    assert "| 4.00 B/entry |" in rows["index memory, resident (VmRSS in a fresh process)"]
    row = rows["delta apply rate, 100k-entry delta"]
    assert "| 400,000 entries/s (runs 390,000-410,000) |" in row
    assert "bare LMDB putmulti, one transaction: 800,000 entries/s | 0.50× |" in row


@pytest.mark.parametrize(
    "text",
    ["no markers\n", f"{END}\n{BEGIN}\n", f"{BEGIN}\n{END}\n{BEGIN}\n{END}\n", f"{BEGIN}\n"],
)
def test_markers_missing_twice_or_out_of_order_are_refused(tmp_path: Path, text: str) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(text)
    with pytest.raises(ValueError, match="bench-table:begin"):
        rewrite(readme, tmp_path)
    assert readme.read_text() == text


def test_the_command_rewrites_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result_file(tmp_path / "readme-core.json", "2026-12-04T23:10:00", index_figures(4.8))
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert cli(["--readme", "--results", str(tmp_path), "--file", str(readme)]) == 0
    assert "rewritten" in capsys.readouterr().out
    assert "| 4.80 B/entry |" in readme.read_text()


def test_the_repository_readme_has_the_generated_table() -> None:
    """README.md holds the table between the markers exactly as the generator makes it from
    the committed result files (run `make bench-readme` after a benchmark run)."""
    root = Path(__file__).resolve().parent.parent
    text = (root / "README.md").read_text()
    inside = text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip()
    assert inside == table(read_results(result_files(root / "bench" / "results")))


# --- bench-compare: every row beside its peer ----------------------------------------------


def side(name: str, calls: float, per_call: int = 1) -> dict[str, Any]:
    return {
        "name": name,
        "client": "c",
        "per_call": per_call,
        "calls_per_s": calls,
        "cards_per_s": calls * per_call,
        "p50_us": 10.0,
        "p99_us": calls / 10,
        "server_cpu_ms_per_1000_cards": 1.0,
        "rounds_calls_per_s": [calls * 0.9, calls, calls * 1.1],
    }


def test_every_compare_row_has_its_peer() -> None:
    result = {
        "unary": [side(n, 1000.0 + i) for i, n in enumerate(PEERS["unary"])],
        "single": [side(n, 500.0 + i) for i, n in enumerate(PEERS["unary"])],
        "batch": [side(n, 100.0 + i, 1000) for i, n in enumerate(PEERS["batch"])],
    }
    for table_name in ("unary", "single", "batch"):
        for row in result[table_name]:
            key = "p99_us" if table_name == "single" else "cards_per_s"
            cell = peer_cell(result, table_name, row, key)
            peer = PEERS[table_name][row["name"]]
            assert cell.startswith(f"{peer}: ") and cell.endswith("×)"), cell
    one = result["unary"][0]
    assert peer_cell(result, "unary", one, "calls_per_s") == (
        "empty grpc.aio handler: 1,002 (1.00×)"
    )
    # A peer that did not run (no 2-worker node, say) is a dash, not an error.
    alone = {"unary": [side("node, 1 worker", 10.0)]}
    assert peer_cell(alone, "unary", alone["unary"][0], "calls_per_s") == "—"


def test_compare_markdown_puts_peers_and_ranges_in_the_tables() -> None:
    """The markdown of a small run of the shape bench/compare.py writes."""
    unary = [side("node, 1 worker", 4058.0), side("empty grpc.aio handler", 4464.0)]
    unary[0]["rounds_calls_per_s"] = [3285.0, 4058.0, 3173.0]
    result: dict[str, Any] = {
        "entries": 1000,
        "publishers": 2,
        "scale": 1000,
        "date": "2026-12-04 23:00 UTC",
        "cpus": 2,
        "load_1m_start": 1.0,
        "load_1m_end": 2.0,
        "run_seconds": 60.0,
        "rounds": 3,
        "seconds_per_load": 4.0,
        "inflight": 128,
        "batch_size": 1000,
        "memory_bytes_per_entry": dict.fromkeys(
            (
                "index",
                "node_rss",
                "node_rss_anon",
                "redis_set",
                "python_set_str",
                "python_set_bytes18",
            ),
            2.0,
        ),
        "bytes_per_entry": {
            "delta_bytes_per_entry": 8.0,
            "crl_bytes_per_entry": 41.0,
            "lmdb": 60.0,
            "entries": 1000,
        },
        "node_rss_bytes": {"VmRSS": 2**27},
        "empty_node_rss_bytes": {"VmRSS": 2**26},
        "unary": unary,
        "single": [side("node, 1 worker", 1591.0)],
        "batch": [
            side("node BatchCheck, 1 worker", 717.0, 1000),
            side("Redis SMISMEMBER", 5594.55, 1000),
        ],
    }
    lines = markdown(result).splitlines()
    node = next(line for line in lines if line.startswith("| node, 1 worker | c | 4,058"))
    assert "| 3,173-4,058 | empty grpc.aio handler: 4,464 (0.91×) |" in node
    batch = next(line for line in lines if line.startswith("| node BatchCheck, 1 worker"))
    assert "| 645,300-788,700 | Redis SMISMEMBER: 5,594,550 (0.13×) |" in batch
    single = next(line for line in lines if line.startswith("| node, 1 worker | c | 10"))
    assert "| — |" in single  # its peer did not run in this fixture
