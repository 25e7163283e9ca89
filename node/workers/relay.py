"""Admin and Sync calls that land on a worker process, forwarded to the writer process.

With ``workers = N`` every serving process listens on the node's one port (SO_REUSEPORT),
and the kernel hands each *connection* to one of them. Terminals' CheckCard calls are
answered where they land; Admin and Sync calls must reach the one process that writes.
So a worker relays them, byte for byte (no decoding), over a Unix socket that only the
writer listens on and only this node's user can connect to (mode 0600, in the data
directory).

Who called matters after the relay: the writer's Meter checks the caller's role
(node/grpc/calls.py) and the audit log names the caller. The worker sends the caller's TLS auth
context and peer address in metadata; the writer substitutes them for its own view of the
call, but only for calls that arrived on the Unix socket (a TCP client sending the same
metadata gets nothing from it). The writer then checks roles exactly as for a direct call.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import Counter

from node.gen.blacklist.v1 import admin_pb2, sync_pb2

FORWARDED_AUTH = "blacklist-forwarded-auth-bin"
FORWARDED_PEER = "blacklist-forwarded-peer"
SOCKET_NAME = "workers.sock"
_MAX_SUN_PATH = 100  # sockaddr_un.sun_path is 108 bytes on Linux, with room to spare
# Relayed services: (full name, {method: (client-streaming, server-streaming)}).
RELAYED: tuple[tuple[str, dict[str, tuple[bool, bool]]], ...] = tuple(
    (
        service.full_name,
        {m.name: (m.client_streaming, m.server_streaming) for m in service.methods},
    )
    for service in (
        admin_pb2.DESCRIPTOR.services_by_name["Admin"],
        sync_pb2.DESCRIPTOR.services_by_name["Sync"],
    )
)
# Client metadata that is the transport's, not the caller's, and is not copied.
_NOT_COPIED = ("user-agent", FORWARDED_AUTH, FORWARDED_PEER)


def socket_path(data_dir: Path) -> Path:
    """Where the writer listens for relayed calls: in the data directory if the path fits
    in a sockaddr_un, else in a fresh private directory."""
    path = data_dir / SOCKET_NAME
    if len(str(path)) <= _MAX_SUN_PATH:
        return path
    import tempfile

    return Path(tempfile.mkdtemp(prefix="blacklist-")) / SOCKET_NAME


def restrict(path: Path) -> None:
    """Only this user may connect (connect(2) on a Unix socket needs write permission)."""
    os.chmod(path, 0o600)


# ------------------------------------------------------------------ writer side
class ForwardedContext:
    """A servicer context whose caller is the one the relaying worker saw."""

    def __init__(self, context: Any, auth: dict[str, list[bytes]], peer: str) -> None:
        self._context = context
        self._auth = auth
        self._peer = peer

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth

    def peer(self) -> str:
        return self._peer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def encode_auth(auth: dict[str, Any]) -> bytes:
    return json.dumps(
        {k: [base64.b64encode(v).decode() for v in vs] for k, vs in auth.items()}
    ).encode()


def decode_auth(raw: bytes) -> dict[str, list[bytes]]:
    data = json.loads(raw)
    return {str(k): [base64.b64decode(v) for v in vs] for k, vs in data.items()}


def _caller_view(context: Any, metadata: dict[str, Any]) -> Any:
    """The context to hand the servicer: the relayed caller's for Unix-socket calls."""
    if not context.peer().startswith("unix:"):
        return context
    return ForwardedContext(
        context,
        decode_auth(bytes(metadata[FORWARDED_AUTH])),
        str(metadata.get(FORWARDED_PEER, context.peer())),
    )


class ForwardedCallers(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Installed on the writer's server when it has workers (node/server.py)."""

    def __init__(self) -> None:
        self._relayed = tuple(f"/{name}/" for name, _ in RELAYED)

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(self._relayed):
            return handler
        metadata = dict(details.invocation_metadata or ())
        if FORWARDED_AUTH not in metadata:
            return handler
        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def relayed_unary(request: Any, context: Any) -> Any:
                return await unary(request, _caller_view(context, metadata))

            return handler._replace(unary_unary=relayed_unary)
        if handler.unary_stream is not None:
            streaming = handler.unary_stream

            async def relayed_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                async for response in streaming(request, _caller_view(context, metadata)):
                    yield response

            return handler._replace(unary_stream=relayed_stream)
        if handler.stream_unary is not None:
            pushed = handler.stream_unary

            async def relayed_push(requests: Any, context: Any) -> Any:
                return await pushed(requests, _caller_view(context, metadata))

            return handler._replace(stream_unary=relayed_push)
        return handler


# ------------------------------------------------------------------ worker side
def _metadata(context: Any) -> list[tuple[str, Any]]:
    copied = [
        (k, v)
        for k, v in (context.invocation_metadata() or ())
        if not k.startswith((":", "grpc-")) and k not in _NOT_COPIED
    ]
    return [
        *copied,
        (FORWARDED_AUTH, encode_auth(context.auth_context() or {})),
        (FORWARDED_PEER, context.peer()),
    ]


async def _abort_as(context: Any, error: grpc.aio.AioRpcError) -> None:
    trailing = tuple(
        (k, v) for k, v in (error.trailing_metadata() or ()) if not k.startswith("grpc-")
    )
    await context.abort(error.code(), error.details() or "", trailing)


def relay_handlers(channel: grpc.aio.Channel, relayed: Counter) -> Sequence[Any]:
    """Generic handlers that relay every Admin and Sync method over ``channel`` (to the
    writer's Unix socket), requests and responses as raw bytes; ``relayed`` counts calls
    by method."""
    out = []
    for service, methods in RELAYED:
        handlers = {}
        for method, (client_streaming, server_streaming) in methods.items():
            path = f"/{service}/{method}"
            if client_streaming and not server_streaming:
                handlers[method] = grpc.stream_unary_rpc_method_handler(
                    _relay_once(channel.stream_unary(path), relayed.labels(method))
                )
            elif server_streaming and not client_streaming:
                handlers[method] = grpc.unary_stream_rpc_method_handler(
                    _relay_stream(channel.unary_stream(path), relayed.labels(method))
                )
            elif not client_streaming:
                handlers[method] = grpc.unary_unary_rpc_method_handler(
                    _relay_once(channel.unary_unary(path), relayed.labels(method))
                )
        out.append(grpc.method_handlers_generic_handler(service, handlers))
    return out


def _relay_once(call: Any, counted: Any) -> Callable[[Any, Any], Awaitable[bytes]]:
    """A call with one answer: unary, or client-streaming (PushSnapshot), whose request
    iterator is relayed part by part as it arrives."""

    async def relay(request: Any, context: Any) -> bytes:
        counted.inc()
        try:
            response: bytes = await call(
                request, metadata=_metadata(context), timeout=context.time_remaining()
            )
        except grpc.aio.AioRpcError as error:
            await _abort_as(context, error)
            raise  # not reached: abort raises
        return response

    return relay


def _relay_stream(call: Any, counted: Any) -> Callable[[bytes, Any], AsyncIterator[bytes]]:
    async def relay(request: bytes, context: Any) -> AsyncIterator[bytes]:
        counted.inc()
        stream = call(request, metadata=_metadata(context), timeout=context.time_remaining())
        try:
            async for response in stream:
                yield response
        except grpc.aio.AioRpcError as error:
            await _abort_as(context, error)
        finally:
            stream.cancel()  # the caller went away: so does the relayed stream

    return relay
