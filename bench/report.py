"""Print the headline figures of a pytest-benchmark JSON file beside their baselines, or
rewrite the README's benchmark table from the result files (bench/readme_table.py).

python -m bench.report bench/results/latest.json
python -m bench.report --readme [--results bench/results] [--file README.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.readme_table import rewrite

# figure key → (baseline key, target as text)
FIGURES: dict[str, tuple[str | None, str]] = {
    "verifications_per_s": (
        "baseline_verifications_per_s",
        "delta verify with a 2-cert chain (#5)",
    ),
    "ns_per_check": ("baseline_ns_per_check", "<= naive lookup"),
    # issue #15 (test_core.py test_check_hit_and_miss): both beside the naive dict, same run
    "hit_ns": ("naive_hit_ns", "check hit <= 1.5x the naive dict's hit (#15)"),
    "miss_ns": ("naive_miss_ns", "check miss <= 0.8x the naive dict's miss (#15)"),
    "cards_per_s": ("baseline_cards_per_s", ">= 1.5x naive loop"),
    "index_bytes_per_entry": ("baseline_bytes_per_entry", "<= 2.5 (10M), <= 1/40 of dict"),
    # issue #15: the same index resident in a fresh process (VmRSS delta, bench/index_rss.py)
    "index_resident_bytes_per_entry": ("baseline_bytes_per_entry", "resident, beside serialized"),
    "entries_per_s": ("baseline_entries_per_s", ">= 50% of bare LMDB puts"),
    "delta_bytes_per_entry": ("crl_bytes_per_entry", "<= 10 (CRL ~41)"),
    # issue #4 (test_sync.py); the propagation baseline is one CheckCard round trip
    "p50_ms": ("baseline_p50_ms", "propagation over 4 hops"),
    "p99_ms": ("baseline_p99_ms", "<= 250 with push"),
    "seconds": ("baseline_seconds", "<= 60 at 10M (baseline: copy data.mdb)"),
    "received_bytes_per_entry": ("baseline_file_bytes_per_entry", "bootstrap (vs data.mdb)"),
    "wire_bytes_per_entry": ("signed_bytes_per_entry", "<= 12 (vs the signed delta)"),
    # issue #3 (test_node.py): the node under h2load; baselines are an empty grpc.aio server
    "rps": ("baseline_rps", ">= 90% of empty grpc.aio handler"),
    "p50_us": ("baseline_p50_us", "CheckCard at half the peak rate"),
    "p99_us": ("baseline_p99_us", "<= 1,000 at half the peak rate"),
    "messages_per_s": ("baseline_messages_per_s", "(none: CheckStream)"),
    # issue #6 (test_national.py): the national list at a bootstrapped city
    "city_rss_mib": ("baseline_rss_mib", "resident MiB (baseline: an empty city node)"),
    "upstream_rss_mib": ("baseline_rss_mib", "resident MiB (baseline: an empty city node)"),
    "server_p50_us": (None, "inside the handler (blacklist_check_seconds)"),
    "server_p99_us": (None, "inside the handler (blacklist_check_seconds)"),
    "lmdb_bytes_per_entry": ("baseline_lmdb_bytes_per_entry", "<= 60 (vs the upstream's file)"),
    # issue #14 (test_trust.py, test_suite_sync.py): SM2/SM3 beside Ed25519, same run
    "sm2_verifications_per_s": ("ed25519_verifications_per_s", "SM2 delta verify, 2-cert chain"),
    "sm2_signature_checks_per_s": ("ed25519_signature_checks_per_s", "SM2 signature alone"),
    "sm2_p50_ms": ("ed25519_p50_ms", "SM2 propagation over 4 hops"),
    "sm2_p99_ms": ("ed25519_p99_ms", "SM2 propagation over 4 hops"),
    "sm2_seconds": ("ed25519_seconds", "SM2 bootstrap from snapshots"),
    # issue #16 part 1 (test_edge.py): the edge replica in-process, beside both round trips
    "edge_ns_per_check": ("grpc_ns_per_check", ">= 100x faster than CheckCard over gRPC"),
    "speedup_vs_redis": (None, ">= 100 (edge miss vs redis-py SISMEMBER, same run)"),
    "catch_up_seconds": (None, "10,000 revocations published during an outage"),
    "restart_rss_mib": ("empty_rss_mib", "edge daemon after a restart (vs an empty one)"),
}
# Where one key means different things: (part of the benchmark's name, key) → target.
TARGETS_BY_NAME: dict[tuple[str, str], str] = {
    ("test_edge_check_many", "cards_per_s"): "(edge check_many of 1,000 ids, in-process)",
    ("test_node_batch", "cards_per_s"): ">= 500,000 per server process",
    ("test_propagation_pull", "p99_ms"): "(reference: pull only, see pull_interval_s)",
    ("test_tls_check_card", "rps"): ">= 80% of plain text (#5)",
    ("test_tls_check_card", "p50_us"): "(at saturation, vs plain text)",
    ("test_tls_check_card", "p99_us"): "(at saturation, vs plain text)",
    ("latency_under_sync", "p99_us"): "<= 1,000 at half load, sync applying (#6)",
    ("test_national", "seconds"): "bootstrap of ~300 feeds (baseline: copy data.mdb)",
    ("test_national", "p50_us"): "CheckCard one at a time (vs empty grpc.aio)",
    ("test_national", "p99_us"): "CheckCard one at a time (vs empty grpc.aio)",
}


def target_of(name: str, key: str) -> str:
    for (part, k), target in TARGETS_BY_NAME.items():
        if k == key and part in name:
            return target
    return FIGURES[key][1]


def main(path: str) -> None:
    with open(path) as f:
        report = json.load(f)
    print(f"{'benchmark':32} {'figure':24} {'value':>14} {'baseline':>14} {'ratio':>7}  target")
    for bench in report["benchmarks"]:
        info = bench.get("extra_info", {})
        for key, (base_key, _) in FIGURES.items():
            if key not in info:
                continue
            value = float(info[key])
            base = float(info[base_key]) if base_key and base_key in info else None
            ratio = f"{value / base:7.2f}" if base else "       "
            base_s = f"{base:14,.1f}" if base is not None else " " * 14
            target = target_of(bench["name"], key)
            print(f"{bench['name']:32} {key:24} {value:14,.1f} {base_s} {ratio}  {target}")
    print(f"(entries per benchmark store: {report['benchmarks'][0]['extra_info'].get('entries')})")


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report")
    parser.add_argument("path", nargs="?", default="bench/results/latest.json")
    parser.add_argument("--readme", action="store_true", help="rewrite README.md's table")
    parser.add_argument("--results", type=Path, default=Path("bench/results"))
    parser.add_argument("--file", type=Path, default=Path("README.md"))
    args = parser.parse_args(argv)
    if args.readme:
        changed = rewrite(args.file, args.results)
        print(f"{args.file}: benchmark table {'rewritten' if changed else 'unchanged'}")
    else:
        main(args.path)
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
