"""Operator commands that talk to a running authority about trust (DESIGN §6)::

    python -m node keys publish --node ADDR [--ca --cert --key] 440100.crt 440100-1.rev
    python -m node psam revoke --node ADDR [tls] --reason loss 4401000123456789ABCDEF ...
    python -m node psam reinstate --node ADDR [tls] 4401000123456789ABCDEF ...
    python -m node psam show --node ADDR [tls] 4401000123456789ABCDEF

``keys publish`` sends certificates and key revocations this authority issued (``keys
certify`` / ``keys revoke`` files) in its feed, so every node learns them without a config
change or restart. The ``psam`` commands manage the PSAM deny list of the authority's scope.
Exit status 0 on success, 1 when the node refused (its status and message printed), 2 for
bad usage or an unreadable file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import grpc

from blacklist.certs import decode_trust_record
from blacklist.entry import Reason
from blacklist.errors import CodecError
from blacklist.isotime import TimeTextError, iso8601, parse_time
from node.cli.client import ClientTls, open_channel
from node.gen.blacklist.v1 import admin_pb2, admin_pb2_grpc
from node.tls import TlsError

TIMEOUT = 30.0


class UsageError(Exception):
    pass


def _tls_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--node", required=True, help="the authority's gRPC address host:port")
    parser.add_argument("--ca", type=Path, help="CA certificate (mutual TLS: all three)")
    parser.add_argument("--cert", type=Path, help="an operator certificate")
    parser.add_argument("--key", type=Path, help="its private key")


def _admin(args: argparse.Namespace) -> Any:
    files = [args.ca, args.cert, args.key]
    if any(files) and not all(files):
        raise UsageError("--ca, --cert and --key go together: give all three or none")
    channel = open_channel(args.node, ClientTls(*files) if all(files) else None)
    return admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]


def _publish(args: argparse.Namespace) -> str:
    records = []
    for path in args.files:
        try:
            data = Path(path).read_bytes()
            record = decode_trust_record(data)
        except (OSError, CodecError) as exc:
            raise UsageError(f"{path}: {exc}") from None
        records.append(data)
        print(f"{path}: {record.label}")
    answer = _admin(args).PublishTrust(
        admin_pb2.PublishTrustRequest(records=records), timeout=TIMEOUT
    )
    if not answer.added:
        return f"nothing new: feed {answer.publisher} stays at version {answer.version}"
    return f"published {answer.added} record(s) in feed {answer.publisher} version {answer.version}"


def _revoke_psams(args: argparse.Namespace) -> str:
    try:
        reason = Reason.parse(args.reason)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    request = admin_pb2.RevokePsamRequest(
        revocations=[
            admin_pb2.PsamRevocation(psam_id=p, reason=int(reason), effective_time=args.at)  # type: ignore[arg-type]
            for p in args.psams
        ]
    )
    answer = _admin(args).RevokePsam(request, timeout=TIMEOUT)
    return f"denied {answer.added} PSAM(s); feed {answer.publisher} version {answer.version}"


def _reinstate_psams(args: argparse.Namespace) -> str:
    answer = _admin(args).ReinstatePsam(
        admin_pb2.ReinstatePsamRequest(psam_ids=args.psams), timeout=TIMEOUT
    )
    return (
        f"lifted {answer.removed} denial(s), {answer.absent} not denied; "
        f"feed {answer.publisher} version {answer.version}"
    )


def _effective(text: str) -> int:
    try:
        return parse_time(text)
    except TimeTextError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _show_psam(args: argparse.Namespace) -> str:
    answer = _admin(args).GetPsam(admin_pb2.GetPsamRequest(psam_id=args.psam), timeout=TIMEOUT)
    if not answer.denied:
        return f"{args.psam}: not denied"
    e = answer.entry
    return (
        f"{e.card_id}: denied by {e.publisher} ({Reason(e.reason).name.lower()}, "
        f"since {iso8601(e.effective_time)}, feed version {e.version})"
    )


def _run(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            print(fn(args))
        except (UsageError, TlsError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "ERROR"
            details = exc.details() if hasattr(exc, "details") else str(exc)
            print(f"refused: {code}: {details}", file=sys.stderr)
            return 1
        return 0

    return run


def register_publish(keys_sub: Any) -> None:
    """``keys publish``."""
    pub = keys_sub.add_parser(
        "publish", help="publish certificates / key revocations in the authority's feed"
    )
    _tls_options(pub)
    pub.add_argument(
        "files", nargs="+", type=Path, help=".crt and .rev files this authority issued"
    )
    pub.set_defaults(fn=_run(_publish))


def register_psam(sub: Any) -> None:
    """``psam revoke | reinstate | show``."""
    psam = sub.add_parser("psam", help="the PSAM deny list of an authority")
    psam_sub = psam.add_subparsers(dest="psam_command", required=True)
    revoke = psam_sub.add_parser("revoke", help="deny PSAMs (22-character ids)")
    _tls_options(revoke)
    revoke.add_argument("--reason", required=True, help="loss, damaged, cancelled, other, ...")
    revoke.add_argument(
        "--at",
        type=_effective,
        default=0,
        help="effective time: ISO 8601 with an offset, a date or unix seconds (default now)",
    )
    revoke.add_argument("psams", nargs="+")
    revoke.set_defaults(fn=_run(_revoke_psams))
    reinstate = psam_sub.add_parser("reinstate", help="lift PSAM denials")
    _tls_options(reinstate)
    reinstate.add_argument("psams", nargs="+")
    reinstate.set_defaults(fn=_run(_reinstate_psams))
    show = psam_sub.add_parser("show", help="whether a PSAM is denied, and by whom")
    _tls_options(show)
    show.add_argument("psam")
    show.set_defaults(fn=_run(_show_psam))
