"""The gRPC edge: each library error maps to one status code, and every method is metered
with go-grpc-prometheus names. Servicers raise; this module turns that into statuses."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from blacklist.authority import OutOfScope
from blacklist.errors import CardIdError
from blacklist.rejections import DeltaRejected
from node.metrics import NodeMetrics

log = logging.getLogger("node.rpc")


class InvalidRequest(ValueError):
    """A request that is malformed as a whole (empty, too large, unknown enum value)."""


class NotAnAuthority(RuntimeError):
    """Admin writes on a node that has no signing key of its own."""


# The first matching class wins (STYLE.md: one status code per error at the edge).
STATUS_OF: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (CardIdError, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (OutOfScope, grpc.StatusCode.PERMISSION_DENIED),
    (NotAnAuthority, grpc.StatusCode.FAILED_PRECONDITION),
    (DeltaRejected, grpc.StatusCode.FAILED_PRECONDITION),
)


def status_of(exc: BaseException) -> grpc.StatusCode | None:
    for kind, code in STATUS_OF:
        if isinstance(exc, kind):
            return code
    return None


Req = TypeVar("Req")
Resp = TypeVar("Resp")
Unary = Callable[[Req, Any], Awaitable[Resp]]
Streaming = Callable[[AsyncIterator[Req], Any], AsyncIterator[Resp]]


class Meter:
    """Wraps servicer methods with metrics and the error → status mapping."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self._m = metrics

    def _children(self, service: str, method: str, kind: str) -> tuple[Any, Any, Any]:
        labels = (kind, service, method)
        return (
            self._m.started.labels(*labels),
            self._m.handling.labels(*labels),
            self._m.handled.labels(*labels, "OK"),
        )

    async def _fail(
        self, exc: BaseException, context: Any, where: str, labels: tuple[str, str, str]
    ) -> None:
        code = status_of(exc)
        # Count before aborting: abort() sends the status to the client before it raises,
        # and a scrape right after the client's answer must already see it.
        self._m.handled.labels(*labels, (code or grpc.StatusCode.INTERNAL).name).inc()
        if code is None:
            log.exception("%s failed", where)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")
        await context.abort(code, str(exc))

    def _count(self, labels: tuple[str, str, str], context: Any, ok: Any, failed: bool) -> None:
        if failed:
            return  # counted by _fail
        code = context.code()
        if code is None or code == grpc.StatusCode.OK:
            ok.inc()
        else:
            self._m.handled.labels(*labels, code.name).inc()

    def unary(self, service: str, method: str, fn: Unary[Req, Resp]) -> Unary[Req, Resp]:
        started, handling, ok = self._children(service, method, "unary")
        labels = ("unary", service, method)
        where = f"{service}/{method}"

        async def metered(request: Req, context: Any) -> Resp:
            started.inc()
            t0 = time.perf_counter()
            failed = False
            try:
                return await fn(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # mapped to a status, or INTERNAL and logged
                failed = True
                await self._fail(exc, context, where, labels)
                raise
            finally:
                handling.observe(time.perf_counter() - t0)
                self._count(labels, context, ok, failed)

        return metered

    def bidi(self, service: str, method: str, fn: Streaming[Req, Resp]) -> Streaming[Req, Resp]:
        started, handling, ok = self._children(service, method, "bidi_stream")
        labels = ("bidi_stream", service, method)
        where = f"{service}/{method}"

        async def metered(requests: AsyncIterator[Req], context: Any) -> AsyncIterator[Resp]:
            started.inc()
            t0 = time.perf_counter()
            failed = False
            try:
                async for response in fn(requests, context):
                    yield response
            except grpc.aio.AbortError:
                raise
            except (asyncio.CancelledError, GeneratorExit):
                # The client went away mid-stream: not an OK stream, whatever code() says.
                failed = True
                self._m.handled.labels(*labels, grpc.StatusCode.CANCELLED.name).inc()
                raise
            except Exception as exc:
                failed = True
                await self._fail(exc, context, where, labels)
                raise
            finally:
                handling.observe(time.perf_counter() - t0)
                self._count(labels, context, ok, failed)

        return metered
