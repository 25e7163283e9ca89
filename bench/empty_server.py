"""The baseline of the node benchmarks (issue #3): a grpc.aio server that does nothing.

It serves the same methods as the node (`/blacklist.v1.CardStatus/*`), through the same
generated servicer base class and with the same server options, in its own process, but each
handler returns an empty answer without looking at the request: no store, no metrics, no
error mapping. What the node reaches against it is the share of the framework's cost that
our code adds to.

    python -m bench.empty_server [--listen 127.0.0.1:0]

prints ``READY {"grpc": "127.0.0.1:PORT"}`` when serving; SIGTERM or SIGINT stops it (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc

from node.gen.blacklist.v1 import card_status_pb2, card_status_pb2_grpc

# node/server.py's limit (bench/test_node.py checks that they agree); not imported from
# there, so that this process loads grpc and the stubs only.
MAX_MESSAGE = 16 * 1024 * 1024
EMPTY = card_status_pb2.CheckCardResponse()


class EmptyCardStatus(card_status_pb2_grpc.CardStatusServicer):
    async def CheckCard(
        self, request: card_status_pb2.CheckCardRequest, context: Any
    ) -> card_status_pb2.CheckCardResponse:
        return EMPTY

    async def BatchCheck(
        self, request: card_status_pb2.BatchCheckRequest, context: Any
    ) -> card_status_pb2.BatchCheckResponse:
        # The count only: what the node answers for a batch of valid cards, minus the checks.
        return card_status_pb2.BatchCheckResponse(count=len(request.card_ids))

    async def CheckStream(
        self, request_iterator: AsyncIterator[card_status_pb2.CheckCardRequest], context: Any
    ) -> AsyncIterator[card_status_pb2.CheckCardResponse]:
        async for _ in request_iterator:
            yield EMPTY


async def serve(listen: str) -> None:
    # The node's options (node/server.py), so that only the handlers differ.
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.so_reuseport", 0),
        ]
    )
    card_status_pb2_grpc.add_CardStatusServicer_to_server(EmptyCardStatus(), server)  # type: ignore[no-untyped-call]
    await serve_until_signalled(server, listen)


async def serve_until_signalled(server: Any, listen: str) -> None:
    """Bind ``listen``, start, print the READY line the benchmarks wait for (with the port
    chosen when it was 0), and serve until SIGTERM or SIGINT."""
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    host = listen.rpartition(":")[0]
    print("READY " + json.dumps({"grpc": f"{host}:{port}"}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.empty_server")
    parser.add_argument("--listen", default="127.0.0.1:0", help="host:port (port 0: any free)")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.listen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
