"""``python -m node edge --config FILE``: an edge replica (blacklist/edge) served to the card
readers of one gateway (前置机) that cannot embed Python, on a local TCP port or a UNIX
socket, with the CardStatus API of a node (CheckCard, BatchCheck, CheckStream, the same
messages; the Edge interceptor of node/grpc/edge.py maps errors to the same statuses).

One process per gateway: it follows its upstreams as a read-only child, verifying
everything against the pinned root, and answers from its own LMDB, so the readers keep
their answers while the link is down. With ``max_feed_age`` an answer from a copy older
than that says STALE (types.proto), with ``copy_status`` saying what the copy holds.

Config (TOML; paths relative to the file)::

    data_dir = "edge-data"                   # the replica's LMDB
    listen = "unix:/run/blacklist-edge.sock" # or "127.0.0.1:7001"
    upstreams = ["10.0.0.2:50051"]           # failover order
    trust_anchor = "keys/root.pub"           # the pinned ministry root public key
    certificate_chains = []                  # optional; the rest arrive in feeds
    key_revocations = []
    tls_ca = "tls/ca.crt"                    # mutual TLS to the upstream (a node certificate)
    tls_cert = "tls/edge.crt"
    tls_key = "tls/edge.key"
    max_feed_age = 3600.0                    # seconds; absent: never STALE
    sync_interval = 5.0
    max_batch = 10000
    # plaintext = true with trusted_keys = [...]: tests and demos only
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry

from blacklist.checker import BatchResult
from blacklist.edge import EdgeReplica, EdgeStatus, EdgeTls
from blacklist.edge.answer import batch_of
from blacklist.sync.budget import TransferLimits, message_options
from node.configfields import ConfigError, boolean, integer, seconds
from node.configrules import address
from node.gen.blacklist.v1 import card_status_pb2, card_status_pb2_grpc, types_pb2
from node.grpc.calls import Meter
from node.grpc.card_status import CardStatusServicer
from node.grpc.edge import Edge
from node.grpc.services import SERVICES
from node.keyfiles import (
    KeyFileError,
    load_certificate_chain,
    load_revocation,
    load_trust_anchor,
    load_trusted_keys,
)
from node.metrics import NodeMetrics

log = logging.getLogger("node.edge")
FIELDS = {
    "data_dir", "listen", "upstreams", "trust_anchor", "certificate_chains", "key_revocations",
    "trusted_keys", "plaintext", "tls_ca", "tls_cert", "tls_key", "max_feed_age",
    "sync_interval", "max_batch", "map_size_gib", "max_message_bytes",
}  # fmt: skip
STALE = types_pb2.CardStatusCode.Value("STALE")


@dataclass(frozen=True)
class EdgeConfig:
    data_dir: Path
    listen: str  # "unix:/path" or "host:port"
    upstreams: tuple[str, ...]
    trust: dict[str, Any] = field(default_factory=dict)  # EdgeReplica.open's trust arguments
    tls: EdgeTls | None = None
    max_feed_age: float | None = None
    sync_interval: float = 5.0
    max_batch: int = 10_000
    map_size_gib: int = 64
    max_message_bytes: int = 16 << 20


def _paths(data: dict[str, Any], name: str, base: Path) -> list[Path]:
    value = data.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"config field {name!r} must be a list of paths, got {value!r}")
    return [base / v for v in value]


def _trust(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """The trust arguments, files read now (a file that cannot be read: ConfigError)."""
    anchor = data.get("trust_anchor")
    try:
        if anchor is None:
            if not data.get("plaintext") or not data.get("trusted_keys"):
                raise ConfigError(
                    "config field 'trust_anchor' is required (bare 'trusted_keys' only with "
                    "plaintext = true, for tests)"
                )
            return {"trusted_keys": load_trusted_keys(_paths(data, "trusted_keys", base))}
        if not isinstance(anchor, str):
            raise ConfigError(f"config field 'trust_anchor' must be a path, got {anchor!r}")
        chains = data.get("certificate_chains", [])
        if not isinstance(chains, list):
            raise ConfigError("config field 'certificate_chains' must be a list of path lists")
        return {
            "trust_anchor": load_trust_anchor(base / anchor),
            "certificate_chains": [
                load_certificate_chain(_paths({"c": c}, "c", base)) for c in chains
            ],
            "key_revocations": [load_revocation(p) for p in _paths(data, "key_revocations", base)],
        }
    except KeyFileError as exc:
        raise ConfigError(str(exc)) from None


def _listen(data: dict[str, Any], base: Path) -> str:
    value = data.get("listen")
    if isinstance(value, str) and value.startswith("unix:") and len(value) > 5:
        path = Path(value[5:])
        return f"unix:{path if path.is_absolute() else base / path}"
    return address(data, "listen")


def parse_edge_config(data: dict[str, Any], base: Path) -> EdgeConfig:
    unknown = set(data) - FIELDS
    if unknown:
        raise ConfigError(f"unknown config field(s): {', '.join(sorted(unknown))}")
    data_dir = data.get("data_dir")
    if not isinstance(data_dir, str) or not data_dir:
        raise ConfigError("config field 'data_dir' is required (a directory path)")
    upstreams = data.get("upstreams")
    if not isinstance(upstreams, list) or not upstreams:
        raise ConfigError(f"config field 'upstreams' must list host:port, got {upstreams!r}")
    tls_paths = [data.get(n) for n in ("tls_ca", "tls_cert", "tls_key")]
    plaintext = boolean(data, "plaintext", False)
    if any(tls_paths) and not all(isinstance(p, str) for p in tls_paths):
        raise ConfigError("config fields 'tls_ca', 'tls_cert' and 'tls_key' go together")
    if not any(tls_paths) and not plaintext:
        raise ConfigError("set 'tls_ca', 'tls_cert', 'tls_key' (or plaintext = true, for tests)")
    age = data.get("max_feed_age")
    return EdgeConfig(
        data_dir=base / data_dir,
        listen=_listen(data, base),
        upstreams=tuple(address({"upstreams": u}, "upstreams") for u in upstreams),
        trust=_trust(data, base),
        tls=EdgeTls(*(base / str(p) for p in tls_paths)) if all(tls_paths) else None,
        max_feed_age=None if age is None else seconds(data, "max_feed_age", 0, 1e-3, 1e9),
        sync_interval=seconds(data, "sync_interval", 5.0, 0.05, 86400),
        max_batch=integer(data, "max_batch", 10_000, 1, 100_000),
        map_size_gib=integer(data, "map_size_gib", 64, 1, 1 << 14),
        max_message_bytes=integer(data, "max_message_bytes", 16 << 20, 64 << 10, 1 << 30),
    )


def load_edge_config(path: str | Path) -> EdgeConfig:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
    return parse_edge_config(data, p.resolve().parent)


# ---------------------------------------------------------------------------- serving
class EdgeCardStatus(CardStatusServicer):
    """CardStatus over the replica: the node's servicer (the same messages, PSAM refusals,
    batch limits, packed ids), its answers passed through the replica's STALE policy."""

    def __init__(self, replica: EdgeReplica, metrics: NodeMetrics, max_batch: int) -> None:
        super().__init__(replica.checker(), metrics, max_batch)
        self._replica = replica

    def _answer(self, card_id: str) -> card_status_pb2.CheckCardResponse:
        self._checker = self._replica.checker()  # the current keys (all calls: the loop's)
        answer = self._replica.check(card_id)
        self._counted[answer.copy.status].inc()
        response = self._response(answer.copy, card_id.upper())
        if answer.stale:
            response.copy_status = response.status
            response.status = STALE
        return response

    async def BatchCheck(
        self, request: card_status_pb2.BatchCheckRequest, context: Any
    ) -> card_status_pb2.BatchCheckResponse:
        self._checker = self._replica.checker()
        return await super().BatchCheck(request, context)

    def _batch_answer(
        self, result: BatchResult, index_of: Any, response: card_status_pb2.BatchCheckResponse
    ) -> None:
        super()._batch_answer(result, index_of, response)
        edge = batch_of(result, self._replica.policy, self._replica.clock())
        rows: NDArray[np.intp] = np.flatnonzero(edge.statuses == EdgeStatus.STALE)
        if not len(rows):
            return
        # The node's answer lists only ids that are not NOT_REVOKED; a STALE one is listed
        # whatever its copy says, so that a reader never takes it for a fresh answer.
        indices = (index_of(rows) if index_of is not None else rows).tolist()
        listed = {card.index: card for card in response.cards}
        for row, i in zip(rows.tolist(), indices, strict=True):
            card = listed.get(i)
            if card is None:
                card = response.cards.add(index=i, status=int(result.statuses[row]))
                card.publisher = result[row].publisher or ""
            card.copy_status = card.status
            card.status = STALE
        ordered = sorted(response.cards, key=lambda c: c.index)
        del response.cards[:]
        response.cards.extend(ordered)


def _claim_socket(listen: str) -> None:
    """A UNIX socket path left by a dead daemon is removed; one a live daemon answers on is
    refused (OSError naming it), so two gateways never share one path."""
    if not listen.startswith("unix:"):
        return
    path = Path(listen[5:])
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
            return
    raise OSError(f"listen {listen}: another process is serving on this socket")


async def serve_edge(config: EdgeConfig, ready: Any = sys.stdout) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _claim_socket(config.listen)
    replica = EdgeReplica.open(
        config.data_dir,
        upstreams=list(config.upstreams),
        tls=config.tls,
        max_feed_age=config.max_feed_age,
        map_size=config.map_size_gib << 30,
        sync_interval=config.sync_interval,
        limits=TransferLimits(max_message_bytes=config.max_message_bytes),
        **config.trust,
    )
    metrics = NodeMetrics(CollectorRegistry())
    name = SERVICES["CardStatus"]
    server = grpc.aio.server(
        interceptors=[Edge(Meter(metrics), [name])],
        options=message_options(config.max_message_bytes),
    )
    card_status_pb2_grpc.add_CardStatusServicer_to_server(  # type: ignore[no-untyped-call]
        EdgeCardStatus(replica, metrics, config.max_batch), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        port = server.add_insecure_port(config.listen)
        if port == 0:
            raise OSError(f"listen {config.listen}: cannot bind it")
        await server.start()
        for service in ("", name):
            await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
        address = (
            config.listen
            if config.listen.startswith("unix:")
            else (f"{config.listen.rpartition(':')[0]}:{port}")
        )
        print("READY " + json.dumps({"grpc": address, "data_dir": str(config.data_dir)}),
              file=ready, flush=True)  # fmt: skip
        log.info("edge replica serving CardStatus on %s, following %s", address, config.upstreams)
        await stop.wait()
        log.info("signal received: finishing in-flight calls")
        await server.stop(5.0)
    finally:
        replica.close()
        if config.listen.startswith("unix:"):
            with contextlib.suppress(FileNotFoundError):
                Path(config.listen[5:]).unlink()
    log.info("stopped")
