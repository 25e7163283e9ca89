"""The node's three gRPC services by full name, and CardStatus as every serving process adds
it: the writer (node/server.py) and each worker (node/workers/worker.py) alike, so the two
cannot drift and neither imports the other."""

from __future__ import annotations

import gc

import grpc

from blacklist.checker import Checker
from node.config import NodeConfig
from node.gen.blacklist.v1 import admin_pb2, card_status_pb2, card_status_pb2_grpc, sync_pb2
from node.grpc.calls import Meter
from node.grpc.card_status import CardStatusServicer
from node.grpc.edge import Edge
from node.metrics import NodeMetrics

SERVICES = {
    "CardStatus": card_status_pb2.DESCRIPTOR.services_by_name["CardStatus"].full_name,
    "Admin": admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
    "Sync": sync_pb2.DESCRIPTOR.services_by_name["Sync"].full_name,
}


def card_status_edge(metrics: NodeMetrics, config: NodeConfig) -> Edge:
    """The interceptor of a process that serves CardStatus alone (a worker: its Admin and
    Sync calls are relayed to the writer, which meters them)."""
    return Edge(Meter(metrics, enforce=config.tls), [SERVICES["CardStatus"]])


def add_card_status(
    server: grpc.aio.Server, checker: Checker, metrics: NodeMetrics, config: NodeConfig
) -> None:
    """CardStatus, in the writer and in each worker; the server's Edge interceptor meters
    it (and checks roles with TLS)."""
    status = CardStatusServicer(checker, metrics, config.max_batch)
    card_status_pb2_grpc.add_CardStatusServicer_to_server(status, server)  # type: ignore[no-untyped-call]


def settle_heap() -> None:
    """In the writer and in each worker, after start-up, before serving: move every object
    made so far (modules, the store's state, the servicers) out of the garbage collector's
    reach (gc.freeze, Python 3.7+). They live as long as the process; left in, each full
    collection walks all of them again while calls wait, a per-call cost an empty server
    does not pay (issue #15)."""
    gc.collect()
    gc.freeze()
