"""CheckCard through HAProxy in front of read replicas, beside the same calls made directly to
one replica, in the same run (issue #18; node/local/scale.py, deploy/haproxy.cfg.in).

Rounds alternate three loads of h2load (8 connections x 16 calls in flight, prior-knowledge
HTTP/2, the same CheckCard body): direct to replica1, through the balancer with both replicas,
and through it with replica2 disabled on HAProxy's admin socket. Figures are medians over the
rounds. Then the kill -9 drill (node/local/drill.py) runs through the balancer and gives
``failed_calls`` and ``wrong_answers``.

On these 2 shared cores the balancer, two replicas, the upstream and h2load all compete, so
``rps`` / ``direct_rps`` shows the balancer's cost, not a gain: a second replica adds capacity
only where it has a core of its own (on 4+ cores the two-replica figure should approach twice
the one-replica one, while the single node cannot use more than its workers).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.figures import record, timed
from bench.grpc_load import grpc_body, h2load_path, run_h2load
from node.gen.blacklist.v1 import card_status_pb2
from node.local.drill import Drill, card
from node.local.scale import (
    STATE_FILE,
    haproxy_command,
    haproxy_path,
    wait_all_up,
    wait_ready_line,
)
from node.local.scale import Process as ScaleProcess
from node.local.scale import replica_set as running_replicas

pytestmark = pytest.mark.skipif(
    haproxy_path() is None or h2load_path() is None,
    reason="haproxy and h2load are needed (make tools / make compare-tools install them)",
)

METHOD = "blacklist.v1.CardStatus/CheckCard"
ROUNDS = 3
SECONDS = 3.0


@pytest.fixture(name="replica_set")
def _replica_set(tmp_path: Path) -> Iterator[Path]:
    with running_replicas(tmp_path / "scale") as directory:
        yield directory


def _load(address: str, body: Path, log: Path, full: bool) -> tuple[float, float]:
    run = run_h2load(
        f"http://{address}/{METHOD}",
        body,
        clients=8,
        streams=16,
        duration_s=SECONDS if full else None,
        requests=None if full else 200,
        log_file=log,
        skip_us=500_000 if full else 0,
    )
    assert run.failed == run.errored == 0, run
    return run.rps, run.percentile_us(99)


def test_balancer_check_card(benchmark: Any, replica_set: Path, tmp_path: Path) -> None:
    state = json.loads((replica_set / STATE_FILE).read_text())
    balancer = state["balancer"]
    replica1 = next(ScaleProcess(**p) for p in state["processes"] if p["name"] == "replica1")
    direct = wait_ready_line(replica1)["grpc"]
    sock = replica_set / "haproxy.sock"
    body = tmp_path / "check.bin"
    body.write_bytes(grpc_body([card_status_pb2.CheckCardRequest(card_id=card(150))]))
    full = timed(benchmark)
    log = tmp_path / "h2load.log"

    def rounds() -> dict[str, list[tuple[float, float]]]:
        out: dict[str, list[tuple[float, float]]] = {"direct": [], "two": [], "one": []}
        for _ in range(ROUNDS if full else 1):
            out["direct"].append(_load(direct, body, log, full))
            out["two"].append(_load(balancer, body, log, full))
            haproxy_command(sock, "disable server replicas/replica2")
            try:
                out["one"].append(_load(balancer, body, log, full))
            finally:
                haproxy_command(sock, "enable server replicas/replica2")
                wait_all_up(sock, ["replica1", "replica2"])
        return out

    runs = benchmark.pedantic(rounds, rounds=1, iterations=1)
    report = Drill(replica_set, threads=4).run(seconds=9.0 if full else 4.0)
    assert report.wrong_answers == 0, report.wrong_examples

    def med(name: str, i: int) -> float:
        return statistics.median(r[i] for r in runs[name])

    record(
        benchmark,
        rps=med("two", 0),
        direct_rps=med("direct", 0),
        one_replica_rps=med("one", 0),
        balancer_ratio=med("two", 0) / med("direct", 0),
        p99_us=med("two", 1),
        direct_p99_us=med("direct", 1),
        one_replica_p99_us=med("one", 1),
        rps_range=f"{min(r[0] for r in runs['two']):.0f}-{max(r[0] for r in runs['two']):.0f}",
        failed_calls=report.failed_calls,
        wrong_answers=report.wrong_answers,
        stale_answers=report.stale_answers,
        drill_calls=report.calls,
        rejoin_s=report.rejoined_after_s if report.rejoined_after_s is not None else -1.0,
        load="h2load -c 8 -m 16",
    )
