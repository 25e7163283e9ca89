"""`python -m node demo` — see node/demo.py. The node server and its CLI arrive with issue #3."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the end-to-end demo of the revocation core")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from node.demo import run

        return run()
    return 2


if __name__ == "__main__":
    sys.exit(main())
