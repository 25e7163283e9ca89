"""The gRPC edge: each library error maps to one status code, and every method is metered
with go-grpc-prometheus names. Servicers raise; this module turns that into statuses.

With TLS the Meter is also the one place that decides who may call what: the caller's role
and region come from its client certificate (verified by gRPC in the handshake, read by
node/tls.py), and :data:`ALLOWED_ROLES` says which roles may call each method. Operators may
change only cards within their certificate's region (the node separately refuses cards out
of its own scope). In plain-text mode (``plaintext = true``, tests and demos only) there is
no certificate and no check: every caller may call everything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

import grpc

from blacklist.authority import OutOfScope
from blacklist.errors import CardIdError, CheckUnavailable, clipped
from blacklist.psam import PsamDenied, PsamIdError
from blacklist.rejections import DeltaRejected
from blacklist.sync.budget import TransferTooLarge
from blacklist.sync.chunks import SnapshotCorrupt, SnapshotTooLarge
from node.metrics import NodeMetrics
from node.tls import Identity, identity_of

log = logging.getLogger("node.rpc")


class InvalidRequest(ValueError):
    """A request that is malformed as a whole (empty, too large, unknown enum value)."""


class NotFound(LookupError):
    """A request for something this node does not hold (a snapshot of an unknown feed)."""


class NotAnAuthority(RuntimeError):
    """Admin writes on a node that has no signing key of its own."""


class CallerUnauthenticated(PermissionError):
    """A TLS call whose client certificate carries no role (node/tls.py)."""


class CallerNotPermitted(PermissionError):
    """A call outside the caller's role, or an operator's change outside its region."""


# Who may call what (service short name, method) → roles. A method not listed is refused to
# everyone: a new RPC is closed until someone decides who may call it. CardStatus is open to
# every role (issue #13's decision): an operator or a node sees no more through it than
# Admin.GetEntry or Sync already shows it, and a check is how an operator confirms a change.
# Health and reflection are not metered: any certificate of the CA may call them.
_ANY = frozenset({"terminal", "operator", "node"})
ALLOWED_ROLES: dict[tuple[str, str], frozenset[str]] = {
    ("CardStatus", "CheckCard"): _ANY,
    ("CardStatus", "BatchCheck"): _ANY,
    ("CardStatus", "CheckStream"): _ANY,
    **{("Admin", m): frozenset({"operator"})
       for m in ("Revoke", "Reinstate", "GetEntry", "ListEntries", "Status", "ListAudit",
                 "RevokePsam", "ReinstatePsam", "GetPsam", "PublishTrust")},
    **{("Sync", m): frozenset({"node"})
       for m in ("GetUpdates", "PushDeltas", "Subscribe", "GetSnapshot", "PushSnapshot",
                 "PushHeadStatements")},
}  # fmt: skip
# Writes an operator may make only within its certificate's region: the card ids of a request
# (or any text whose first six characters are a region code or a prefix of one).
Scoped = Callable[[Any], Iterable[str]]
SCOPED_CARDS: dict[tuple[str, str], Scoped] = {
    ("Admin", "Revoke"): lambda request: (r.card_id for r in request.revocations),
    ("Admin", "Reinstate"): lambda request: request.card_ids,
    ("Admin", "RevokePsam"): lambda request: (r.psam_id for r in request.revocations),
    ("Admin", "ReinstatePsam"): lambda request: request.psam_ids,
}


def _peer_certificate(context: Any) -> tuple[bool, dict[str, list[bytes]]]:
    """(whether the call came over TLS, its auth context)."""
    auth: dict[str, list[bytes]] = context.auth_context() or {}
    kinds = auth.get("transport_security_type") or []
    return bool(auth.get("x509_pem_cert")) or b"ssl" in kinds, auth


def caller_of(context: Any) -> str:
    """Who made a call, for the audit log (blacklist/audit.py): ``role:region:common-name``
    from a verified TLS client certificate, else ``plaintext:<peer address>``."""
    tls, auth = _peer_certificate(context)
    if not tls:
        return f"plaintext:{context.peer()}"
    identity = identity_of(auth)
    names = auth.get("x509_common_name") or [b""]
    name = names[0].decode(errors="replace")
    if identity is None:
        return f"unauthenticated::{name}"
    return f"{identity.role}:{identity.region}:{name}"


_SCOPED_NOUN = {32: "card", 22: "PSAM"}  # by length (blacklist/cardid.py, blacklist/psam.py)

# The first matching class wins (STYLE.md: one status code per error at the edge).
STATUS_OF: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (CardIdError, grpc.StatusCode.INVALID_ARGUMENT),
    (PsamIdError, grpc.StatusCode.INVALID_ARGUMENT),
    (PsamDenied, grpc.StatusCode.FAILED_PRECONDITION),
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (OutOfScope, grpc.StatusCode.PERMISSION_DENIED),
    (CallerUnauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (CallerNotPermitted, grpc.StatusCode.PERMISSION_DENIED),
    (NotAnAuthority, grpc.StatusCode.FAILED_PRECONDITION),
    (DeltaRejected, grpc.StatusCode.FAILED_PRECONDITION),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    # Fail closed (issue #11 item 9): a check that could not be confirmed is an error the
    # terminal retries, never an answer.
    (CheckUnavailable, grpc.StatusCode.UNAVAILABLE),
    # Transfers (issue #11): over a size limit, or damaged in transit (a checksum).
    (SnapshotTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (TransferTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (SnapshotCorrupt, grpc.StatusCode.DATA_LOSS),
)
# The one cap on what a status carries back: the messages name values cut short already
# (blacklist.errors.shown); this catches any that does not, under gRPC's 8 KiB metadata.
MAX_DETAIL = 1024


def detail_of(exc: BaseException) -> str:
    text = str(exc)
    if len(text) <= MAX_DETAIL:
        return text
    return f"{text[:MAX_DETAIL]}... ({len(text)} characters in all)"


def status_of(exc: BaseException) -> grpc.StatusCode | None:
    for kind, code in STATUS_OF:
        if isinstance(exc, kind):
            return code
    return None


Req = TypeVar("Req")
Resp = TypeVar("Resp")
Unary = Callable[[Req, Any], Awaitable[Resp]]
Streaming = Callable[[AsyncIterator[Req], Any], AsyncIterator[Resp]]
ServerStreaming = Callable[[Req, Any], AsyncIterator[Resp]]
ClientStreaming = Callable[[AsyncIterator[Req], Any], Awaitable[Resp]]


class Meter:
    """Wraps servicer methods with metrics, the error → status mapping and, when ``enforce``
    (the node serves TLS), the role check of :data:`ALLOWED_ROLES`."""

    def __init__(
        self,
        metrics: NodeMetrics,
        *,
        enforce: bool = False,
        scoped: Mapping[tuple[str, str], Scoped] | None = None,
    ) -> None:
        self._m = metrics
        self._enforce = enforce
        # SCOPED_CARDS, plus scopes only the node can name (PublishTrust: whose key a key
        # revocation names is known from the node's trust state, node/grpc/admin_trust.py).
        self._scoped = {**SCOPED_CARDS, **(scoped or {})}

    def _authorize(self, service: str, method: str, request: Any, context: Any) -> None:
        """Raise CallerUnauthenticated / CallerNotPermitted (counted) unless the caller's
        certificate allows this call."""
        if not self._enforce:
            return
        key = (service.rpartition(".")[2], method)
        where = f"{key[0]}/{method}"
        identity: Identity | None = identity_of(context.auth_context())
        if identity is None:
            self._m.denied.labels("unauthenticated", method).inc()
            raise CallerUnauthenticated(
                f"{where}: the client certificate carries no blacklist role"
            )
        if identity.role not in ALLOWED_ROLES.get(key, frozenset()):
            self._m.denied.labels("permission_denied", method).inc()
            raise CallerNotPermitted(f"role {identity.role!r} may not call {where}")
        scoped = self._scoped.get(key)
        if scoped is not None and request is not None:
            for card_id in scoped(request):
                if not identity.covers(card_id):
                    self._m.denied.labels("permission_denied", method).inc()
                    what = _SCOPED_NOUN.get(len(card_id), "region")
                    raise CallerNotPermitted(
                        f"role {identity.role!r} of region {identity.region} may not call "
                        f"{where} for {what} {clipped(card_id)}: outside the certificate's region"
                    )

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
        await context.abort(code, detail_of(exc))

    def _count(self, labels: tuple[str, str, str], context: Any, ok: Any, failed: bool) -> None:
        if failed:
            return  # counted by _fail
        code = context.code()
        if code is None or code == grpc.StatusCode.OK:
            ok.inc()
        else:
            self._m.handled.labels(*labels, code.name).inc()

    def client_stream(
        self, service: str, method: str, fn: ClientStreaming[Req, Resp]
    ) -> ClientStreaming[Req, Resp]:
        """A client-streaming method (PushSnapshot), metered as ``client_stream``."""
        return self.unary(service, method, fn, kind="client_stream")

    def unary(
        self, service: str, method: str, fn: Unary[Req, Resp], kind: str = "unary"
    ) -> Unary[Req, Resp]:
        started, handling, ok = self._children(service, method, kind)
        labels = (kind, service, method)
        where = f"{service}/{method}"

        async def metered(request: Req, context: Any) -> Resp:
            started.inc()
            t0 = time.perf_counter()
            failed = False
            try:
                self._authorize(service, method, request, context)
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
                self._authorize(service, method, None, context)
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

    def guard(
        self, service: str, method: str, fn: ServerStreaming[Req, Resp]
    ) -> ServerStreaming[Req, Resp]:
        """The role check and the error → status mapping, for the server-streaming Sync
        methods (not metered): an error raised while streaming is its status, not UNKNOWN."""
        where = f"{service}/{method}"

        async def guarded(request: Req, context: Any) -> AsyncIterator[Resp]:
            try:
                self._authorize(service, method, request, context)
                async for response in fn(request, context):
                    yield response
            except (grpc.aio.AbortError, asyncio.CancelledError, GeneratorExit):
                raise
            except Exception as exc:
                code = status_of(exc)
                if code is None:
                    log.exception("%s failed", where)
                    await context.abort(
                        grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}"
                    )
                await context.abort(code, detail_of(exc))

        return guarded
