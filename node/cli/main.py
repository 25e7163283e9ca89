"""Command line: ``python -m node run --config FILE`` (also the ``blacklist-node`` script),
``keys generate``, ``tls init-ca`` / ``tls issue`` (mutual TLS, node/tls.py), ``demo`` (the national scenario), and ``up`` / ``down`` (a six-node
federation left running in the background); for operators ``status`` (node/cli/status.py) and
``import-csv`` / ``export-csv`` (node/cli/bulk.py)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from node.cli import bulk
from node.cli import card as card_cli
from node.cli import keys as keys_cli
from node.cli import offline_filter as filter_cli
from node.cli import status as status_cli
from node.cli import trust as trust_cli
from node.config import load_config
from node.configfields import ConfigError
from node.local import drill, scale
from node.tls import add_commands as add_tls_commands


def _run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from node.ports import PortInUse
    from node.server import serve
    from node.store_lock import StoreInUse

    try:
        asyncio.run(serve(config))
    except (StoreInUse, PortInUse) as exc:  # a second writer, a busy port (issue #13)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _up(args: argparse.Namespace) -> int:
    from node.local.up import up

    return up(args.dir)


def _down(args: argparse.Namespace) -> int:
    from node.local.up import down

    return down(args.dir)


def _edge(args: argparse.Namespace) -> int:
    from node.gateway import load_edge_config, serve_edge

    try:
        config = load_edge_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve_edge(config))
    except OSError as exc:  # a busy port or socket
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    parser = argparse.ArgumentParser(prog="python -m node")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a node")
    run.add_argument("--config", required=True, type=Path, help="the node's TOML config")
    run.set_defaults(fn=_run)
    edge = sub.add_parser("edge", help="an edge replica serving CardStatus to one gateway")
    edge.add_argument("--config", required=True, type=Path, help="the replica's TOML config")
    edge.set_defaults(fn=_edge)
    keys_cli.add_command(sub)  # keys init-root|generate|certify|revoke|publish
    add_tls_commands(sub)
    demo = sub.add_parser("demo", help="the national scenario: six nodes syncing, then stopped")
    demo.add_argument(
        "--suite",
        choices=("sm2-sm3", "ed25519"),
        default="sm2-sm3",
        help="every key's signing suite (default sm2-sm3, the national rules; ed25519: before)",
    )
    demo.set_defaults(fn=lambda a: __import__("node.local.demo", fromlist=["main"]).main(a.suite))
    state = "keys, configs, data, logs and federation.json (default: ./.federation)"
    up = sub.add_parser("up", help="start the six-node federation in the background")
    up.add_argument("--dir", type=Path, default=Path(".federation"), help=state)
    up.set_defaults(fn=_up)
    down = sub.add_parser("down", help="stop the federation that `up` started")
    down.add_argument("--dir", type=Path, default=Path(".federation"), help=state)
    down.set_defaults(fn=_down)
    status_cli.add_command(sub)  # status ADDR...: feed heads side by side (node/cli/status.py)
    bulk.add_commands(sub)  # import-csv, export-csv (node/cli/bulk.py)
    trust_cli.register_psam(sub)  # psam revoke|reinstate|show (node/cli/trust.py)
    card_cli.add_command(sub)  # card check|revoke|reinstate|entry (node/cli/card.py)
    filter_cli.add_command(
        sub
    )  # export-filter: the signed offline filter (node/cli/offline_filter.py)
    scale.add_commands(sub)  # scale-up, scale-down: replicas behind HAProxy (node/local/scale.py)
    drill.add_command(sub)  # scale-drill: kill -9 a replica under load (node/local/drill.py)
    args = parser.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
