"""Issue #11 item 8 figure (benchmark ``audit``): ``CheckCard`` p99 while an operator runs
``Admin.ListAudit`` by card on a large audit log, beside the p99 without it, in one run.

A node (``python -m node run``, plain text) over the city store of bench/test_node.py
(BENCH_SCALE entries) whose audit log holds BENCH_SCALE records (1M by default; written
straight into the store, bench/audit_log.py), 2% of them of one card. Alternated over 3
rounds of 4 s: h2load offers CheckCard at a constant rate (``RATE`` calls/s, paced as
bench/test_latency_under_sync.py does: the sends follow the clock, so a stall shows as late
answers), once **quietly** (the baseline) and once **while an operator pages through that
card's whole history** with ``ListAudit(card_id, page_size=1000)``, again and again, from
another process's client (this one). p50/p99 from h2load's per-request log (the first
0.5 s of each run left out), pooled over the rounds.

Figures: ``p99_us`` (with the operator) beside ``baseline_p99_us`` (without), the p50s, the
ListAudit pages and records served per second and their p99 time. Proven real: every
ListAudit pass returns exactly the card's records; every call h2load counted is handled OK
by the node. Timings are never asserted. Under ``--benchmark-disable`` (``make test``,
BENCH_SCALE=20000) it is one 0.5 s window of each kind at 160 calls/s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from bench.audit_log import AuditLogFixture, fill_audit_log
from bench.conftest import SCALE
from bench.figures import progress, record, timed
from bench.grpc_load import (
    H2LoadRun,
    ServerProcess,
    grpc_body,
    h2load_path,
    paced,
    percentile,
    python_command,
    run_h2load,
)
from bench.test_node import MAP_SIZE_GIB, ROOT, SERVICE, _build_node
from node.gen.blacklist.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    card_status_pb2,
    card_status_pb2_grpc,
    types_pb2,
)
from node.local.scrape import sample, scrape

NOT_REVOKED = types_pb2.CardStatusCode.Value("NOT_REVOKED")
CHECK_CARD = f"{SERVICE}/CheckCard"
SUBJECT = "440100D156000005000000000000AB1E"  # the card with a long history
SUBJECT_SHARE = 50  # every 50th record is of SUBJECT: 2%
PAGE = 1000
RATE, ROUNDS, SECONDS, STREAMS, WARM_UP_US = 1000, 3, 4, 8, 500_000
TINY_RATE, TINY_SECONDS = 160, 0.5


@dataclass
class Setup:
    node: ServerProcess
    metrics: str
    log: AuditLogFixture
    entries: int
    valid: str


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("bench-audit")
    config, entries, valid, _ = _build_node(root)
    t0 = time.perf_counter()
    log = fill_audit_log(root / "data", SCALE, SUBJECT, SUBJECT_SHARE, map_size=MAP_SIZE_GIB << 30)
    progress(f"audit log of {log.records:,} records in {time.perf_counter() - t0:.1f} s")
    node = ServerProcess(
        python_command("-m", "node", "run", "--config", str(config)),
        cwd=ROOT,
        log=root / "node.log",
    )
    try:
        yield Setup(node, node.info["metrics"], log, entries, valid[0])
    finally:
        assert node.stop() == 0, (root / "node.log").read_text()


class Operator:
    """Pages through SUBJECT's audit history over and over until stopped (its own thread)."""

    def __init__(self, address: str, subject_records: int) -> None:
        self._channel = grpc.insecure_channel(address)
        self._admin: Any = admin_pb2_grpc.AdminStub(self._channel)  # type: ignore[no-untyped-call]
        self._want = subject_records
        self._stop = threading.Event()
        self.pages: list[float] = []  # seconds per page call
        self.records = 0
        self.passes = 0
        self._thread = threading.Thread(target=self._run, name="operator")

    def __enter__(self) -> Operator:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._channel.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            token, seen = "", 0
            while True:
                t0 = time.perf_counter()
                page = self._admin.ListAudit(
                    admin_pb2.ListAuditRequest(card_id=SUBJECT, page_size=PAGE, page_token=token),
                    timeout=300,
                )
                self.pages.append(time.perf_counter() - t0)
                assert all(r.card_id == SUBJECT for r in page.records)
                seen += len(page.records)
                self.records += len(page.records)
                token = page.next_page_token
                if not token or self._stop.is_set():
                    break
            if not token:  # a whole pass: exactly the card's records
                assert seen == self._want, (seen, self._want)
                self.passes += 1


def _handled_ok(url: str) -> float:
    labels = {"grpc_service": SERVICE, "grpc_method": "CheckCard", "grpc_code": "OK"}
    return sample(scrape(url), "grpc_server_handled_total", **labels)


def _window(
    setup: Setup, body: Path, log: Path, rate: int, seconds: float, skip: float
) -> H2LoadRun:
    clients, per_client = paced(rate)
    handled = _handled_ok(setup.metrics)
    run = run_h2load(
        setup.node.url(CHECK_CARD),
        body,
        clients=clients,
        streams=STREAMS,
        requests=round(clients * per_client * seconds),
        rps_per_client=per_client,
        stagger=True,
        log_file=log,
        skip_us=skip,
    )
    assert run.failed == run.errored == run.timeout == 0, run
    assert run.status_2xx >= run.succeeded > 0, run
    time.sleep(0.2)  # calls in flight finish
    assert _handled_ok(setup.metrics) - handled >= run.succeeded, run
    return run


def test_audit(benchmark: Any, setup: Setup, tmp_path: Path) -> None:
    with grpc.insecure_channel(setup.node.address) as channel:
        stub: Any = card_status_pb2_grpc.CardStatusStub(channel)  # type: ignore[no-untyped-call]
        answer = stub.CheckCard(card_status_pb2.CheckCardRequest(card_id=setup.valid))
        assert answer.status == NOT_REVOKED, answer
    if h2load_path() is None:
        pytest.skip("h2load not found (Debian package nghttp2-client; `make bench` installs it)")
    body = tmp_path / "check.bin"
    body.write_bytes(grpc_body([card_status_pb2.CheckCardRequest(card_id=setup.valid)]))
    tiny = not timed(benchmark)
    rate, rounds, seconds, skip = (
        (TINY_RATE, 1, TINY_SECONDS, 0.0) if tiny else (RATE, ROUNDS, SECONDS, WARM_UP_US)
    )

    def measure() -> tuple[list[H2LoadRun], list[H2LoadRun], list[Operator]]:
        quiet, busy, operators = [], [], []
        for n in range(rounds):
            quiet.append(_window(setup, body, tmp_path / f"quiet-{n}.log", rate, seconds, skip))
            with Operator(setup.node.address, setup.log.subject_records) as operator:
                while not operator.pages:  # the operator is at work before the load starts
                    time.sleep(0.01)
                busy.append(_window(setup, body, tmp_path / f"audit-{n}.log", rate, seconds, skip))
            operators.append(operator)
        return quiet, busy, operators

    quiet, busy, operators = benchmark.pedantic(measure, rounds=1, iterations=1)
    with_audit = sorted(t for r in busy for t in r.latencies_us)
    without = sorted(t for r in quiet for t in r.latencies_us)
    pages = sorted(p for o in operators for p in o.pages)
    assert with_audit and without and pages
    busy_seconds = sum(r.seconds for r in busy)
    clients, per_client = paced(rate)
    record(
        benchmark,
        entries=setup.entries,
        audit_records=setup.log.records,
        card_records=setup.log.subject_records,
        rate_offered=float(clients * per_client),
        p50_us=percentile(with_audit, 50),
        p99_us=percentile(with_audit, 99),
        p999_us=percentile(with_audit, 99.9),
        baseline_p50_us=percentile(without, 50),
        baseline_p99_us=percentile(without, 99),
        runs_p99_us=" ".join(f"{r.percentile_us(99):.0f}" for r in busy),
        baseline_runs_p99_us=" ".join(f"{r.percentile_us(99):.0f}" for r in quiet),
        samples=len(with_audit),
        list_audit_pages_per_s=len(pages) / busy_seconds,
        list_audit_records_per_s=sum(o.records for o in operators) / busy_seconds,
        list_audit_page_p99_ms=percentile([round(p * 1e6) for p in pages], 99) / 1e3,
        list_audit_passes=sum(o.passes for o in operators),
        load=f"h2load -c {clients} -m {STREAMS} --rps {per_client} -r 1 --rate-period 1ms, "
        f"{seconds:g} s x {rounds} rounds; ListAudit(card_id, page_size={PAGE}) in a loop",
    )
