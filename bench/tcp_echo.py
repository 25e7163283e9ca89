"""The floor of `make bench-compare` (issue #6): a raw TCP echo server in its own process.

Every byte a connection sends comes straight back: no framing, no parsing, one asyncio
protocol callback per read. It is driven by ``redis-benchmark`` (a C client, like h2load),
whose requests are RESP arrays (``*2 $4 ECHO $32 <card id>``, 59 bytes); the echoed bytes
parse as a RESP array reply, so redis-benchmark counts and times each round trip as if a
server had answered it. What it measures is the loopback round trip plus the least a
Python server process can do per message.

    python -m bench.tcp_echo [--listen 127.0.0.1:0]

prints ``READY {"tcp": "127.0.0.1:PORT"}`` when serving; SIGTERM or SIGINT stops it (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def serve(listen: str) -> None:
    host, _, port = listen.rpartition(":")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, host, int(port))
    bound = server.sockets[0].getsockname()[1]
    print("READY " + json.dumps({"tcp": f"{host}:{bound}"}), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tcp_echo")
    parser.add_argument("--listen", default="127.0.0.1:0", help="host:port (port 0: any free)")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.listen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
