"""The edge of every blacklist.v1 call, as one server interceptor: metering, the error →
status mapping and, with TLS, the role check (node/grpc/calls.py's :class:`Meter` does each
of them; this decides which applies to what).

Why an interceptor rather than wrapping servicer methods one by one (issue #15): the
servicers register as they are, every method of a covered service gets the same treatment
without a list to keep in step with the .proto, and a method added to a service is metered
and closed to every role (ALLOWED_ROLES) the day it is added. Each call is timed once and
counted once, here; handlers do not time themselves.

What a call gets follows its kind, read from the handler gRPC found (one metered form each):

    unary → unary, client-streaming → client_stream, bidi → bidi_stream   metered
    server-streaming (Sync.Subscribe, Sync.GetSnapshot)                   role check and
                                                                           status mapping only

Services outside ``services`` (health, reflection, a worker's relay of Admin and Sync to
the writer, which meters them itself) pass through untouched. The wrapped handler of each
method is built once and reused; so this must be the last interceptor of the server (it does
not call the continuation again for a method it has seen), after ForwardedCallers
(node/workers/relay.py), which must see the call first to substitute the relayed caller.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc

from node.grpc.calls import Meter


class Edge(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, meter: Meter, services: Iterable[str]) -> None:
        self._meter = meter
        self._services = frozenset(services)  # full names, "blacklist.v1.CardStatus"
        self._handlers: dict[str, Any] = {}  # "/service/method" → the wrapped handler

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        method: str = details.method
        handler = self._handlers.get(method)
        if handler is not None:
            return handler
        handler = await continuation(details)
        service, _, name = method[1:].rpartition("/")
        if handler is None or service not in self._services:
            return handler
        handler = self._handlers[method] = self._wrap(service, name, handler)
        return handler

    def _wrap(self, service: str, name: str, handler: Any) -> Any:
        meter = self._meter
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=meter.unary(service, name, handler.unary_unary))
        if handler.stream_unary is not None:
            return handler._replace(
                stream_unary=meter.client_stream(service, name, handler.stream_unary)
            )
        if handler.stream_stream is not None:
            return handler._replace(stream_stream=meter.bidi(service, name, handler.stream_stream))
        return handler._replace(unary_stream=meter.guard(service, name, handler.unary_stream))
