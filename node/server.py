"""The node process: build the parts from a config, serve gRPC and /metrics, stop cleanly.

Like boulder's cmd/*/main.go: read config, build dependencies (clock, registry, store)
explicitly, refuse bad config before binding anything, then serve. SIGTERM/SIGINT stop
accepting calls, let in-flight calls finish (grace period), close LMDB (saving the index)
and return, so the process exits 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from blacklist.authority import Authority
from blacklist.checker import Checker
from blacklist.clock import Clock, system_clock
from blacklist.store import RevocationStore
from blacklist.sync.budget import TransferLimits, message_options
from node.config import NodeConfig
from node.gen.blacklist.v1 import (
    admin_pb2_grpc,
    sync_pb2_grpc,
)
from node.grpc.admin_trust import AdminService
from node.grpc.calls import Meter
from node.grpc.edge import Edge
from node.grpc.services import SERVICES, add_card_status, settle_heap
from node.grpc.sync import SyncServicer
from node.head_signer import HeadSigner
from node.ingest import Ingest
from node.metrics import VERSION, NodeMetrics
from node.ports import PortInUse, bound, refuse_a_taken_port, reserve_port
from node.readiness import ReadinessReporter
from node.status_page import StatusPage, serve_http
from node.store_lock import WriterLock
from node.sweeper import Sweeper
from node.sync_client import SyncClient
from node.tls import channel_credentials, server_credentials
from node.trust_keeper import TrustKeeper
from node.workers.pool import WorkerPool, pool_metrics
from node.workers.relay import ForwardedCallers, restrict, socket_path

log = logging.getLogger("node")


def _log_migration(done: int, total: int) -> None:
    """Progress of the schema 2 → 3 migration at open (indexing the audit log, once)."""
    log.info("store migration: %d of %d audit records indexed", done, total)


class Node:
    def __init__(
        self,
        config: NodeConfig,
        *,
        clock: Clock = system_clock,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.registry = registry or CollectorRegistry()
        self.metrics = NodeMetrics(self.registry)
        # One writer per store (node/store_lock.py): refused here, before LMDB is opened.
        self.lock = WriterLock.acquire(config.data_dir)
        try:
            self.store = RevocationStore(
                config.data_dir,
                clock=clock,
                map_size=config.map_size_gib << 30,
                retain_deltas=config.retain_deltas,
                migrate_progress=_log_migration,
                acceptance=config.acceptance(),
            )
        except BaseException:
            self.lock.release()
            raise
        self.metrics.watch_store(self.store, clock)
        self.metrics.watch_statements(self.store)
        self.metrics.watch_lapses(self.store, clock)
        self.trust = TrustKeeper(config, self.store, self.metrics, clock)
        self._stopping = asyncio.Event()
        self._trust_task: asyncio.Task[None] | None = None
        self._signer_task: asyncio.Task[None] | None = None
        self._sweep_task: asyncio.Task[None] | None = None
        keys = self.trust.keys
        own = config.signing_key()
        self.authority = Authority(self.store, own, keys, clock=clock) if own else None
        self.checker = Checker(self.store, keys, clock=clock)
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmdb-writer")
        # Admin reads (ListAudit) off the event loop and off the writer thread.
        self.reads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="admin-read")
        self.keys = keys
        self.hub: Ingest | None = None  # made in start(): it needs the running loop
        self.sync: SyncClient | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self.server: grpc.aio.Server | None = None
        self.grpc_address = ""
        self.metrics_url = ""
        self._http: Any = None
        self.page: StatusPage | None = None
        # A replica (upstreams, no signing key) serves only once caught up (issue #18).
        self.readiness: ReadinessReporter | None = None
        self._ready_task: asyncio.Task[None] | None = None
        self.workers: WorkerPool | None = None
        self._relay: Path | None = None
        self._held_port: socket.socket | None = None

    def _servicers(self) -> tuple[AdminService, SyncServicer, Meter]:
        """Admin and Sync, and the Meter of every blacklist.v1 call this process serves."""
        assert self.hub is not None
        admin = AdminService(
            role=self.config.role,
            region=self.config.region,
            store=self.store,
            authority=self.authority,
            metrics=self.metrics,
            writer=self.writer,
            clock=self.clock,
            build_version=VERSION,
            hub=self.hub,
            reads=self.reads,
            lapse=self.config.lapse_policy(),
        )
        sync = SyncServicer(self.store, self.hub, self.metrics, TransferLimits.of(self.config))
        # Operators publish trust records only within their region, as they revoke cards.
        meter = Meter(
            self.metrics,
            enforce=self.config.tls,
            scoped={("Admin", "PublishTrust"): admin.trust.record_regions},
        )
        return admin, sync, meter

    def _add_services(
        self, server: grpc.aio.Server, admin: AdminService, sync: SyncServicer
    ) -> None:
        add_card_status(server, self.checker, self.metrics, self.config)
        admin_pb2_grpc.add_AdminServicer_to_server(admin, server)  # type: ignore[no-untyped-call]
        sync_pb2_grpc.add_SyncServicer_to_server(sync, server)  # type: ignore[no-untyped-call]
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        self._health = health_servicer
        reflection.enable_server_reflection(
            [
                *SERVICES.values(),
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )

    async def start(self) -> None:
        self.hub = Ingest(
            self.store,
            self.keys,
            self.writer,
            self.metrics,
            after_write=self.trust.after_write,
            clock=self.clock,
            max_skew=self.config.max_clock_skew,
        )
        self.trust.attach(
            asyncio.get_running_loop(),
            writer_side=[self.hub.set_keys, *([self.authority.set_keys] if self.authority else [])],
            loop_side=[self.checker.set_keys],
        )
        self._trust_task = asyncio.create_task(self.trust.run(self._stopping))
        sweeper = Sweeper(self.store, self.writer, self.metrics, self.config.sweep_interval)
        self._sweep_task = asyncio.create_task(sweeper.run(self._stopping))
        # workers >= 2: that many worker processes serve the node's port (SO_REUSEPORT,
        # node/workers/pool.py) and this one, the writer, serves none of it: a delta applied
        # here never holds up a check (issue #15). Admin and Sync reach it over the relay.
        shared = self.config.workers > 1
        admin, sync, meter = self._servicers()
        # ForwardedCallers first: the Edge must see a relayed call's caller, not the worker.
        server = grpc.aio.server(
            interceptors=[
                *([ForwardedCallers()] if shared else []),
                Edge(meter, SERVICES.values()),
            ],
            options=[
                *message_options(self.config.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        self._add_services(server, admin, sync)
        # Both ports before binding either: a busy one is one line naming its field.
        refuse_a_taken_port(self.config.listen, "listen")
        refuse_a_taken_port(self.config.metrics_listen, "metrics_listen")
        host = self.config.listen.rpartition(":")[0]
        if shared:
            # The workers serve the port; this process only holds it (and writes).
            self._held_port = bound(
                "listen", self.config.listen, lambda: reserve_port(self.config.listen)
            )
            port = self._held_port.getsockname()[1]
        elif self.config.tls:
            assert self.config.tls_ca and self.config.tls_cert and self.config.tls_key
            credentials = server_credentials(
                self.config.tls_ca, self.config.tls_cert, self.config.tls_key
            )
            port = bound(
                "listen",
                self.config.listen,
                lambda: server.add_secure_port(self.config.listen, credentials),
            )
        else:  # plaintext = true: tests and demos only (node/config.py)
            port = bound(
                "listen", self.config.listen, lambda: server.add_insecure_port(self.config.listen)
            )
        if port == 0:
            raise PortInUse("listen", self.config.listen, "gRPC could not bind it")
        self.grpc_address = f"{host}:{port}"
        if shared:  # Admin and Sync calls that land on a worker come back here
            self._relay = socket_path(self.config.data_dir)
            if server.add_insecure_port(f"unix:{self._relay}") == 0:
                raise OSError(f"cannot listen on {self._relay}")
            restrict(self._relay)
            self.store.save_index()  # workers load it instead of rebuilding (before any write)
        mhost, _, mport = self.config.metrics_listen.rpartition(":")
        self.page = page = StatusPage(
            self.registry,
            self.store.heads,
            role=self.config.role,
            region=self.config.region,
            data_dir=self.config.data_dir,
            clock=self.clock,
        )
        if self.config.upstreams and self.authority is None:
            self.readiness = ReadinessReporter(
                self.store,
                self.config.readiness,
                lambda: self.sync is not None and self.sync.caught_up,
                self.clock,
                self.registry,
                self.config.data_dir,
            )
        ready = self.readiness.http if self.readiness is not None else None
        self._http, _ = bound(  # /metrics, /ready, the status page at / (node/status_page.py)
            "metrics_listen",
            self.config.metrics_listen,
            lambda: serve_http(mhost, int(mport), self.registry, page.html, ready),
        )
        page.start()
        self.metrics_url = f"http://{mhost}:{self._http.server_address[1]}/metrics"
        await server.start()
        if self.readiness is not None:
            self._ready_task = asyncio.create_task(
                self.readiness.run(self._health, SERVICES.values(), self._stopping)
            )
        else:
            for name in ("", *SERVICES.values()):
                await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.server = server
        if shared:
            self.workers = WorkerPool(
                self.config,
                address=self.grpc_address,
                relay=str(self._relay),
                registry=self.registry,
                after_exit=self.store.env.reader_check,
            )
            await self.workers.start()
        else:
            _, alone = pool_metrics(self.registry)
            alone.set(1)  # the writer serves alone
        if self.authority is not None:
            signer = HeadSigner(
                self.authority, self.hub, self.metrics, self.config.head_statement_interval
            )
            self._signer_task = asyncio.create_task(signer.run(self._stopping))
        if self.config.upstreams:
            self.sync = SyncClient(
                region=self.config.region,
                upstreams=list(self.config.upstreams),
                interval=self.config.sync_interval,
                store=self.store,
                hub=self.hub,
                metrics=self.metrics,
                clock=self.clock,
                subscribe=self.config.subscribe,
                limits=TransferLimits.of(self.config),
                credentials=(
                    channel_credentials(
                        self.config.tls_ca, self.config.tls_cert, self.config.tls_key
                    )
                    if self.config.tls_ca and self.config.tls_cert and self.config.tls_key
                    else None
                ),
            )
            self._sync_task = asyncio.create_task(self.sync.run())

    async def stop(self, grace: float = 5.0) -> None:
        self._stopping.set()
        if self._trust_task is not None:
            await self._trust_task
        if self._signer_task is not None:
            await self._signer_task
        if self._sweep_task is not None:
            await self._sweep_task
        if self._ready_task is not None:
            await self._ready_task
        if self.sync is not None and self._sync_task is not None:
            await self.sync.stop()
            await asyncio.wait_for(self._sync_task, timeout=grace)
        if self.server is not None:
            await self._health.enter_graceful_shutdown()
        # Workers and this server finish their calls in parallel: streams held open (a
        # child's Subscribe) would otherwise cost each process its grace period in turn.
        await asyncio.gather(
            *([self.workers.stop()] if self.workers is not None else []),
            *([self.server.stop(grace)] if self.server is not None else []),
        )
        if self._relay is not None:
            self._relay.unlink(missing_ok=True)
        if self._held_port is not None:
            self._held_port.close()
        self.writer.shutdown(wait=True)
        self.reads.shutdown(wait=True)
        if self.page is not None:
            self.page.stop()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        self.store.close()
        self.lock.release()


async def serve(config: NodeConfig, ready: Any = sys.stdout) -> None:
    node = Node(config)
    # Handlers first: a supervisor may send SIGTERM as soon as it reads READY.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    settle_heap()
    # One machine-readable line, for supervisors, tests and `make up`.
    print(
        "READY "
        + json.dumps(
            {
                "region": config.region,
                "role": config.role,
                "grpc": node.grpc_address,
                "metrics": node.metrics_url,
                "tls": config.tls,
                "workers": node.workers.pids if node.workers else [],
            }
        ),
        file=ready,
        flush=True,
    )
    log.info(
        "node %s (%s) serving gRPC on %s, metrics at %s",
        config.region,
        config.role,
        node.grpc_address,
        node.metrics_url,
    )
    await stop.wait()
    log.info("signal received: finishing in-flight calls")
    await node.stop()
    log.info("stopped")
