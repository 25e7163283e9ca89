"""How the operator tools (``status``, ``import-csv``, ``export-csv``) reach a node: a gRPC
channel in plain text, or mutual TLS with an operator certificate (node/tls.py), the same
three files for every tool."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from blacklist.sync.budget import message_options
from node.cli.diagnose import explain_error
from node.configfields import DEFAULT_MAX_MESSAGE_BYTES
from node.local.state import STATE_FILE, read_state
from node.tls import channel_credentials

# The nodes' default message limit (node/config.py max_message_bytes), both ways: a
# ListEntries page of 10,000 entries is well under it, gRPC's 4 MiB default is not far.
CHANNEL_OPTIONS = message_options(DEFAULT_MAX_MESSAGE_BYTES)
# Codes that mean "could not talk to the node", as opposed to "the node said no".
EXIT_USAGE, EXIT_UNREACHABLE = 2, 3  # every command's: bad usage, a node not reached
UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class UsageError(ValueError):
    """Options that do not go together; the message says what to give."""


@dataclass(frozen=True)
class ClientTls:
    ca: Path
    cert: Path
    key: Path


def add_connection_options(parser: argparse.ArgumentParser, timeout: float) -> None:
    tls = parser.add_argument_group(
        "mutual TLS (all three, or none for a node with plaintext = true)"
    )
    tls.add_argument("--ca", type=Path, help="the CA certificate that signed the node's")
    tls.add_argument(
        "--cert",
        type=Path,
        help="a client certificate: tls issue --role operator (Admin) or terminal (CardStatus)",
    )
    tls.add_argument("--key", type=Path, help="its private key")
    parser.add_argument(
        "--timeout", type=float, default=timeout, help=f"seconds per call (default {timeout:g})"
    )


def tls_from_args(args: argparse.Namespace) -> ClientTls | None:
    given = [args.ca, args.cert, args.key]
    if not any(given):
        return None
    if not all(given):
        raise UsageError("--ca, --cert and --key go together: give all three or none")
    return ClientTls(args.ca, args.cert, args.key)


def open_channel(address: str, tls: ClientTls | None) -> Any:
    """A grpc.Channel to ``address`` (TlsError if a TLS file cannot be read)."""
    if tls is None:
        return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
    credentials = channel_credentials(tls.ca, tls.cert, tls.key)
    return grpc.secure_channel(address, credentials, options=CHANNEL_OPTIONS)


def describe(error: grpc.RpcError) -> str:
    """``CODE: details`` of a failed call, on one line."""
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    name = code.name if code is not None else "ERROR"
    return f"{name}: {' '.join(str(details).split())}"


def unreachable(error: grpc.RpcError) -> bool:
    return hasattr(error, "code") and error.code() in UNREACHABLE


def resolve_node(text: str, federation: Path) -> str:
    """``host:port`` as given, or the address of region ``text`` (6 digits) in the federation
    that ``make up`` / ``python -m node up --dir federation`` started (its federation.json):
    `make up` picks free ports, so a walk-through can name nodes by region instead."""
    if ":" in text or not (len(text) == 6 and text.isascii() and text.isdigit()):
        return text
    try:
        records = read_state(federation)
    except FileNotFoundError:
        raise UsageError(
            f"--node {text}: a region code names a node of the federation `make up` started, "
            f"and {federation / STATE_FILE} does not exist; give host:port, or --federation DIR"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"unreadable {federation / STATE_FILE}: {exc}") from None
    for record in records:
        if record.region == text:
            return record.grpc
    regions = ", ".join(r.region for r in records)
    raise UsageError(f"--node {text}: no such node in {federation / STATE_FILE} ({regions})")


def add_node_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--node",
        required=True,
        metavar="ADDR",
        help=f"{what}: host:port, or the region code of a node `make up` started",
    )
    add_federation_option(parser)


def add_federation_option(parser: argparse.ArgumentParser) -> None:
    """``--federation DIR``: where a region code given for a node is looked up."""
    parser.add_argument(
        "--federation",
        type=Path,
        default=Path(".federation"),
        metavar="DIR",
        help="where `make up` keeps federation.json (default .federation)",
    )


class NotConnected(RuntimeError):
    """The first call (Status, or the first page of an export) failed: nothing was sent,
    read or written, so there is no summary to print and nothing to run again."""

    def __init__(self, error: grpc.RpcError) -> None:
        super().__init__(describe(error))
        self.error = error


def not_connected(address: str, error: grpc.RpcError, tls: ClientTls | None, timeout: float) -> int:
    """One line saying why the first call failed and what to do (node/cli/diagnose.py)."""
    said = explain_error(address, error, tls_given=tls is not None, timeout=timeout)
    print(f"error: {said.text}", file=sys.stderr)
    return EXIT_USAGE if said.reached else EXIT_UNREACHABLE
