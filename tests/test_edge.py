"""The Edge interceptor (node/grpc/edge.py): each method wrapped once by its kind, services
it does not cover left alone, and, on a real node's /metrics, every call timed and counted
once: one ``grpc_server_started``, one ``grpc_server_handled`` and one handling observation
per call, with ``blacklist_check_seconds`` the very same observations for CheckCard."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from prometheus_client import CollectorRegistry

from node.gen.blacklist.v1 import card_status_pb2
from node.grpc.calls import Meter
from node.grpc.edge import Edge
from node.metrics import NodeMetrics
from tests.node_harness import Metrics, NodeProcess, card_id, write_node

CARD_STATUS = "blacklist.v1.CardStatus"


# ---------------------------------------------------------------- the interceptor alone
async def _echo(request: Any, context: Any) -> Any:
    return request


async def _stream(request: Any, context: Any) -> Any:
    yield request


class Continuation:
    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.calls = 0

    async def __call__(self, details: Any) -> Any:
        self.calls += 1
        return self.handler


def _edge() -> tuple[Edge, NodeMetrics]:
    metrics = NodeMetrics(CollectorRegistry())
    return Edge(Meter(metrics), [CARD_STATUS]), metrics


def test_a_method_is_wrapped_once_and_reused() -> None:
    edge, metrics = _edge()
    cont = Continuation(grpc.unary_unary_rpc_method_handler(_echo))
    details = SimpleNamespace(method=f"/{CARD_STATUS}/CheckCard", invocation_metadata=())

    async def twice() -> tuple[Any, Any]:
        return await edge.intercept_service(cont, details), await edge.intercept_service(
            cont, details
        )

    first, second = asyncio.run(twice())
    assert first is second and cont.calls == 1
    assert first.unary_unary is not _echo
    context = SimpleNamespace(code=lambda: None, auth_context=lambda: {})
    assert asyncio.run(first.unary_unary("req", context)) == "req"
    labels = ("unary", CARD_STATUS, "CheckCard")
    assert metrics.started.labels(*labels)._value.get() == 1
    assert metrics.handled.labels(*labels, "OK")._value.get() == 1


def test_uncovered_services_and_unknown_methods_pass_through() -> None:
    edge, _ = _edge()
    handler = grpc.unary_unary_rpc_method_handler(_echo)
    cont = Continuation(handler)
    health = SimpleNamespace(method="/grpc.health.v1.Health/Check", invocation_metadata=())
    assert asyncio.run(edge.intercept_service(cont, health)) is handler
    assert asyncio.run(edge.intercept_service(cont, health)) is handler
    assert cont.calls == 2  # not cached: asked of gRPC each time, as without the Edge
    missing = Continuation(None)
    nothing = SimpleNamespace(method=f"/{CARD_STATUS}/NoSuch", invocation_metadata=())
    assert asyncio.run(edge.intercept_service(missing, nothing)) is None


def test_each_kind_gets_its_form() -> None:
    edge, _ = _edge()
    kinds = {
        "Unary": grpc.unary_unary_rpc_method_handler(_echo),
        "ServerStream": grpc.unary_stream_rpc_method_handler(_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(_echo),
        "Bidi": grpc.stream_stream_rpc_method_handler(_stream),
    }
    for name, handler in kinds.items():
        details = SimpleNamespace(method=f"/{CARD_STATUS}/{name}", invocation_metadata=())
        wrapped = asyncio.run(edge.intercept_service(Continuation(handler), details))
        assert (wrapped.request_streaming, wrapped.response_streaming) == (
            handler.request_streaming,
            handler.response_streaming,
        )
        behaviours = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
        changed = [b for b in behaviours if getattr(wrapped, b) is not getattr(handler, b)]
        assert len(changed) == 1, (name, changed)


# ---------------------------------------------------------------- a real node's /metrics
@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    files = write_node(tmp_path_factory.mktemp("edge") / "gz", "440100")
    with NodeProcess(files.config) as running:
        yield running


def _total(scrape: Metrics, name: str, **labels: str) -> float:
    """The sum of every sample ``name`` whose labels include ``labels`` (all status codes)."""
    return sum(v for have, v in scrape.samples.get(name, []) if labels.items() <= have.items())


def _settled(node: NodeProcess, before: Metrics, method: str, calls: int) -> Metrics:
    """The scrape once ``calls`` more calls of ``method`` are counted as handled (a status
    is counted just after the client has it)."""
    labels = {"grpc_service": CARD_STATUS, "grpc_method": method}
    deadline = time.monotonic() + 10
    while True:
        after = node.scrape()
        moved = _total(after, "grpc_server_handled_total", **labels) - _total(
            before, "grpc_server_handled_total", **labels
        )
        if moved >= calls or time.monotonic() > deadline:
            return after
        time.sleep(0.01)


def test_check_card_is_timed_and_counted_once_per_call(node: NodeProcess) -> None:
    calls = 7
    before = node.scrape()
    for _ in range(calls - 1):
        node.card_status.CheckCard(card_status_pb2.CheckCardRequest(card_id=card_id()))
    with pytest.raises(grpc.RpcError):
        node.card_status.CheckCard(card_status_pb2.CheckCardRequest(card_id="short"))
    node.health.Check(health_pb2.HealthCheckRequest(service=""))
    after = _settled(node, before, "CheckCard", calls)

    def moved(name: str, **labels: str) -> float:
        return after.get(name, **labels) - before.get(name, **labels)

    call = {"grpc_type": "unary", "grpc_service": CARD_STATUS, "grpc_method": "CheckCard"}
    assert moved("grpc_server_started_total", **call) == calls
    handled = _total(after, "grpc_server_handled_total", **call)
    assert handled - _total(before, "grpc_server_handled_total", **call) == calls
    assert moved("grpc_server_handling_seconds_count", **call) == calls
    # One timing: the check latency histogram is the handling histogram's CheckCard child.
    assert moved("blacklist_check_seconds_count") == calls
    assert after.value("blacklist_check_seconds_sum") == after.value(
        "grpc_server_handling_seconds_sum", **call
    )
    for le in ("1e-05", "0.0001", "0.001", "0.1", "+Inf"):
        assert after.value("blacklist_check_seconds_bucket", le=le) == after.value(
            "grpc_server_handling_seconds_bucket", le=le, **call
        )
    checks = _total(after, "blacklist_checks_total") - _total(before, "blacklist_checks_total")
    assert checks == calls - 1  # each answered card once, whatever its result
    # Health is not ours to meter.
    assert "Health" not in {
        labels.get("grpc_service", "").rpartition(".")[2]
        for labels, _ in after.samples.get("grpc_server_started_total", [])
    }


def test_batches_and_streams_are_one_call_each(node: NodeProcess) -> None:
    ids = [card_id() for _ in range(25)]
    before = node.scrape()
    node.card_status.BatchCheck(card_status_pb2.BatchCheckRequest(card_ids=ids))
    node.card_status.BatchCheck(card_status_pb2.BatchCheckRequest(packed_ids="".join(ids).encode()))
    answers = list(
        node.card_status.CheckStream(iter(card_status_pb2.CheckCardRequest(card_id=c) for c in ids))
    )
    assert len(answers) == len(ids)
    after = _settled(node, _settled(node, before, "BatchCheck", 2), "CheckStream", 1)

    def moved(name: str, **labels: str) -> float:
        return after.get(name, **labels) - before.get(name, **labels)

    batch = {"grpc_type": "unary", "grpc_service": CARD_STATUS, "grpc_method": "BatchCheck"}
    stream = {"grpc_type": "bidi_stream", "grpc_service": CARD_STATUS, "grpc_method": "CheckStream"}
    assert moved("grpc_server_started_total", **batch) == 2
    assert moved("grpc_server_handling_seconds_count", **batch) == 2
    assert moved("grpc_server_started_total", **stream) == 1
    assert moved("grpc_server_handling_seconds_count", **stream) == 1
    # Every card is counted once by its result; no call here is a CheckCard.
    checks = _total(after, "blacklist_checks_total") - _total(before, "blacklist_checks_total")
    assert checks == 3 * len(ids)
    assert moved("blacklist_check_seconds_count") == 0
