"""Bulk import of a legacy list as CSV, and the two CSV commands (export: node/cli/export_csv.py),
through a node's Admin API.

    python -m node import-csv FILE --node ADDR [--batch 10000] [--rejects FILE]
    python -m node export-csv --node ADDR --prefix 4401 [-o FILE]

Import streams the file (blacklist/csvlist.py parses it; memory holds one batch, plus 22
bytes per accepted card for finding duplicates) and sends each batch as one Admin.Revoke, so
each batch becomes one signed delta at the authority. Rows the node already holds exactly
(same reason and effective time) change nothing, and a batch of only such rows publishes
nothing: importing the same file again leaves the feed version where it was. So an import
stopped part-way (a node restart, Ctrl-C) is finished by running it again.

While one batch is at the node the next is parsed. Progress goes to stderr, the summary to
stdout. Exit code: 0 every row imported or already there; 1 some rows rejected; 2 bad usage
(no such file, a node that publishes nothing, a node that refused the first call); 3 the
node could not be reached (at the first call: one line saying why and what to pass, e.g. the
TLS options a node that requires mutual TLS needs, node/cli/diagnose.py, and no summary; later:
the import stopped, what was sent before stays); 130 interrupted (Ctrl-C; likewise). Export
asks for its first page before it writes anything, so a failed export leaves stdout empty.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from blacklist.csvlist import (
    Cause,
    Rejection,
    Row,
    read_rows,
)
from node.cli import export_csv
from node.cli.client import (
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    NotConnected,
    UsageError,
    add_connection_options,
    describe,
    not_connected,
    open_channel,
    tls_from_args,
    unreachable,
)
from node.cli.reading import CountedLines, Progress
from node.gen.blacklist.v1 import admin_pb2, admin_pb2_grpc
from node.tls import TlsError

DEFAULT_BATCH = 10_000
MAX_BATCH = 100_000  # Admin.Revoke's own limit per call (node/grpc/admin.py MAX_WRITE)
SHOWN_REJECTS = 20
EXIT_OK, EXIT_REJECTED = 0, 1
EXIT_INTERRUPTED = 130  # the shell's convention for SIGINT


class NodeUnreachable(RuntimeError):
    pass


# ---------------------------------------------------------------------------- import
@dataclass
class ImportSummary:
    publisher: str = ""
    rows: int = 0  # data rows read (not the header or blank lines)
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    rejected: Counter[Cause] = field(default_factory=Counter)
    shown: list[Rejection] = field(default_factory=list)  # the first few, for the report
    batches: int = 0
    deltas: int = 0  # batches that published a delta (the others changed nothing)
    version_before: int = 0
    version_after: int = 0
    stopped: str = ""  # why the import ended early, if it did
    last_line_sent: int = 0
    seconds: float = 0.0
    undecodable: int = 0

    @property
    def imported(self) -> int:
        return self.added + self.changed

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def exit_code(self) -> int:
        if self.stopped:
            return EXIT_INTERRUPTED if self.stopped == "interrupted" else EXIT_UNREACHABLE
        return EXIT_REJECTED if self.rejected_total else EXIT_OK


class Importer:
    """Sends a list's rows to a node in batches, one call at the node while the next batch
    is read; collects the summary. ``on_reject`` sees every rejected row as it happens."""

    def __init__(
        self,
        admin: Any,
        *,
        batch: int = DEFAULT_BATCH,
        timeout: float = 120.0,
        shown: int = SHOWN_REJECTS,
        on_reject: Callable[[Rejection], None] | None = None,
    ) -> None:
        self._admin = admin
        self._batch = batch
        self._timeout = timeout
        self._shown = shown
        self._on_reject = on_reject
        self.summary = ImportSummary()
        self._inflight: tuple[Future[Any], list[Row]] | None = None

    def _reject(self, rejection: Rejection) -> None:
        self.summary.rejected[rejection.cause] += 1
        if len(self.summary.shown) < self._shown:
            self.summary.shown.append(rejection)
        if self._on_reject is not None:
            self._on_reject(rejection)

    def _status(self) -> admin_pb2.StatusResponse:
        try:
            response: admin_pb2.StatusResponse = self._admin.Status(
                admin_pb2.StatusRequest(), timeout=self._timeout
            )
        except grpc.RpcError as exc:
            raise NodeUnreachable(describe(exc)) from None
        return response

    def _version(self, status: admin_pb2.StatusResponse) -> int:
        return next((f.version for f in status.feeds if f.publisher == status.publisher), 0)

    def _wait(self) -> None:
        """Collect the answer of the batch at the node, if any."""
        if self._inflight is None:
            return
        future, rows = self._inflight
        self._inflight = None
        try:
            response = future.result()
        except grpc.RpcError as exc:
            if unreachable(exc):
                raise NodeUnreachable(describe(exc)) from None
            for row in rows:  # the node refused the whole batch; nothing of it was written
                self._reject(Rejection(row.line, Cause.REFUSED, describe(exc)))
            return
        s = self.summary
        s.batches += 1
        s.added += response.added
        s.changed += response.changed
        s.unchanged += response.unchanged
        if response.added or response.changed:
            s.deltas += 1
        s.last_line_sent = rows[-1].line

    def _send(self, rows: list[Row]) -> None:
        self._wait()
        request = admin_pb2.RevokeRequest(
            revocations=[
                admin_pb2.Revocation(
                    card_id=r.revocation.card_id,
                    reason=int(r.revocation.reason),  # type: ignore[arg-type]
                    effective_time=r.revocation.effective_time,
                    expires_at=r.expires_at,
                )
                for r in rows
            ]
        )
        self._inflight = (self._admin.Revoke.future(request, timeout=self._timeout), rows)

    def run(
        self, lines: CountedLines, progress: Progress, *, delimiter: str = ","
    ) -> ImportSummary:
        s = self.summary
        t0 = time.monotonic()
        try:
            status: admin_pb2.StatusResponse = self._admin.Status(
                admin_pb2.StatusRequest(), timeout=self._timeout
            )
        except grpc.RpcError as exc:
            raise NotConnected(exc) from None
        try:
            if not status.publisher:
                raise UsageError(
                    f"node {status.region} ({status.role}) publishes no feed: import at the "
                    "authority of the cards' region"
                )
            s.publisher = status.publisher
            s.version_before = s.version_after = self._version(status)
            batch: list[Row] = []
            for item in read_rows(lines, tuple(status.scope), delimiter=delimiter):
                s.rows += 1
                if isinstance(item, Rejection):
                    self._reject(item)
                else:
                    batch.append(item)
                    if len(batch) >= self._batch:
                        self._send(batch)
                        batch = []
                progress.update(s.rows, lines.bytes_read, s.rejected_total)
            if batch:
                self._send(batch)
            self._wait()
            s.version_after = self._version(self._status())
        except NodeUnreachable as exc:
            s.stopped = f"the node could not be reached ({exc})"
        except KeyboardInterrupt:
            s.stopped = "interrupted"
        finally:
            if self._inflight is not None:
                self._inflight[0].cancel()
            s.seconds = time.monotonic() - t0
            s.undecodable = lines.undecodable
            progress.update(s.rows, lines.bytes_read, s.rejected_total, final=True)
        return s


def peak_rss_mib() -> float:
    """This process's peak resident memory. Linux's VmHWM, not getrusage's ru_maxrss: that
    one carries the parent's size at fork across exec (a big parent inflates it)."""
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def format_summary(s: ImportSummary, *, rejects_file: Path | None, encoding: str) -> str:
    rate = s.rows / s.seconds if s.seconds > 0 else 0.0
    lines = [
        f"rows read: {s.rows:,}",
        f"  imported:  {s.imported:,} ({s.added:,} newly revoked, {s.changed:,} reason or "
        "date updated)",
        f"  unchanged: {s.unchanged:,} (already held exactly so: nothing published for them)",
        f"  rejected:  {s.rejected_total:,}"
        + (
            " (" + ", ".join(f"{c.value} {n:,}" for c, n in sorted(s.rejected.items())) + ")"
            if s.rejected
            else ""
        ),
        f"feed {s.publisher}: version {s.version_before} -> {s.version_after}, "
        f"{s.deltas} delta(s) from {s.batches} batch(es)",
        f"time: {s.seconds:.1f} s, {rate:,.0f} rows/s; peak RSS {peak_rss_mib():.0f} MiB",
    ]
    if s.stopped:
        lines.append(
            f"STOPPED: {s.stopped}. Rows up to line {s.last_line_sent} were imported; run the "
            "same import again to finish (rows already imported count as unchanged)."
        )
    if s.undecodable:
        lines.append(
            f"note: {s.undecodable:,} line(s) were not valid {encoding}; try --encoding gbk"
        )
    if s.shown:
        more = s.rejected_total - len(s.shown)
        lines.append(
            f"rejected rows (first {len(s.shown)} of {s.rejected_total:,}"
            + (f"; all in {rejects_file}" if rejects_file else "; all with --rejects FILE")
            + "):"
            if more
            else "rejected rows:"
        )
        lines += [f"  line {r.line}: {r.cause.value}: {r.detail}" for r in s.shown]
    return "\n".join(lines) + "\n"


def _import(args: argparse.Namespace) -> int:
    if not 1 <= args.batch <= MAX_BATCH:
        print(f"error: --batch must be 1..{MAX_BATCH}, got {args.batch}", file=sys.stderr)
        return EXIT_USAGE
    try:
        tls = tls_from_args(args)
        source = open(args.file, "rb")  # noqa: SIM115 - closed below
    except (UsageError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with contextlib.ExitStack() as stack:
        stack.enter_context(source)
        rejects_writer = None
        if args.rejects:
            rejects_out = stack.enter_context(open(args.rejects, "w", newline="", encoding="utf-8"))
            rejects_writer = csv.writer(rejects_out)
            rejects_writer.writerow(["line", "cause", "detail"])

        def write_reject(r: Rejection) -> None:
            if rejects_writer is not None:
                rejects_writer.writerow([r.line, r.cause.value, r.detail])

        try:
            channel = stack.enter_context(open_channel(args.node, tls))
        except TlsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        admin = admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
        importer = Importer(admin, batch=args.batch, timeout=args.timeout, on_reject=write_reject)
        lines = CountedLines(source, args.encoding)
        progress = Progress(sys.stderr, os.fstat(source.fileno()).st_size, quiet=args.quiet)
        try:
            summary = importer.run(lines, progress, delimiter=args.delimiter)
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except NotConnected as exc:
            return not_connected(args.node, exc.error, tls, args.timeout)
    sys.stdout.write(format_summary(summary, rejects_file=args.rejects, encoding=args.encoding))
    return summary.exit_code


# ---------------------------------------------------------------------------- commands
def add_commands(sub: Any) -> None:
    imp = sub.add_parser(
        "import-csv",
        help="import a legacy invalidity list (card id, reason, date) at an authority",
        description="Rows: card id, reason (临时挂失/挂失/损坏/到期/换卡/注销/其他, the "
        "English name or the code 1-7), date (YYYY-MM-DD or YYYY-MM-DD HH:MM:SS in China "
        "time, or unix seconds); an optional header row; more columns are ignored, but for "
        "one the header names expires_at: the end time (a date; empty: the reason's default "
        "lapse period; none: no end time).",
    )
    imp.add_argument("file", type=Path, help="the CSV file")
    imp.add_argument("--node", required=True, metavar="ADDR", help="the authority's gRPC address")
    imp.add_argument(
        "--batch",
        type=int,
        default=DEFAULT_BATCH,
        help=f"rows per Admin.Revoke call, i.e. per signed delta (default {DEFAULT_BATCH:,})",
    )
    imp.add_argument(
        "--rejects", type=Path, metavar="FILE", help="write every rejected row here (CSV)"
    )
    imp.add_argument("--encoding", default="utf-8-sig", help="of the file (default utf-8-sig)")
    imp.add_argument("--delimiter", default=",", help="field separator (default ,)")
    imp.add_argument("--quiet", action="store_true", help="no progress line")
    add_connection_options(imp, timeout=120.0)
    imp.set_defaults(fn=_import)

    export_csv.add_command(sub)
