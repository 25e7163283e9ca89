"""`make bench-compare` end to end at a tiny size, so that it cannot rot: a real node, the
empty grpc.aio server, a real redis-server and the echo server under h2load and
redis-benchmark, then compare.md and compare.png written to a temporary directory.

Asserts what the run must produce and that every load was real (calls counted, answers
checked inside bench/compare.py), never how fast anything was.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.compare_report import sync_figures
from bench.redis_baseline import parse_redis_benchmark_csv

TOOLS = {
    "h2load": "nghttp2-client",
    "redis-server": "redis-server",
    "redis-benchmark": "redis-tools",
}


def test_redis_benchmark_csv() -> None:
    text = (
        '"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",'
        '"p99_latency_ms","max_latency_ms"\n'
        '"SISMEMBER revoked X","15197.57","2.124","0.216","1.087","4.623","11.487","76.863"\n'
    )
    assert parse_redis_benchmark_csv(text) == {"rps": 15197.57, "p50_us": 1087.0, "p99_us": 11487.0}
    with pytest.raises(ValueError, match="unexpected"):
        parse_redis_benchmark_csv("ERROR: unknown command")


def test_sync_figures_name_their_source(tmp_path: Path) -> None:
    report = {
        "datetime": "2026-11-27T09:38:28+00:00",
        "benchmarks": [
            {"name": "test_check_miss", "extra_info": {"p50_ms": 99}},
            {
                "name": "test_propagation_push",
                "extra_info": {"p50_ms": 19.9, "p99_ms": 33.6, "entries": 100, "load_1m": 3},
            },
        ],
    }
    (tmp_path / "latest.json").write_text(json.dumps(report))
    (tmp_path / "compare.json").write_text("{}")
    (tmp_path / "broken.json").write_text("not json")
    found = sync_figures(tmp_path)
    assert found == {
        "test_propagation_push": {
            "p50_ms": 19.9,
            "p99_ms": 33.6,
            "entries": 100,
            "source": "latest.json (2026-11-27T09:38)",
        }
    }


def test_compare_end_to_end(tmp_path: Path) -> None:
    missing = [f"{tool} (Debian {pkg})" for tool, pkg in TOOLS.items() if not shutil.which(tool)]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}; `make tools` installs them")
    pytest.importorskip("redis", reason="the bench extra: pip install -e '.[bench]'")
    pytest.importorskip("matplotlib", reason="the bench extra: pip install -e '.[bench]'")
    from bench.compare import Settings, run_compare
    from bench.compare_report import write_outputs

    settings = Settings(
        scale=20_000,
        seconds=0.5,
        rounds=1,
        publishers=300,
        delta_size=2_000,
        redis_py_processes=2,
        out=tmp_path / "out",
        sync_results=tmp_path / "none",
    )
    (tmp_path / "work").mkdir()
    result = run_compare(settings, tmp_path / "work")
    md, png = write_outputs(result, settings.out)[1:]

    assert result["entries"] == 20_000 and result["publishers"] == 300
    names = {r["name"] for r in result["unary"]}
    assert {"node, 1 worker", "empty grpc.aio handler", "Redis SISMEMBER"} <= names
    assert "raw TCP echo (Python asyncio)" in names
    assert [r["name"] for r in result["single"]][:2] == ["node, 1 worker", "empty grpc.aio handler"]
    for row in [*result["unary"], *result["single"], *result["batch"]]:
        assert row["calls_per_s"] > 0 and row["p50_us"] <= row["p99_us"], row
    memory, sizes = result["memory_bytes_per_entry"], result["bytes_per_entry"]
    # Sizes are not timings: these hold on any machine.
    assert 0 < memory["index"] < 4
    assert memory["redis_set"] > 40 and memory["python_set_str"] > 100
    assert 0 < sizes["delta_bytes_per_entry"] < 12 < sizes["crl_bytes_per_entry"]
    assert 0 < sizes["lmdb"] < 200

    text = md.read_text()
    for heading in (
        "## Targets (issue #6)",
        "## CheckCard unary",
        "## CheckCard latency, one call in flight",
        "## BatchCheck",
        "## Memory",
    ):
        assert heading in text
    assert "index, bytes per entry | 2." in text
    assert "run `make bench` first" in text  # no sync results in sync_results
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
