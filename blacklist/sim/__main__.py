"""``python -m blacklist.sim [--full] [--out DIR]``: the two simulated days and their report;
``python -m blacklist.sim faults --seed N [--steps S]``: replay one fault-injection seed;
``python -m blacklist.sim faults --seeds A:B``: run a range of them."""

from __future__ import annotations

import argparse
import multiprocessing
import pickle
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from blacklist.sim import report
from blacklist.sim.faults import InvariantViolated, run_seed, run_seeds
from blacklist.sim.scenarios import FULL, SMALL, Day, DayResult, Plan


def _day(plan: Plan, faults: bool, progress: bool) -> DayResult:
    return Day(plan, faults, progress).run()


def _simulate(args: argparse.Namespace) -> int:
    plan = FULL if args.full else SMALL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report:
        with open(args.report, "rb") as f:
            steady, disturbed = pickle.load(f)
    elif args.full:
        # The two days share nothing: one process each, on two cores.
        print(f"simulating the steady and the disturbed day of the {plan.name} topology ...")
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
            days = [pool.submit(_day, plan, faults, True) for faults in (False, True)]
            steady, disturbed = (d.result() for d in days)
        print(f"  {steady.wall_seconds:.1f} s and {disturbed.wall_seconds:.1f} s")
    else:
        print(f"simulating a steady day of the {plan.name} topology ...", flush=True)
        steady = _day(plan, False, False)
        print(f"  {steady.wall_seconds:.1f} s; now the disturbed day ...", flush=True)
        disturbed = _day(plan, True, False)
    command = "make simulate FULL=1" if args.full else "make simulate"
    name = "simulation-national" if args.full else "simulation"
    with open(out / f"{name}.pickle", "wb") as f:
        pickle.dump((steady, disturbed), f)  # --report re-renders without simulating again
    text = report.markdown(steady, disturbed, command, f"{name}.png")
    (out / f"{name}.md").write_text(text, "utf-8")
    report.plot(steady, disturbed, out / f"{name}.png")
    print(f"  {disturbed.wall_seconds:.1f} s; wrote {out / name}.md and {name}.png")
    for c in disturbed.converged:
        secs = f"{c.seconds:.0f} s" if c.seconds is not None else "never"
        print(f"  {c.what}: converged after {secs}, {c.snapshots} snapshots")
    print(report.national_line(steady))
    return 0


def _faults(args: argparse.Namespace) -> int:
    if args.seeds:
        first, last = (int(x) for x in args.seeds.split(":"))
        failed = run_seeds(range(first, last), args.steps)
        print(f"{last - first} seeds, {len(failed)} failed: {failed}")
        return 1 if failed else 0
    try:
        log = run_seed(args.seed, args.steps)
    except InvariantViolated as exc:
        print(exc)
        return 1
    for i, action in enumerate(log.actions, 1):
        print(f"  step {i}: {action}")
    print(
        f"seed {args.seed}: every invariant held ({log.published} deltas, {log.forgeries} "
        f"forgeries refused, {log.crashes} crashes, {log.checks} checks)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m blacklist.sim")
    sub = parser.add_subparsers(dest="command")
    sim = sub.add_parser("simulate", help="the two simulated days (the default)")
    for p in (parser, sim):
        p.add_argument("--full", action="store_true", help="the whole national topology")
        p.add_argument("--out", default="bench/results", help="where the report goes")
        p.add_argument("--report", help="re-render the report from a run's .pickle")
    f = sub.add_parser("faults", help="deterministic fault injection")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--seeds", help="a range A:B of seeds")
    f.add_argument("--steps", type=int, default=30)
    args = parser.parse_args(argv)
    if args.command == "faults":
        return _faults(args)
    return _simulate(args)


if __name__ == "__main__":
    sys.exit(main())
