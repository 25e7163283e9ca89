"""compare.md and compare.png from one `make bench-compare` run (bench/compare.py's JSON),
with each of issue #6's targets marked met or missed.

    python -m bench.compare_report bench/results/compare.json   # re-render, no rerun
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# (benchmark name, figures kept) of `make bench` (bench/test_sync.py) shown in the table.
SYNC_BENCHMARKS = {
    "test_propagation_push": ("p50_ms", "p99_ms", "baseline_p50_ms", "baseline_p99_ms"),
    "test_propagation_pull": ("p50_ms", "p99_ms", "baseline_p50_ms", "baseline_p99_ms"),
    "test_bootstrap_from_snapshots": ("seconds", "baseline_seconds", "entries"),
    # bench/test_national.py: the national list (bench/scale.py) at a fresh city
    "test_national_bootstrap": (
        "seconds",
        "baseline_seconds",
        "publishers",
        "city_rss_mib",
        "upstream_rss_mib",
        "baseline_rss_mib",
        "p50_us",
        "p99_us",
        "baseline_p50_us",
        "baseline_p99_us",
        "server_p50_us",
        "server_p99_us",
        "lmdb_bytes_per_entry",
        "baseline_lmdb_bytes_per_entry",
    ),
}


def sync_figures(results: Path) -> dict[str, Any]:
    """The newest propagation and bootstrap figures in ``results``' pytest-benchmark files
    (latest.json first, then the others newest first), each with the file it came from."""
    files = sorted(
        results.glob("*.json"), key=lambda p: (p.name != "latest.json", -p.stat().st_mtime)
    )
    found: dict[str, Any] = {}
    for path in files:
        if path.name.startswith("compare"):
            continue
        try:
            report = json.loads(path.read_text())
            benchmarks = report["benchmarks"]
        except (ValueError, KeyError, TypeError):
            continue
        for bench in benchmarks:
            name = bench.get("name", "")
            if name in SYNC_BENCHMARKS and name not in found:
                info = bench.get("extra_info", {})
                found[name] = {k: info[k] for k in SYNC_BENCHMARKS[name] if k in info}
                found[name]["source"] = f"{path.name} ({report.get('datetime', '?')[:16]})"
                found[name]["entries"] = info.get("entries")
    return found


@dataclass
class Target:
    figure: str
    value: str
    target: str
    met: bool | None  # None: not measured in this run

    @property
    def mark(self) -> str:
        return {True: "met", False: "**missed**", None: "not measured"}[self.met]


def _side(rows: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["name"] == name), None)


def targets(result: dict[str, Any]) -> list[Target]:
    memory, sizes = result["memory_bytes_per_entry"], result["bytes_per_entry"]
    out = [
        Target("index, bytes per entry", f"{memory['index']:.2f}", "≤ 2.5", memory["index"] <= 2.5),
        Target(
            "LMDB on disk, bytes per entry",
            f"{sizes['lmdb']:.1f} (Redis set in memory: {memory['redis_set']:.1f})",
            "≤ 60",
            sizes["lmdb"] <= 60,
        ),
    ]
    ours = _side(result["batch"], "node BatchCheck, 1 worker")
    redis = _side(result["batch"], "Redis SMISMEMBER")
    assert ours and redis
    out.append(
        Target(
            f"BatchCheck vs Redis SMISMEMBER, {result['batch_size']:,} ids per call",
            f"{ours['cards_per_s']:,.0f} vs {redis['cards_per_s']:,.0f} cards/s "
            f"({ours['cards_per_s'] / redis['cards_per_s']:.2f}×)",
            "≥ 1×",
            ours["cards_per_s"] >= redis["cards_per_s"],
        )
    )
    one = _side(result["unary"], "node, 1 worker")
    two = _side(result["unary"], "node, 2 workers")
    assert one
    if two:
        ratio = two["calls_per_s"] / one["calls_per_s"]
        out.append(
            Target(
                "CheckCard, 2 workers vs 1",
                f"{two['calls_per_s']:,.0f} vs {one['calls_per_s']:,.0f} calls/s ({ratio:.2f}×)",
                "≥ 1.4×",
                ratio >= 1.4,
            )
        )
    else:
        out.append(
            Target(
                "CheckCard, 2 workers vs 1",
                "no `workers` field in node/config.py when this ran",
                "≥ 1.4×",
                None,
            )
        )
    return out


def _fmt(v: float | None, digits: int = 0) -> str:
    return "—" if v is None else f"{v:,.{digits}f}"


# Each side's peer, the side it is read against (issue #15: every row beside its peer): the
# node beside the empty handler of the same gRPC stack (what is ours), the empty handler and
# Redis beside the raw TCP echo under the same kind of client (what the transport costs),
# redis-py beside Redis under its C client. Batches: everything beside Redis SMISMEMBER.
PEERS: dict[str, dict[str, str]] = {
    "unary": {
        "node, 1 worker": "empty grpc.aio handler",
        "node, 2 workers": "empty grpc.aio handler",
        "empty grpc.aio handler": "Redis SISMEMBER",
        "Redis SISMEMBER": "raw TCP echo (Python asyncio)",
        "raw TCP echo (Python asyncio)": "Redis SISMEMBER",
        "Redis SISMEMBER via redis-py": "Redis SISMEMBER",
    },
    "batch": {
        "node BatchCheck, 1 worker": "Redis SMISMEMBER",
        "node BatchCheck, 2 workers": "Redis SMISMEMBER",
        "empty grpc.aio BatchCheck": "Redis SMISMEMBER",
        "Redis SMISMEMBER": "empty grpc.aio BatchCheck",
        "Redis SMISMEMBER via redis-py": "Redis SMISMEMBER",
    },
}
PEERS["single"] = PEERS["unary"]


def peer_cell(result: dict[str, Any], table: str, row: dict[str, Any], key: str) -> str:
    """``peer: its figure (ratio×)`` for ``row`` of ``table``, or a dash when its peer did
    not run (a run without 2 workers, say)."""
    name = PEERS[table].get(row["name"])
    peer = _side(result[table], name) if name else None
    if peer is None or not peer.get(key):
        return "—"
    return f"{name}: {_fmt(peer[key])} ({row[key] / peer[key]:.2f}×)"


def _range(row: dict[str, Any], key: str) -> str:
    """The range of the rounds (older JSON files have none: computed from the rounds)."""
    if f"{key}_range" in row:
        return str(row[f"{key}_range"])
    rounds = [r * row["per_call"] for r in row.get("rounds_calls_per_s", [])]
    return f"{min(rounds):,.0f}-{max(rounds):,.0f}" if rounds else "—"


def markdown(result: dict[str, Any]) -> str:
    n, memory, sizes = (
        result["entries"],
        result["memory_bytes_per_entry"],
        result["bytes_per_entry"],
    )
    lines = [
        f"# bench-compare: {n:,} entries of {result['publishers']} cities",
        "",
        f"One run of `python -m bench.compare --scale {result['scale']}` on {result['date']}, "
        f"{result['cpus']} cores, 1-minute load {result['load_1m_start']:.1f} at the start and "
        f"{result['load_1m_end']:.1f} at the end (shared machine), {result['run_seconds']:.0f} s "
        f"in all. Loads: {result['rounds']} rounds of {result['seconds_per_load']:g} s per side, "
        "sides alternated; each side's median round (its rate and that run's own p50/p99) with "
        "the range of its rounds' rates. "
        f"Every C-client load keeps {result['inflight']} calls in flight for unary calls "
        "(h2load -c 8 -m 16, redis-benchmark -c 128), 8 for batches, so latencies compare "
        "at the same concurrency; they are latencies at saturation, not at a paced rate.",
        "",
        "## Targets (issue #6)",
        "",
        "| figure | this run | target | |",
        "|---|---|---|---|",
    ]
    lines += [f"| {t.figure} | {t.value} | {t.target} | {t.mark} |" for t in targets(result)]
    lines += [
        "",
        "## CheckCard unary vs the alternatives",
        "",
        "| server | client | calls/s (median) | range | beside its peer, calls/s | p50 µs | p99 µs | server CPU ms / 1,000 checks | rounds (calls/s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["unary"]:
        lines.append(
            f"| {r['name']} | {r['client']} | {_fmt(r['calls_per_s'])} | "
            f"{_range(r, 'calls_per_s')} | {peer_cell(result, 'unary', r, 'calls_per_s')} | "
            f"{_fmt(r['p50_us'])} | "
            f"{_fmt(r['p99_us'])} | {_fmt(r['server_cpu_ms_per_1000_cards'], 1)} | "
            f"{', '.join(f'{x:,.0f}' for x in r['rounds_calls_per_s'])} |"
        )
    lines += [
        "",
        "## CheckCard latency, one call in flight (no queueing)",
        "",
        "| server | client | p50 µs | p99 µs | beside its peer, p99 µs | calls/s |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["single"]:
        lines.append(
            f"| {r['name']} | {r['client']} | {_fmt(r['p50_us'])} | {_fmt(r['p99_us'])} | "
            f"{peer_cell(result, 'single', r, 'p99_us')} | {_fmt(r['calls_per_s'])} |"
        )
    lines += [
        "",
        f"## BatchCheck ({result['batch_size']:,} ids per call, 1% revoked) vs Redis SMISMEMBER",
        "",
        "| server | client | cards/s (median) | range | beside its peer, cards/s | calls/s | p50 µs per call | p99 µs per call | server CPU ms / 1,000 cards |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["batch"]:
        lines.append(
            f"| {r['name']} | {r['client']} | {_fmt(r['cards_per_s'])} | "
            f"{_range(r, 'cards_per_s')} | {peer_cell(result, 'batch', r, 'cards_per_s')} | "
            f"{_fmt(r['calls_per_s'])} "
            f"| {_fmt(r['p50_us'])} | {_fmt(r['p99_us'])} | "
            f"{_fmt(r['server_cpu_ms_per_1000_cards'], 2)} |"
        )
    rss = result["node_rss_bytes"]["VmRSS"] / 2**20
    rss_empty = result["empty_node_rss_bytes"]["VmRSS"] / 2**20
    lines += [
        "",
        "## Memory per revoked entry",
        "",
        "| holder | bytes per entry | how |",
        "|---|---|---|",
        f"| roaring index (ours) | {memory['index']:.2f} | `store.index.memory_bytes()` / N, "
        "the serialized size (resident: bench/test_core.py `test_index_memory`) |",
        f"| node resident size (ours) | {memory['node_rss']:.1f} | VmRSS {rss:,.0f} MiB minus an "
        f"empty node's {rss_empty:,.0f} MiB, / N (anonymous memory only: "
        f"{memory['node_rss_anon']:.1f}) |",
        f"| Redis set of the id strings | {memory['redis_set']:.1f} | INFO `used_memory` "
        f"delta / N (Redis {result.get('redis_version', '?')}) |",
        f"| Python set of the id strings | {memory['python_set_str']:.1f} | `sys.getsizeof` of "
        "the set and its 32-character str members |",
        f"| Python set of the 18-byte keys | {memory['python_set_bytes18']:.1f} | the same, "
        "`bytes` members |",
        "",
        "## Bytes per entry, on the wire and on disk",
        "",
        "| what | bytes per entry | how |",
        "|---|---|---|",
        f"| signed delta (ours) | {sizes['delta_bytes_per_entry']:.2f} | "
        f"{sizes['entries']:,} revocations of one city within an hour, whole signed container |",
        f"| DER X.509 delta CRL | {sizes['crl_bytes_per_entry']:.1f} | the same revocations "
        "(serial, date, reason), Ed25519-signed (bench/test_core.py's builder) |",
        f"| LMDB `data.mdb` (ours) | {sizes['lmdb']:.1f} | file size / N after loading "
        f"{n:,} entries |",
        "",
        "## Propagation and bootstrap (not rerun: from `make bench`)",
        "",
        "| figure | value | baseline (same run) | entries | source |",
        "|---|---|---|---|---|",
    ]
    sync = result.get("sync", {})
    for name, label in (
        ("test_propagation_push", "propagation, push, 4 hops"),
        ("test_propagation_pull", "propagation, pull 1 s, 4 hops"),
    ):
        f = sync.get(name)
        if f and "p50_ms" in f:
            lines.append(
                f"| {label}, p50 / p99 ms | {f['p50_ms']:,.1f} / {f['p99_ms']:,.1f} | "
                f"{f.get('baseline_p50_ms', 0):,.1f} / {f.get('baseline_p99_ms', 0):,.1f} "
                f"(one CheckCard) | {_fmt(f.get('entries'))} | {f['source']} |"
            )
        else:
            lines.append(f"| {label} | not found | | | run `make bench` first |")
    f = sync.get("test_bootstrap_from_snapshots")
    if f and "seconds" in f:
        lines.append(
            f"| bootstrap of a fresh city, s | {f['seconds']:.2f} | "
            f"{f.get('baseline_seconds', 0):.2f} (copy data.mdb) | {_fmt(f.get('entries'))} | "
            f"{f['source']} |"
        )
    else:
        lines.append("| bootstrap of a fresh city | not found | | | run `make bench` first |")
    f = sync.get("test_national_bootstrap")
    if f and "seconds" in f:
        lines += [
            f"| bootstrap, national list ({f.get('publishers')} feeds), s | {f['seconds']:.2f} | "
            f"{f.get('baseline_seconds', 0):.2f} (copy data.mdb) | {_fmt(f.get('entries'))} | "
            f"{f['source']} |",
            f"| … resident MiB, city / upstream | {f['city_rss_mib']:,.0f} / "
            f"{f['upstream_rss_mib']:,.0f} | {f['baseline_rss_mib']:,.0f} (empty city node) | "
            f"{_fmt(f.get('entries'))} | {f['source']} |",
            f"| … CheckCard one at a time, p50 / p99 µs (in the handler) | {f['p50_us']:,.0f} / "
            f"{f['p99_us']:,.0f} ({f['server_p50_us']:,.0f} / {f['server_p99_us']:,.0f}) | "
            f"{f['baseline_p50_us']:,.0f} / {f['baseline_p99_us']:,.0f} (empty grpc.aio) | "
            f"{_fmt(f.get('entries'))} | {f['source']} |",
            f"| … LMDB `data.mdb` at the city, bytes per entry | "
            f"{f['lmdb_bytes_per_entry']:.1f} | {f['baseline_lmdb_bytes_per_entry']:.1f} "
            f"(the upstream's, built in process) | {_fmt(f.get('entries'))} | {f['source']} |",
        ]
    else:
        lines.append(
            "| bootstrap, national list | not found | | | "
            "run `pytest bench/test_national.py --benchmark-only --benchmark-json=...` |"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    ours, base = "#1f77b4", "#9a9a9a"
    fig, axes = plt.subplots(2, 3, figsize=(17, 9))
    fig.suptitle(
        f"bench-compare: {result['entries']:,} revoked cards, {result['publishers']} cities — "
        f"{result['date']}, {result['cpus']} shared cores (load {result['load_1m_start']:.1f})",
        fontsize=13,
    )

    def bars(
        ax: Any,
        labels: list[str],
        values: list[float],
        title: str,
        unit: str,
        mine: list[bool],
        fmt: str = "{:,.0f}",
        log: bool = False,
    ) -> None:
        y = list(range(len(labels)))[::-1]
        ax.barh(y, values, color=[ours if m else base for m in mine])
        ax.set_yticks(y, labels, fontsize=9)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel(unit)
        if log:
            ax.set_xscale("log")
        else:
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        top = max(values) if values else 1
        for yi, v in zip(y, values, strict=True):
            ax.text(
                v * (1.05 if log else 1) + (0 if log else top * 0.01),
                yi,
                fmt.format(v),
                va="center",
                fontsize=9,
            )
        ax.set_xlim(right=top * (4 if log else 1.3))

    unary = result["unary"]
    bars(
        axes[0][0],
        [r["name"] for r in unary],
        [r["calls_per_s"] for r in unary],
        "CheckCard unary: throughput (higher is better)",
        "calls/s",
        [r["name"].startswith("node") for r in unary],
    )
    ax = axes[0][1]
    single = result["single"]
    y = list(range(len(single)))[::-1]
    ax.barh(
        [v + 0.2 for v in y],
        [r["p50_us"] for r in single],
        height=0.4,
        color=ours,
        label="p50",
    )
    ax.barh(
        [v - 0.2 for v in y],
        [r["p99_us"] for r in single],
        height=0.4,
        color="#ff7f0e",
        label="p99",
    )
    ax.set_yticks(y, [r["name"] for r in single], fontsize=9)
    ax.set_xscale("log")
    ax.set_xlabel("µs, one call in flight (lower is better)")
    ax.set_title("CheckCard unary: latency p50 / p99", fontsize=11)
    for yi, r in zip(y, single, strict=True):
        ax.text(r["p50_us"] * 1.08, yi + 0.2, f"{r['p50_us']:,.0f}", va="center", fontsize=8)
        ax.text(r["p99_us"] * 1.08, yi - 0.2, f"{r['p99_us']:,.0f}", va="center", fontsize=8)
    ax.set_xlim(right=max(r["p99_us"] for r in single) * 4)
    ax.legend(fontsize=9)
    batch = result["batch"]
    bars(
        axes[0][2],
        [r["name"] for r in batch],
        [r["cards_per_s"] for r in batch],
        "1,000 ids per call: cards/s (higher is better)",
        "cards/s",
        [r["name"].startswith("node") for r in batch],
    )
    memory = result["memory_bytes_per_entry"]
    mem = [
        ("roaring index (ours)", memory["index"], True),
        ("node RSS delta (ours)", memory["node_rss"], True),
        ("node RSS delta, anonymous (ours)", memory["node_rss_anon"], True),
        ("Redis set", memory["redis_set"], False),
        ("Python set, 18-byte keys", memory["python_set_bytes18"], False),
        ("Python set, id strings", memory["python_set_str"], False),
    ]
    bars(
        axes[1][0],
        [m[0] for m in mem],
        [m[1] for m in mem],
        "Memory per revoked entry (lower is better)",
        "bytes (log)",
        [m[2] for m in mem],
        fmt="{:,.1f}",
        log=True,
    )
    axes[1][0].axvline(2.5, color="green", linestyle="--", linewidth=1)
    axes[1][0].text(2.5, -0.45, " target ≤ 2.5", color="green", fontsize=8)
    sizes = result["bytes_per_entry"]
    sz = [
        ("signed delta (ours)", sizes["delta_bytes_per_entry"], True),
        ("DER X.509 delta CRL", sizes["crl_bytes_per_entry"], False),
        ("LMDB on disk (ours)", sizes["lmdb"], True),
        ("Redis set, in memory", memory["redis_set"], False),
    ]
    bars(
        axes[1][1],
        [m[0] for m in sz],
        [m[1] for m in sz],
        "Bytes per entry: wire and storage (lower is better)",
        "bytes",
        [m[2] for m in sz],
        fmt="{:,.1f}",
    )
    axes[1][1].axvline(60, color="green", linestyle="--", linewidth=1)
    axes[1][1].text(60, -0.45, " LMDB target ≤ 60", color="green", fontsize=8)
    ax = axes[1][2]
    ax.axis("off")
    ax.set_title("Targets (issue #6)", fontsize=11)
    text = []
    for t in targets(result):
        text.append(f"{'✔' if t.met else ('✘' if t.met is False else '–')}  {t.figure}  {t.target}")
        text.append(f"     {t.value}")
    sync = result.get("sync", {})
    push = sync.get("test_propagation_push")
    boot = sync.get("test_national_bootstrap") or sync.get("test_bootstrap_from_snapshots")
    text.append("")
    text.append("From make bench (not rerun):")
    if push:
        text.append(
            f"  propagation, push, 4 hops: p50 {push['p50_ms']:.0f} ms, p99 {push['p99_ms']:.0f} ms"
        )
    if boot:
        text.append(f"  bootstrap ({_fmt(boot.get('entries'))} entries): {boot['seconds']:.1f} s")
    if not push and not boot:
        text.append("  none found in bench/results")
    ax.text(
        0.0,
        1.0,
        "\n".join(text),
        va="top",
        ha="left",
        fontsize=9.5,
        family="DejaVu Sans",
        transform=ax.transAxes,
        wrap=True,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(result: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "compare.json", out / "compare.md", out / "compare.png"]
    paths[0].write_text(json.dumps(result, indent=1, default=str) + "\n")
    paths[1].write_text(markdown(result))
    plot(result, paths[2])
    return paths


if __name__ == "__main__":
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/compare.json")
    data = json.loads(source.read_text())
    for p in write_outputs(data, source.parent):
        print(p)
