"""Temporary losses over gRPC against a real node process (issue #17): the answer around the
end time by the node's clock, the default period from the config and the per-call override,
the audit log, a restart, and the CSV round trip through import-csv and export-csv.

A node process has no injected clock, so the end times are chosen a few seconds after the
real clock; each boundary is asserted only on the side the test can prove it is on (a
REVOKED answer only when the reply came back before the end time)."""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from blacklist.csvlist import format_time, parse_date
from node.gen.blacklist.v1 import admin_pb2, card_status_pb2, types_pb2
from tests.node_harness import Metrics, NodeProcess, card_id, write_node
from tests.test_bulk import run_cli, summary_numbers

GZ = "440100"
DEFAULT_SECONDS = 9  # lapse_days = 0.0001 below: 8.64 s, rounded


def node_files(tmp_path: Path) -> Path:
    files = write_node(tmp_path / "gz", GZ)
    text = files.config.read_text()
    files.config.write_text(
        text + "sweep_interval = 0.2\nlapse_days = { temporary_loss = 0.0001 }\n"
    )
    return files.config


def revoke(node: NodeProcess, *rows: tuple[str, int, int, int]) -> admin_pb2.PublishResponse:
    return node.admin.Revoke(
        admin_pb2.RevokeRequest(
            revocations=[
                admin_pb2.Revocation(card_id=c, reason=r, effective_time=t, expires_at=e)  # type: ignore[arg-type]
                for c, r, t, e in rows
            ]
        ),
        timeout=10,
    )


def check(node: NodeProcess, card: str) -> card_status_pb2.CheckCardResponse:
    return node.card_status.CheckCard(card_status_pb2.CheckCardRequest(card_id=card), timeout=10)


def batch(node: NodeProcess, *cards: str) -> dict[str, int]:
    answer = node.card_status.BatchCheck(
        card_status_pb2.BatchCheckRequest(card_ids=list(cards)), timeout=10
    )
    out = {c: types_pb2.NOT_REVOKED for c in cards}
    for item in answer.cards:
        out[cards[item.index]] = item.status
    return out


def poll_metrics(node: NodeProcess, ready: Callable[[Metrics], bool]) -> Metrics:
    deadline = time.monotonic() + 60  # a deadline for slow machines, not a measurement
    while True:
        metrics = node.scrape()
        if ready(metrics) or time.monotonic() > deadline:
            return metrics
        time.sleep(0.1)


def sleep_until(t: float) -> None:
    while (left := t - time.time()) > 0:
        time.sleep(min(left, 0.2))


def test_temporary_loss_over_grpc_around_its_end_and_across_a_restart(tmp_path: Path) -> None:
    config = node_files(tmp_path)
    lost, formal, default, later = (card_id(GZ) for _ in range(4))
    with NodeProcess(config) as node:
        now = int(time.time())
        end = now + 5
        revoke(
            node,
            (lost, types_pb2.TEMPORARY_LOSS, now, end),
            (formal, types_pb2.LOSS, now, 0),
            (default, types_pb2.TEMPORARY_LOSS, now, 0),
            (later, types_pb2.TEMPORARY_LOSS, now, now + 3600),
        )
        entry = node.admin.GetEntry(admin_pb2.GetEntryRequest(card_id=default), timeout=10)
        assert entry.entries[0].expires_at == now + DEFAULT_SECONDS
        formal_entry = node.admin.GetEntry(admin_pb2.GetEntryRequest(card_id=formal), timeout=10)
        assert formal_entry.entries[0].expires_at == 0
        audit = node.admin.ListAudit(admin_pb2.ListAuditRequest(card_id=lost), timeout=10)
        assert [r.expires_at for r in audit.records] == [end]

        sleep_until(end - 1)
        answer = check(node, lost)
        if time.time() < end:  # provably before the end time
            assert answer.status == types_pb2.REVOKED
            assert (answer.reason, answer.expires_at) == (types_pb2.TEMPORARY_LOSS, end)
        for at in (end, end + 1):
            sleep_until(at)
            assert check(node, lost).status == types_pb2.NOT_REVOKED
            assert batch(node, lost, formal) == {
                lost: types_pb2.NOT_REVOKED,
                formal: types_pb2.REVOKED,
            }
        # A lapsed entry is gone from the admin views too.
        gone = node.admin.GetEntry(admin_pb2.GetEntryRequest(card_id=lost), timeout=10)
        assert not gone.found
        # The sweep (every 0.2 s here) removes it, and the metrics say so; the answer is
        # the same before and after it.
        metrics = poll_metrics(node, lambda m: m.value("blacklist_entries_swept_total") >= 1)
        assert metrics.value("blacklist_entries", reason="loss") == 1
        assert metrics.value("blacklist_entries_lapsed_unswept") == 0
        assert metrics.value("blacklist_entries_lapsing_next_24h") >= 1  # `later`
        assert check(node, lost).status == types_pb2.NOT_REVOKED

        # Overrides the rules refuse are INVALID_ARGUMENT, naming the card.
        for reason, expires in ((types_pb2.LOSS, now + 3600), (types_pb2.TEMPORARY_LOSS, now - 1)):
            with pytest.raises(grpc.RpcError) as info:
                revoke(node, (card_id(GZ), reason, now - 10, expires))
            assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with NodeProcess(config) as node:
        assert check(node, lost).status == types_pb2.NOT_REVOKED
        kept = check(node, later)
        assert (kept.status, kept.expires_at) == (types_pb2.REVOKED, now + 3600)
        assert check(node, formal).status == types_pb2.REVOKED


def test_csv_round_trip_keeps_end_times(tmp_path: Path) -> None:
    config = node_files(tmp_path)
    lapsing, forever, formal = (card_id(GZ) for _ in range(3))
    now = int(time.time())
    end = now + 7200
    listed = tmp_path / "list.csv"
    listed.write_text(
        "card_id,reason,effective_time,expires_at\n"
        f"{lapsing},临时挂失,{now},{format_time(end)}\n"
        f"{forever},temporary_loss,{now},none\n"
        f"{formal},挂失,{now},\n",
        encoding="utf-8",
    )
    with NodeProcess(config) as node:
        imported = run_cli("import-csv", str(listed), "--node", node.grpc, "--quiet")
        assert imported.returncode == 0, imported.stdout + imported.stderr
        exported = tmp_path / "export.csv"
        out = run_cli("export-csv", "--node", node.grpc, "--prefix", "4401", "-o", str(exported))
        assert out.returncode == 0, out.stderr
        with open(exported, newline="", encoding="utf-8") as f:
            rows = {r["card_id"]: r for r in csv.DictReader(f)}
        assert parse_date(rows[lapsing]["expires_at"]) == end
        assert rows[forever]["expires_at"] == rows[formal]["expires_at"] == "none"
        # Read back in: nothing changes (the entry without an end time keeps none, although
        # the config gives temporary losses a default).
        again = run_cli("import-csv", str(exported), "--node", node.grpc, "--quiet")
        assert again.returncode == 0, again.stdout + again.stderr
        got = summary_numbers(again.stdout)
        assert (got["imported"], got["unchanged"], got["deltas"]) == (0, 3, 0)
        assert check(node, lapsing).expires_at == end
        assert check(node, forever).expires_at == 0
