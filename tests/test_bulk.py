"""Bulk import and export (node/cli/bulk.py) against a real authority node, through the command
line as an operator runs it; and the importer's batching against a fake Admin stub."""

from __future__ import annotations

import csv
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from blacklist.csvlist import REASON_NAMES_ZH, Cause, format_time, parse_date
from blacklist.entry import Reason
from node.cli.bulk import Importer
from node.cli.client import UsageError
from node.cli.reading import CountedLines, Progress
from node.gen.blacklist.v1 import admin_pb2, types_pb2
from tests.node_harness import ROOT, NodeProcess, card_id, write_node

GZ = "440100"
T0 = 1_704_038_400  # 2024-01-01 00:00:00 China time


# ---------------------------------------------------------------------------- a list on disk
@dataclass(frozen=True)
class ListFile:
    path: Path
    good: dict[str, tuple[int, int]]  # card → (reason code, effective time)
    bad: dict[int, Cause]  # line → cause


def write_list(path: Path, rows: int, *, seed: int = 7, bad_every: int = 0) -> ListFile:
    """A legacy list of ``rows`` data rows after a header, in every accepted spelling; with
    ``bad_every``, every so many rows is one of each kind of bad row instead."""
    rng = random.Random(seed)
    good: dict[str, tuple[int, int]] = {}
    bad: dict[int, Cause] = {}
    last = ""
    kinds = [
        Cause.CARD_ID,
        Cause.REASON,
        Cause.DATE,
        Cause.SCOPE,
        Cause.DUPLICATE,
        Cause.COLUMNS,
    ]
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("卡识别码,失效原因,失效日期\n")
        for i in range(rows):
            line = i + 2
            if bad_every and i % bad_every == bad_every - 1 and last:
                kind = kinds[(i // bad_every) % len(kinds)]
                bad[line] = kind
                f.write(
                    {
                        Cause.CARD_ID: f"{card_id(GZ)[:-1]},挂失,2024-01-01\n",
                        Cause.REASON: f"{card_id(GZ)},解挂,2024-01-01\n",
                        Cause.DATE: f"{card_id(GZ)},挂失,2024-02-30\n",
                        Cause.SCOPE: f"{card_id('110100')},挂失,2024-01-01\n",
                        Cause.DUPLICATE: f"{last},损坏,2024-01-01\n",
                        Cause.COLUMNS: f"{card_id(GZ)};挂失;2024-01-01\n",
                    }[kind]
                )
                continue
            card = card_id(GZ, rng.getrandbits(64))
            reason = Reason(1 + rng.randrange(7))
            when = T0 + rng.randrange(86400 * 365)
            spelled = rng.choice([REASON_NAMES_ZH[reason], reason.name.lower(), str(int(reason))])
            date = rng.choice([format_time(when), str(when), format_time(when)[:10]])
            good[card] = (int(reason), parse_date(date))
            text = card.lower() if i % 2 else card
            f.write(f"{text},{spelled},{date}\n")
            last = card
    return ListFile(path, good, bad)


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def summary_numbers(out: str) -> dict[str, int]:
    found = {
        name: int(re.search(rf"{name}:\s+([\d,]+)", out).group(1).replace(",", ""))  # type: ignore[union-attr]
        for name in ("rows read", "imported", "unchanged", "rejected")
    }
    version = re.search(r"version (\d+) -> (\d+), (\d+) delta", out)
    assert version is not None, out
    found["before"], found["after"], found["deltas"] = (int(g) for g in version.groups())
    rss = re.search(r"peak RSS (\d+) MiB", out)
    assert rss is not None, out
    found["rss_mib"] = int(rss.group(1))
    return found


def feed_version(node: NodeProcess) -> int:
    status = node.admin.Status(admin_pb2.StatusRequest(), timeout=10)
    return next((f.version for f in status.feeds if f.publisher == GZ), 0)


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def gz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    files = write_node(tmp_path_factory.mktemp("bulk") / "gz", GZ)
    with NodeProcess(files.config) as node:
        yield node


# ---------------------------------------------------------------------------- end to end
def test_import_reimport_and_export_round_trip(gz: NodeProcess, tmp_path: Path) -> None:
    listed = write_list(tmp_path / "list.csv", 3000, bad_every=250)
    assert len(listed.bad) == 12  # two of each kind
    rejects = tmp_path / "rejects.csv"
    before = feed_version(gz)

    first = run_cli(
        "import-csv", str(listed.path), "--node", gz.grpc, "--batch", "700",
        "--rejects", str(rejects),
    )  # fmt: skip
    assert first.returncode == 1, first.stderr  # 1: some rows rejected
    got = summary_numbers(first.stdout)
    assert got["rows read"] == 3000
    assert got["imported"] == len(listed.good) == 3000 - 12
    assert (got["unchanged"], got["rejected"]) == (0, 12)
    assert (got["before"], got["after"]) == (before, before + got["deltas"])
    assert got["deltas"] == 5  # ceil(2988 / 700) batches, each one signed delta
    assert "import: 3,000 rows  100.0% of" in first.stderr  # the final progress line
    assert "Traceback" not in first.stderr

    # Every rejected row, with its line and cause, in the summary and in the rejects file.
    with open(rejects, newline="", encoding="utf-8") as f:
        written = [(int(r["line"]), r["cause"]) for r in csv.DictReader(f)]
    assert written == sorted((line, cause.value) for line, cause in listed.bad.items())
    for line, cause in listed.bad.items():
        assert f"  line {line}: {cause.value}: " in first.stdout
    assert "out_of_scope 2" in first.stdout and "duplicate 2" in first.stdout

    sample = random.Random(3).sample(sorted(listed.good), 25)
    for card in sample:
        found = gz.admin.GetEntry(admin_pb2.GetEntryRequest(card_id=card), timeout=10)
        assert [(e.reason, e.effective_time, e.publisher) for e in found.entries] == [
            (*listed.good[card], GZ)
        ]

    # The same file again changes nothing: not one delta, the version stays.
    version = feed_version(gz)
    again = run_cli("import-csv", str(listed.path), "--node", gz.grpc, "--quiet")
    assert again.returncode == 1, again.stderr
    got = summary_numbers(again.stdout)
    assert (got["imported"], got["unchanged"], got["rejected"]) == (0, 3000 - 12, 12)
    assert (got["before"], got["after"], got["deltas"]) == (version, version, 0)
    assert feed_version(gz) == version
    assert again.stderr == ""  # --quiet: no progress line

    # Export gives the same set back, and reads back in as "unchanged".
    exported = tmp_path / "export.csv"
    out = run_cli("export-csv", "--node", gz.grpc, "--prefix", "4401", "-o", str(exported))
    assert out.returncode == 0, out.stderr
    with open(exported, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == [
        *["card_id", "reason", "effective_time", "publisher", "version", "expires_at"]
    ]
    back = {r[0]: (int(Reason.parse(r[1])), parse_date(r[2])) for r in rows[1:]}
    assert {c: back[c] for c in listed.good} == listed.good
    assert {r[3] for r in rows[1:]} == {GZ}
    again = run_cli("import-csv", str(exported), "--node", gz.grpc, "--quiet")
    assert again.returncode == 0, again.stdout + again.stderr
    assert summary_numbers(again.stdout)["imported"] == 0
    assert feed_version(gz) == version


def test_a_changed_row_is_one_change(gz: NodeProcess, tmp_path: Path) -> None:
    card = card_id(GZ)
    path = tmp_path / "one.csv"
    path.write_text(f"{card},挂失,2024-03-01\n", encoding="utf-8")
    assert run_cli("import-csv", str(path), "--node", gz.grpc).returncode == 0
    version = feed_version(gz)
    path.write_text(f"{card},换卡,2024-03-01\n", encoding="utf-8")
    changed = run_cli("import-csv", str(path), "--node", gz.grpc)
    assert changed.returncode == 0
    assert "(0 newly revoked, 1 reason or date updated)" in changed.stdout
    assert feed_version(gz) == version + 1
    entry = gz.admin.GetEntry(admin_pb2.GetEntryRequest(card_id=card), timeout=10).entries[0]
    assert entry.reason == types_pb2.REPLACED


def test_export_to_stdout_in_chinese(gz: NodeProcess, tmp_path: Path) -> None:
    card = card_id("440106")
    path = tmp_path / "one.csv"
    path.write_text(f"{card},临时挂失,2024-05-06 07:08:09\n", encoding="utf-8")
    assert run_cli("import-csv", str(path), "--node", gz.grpc).returncode == 0
    out = run_cli("export-csv", "--node", gz.grpc, "--prefix", "440106", "--reasons", "zh")
    assert out.returncode == 0
    assert out.stdout.splitlines()[1].startswith(f"{card},临时挂失,2024-05-06 07:08:09,{GZ},")
    assert "exported 1 entries under prefix 440106" in out.stderr


def test_errors_are_messages_with_exit_codes(gz: NodeProcess, tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text(f"{card_id(GZ)},挂失,2024-03-01\n", encoding="utf-8")
    dead = "127.0.0.1:1"
    cases = [
        (
            ("import-csv", str(path), "--node", dead, "--timeout", "3"),
            3,
            f"nothing listens at {dead}",
        ),
        (("import-csv", str(tmp_path / "none.csv"), "--node", gz.grpc), 2, "none.csv"),
        (("import-csv", str(path), "--node", gz.grpc, "--batch", "0"), 2, "--batch"),
        (("import-csv", str(path), "--node", gz.grpc, "--ca", "x"), 2, "go together"),
        (("export-csv", "--node", gz.grpc, "--prefix", "44x"), 2, "INVALID_ARGUMENT"),
        (("export-csv", "--node", dead, "--prefix", "44", "--timeout", "3"), 3, "nothing listens"),
    ]
    for args, code, words in cases:
        done = run_cli(*args)
        assert done.returncode == code, (args, done.stdout, done.stderr)
        assert words in done.stdout + done.stderr, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        if code == 3:  # never reached: no summary, no advice to run it again, no CSV header
            assert done.stdout == "" and "again" not in done.stderr, (args, done.stdout)


# ---------------------------------------------------------------------------- memory
def _import_peak_rss(node: NodeProcess, path: Path) -> dict[str, int]:
    done = run_cli("import-csv", str(path), "--node", node.grpc, "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    return summary_numbers(done.stdout)


def _memory_check(node: NodeProcess, tmp_path: Path, rows: int, allowance_mib: int) -> None:
    """Peak RSS of a large import stays within ``allowance_mib`` of a 20,000-row one's (both
    with full 10,000-row batches): the file is streamed, and only 22 bytes per distinct card
    remain (for duplicates). A reader that kept each row would need ~250 bytes per row."""
    small = _import_peak_rss(node, write_list(tmp_path / "small.csv", 20_000, seed=1).path)
    big_list = write_list(tmp_path / "big.csv", rows, seed=2)
    big = _import_peak_rss(node, big_list.path)
    assert big["imported"] == rows
    grown = big["rss_mib"] - small["rss_mib"]
    size_mib = big_list.path.stat().st_size / 2**20
    print(f"{rows:,} rows ({size_mib:.0f} MiB): peak RSS {big['rss_mib']} MiB, +{grown} MiB")
    assert grown < allowance_mib, (big, small)


def test_import_memory_is_bounded(gz: NodeProcess, tmp_path: Path) -> None:
    _memory_check(gz, tmp_path, 100_000, allowance_mib=10)


@pytest.mark.slow
def test_import_a_million_rows_in_bounded_memory(tmp_path: Path) -> None:
    files = write_node(tmp_path / "gz", GZ, extra={"map_size_gib": 4})
    with NodeProcess(files.config) as node:
        _memory_check(node, tmp_path, 1_000_000, allowance_mib=50)


# ---------------------------------------------------------------------------- batching
class FakeRpcError(grpc.RpcError):
    def __init__(self, code: Any, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> Any:
        return self._code

    def details(self) -> str:
        return self._details


class FakeAdmin:
    """Admin.Status and Admin.Revoke.future in process; ``fail`` maps a call number to an
    error for that Revoke call."""

    def __init__(self, publisher: str = GZ, fail: dict[int, FakeRpcError] | None = None) -> None:
        self.publisher = publisher
        self.fail = fail or {}
        self.batches: list[list[str]] = []
        self.version = 0
        outer = self

        class Revoke:
            @staticmethod
            def future(request: admin_pb2.RevokeRequest, timeout: float) -> Future[Any]:
                future: Future[Any] = Future()
                n = len(outer.batches)
                outer.batches.append([r.card_id for r in request.revocations])
                if n in outer.fail:
                    future.set_exception(outer.fail[n])
                else:
                    outer.version += 1
                    future.set_result(
                        admin_pb2.PublishResponse(
                            added=len(request.revocations), version=outer.version
                        )
                    )
                return future

        self.Revoke = Revoke

    def Status(self, request: admin_pb2.StatusRequest, timeout: float) -> admin_pb2.StatusResponse:
        return admin_pb2.StatusResponse(
            role="city",
            region="440100",
            publisher=self.publisher,
            scope=["4401"] if self.publisher else [],
            feeds=[types_pb2.FeedInfo(publisher=GZ, version=self.version)]
            if self.publisher
            else [],
        )


def _lines(tmp_path: Path, n: int) -> CountedLines:
    path = tmp_path / "l.csv"
    path.write_text("".join(f"{card_id(GZ, i)},挂失,{T0}\n" for i in range(n)), encoding="utf-8")
    return CountedLines(open(path, "rb"), "utf-8-sig")


class Quiet(Progress):
    def __init__(self) -> None:
        super().__init__(sys.stderr, 1, quiet=True)


def test_batches_are_cut_at_the_batch_size(tmp_path: Path) -> None:
    admin = FakeAdmin()
    summary = Importer(admin, batch=4).run(_lines(tmp_path, 10), Quiet())
    assert [len(b) for b in admin.batches] == [4, 4, 2]
    assert (summary.added, summary.batches, summary.deltas) == (10, 3, 3)
    assert (summary.version_before, summary.version_after) == (0, 3)
    assert summary.exit_code == 0


def test_a_refused_batch_rejects_its_rows_and_the_import_goes_on(tmp_path: Path) -> None:
    refusal = FakeRpcError(grpc.StatusCode.PERMISSION_DENIED, "role 'operator' of region 440300")
    admin = FakeAdmin(fail={1: refusal})
    seen = []
    summary = Importer(admin, batch=4, on_reject=seen.append).run(_lines(tmp_path, 10), Quiet())
    assert summary.rejected == {Cause.REFUSED: 4}
    assert [r.line for r in seen] == [5, 6, 7, 8]
    assert seen[0].detail == "PERMISSION_DENIED: role 'operator' of region 440300"
    assert (summary.added, summary.exit_code) == (6, 1)


def test_an_unreachable_node_stops_the_import(tmp_path: Path) -> None:
    admin = FakeAdmin(fail={1: FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused")})
    summary = Importer(admin, batch=4).run(_lines(tmp_path, 20), Quiet())
    assert summary.stopped.startswith("the node could not be reached (UNAVAILABLE")
    assert (summary.added, summary.last_line_sent, summary.exit_code) == (4, 4, 3)
    assert len(admin.batches) <= 3  # at most the batch after the failed one was read


def test_a_node_without_a_feed_is_refused_before_reading(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="publishes no feed"):
        Importer(FakeAdmin(publisher="")).run(_lines(tmp_path, 3), Quiet())
