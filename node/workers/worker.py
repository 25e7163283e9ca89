"""One serving process of a node with ``workers = N``: ``python -m node.workers.worker``.

Started by the writer process (node/workers/pool.py), never by hand: the spec (the node's
config, which worker this is, the address the writer bound, the writer's relay socket)
arrives pickled on stdin from that parent. The worker

* opens the LMDB environment read-only, after it started (py-lmdb docs: never share an
  environment across fork), through a :class:`~blacklist.follower.StoreFollower`;
* answers CardStatus from it, catching the index up before each answer, on the node's
  address with SO_REUSEPORT (the kernel spreads connections over the processes);
* relays Admin and Sync calls to the writer (node/workers/relay.py), counted in
  ``blacklist_relayed_calls_total``;
* serves its own /metrics on the metrics port + its number (any free port when the node's
  metrics port is 0), and prints ``READY {"pid": ..., "metrics": ...}``;
* stops on SIGTERM (exit 0), and when the writer dies (PR_SET_PDEATHSIG, and a poll of
  the parent pid in case the signal was missed at start-up).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import logging
import os
import pickle
import signal
import sys
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, Counter, start_http_server

from blacklist.clock import Clock, system_clock
from blacklist.follower import FollowingChecker, StoreFollower
from blacklist.sync.budget import message_options
from node.config import NodeConfig
from node.grpc.services import SERVICES, add_card_status, card_status_edge, settle_heap
from node.metrics import NodeMetrics
from node.readiness import read_readiness, readiness_file, set_health
from node.tls import server_credentials
from node.workers.relay import relay_handlers

log = logging.getLogger("node.worker")
PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class WorkerSpec:
    config: NodeConfig
    index: int  # 1..workers-1 (the writer is 0)
    address: str  # host:port the writer bound
    relay: str  # the writer's Unix socket for Admin and Sync
    metrics_listen: str  # host:port of this worker's /metrics
    parent: int  # the writer's pid


def die_with_parent(parent: int) -> None:
    """Ask the kernel for SIGTERM when the parent exits; then make sure it had not
    already exited before we asked (the signal would never come)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the poll in Worker.run covers it
        pass
    if os.getppid() != parent:
        sys.exit(0)


class Worker:
    def __init__(
        self, spec: WorkerSpec, *, clock: Clock = system_clock, registry: Any = None
    ) -> None:
        self.spec = spec
        config = spec.config
        self.clock = clock
        self.registry = registry or CollectorRegistry()
        self.metrics = NodeMetrics(self.registry)
        self.follower = StoreFollower(
            config.data_dir, clock=clock, map_size=config.map_size_gib << 30
        )
        self.metrics.watch_store(self.follower, clock)
        self._trust = config.trust_material()  # the config's trust files, read once
        self.checker = FollowingChecker(
            self.follower,
            self._keys(self.follower.trust.records()),
            keys_for=self._keys,
            clock=clock,
        )
        self.server: grpc.aio.Server | None = None
        self.metrics_url = ""
        self._http: Any = None
        self._relay: grpc.aio.Channel | None = None

    def _keys(self, records: list[bytes]) -> Any:
        keys = self._trust.keys(records, int(self.clock()))
        self.metrics.trusted_keys.set(len(keys))
        return keys

    async def start(self) -> None:
        config = self.spec.config
        server = grpc.aio.server(
            interceptors=[card_status_edge(self.metrics, config)],
            options=[*message_options(config.max_message_bytes), ("grpc.so_reuseport", 1)],
        )
        add_card_status(server, self.checker, self.metrics, config)
        self._relay = grpc.aio.insecure_channel(
            f"unix:{self.spec.relay}", options=message_options(config.max_message_bytes)
        )
        relayed = Counter(
            "blacklist_relayed_calls",
            "Admin and Sync calls this worker relayed to the node's writer process",
            ["grpc_method"],
            registry=self.registry,
        )
        server.add_generic_rpc_handlers(relay_handlers(self._relay, relayed))
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        reflection.enable_server_reflection(
            [*SERVICES.values(), health_name, reflection.SERVICE_NAME], server
        )
        if config.tls:
            assert config.tls_ca and config.tls_cert and config.tls_key
            bound = server.add_secure_port(
                self.spec.address,
                server_credentials(config.tls_ca, config.tls_cert, config.tls_key),
            )
        else:
            bound = server.add_insecure_port(self.spec.address)
        if bound == 0:
            raise OSError(f"worker {self.spec.index} cannot listen on {self.spec.address}")
        mhost, _, mport = self.spec.metrics_listen.rpartition(":")
        self._http, _ = start_http_server(int(mport), addr=mhost, registry=self.registry)
        self.metrics_url = f"http://{mhost}:{self._http.server_address[1]}/metrics"
        await server.start()
        self._services = tuple(SERVICES.values())
        self._ready_file = readiness_file(config.data_dir)
        self._ready = read_readiness(self._ready_file)
        await set_health(health_servicer, SERVICES.values(), self._ready)
        self._health = health_servicer
        self.server = server

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` or the parent is gone; re-check trust validity on the
        node's timer (certificate expiry needs no new records)."""
        interval = self.spec.config.trust_refresh_interval
        waited = 0.0
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=PARENT_POLL_SECONDS)
            except TimeoutError:
                if os.getppid() != self.spec.parent:
                    log.warning("worker %d: the node process is gone; stopping", self.spec.index)
                    return
                await self._follow_readiness()
                waited += PARENT_POLL_SECONDS
                if waited >= interval:
                    waited = 0.0
                    self.checker.set_keys(self._keys(self.follower.trust.records()))

    async def _follow_readiness(self) -> None:
        """Answer health as the writer judged it (node/readiness.py): a balancer asking any
        process on the shared port hears the same."""
        now = read_readiness(self._ready_file)
        if now.serving != self._ready.serving:
            await set_health(self._health, self._services, now)
        self._ready = now

    async def stop(self, grace: float = 5.0) -> None:
        if self.server is not None:
            await self._health.enter_graceful_shutdown()
            await self.server.stop(grace)
        if self._relay is not None:
            await self._relay.close()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        self.follower.close()


async def serve(spec: WorkerSpec) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker = Worker(spec)
    await worker.start()
    settle_heap()
    print("READY " + json.dumps({"pid": os.getpid(), "metrics": worker.metrics_url}), flush=True)
    log.info("worker %d (pid %d) serving on %s", spec.index, os.getpid(), spec.address)
    await worker.run(stop)
    await worker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node.workers.worker")
    parser.add_argument("--index", type=int, required=True, help="for ps; the spec has it too")
    parser.parse_args(argv)
    spec: WorkerSpec = pickle.loads(sys.stdin.buffer.read())  # from the parent only
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s %(name)s[worker {spec.index}]: %(message)s",
    )
    die_with_parent(spec.parent)
    asyncio.run(serve(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
