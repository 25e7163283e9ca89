"""``python -m node export-csv --node ADDR --prefix 4401 [-o FILE]``: a region's entries as
CSV, through a node's Admin API (ListEntries, page by page). The first page is asked for
before anything is written, so a failed export leaves stdout empty; a file is written
under a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import grpc

from blacklist.csvlist import REASON_NAMES_ZH, format_time
from blacklist.entry import Reason
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
from node.gen.blacklist.v1 import admin_pb2, admin_pb2_grpc
from node.tls import TlsError

EXIT_OK = 0
EXPORT_PAGE = 10_000  # ListEntries' largest page
# The end time comes last (issue #17): importers that read three columns still read it.
EXPORT_HEADER = ["card_id", "reason", "effective_time", "publisher", "version", "expires_at"]


def reason_text(reason: int, style: str) -> str:
    r = Reason(reason)
    if style == "zh":
        return REASON_NAMES_ZH[r]
    return str(int(r)) if style == "code" else r.name.lower()


def export_rows(
    admin: Any, prefix: str, *, page_size: int = EXPORT_PAGE, timeout: float = 60.0
) -> Iterator[Any]:
    """Every entry under ``prefix``, page by page (one page in memory at a time). The first
    page is asked for here, before anything is written: a node that cannot be reached or
    refuses raises :class:`NotConnected` while stdout is still empty."""

    def page(token: str) -> Any:
        request = admin_pb2.ListEntriesRequest(
            region_prefix=prefix, page_size=page_size, page_token=token
        )
        return admin.ListEntries(request, timeout=timeout)

    try:
        first = page("")
    except grpc.RpcError as exc:
        raise NotConnected(exc) from None

    def pages(response: Any) -> Iterator[Any]:
        while True:
            yield from response.entries
            if not response.next_page_token:
                return
            response = page(response.next_page_token)

    return pages(first)


def write_export(entries: Iterator[Any], out: IO[str], style: str) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORT_HEADER)
    n = 0
    for e in entries:
        writer.writerow(
            [
                e.card_id,
                reason_text(e.reason, style),
                format_time(e.effective_time),
                e.publisher,
                e.version,
                format_time(e.expires_at) if e.expires_at else "none",
            ]
        )
        n += 1
    return n


def _export(args: argparse.Namespace) -> int:
    try:
        tls = tls_from_args(args)
        channel = open_channel(args.node, tls)
    except (UsageError, TlsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    admin = admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
    try:
        entries = export_rows(admin, args.prefix, timeout=args.timeout)
    except NotConnected as exc:
        channel.close()
        return not_connected(args.node, exc.error, tls, args.timeout)
    # A file is written under a temporary name and renamed when complete, so a failed
    # export never leaves something that looks like a whole list.
    partial = args.output.with_name(args.output.name + ".partial") if args.output else None
    try:
        with channel:
            if partial is None:
                n = write_export(entries, sys.stdout, args.reasons)
                sys.stdout.flush()
            else:
                with open(partial, "w", newline="", encoding="utf-8") as out:
                    n = write_export(entries, out, args.reasons)
                partial.replace(args.output)
    except grpc.RpcError as exc:
        if partial is not None:
            partial.unlink(missing_ok=True)
        print(f"error: node {args.node}: {describe(exc)}", file=sys.stderr)
        return EXIT_UNREACHABLE if unreachable(exc) else EXIT_USAGE
    except BrokenPipeError:  # stdout closed early (`| head`): the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        return EXIT_OK
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"exported {n:,} entries under prefix {args.prefix or '(all)'}", file=sys.stderr)
    return EXIT_OK


def add_command(sub: Any) -> None:
    exp = sub.add_parser("export-csv", help="write the entries of a region prefix as CSV")
    exp.add_argument("--node", required=True, metavar="ADDR", help="any node's gRPC address")
    exp.add_argument(
        "--prefix", required=True, help="region prefix, 0-6 digits (e.g. 4401; '' for all)"
    )
    exp.add_argument("-o", "--output", type=Path, metavar="FILE", help="default: stdout")
    exp.add_argument(
        "--reasons",
        choices=("en", "zh", "code"),
        default="en",
        help="reason as English name, Chinese name or code (default en)",
    )
    add_connection_options(exp, timeout=60.0)
    exp.set_defaults(fn=_export)
