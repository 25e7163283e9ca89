"""The simulation's report (markdown) and figure (PNG), and the ``national:`` line.

Bytes are the protobuf encoding of the sync messages (see :mod:`blacklist.sim.messages`);
a day is 86,400 virtual seconds. CRLite's figures are Mozilla's published ones: filters
and stashes every 12 hours (6 h since 2024), about 300 KB a day to a client.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from blacklist.delta import FeedHead
from blacklist.regions import MINISTRY_CODE
from blacklist.signing import SigningKey
from blacklist.sim.messages import heads_size
from blacklist.sim.scenarios import DayResult, percentile
from blacklist.sim.world import START
from blacklist.sync.budget import field_size
from blacklist.sync.freshness import sign_statement

CRLITE_CADENCE_S = 12 * 3600
CRLITE_BYTES_PER_DAY = 300_000
NODE_SYNC_INTERVAL = 5.0  # node/config.py's default sync_interval
NODE_STATEMENT_INTERVAL = 60.0  # and its head_statement_interval


def _per_day(result: DayResult) -> float:
    return 86_400 / (result.plan.hours * 3600)


def by_tier(result: DayResult, traffic: dict[str, int]) -> dict[str, tuple[float, float]]:
    """Per tier: (mean, max) bytes per node per day."""
    tiers: dict[str, list[int]] = defaultdict(list)
    for spec in result.specs:
        tiers[spec.tier].append(traffic.get(spec.code, 0))
    scale = _per_day(result)
    return {t: (float(np.mean(v)) * scale, float(np.max(v)) * scale) for t, v in tiers.items()}


def _defaults(result: DayResult) -> tuple[int, int, int, float]:
    """(publishers, heads bytes a pull both ways, statements bytes in an answer, statement
    bytes streamed a day) at the node's defaults."""
    publishers = [s.code for s in result.specs if s.prefix is not None]
    heads = {p: FeedHead(p, 1000, bytes(32)) for p in publishers}
    key = SigningKey(1, bytes(32), publishers[0], ("",))
    statement = field_size(len(sign_statement(key, heads[publishers[0]], 0).to_bytes()))
    streamed = len(publishers) * statement * 86_400 / NODE_STATEMENT_INTERVAL
    return len(publishers), 2 * heads_size(heads), len(publishers) * statement, streamed


def defaults_total(result: DayResult) -> float:
    _, per_pull_heads, in_answers, streamed = _defaults(result)
    return 86_400 / NODE_SYNC_INTERVAL * (per_pull_heads + in_answers) + streamed


def defaults_table(result: DayResult) -> list[str]:
    """What a child receives a day at the node's defaults whatever the revocation rate:
    every head twice a pull, every statement held in each answer, each new one once."""
    publishers, per_pull_heads, in_answers, streamed = _defaults(result)
    pulls = 86_400 / NODE_SYNC_INTERVAL
    total = defaults_total(result)
    return [
        f"At the node's defaults (sync_interval {NODE_SYNC_INTERVAL:g} s, "
        f"head_statement_interval {NODE_STATEMENT_INTERVAL:g} s) with {publishers} "
        "publishers, a child receives a day, whatever the revocation rate:",
        "",
        "| what | bytes a day |",
        "|---|---|",
        f"| every head in each pull, request and answer ({per_pull_heads:,} B a pull) | "
        f"{_kb(pulls * per_pull_heads)} |",
        f"| every head statement held, in each pull answer ({in_answers:,} B a pull) | "
        f"{_kb(pulls * in_answers)} |",
        f"| each new head statement once, on the Subscribe stream | {_kb(streamed)} |",
        f"| total | {_kb(total)} ({total / CRLITE_BYTES_PER_DAY:,.0f}× CRLite's 300 KB) |",
    ]


def city_breakdown(result: DayResult) -> dict[str, float]:
    """Mean bytes a day a city node receives, by what they carry."""
    cities = [s.code for s in result.specs if s.tier == "city"]
    out: dict[str, float] = defaultdict(float)
    for code in cities:
        for kind, size in result.received_by_kind.get(code, {}).items():
            out[kind] += size * _per_day(result) / len(cities)
    return dict(out)


def national_line(steady: DayResult) -> str:
    p50 = percentile(steady.latencies, 50)
    p99 = percentile(steady.latencies, 99)
    nodes = len(steady.specs)
    return (
        f"national: p99 {p99:.3f} s to all {nodes} nodes (p50 {p50:.3f} s, "
        f"{len(steady.latencies)} deltas, {steady.plan.name} topology)"
    )


def _kb(n: float) -> str:
    return f"{n / 1000:,.1f} KB" if n < 10_000_000 else f"{n / 1e6:,.1f} MB"


def markdown(
    steady: DayResult, scenario: DayResult, command: str, figure: str = "simulation.png"
) -> str:
    plan = steady.plan
    cfg = plan.config
    lat = steady.latencies
    nodes = len(steady.specs)
    tiers = [t for t in ("ministry", "province", "city") if any(s.tier == t for s in steady.specs)]
    sent, received = by_tier(steady, steady.sent), by_tier(steady, steady.received)
    minute = steady.ministry_per_minute
    m_day = steady.sent.get(MINISTRY_CODE, 0) * _per_day(steady)
    peak = max(minute.values()) / 60 if minute else 0.0
    idle = steady.idle_pull_bytes
    lines = [
        f"# National simulation: {plan.name} topology",
        "",
        f"Command: `{command}` (seed {plan.seed}; {steady.wall_seconds + scenario.wall_seconds:.0f} s "
        "of wall time for both days).",
        "",
        f"{nodes} nodes ({', '.join(f'{sum(1 for s in steady.specs if s.tier == t)} {t}' for t in tiers)}), "
        f"each with its own LMDB store, running the library's sync core (plan, accept, ingest, "
        f"freshness) over simulated links (20 ms one way, 100 Mbit/s) on a virtual clock.",
        f"Workload: {plan.per_day:,.0f} revocations a day nationally, bursty by office hours; each "
        f"authority signs what its offices entered every {plan.publish_interval:g} s. Node settings: "
        f"sync_interval {cfg.sync_interval:g} s, head statements every {cfg.statement_interval:g} s"
        f"{' and after each publication' if cfg.statement_after_publish else ''}, "
        f"retain_deltas {cfg.retain_deltas}.",
        "",
        "## Steady day",
        "",
        f"{steady.deltas:,} deltas carrying {steady.revocations:,} revocations in 24 h.",
        "",
        "| time from signing to every node | p50 | p99 | max | not reached |",
        "|---|---|---|---|---|",
        f"| {nodes} nodes | {percentile(lat, 50):.3f} s | {percentile(lat, 99):.3f} s | "
        f"{max(lat) if lat else float('nan'):.3f} s | {steady.unreached} |",
        "",
        "Bytes per node per day (sync messages, as simulated):",
        "",
        "| tier | sent (mean) | sent (max) | received (mean) | received (max) |",
        "|---|---|---|---|---|",
    ]
    for t in tiers:
        lines.append(
            f"| {t} | {_kb(sent[t][0])} | {_kb(sent[t][1])} | {_kb(received[t][0])} | {_kb(received[t][1])} |"
        )
    kinds = city_breakdown(steady)
    total = sum(kinds.values()) or 1
    lines += [
        "",
        "What a city node receives, by what it carries (mean per city per day):",
        "",
        "| carried | bytes | share |",
        "|---|---|---|",
        *(
            f"| {k} | {_kb(v)} | {v / total:.0%} |"
            for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])
        ),
    ]
    lines += [
        "",
        f"Ministry fan-out: {_kb(m_day)} sent a day, peak {_kb(peak)}/s (busiest minute).",
        f"Snapshot transfers applied: {sum(steady.snapshots.values())} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(steady.snapshots.items())) or 'none'}).",
        "",
        f"Pull overhead as simulated: one GetUpdates with nothing new (every head both ways "
        f"and every head statement held) is {idle:,} bytes; the simulation pulls every "
        f"{cfg.sync_interval:g} s.",
        "",
        *defaults_table(steady),
        "",
        "## Against CRLite",
        "",
        f"CRLite publishes every {CRLITE_CADENCE_S // 3600} h and costs a client about "
        f"{CRLITE_BYTES_PER_DAY // 1000} KB a day. Here a revocation reaches all {nodes} nodes "
        f"in {percentile(lat, 99):.2f} s at p99 ({CRLITE_CADENCE_S / max(percentile(lat, 99), 1e-9):,.0f}× "
        f"sooner than one 12-hour cadence), at {_kb(received['city'][0])} a day received by a city "
        f"node ({received['city'][0] / CRLITE_BYTES_PER_DAY:.1f}× CRLite's); "
        f"{_deltas_share(kinds):.0%} of that is deltas, the rest heads and head statements "
        f"(the table above). At the node's defaults the fixed overhead alone would be "
        f"{_kb(defaults_total(steady))} a day per child: the pull cadence and the head "
        "statements, not the revocations, decide the bandwidth.",
        "",
        "## Disturbances (a second day)",
        "",
        "| what | began (CST) | converged after | bytes sent meanwhile | snapshots applied |",
        "|---|---|---|---|---|",
    ]
    for c in scenario.converged:
        h, m = divmod(int(c.started) // 60, 60)
        secs = f"{c.seconds:,.0f} s" if c.seconds is not None else "not in the run"
        lines.append(f"| {c.what} | {h:02d}:{m:02d} | {secs} | {_kb(c.bytes)} | {c.snapshots} |")
    slat = scenario.latencies
    lines += [
        "",
        '"Converged": every node holds every authority\'s head (for the bootstrapping city: '
        "every head its province holds), checked every 5 s. A relay that takes a feed by "
        "snapshot does not push it on (node/hub.py pushes deltas only): its children take it "
        "at their next scheduled pull, so a heal that goes by snapshot costs up to "
        f"sync_interval ({cfg.sync_interval:g} s here) per relay level.",
        f"Over that day, signing to every node: p50 {percentile(slat, 50):.3f} s, p99 "
        f"{percentile(slat, 99):,.0f} s (the deltas signed while the province was cut off wait "
        f"for the link), {scenario.unreached} not reached by the end.",
        f"Snapshot transfers applied that day: {sum(scenario.snapshots.values())} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(scenario.snapshots.items())) or 'none'}).",
        "",
        "Refusals counted (outcome:cause), steady day: "
        + (", ".join(f"{k} {v}" for k, v in steady.outcomes.items()) or "none")
        + "; disturbed day: "
        + (", ".join(f"{k} {v}" for k, v in scenario.outcomes.items()) or "none")
        + ".",
        "",
        f"![propagation and fan-out]({figure})",
        "",
        national_line(steady),
        "",
    ]
    return "\n".join(lines)


def _deltas_share(kinds: dict[str, float]) -> float:
    total = sum(kinds.values())
    deltas = sum(v for k, v in kinds.items() if "deltas" in k and "pull requests" not in k)
    return deltas / total if total else 0.0


def plot(steady: DayResult, scenario: DayResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    lat = np.array(steady.latencies)
    if len(lat):
        a.plot(np.sort(lat) * 1000, np.linspace(0, 1, len(lat)), label="steady day")
    slat = np.array(scenario.latencies)
    if len(slat):
        a.plot(np.sort(slat) * 1000, np.linspace(0, 1, len(slat)), label="disturbed day")
    a.set_xscale("log")
    a.set_xlabel("signing → every node (ms, log)")
    a.set_ylabel("fraction of deltas")
    a.set_title(f"Propagation to all {len(steady.specs)} nodes")
    a.grid(True, alpha=0.3)
    a.legend()
    for result, label in ((steady, "steady"), (scenario, "disturbed")):
        # Ten-minute means, by hour of the (CST) day.
        buckets: dict[int, int] = defaultdict(int)
        for minute, sent in result.ministry_per_minute.items():
            buckets[int((minute * 60 - START) // 600)] += sent
        if buckets:
            xs = sorted(buckets)
            b.plot([x / 6 for x in xs], [buckets[x] / 600 / 1000 for x in xs], label=label)
    b.set_xlabel("hour of the day (CST)")
    b.set_ylabel("ministry sends (KB/s, 10-minute means)")
    b.set_title("Ministry fan-out")
    b.grid(True, alpha=0.3)
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
