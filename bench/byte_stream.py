"""The baseline of the catch-up benchmark (bench/test_catch_up.py): the same bytes a child
pulls, copied over one raw gRPC server stream by a process that does nothing else.

    python -m bench.byte_stream FILE [--listen 127.0.0.1:0] [--chunk BYTES]

serves ``/bench.ByteStream/Read`` (any request; answers FILE in ``--chunk``-byte messages,
raw bytes, no protobuf), with the node's default message limit; prints
``READY {"grpc": "127.0.0.1:PORT"}`` when serving; SIGTERM or SIGINT stops it (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from bench.empty_server import serve_until_signalled

METHOD = "/bench.ByteStream/Read"
MAX_MESSAGE = 16 << 20  # node/config.py DEFAULT_MAX_MESSAGE_BYTES (bench/test_catch_up.py checks)


async def serve(path: Path, listen: str, chunk: int) -> None:
    data = path.read_bytes()

    async def read(request: bytes, context: Any) -> AsyncIterator[bytes]:
        for i in range(0, len(data), chunk):
            yield data[i : i + chunk]

    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
        ]
    )
    handler = grpc.unary_stream_rpc_method_handler(read)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("bench.ByteStream", {"Read": handler})]
    )
    await serve_until_signalled(server, listen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.byte_stream")
    parser.add_argument("file", type=Path)
    parser.add_argument("--listen", default="127.0.0.1:0", help="host:port (port 0: any free)")
    parser.add_argument("--chunk", type=int, default=1 << 20, help="bytes per message")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.file, args.listen, args.chunk))
    return 0


if __name__ == "__main__":
    sys.exit(main())
