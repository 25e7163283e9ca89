"""Issue #18: deterministic fault injection over the simulated federation
(blacklist/sim/faults.py). Every seed draws its own run of publications, crashes, restarts,
partitions, lossy, duplicating, reordering and slow links, a stale upstream and forged or
tampered items, and checks the invariants after every step and convergence at the end.

``SIM_SEEDS`` sets how many seeds run (default 200, a few seconds per hundred),
``SIM_SEED_START`` where they start, ``SIM_STEPS`` the steps per seed (default 20): a long run
is ``SIM_SEEDS=20000 pytest tests/test_sim_faults.py``. A failure prints its seed and the
command that replays it exactly (``python -m blacklist.sim faults --seed N``).
"""

from __future__ import annotations

import os

import pytest

from blacklist.sim.faults import run_seed

SEEDS = int(os.environ.get("SIM_SEEDS", "200"))
START = int(os.environ.get("SIM_SEED_START", "0"))
STEPS = int(os.environ.get("SIM_STEPS", "20"))

# Seeds that once found a bug stay here whatever SIM_SEEDS says (with 30 steps, as found).
# 84: a duplicated GetSnapshot answer was counted twice and left the province's pull round
# open for ever, so the ministry never converged (a simulator bug: answers now carry their
# call's id and a second copy is dropped, as gRPC never delivers one).
REGRESSION_SEEDS: list[int] = [84]


@pytest.mark.parametrize("seed", range(START, START + SEEDS))
def test_seed_keeps_every_invariant(seed: int) -> None:
    log = run_seed(seed, STEPS)
    assert log.steps == STEPS
    assert log.checks == STEPS + 1


@pytest.mark.parametrize("seed", REGRESSION_SEEDS)
def test_regression_seed(seed: int) -> None:
    assert run_seed(seed, 30).checks == 31
