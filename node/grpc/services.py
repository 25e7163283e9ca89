"""The node's three gRPC services by full name, and CardStatus as every serving process adds
it: the writer (node/server.py) and each worker (node/workers/worker.py) alike, so the two
cannot drift and neither imports the other."""

from __future__ import annotations

import grpc

from blacklist.checker import Checker
from node.config import NodeConfig
from node.gen.blacklist.v1 import admin_pb2, card_status_pb2, card_status_pb2_grpc, sync_pb2
from node.grpc.calls import Meter
from node.grpc.servicers import CardStatusServicer
from node.metrics import NodeMetrics

SERVICES = {
    "CardStatus": card_status_pb2.DESCRIPTOR.services_by_name["CardStatus"].full_name,
    "Admin": admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
    "Sync": sync_pb2.DESCRIPTOR.services_by_name["Sync"].full_name,
}


def add_card_status(
    server: grpc.aio.Server, checker: Checker, metrics: NodeMetrics, config: NodeConfig
) -> None:
    """CardStatus, metered (and role-checked with TLS): in the writer and in each worker."""
    meter = Meter(metrics, enforce=config.tls)
    status = CardStatusServicer(checker, metrics, config.max_batch)
    for name in ("CheckCard", "BatchCheck"):
        setattr(status, name, meter.unary(SERVICES["CardStatus"], name, getattr(status, name)))
    status.CheckStream = meter.bidi(  # type: ignore[method-assign,assignment]
        SERVICES["CardStatus"], "CheckStream", status.CheckStream
    )
    card_status_pb2_grpc.add_CardStatusServicer_to_server(status, server)  # type: ignore[no-untyped-call]
