"""``python -m node card check|revoke|reinstate|entry``: one card at a time, for people.

    python -m node card check CARD... --node ADDR [--ca F --cert F --key F]
    python -m node card revoke CARD... --reason LOSS [--effective TIME] --node ADDR ...
    python -m node card reinstate CARD... --node ADDR ...
    python -m node card entry CARD --node ADDR ...

So that nobody has to write a client to try the system: ``check`` asks CardStatus.CheckCard
(any node; a terminal certificate), ``revoke`` / ``reinstate`` ask Admin.Revoke /
Admin.Reinstate at the card's authority (an operator certificate of its region), ``entry``
asks Admin.GetEntry (what a node holds, by feed). ``--node`` is host:port, or the region
code of a node that ``make up`` started. Times print as ISO 8601 in UTC
(blacklist/isotime.py); ``--effective`` takes ISO 8601 with an offset, a date or unix
seconds (default: now, set by the node).

One line per card on stdout; errors on stderr say what to do (node/cli/diagnose.py). Exit code:
0 answered; 1 the node refused (a bad card id, a role or region it does not allow); 2 bad
usage (options, unreadable TLS files); 3 the node was not reached (nothing listening, TLS
required or not offered, no answer in time).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import grpc

from blacklist.entry import Reason
from blacklist.isotime import TimeTextError, iso8601, parse_time
from node.cli.client import (
    UsageError,
    add_connection_options,
    add_node_option,
    open_channel,
    resolve_node,
    tls_from_args,
)
from node.cli.diagnose import explain_error
from node.gen.blacklist.v1 import admin_pb2, admin_pb2_grpc, card_status_pb2, card_status_pb2_grpc
from node.gen.blacklist.v1 import types_pb2 as types
from node.tls import TlsError

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
DIGEST_SHOWN = 8  # hex digits of a feed head's digest, as `status` shows them


# ---------------------------------------------------------------------------- what is printed
def reason_name(reason: int) -> str:
    try:
        return str(types.Reason.Name(reason))
    except ValueError:
        return f"reason {reason}"


def _until(expires_at: int) -> str:
    """An entry's end time (issue #17: a temporary loss lapses by itself); 0 is none."""
    return f" until {iso8601(expires_at)}" if expires_at > 0 else ""


def check_line(reply: card_status_pb2.CheckCardResponse) -> str:
    status = types.CardStatusCode.Name(reply.status)
    feed = (
        f"feed {reply.publisher} v{reply.feed_version}, current {reply.feed_age_seconds:.1f} s ago"
    )
    if reply.status == types.REVOKED:
        return (
            f"{reply.card_id}  REVOKED  {reason_name(reply.reason)} since "
            f"{iso8601(reply.effective_time)}{_until(reply.expires_at)}  ({feed})"
        )
    if reply.status == types.UNKNOWN_ISSUER:
        return f"{reply.card_id}  UNKNOWN_ISSUER  (no publisher this node knows covers its region)"
    if reply.status == types.NO_DATA:
        return (
            f"{reply.card_id}  NO_DATA  (no copy of feed {reply.publisher} here: its authority "
            "has published nothing yet, or it has not arrived)"
        )
    return f"{reply.card_id}  {status}  ({feed})"


def entry_line(entry: types.Entry) -> str:
    return (
        f"{entry.card_id}  {reason_name(entry.reason)} since {iso8601(entry.effective_time)}"
        f"{_until(entry.expires_at)}  (feed {entry.publisher}, added in v{entry.version})"
    )


def published_line(verb: str, node: str, reply: admin_pb2.PublishResponse) -> str:
    if verb == "revoked":
        counts = f"{reply.added} added, {reply.changed} changed, {reply.unchanged} unchanged"
    else:
        counts = f"{reply.removed} reinstated, {reply.absent} were not revoked"
    return (
        f"{verb} at {node} ({counts}): feed {reply.publisher} is at version {reply.version}, "
        f"digest {bytes(reply.digest).hex()[:DIGEST_SHOWN]}"
    )


# ---------------------------------------------------------------------------- the calls
def _check(stub: Any, args: argparse.Namespace) -> list[str]:
    lines = []
    for card in args.cards:
        reply = stub.CheckCard(
            card_status_pb2.CheckCardRequest(card_id=card, terminal_id=args.terminal_id),
            timeout=args.timeout,
        )
        lines.append(check_line(reply))
    return lines


def _revoke(stub: Any, args: argparse.Namespace) -> list[str]:
    revocations = [
        admin_pb2.Revocation(
            card_id=card,
            reason=args.reason.name,
            effective_time=args.effective,
            expires_at=args.expires,
        )
        for card in args.cards
    ]
    reply = stub.Revoke(admin_pb2.RevokeRequest(revocations=revocations), timeout=args.timeout)
    return [published_line("revoked", args.node, reply)]


def _reinstate(stub: Any, args: argparse.Namespace) -> list[str]:
    request = admin_pb2.ReinstateRequest(card_ids=args.cards)
    reply = stub.Reinstate(request, timeout=args.timeout)
    return [published_line("reinstated", args.node, reply)]


def _entry(stub: Any, args: argparse.Namespace) -> list[str]:
    reply = stub.GetEntry(admin_pb2.GetEntryRequest(card_id=args.card), timeout=args.timeout)
    if not reply.found:
        return [f"{args.card}: on no list this node holds"]
    return [entry_line(e) for e in reply.entries]


Call = Callable[[Any, argparse.Namespace], list[str]]
# subcommand → (the call, the stub it needs, the certificate role it takes)
CALLS: dict[str, tuple[Call, Any, str]] = {
    "check": (_check, card_status_pb2_grpc.CardStatusStub, "terminal"),
    "revoke": (_revoke, admin_pb2_grpc.AdminStub, "operator"),
    "reinstate": (_reinstate, admin_pb2_grpc.AdminStub, "operator"),
    "entry": (_entry, admin_pb2_grpc.AdminStub, "operator"),
}


def main(args: argparse.Namespace) -> int:
    call, stub_class, role = CALLS[args.card_command]
    try:
        tls = tls_from_args(args)
        address = resolve_node(args.node, args.federation)
        if args.card_command == "revoke":
            text = args.reason.strip()
            args.reason = Reason.parse(int(text) if text.isdecimal() else text)
            args.effective = parse_time(args.effective) if args.effective else 0
            never = args.expires is not None and args.expires.strip().lower() == "never"
            args.expires = -1 if never else parse_time(args.expires) if args.expires else 0
        channel = open_channel(address, tls)
    except (UsageError, TlsError, TimeTextError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with channel:
            lines = call(stub_class(channel), args)
    except grpc.RpcError as exc:
        said = explain_error(
            address, exc, tls_given=tls is not None, role=role, timeout=args.timeout
        )
        print(f"error: {said.text}", file=sys.stderr)
        return EXIT_REFUSED if said.reached else EXIT_UNREACHABLE
    for line in lines:
        print(line)
    return EXIT_OK


def add_command(sub: Any) -> None:
    card = sub.add_parser(
        "card",
        help="check, revoke, reinstate or look up cards (one line per card)",
        description=__doc__.split("\n\n")[2] if __doc__ else None,
    )
    card_sub = card.add_subparsers(dest="card_command", required=True)
    layout = "32 characters: region (6 digits), middle part (10), serial (16 hex)"
    check = card_sub.add_parser("check", help="CardStatus.CheckCard: is it revoked? (any node)")
    check.add_argument("cards", nargs="+", metavar="CARD", help=layout)
    check.add_argument("--terminal-id", default="", help="sent along, for the node's audit")
    revoke = card_sub.add_parser("revoke", help="Admin.Revoke at the card's authority")
    revoke.add_argument("cards", nargs="+", metavar="CARD", help=layout)
    names = "/".join(r.name for r in Reason)
    revoke.add_argument("--reason", required=True, help=f"{names}, or its number")
    revoke.add_argument(
        "--effective",
        metavar="TIME",
        help="ISO 8601 with an offset (2026-12-04T10:00:00+08:00), a date, or unix seconds "
        "(default: now)",
    )
    revoke.add_argument(
        "--expires",
        metavar="TIME",
        help="when it lapses by itself (TEMPORARY_LOSS, OTHER), as --effective, or 'never' "
        "(default: the reason's period in the authority's config, if any)",
    )
    reinstate = card_sub.add_parser("reinstate", help="Admin.Reinstate at the card's authority")
    reinstate.add_argument("cards", nargs="+", metavar="CARD", help=layout)
    entry = card_sub.add_parser("entry", help="Admin.GetEntry: what a node holds for a card")
    entry.add_argument("card", metavar="CARD", help=layout)
    for command, what in (
        (check, "the node to ask"),
        (revoke, "the card's authority"),
        (reinstate, "the card's authority"),
        (entry, "the node to ask"),
    ):
        add_node_option(command, what)
        add_connection_options(command, timeout=10.0)
        command.set_defaults(fn=main)
