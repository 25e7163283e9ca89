"""The national scenario on one machine: ministry, two provinces, three cities, each a
separate node process on loopback (DESIGN.md §2)::

    ministry 000000
      ├── province 440000 (Guangdong) ── city 440100 (Guangzhou), city 440300 (Shenzhen)
      └── province 110000 (Beijing)   ── city 110100 (Beijing)

Every city is the authority for its prefix, a province for its pooling prefix (e.g. 4499).
Ports are chosen once, up front, so a node restarted after a crash comes back where its
children look for it. Used by `make demo`, `make up`, the fault tests and the sync benchmarks.

By default (``secure=True``) it runs as a real deployment would (DESIGN.md §6, issue #5): the
ministry's root key certifies each province's key for the province (``44``), each province
certifies its cities' keys (``4401``), and every config pins the root and lists the chains
instead of bare public keys; every link is mutual TLS, with a ``node`` certificate per node
and ``operator`` / ``terminal`` certificates for clients (node/local/pki.py; open
them with :meth:`Federation.channel`). ``secure=False`` is the plain-text federation with
bare trusted keys, for the fault tests and benchmarks that talk to nodes without
certificates.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc

from blacklist.sync.budget import message_options
from node.configfields import DEFAULT_MAX_MESSAGE_BYTES
from node.local.pki import FederationTrust, make_trust
from node.local.process import KeyPair, LocalNode, NodeSpec, generate_keys, write_config
from node.tls import channel_credentials

# region, role, parent, signing prefix (None: publishes nothing)
TOPOLOGY: tuple[tuple[str, str, str | None, str | None], ...] = (
    ("000000", "ministry", None, None),
    ("440000", "province", "000000", "4499"),
    ("110000", "province", "000000", "1199"),
    ("440100", "city", "440000", "4401"),
    ("440300", "city", "440000", "4403"),
    ("110100", "city", "110000", "1101"),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Federation:
    root: Path
    sync_interval: float = 2.0
    retain_deltas: int | None = None
    subscribe: bool = True  # False: pull only (for the pull-vs-push benchmark)
    head_statement_interval: float | None = None  # None: the node's default (60 s)
    topology: tuple[tuple[str, str, str | None, str | None], ...] = TOPOLOGY
    secure: bool = True  # False: plain text and bare trusted keys (tests and benchmarks)
    suite: str = "ed25519"  # the signing suite of every key (certified or bare)
    keys: dict[str, KeyPair] = field(default_factory=dict)
    trust: FederationTrust | None = None  # with secure: keys, certificates, TLS files
    ports: dict[str, tuple[int, int]] = field(default_factory=dict)
    nodes: dict[str, LocalNode] = field(default_factory=dict)
    configs: dict[str, Path] = field(default_factory=dict)

    def prepare(self) -> None:
        """Keys (and, with ``secure``, certificates and TLS files) for every node, ports and
        a config for every node."""
        if self.secure:
            self.trust = make_trust(self.root, self.topology, self.suite)
            self.keys = self.trust.keys  # the same dict: a rotation shows here too
        else:
            for region, _, _, prefix in self.topology:
                if prefix is not None:
                    self.keys[region] = generate_keys(
                        region, [prefix], self.root / "keys", self.suite
                    )
        for region, *_ in self.topology:
            self.ports[region] = (free_port(), free_port())
        self.write_configs()

    def route(self, src: str, dst: str) -> tuple[list[str], list[str]]:
        """The nodes a delta published at ``src`` passes to reach ``dst``: pushed up the tree to
        the first common ancestor, then streamed down (DESIGN.md §2)."""
        parent = {region: up for region, _, up, _ in self.topology}

        def chain(region: str) -> list[str]:
            out = [region]
            while (up := parent[out[-1]]) is not None:
                out.append(up)
            return out

        up, down = chain(src), chain(dst)
        common = next(r for r in up if r in down)
        return up[1 : up.index(common) + 1], down[: down.index(common)][::-1]

    def spec(self, region: str) -> NodeSpec:
        """What the config of ``region``'s node says, from the current keys and trust."""
        role, parent = next((r, p) for reg, r, p, _ in self.topology if reg == region)
        grpc_port, metrics_port = self.ports[region]
        common = NodeSpec(
            region,
            role=role,
            signing_key=self.keys[region].private if region in self.keys else None,
            listen=f"127.0.0.1:{grpc_port}",
            metrics_listen=f"127.0.0.1:{metrics_port}",
            upstreams=(self.address(parent),) if parent else (),
            sync_interval=self.sync_interval,
            retain_deltas=self.retain_deltas,
            subscribe=self.subscribe,
            head_statement_interval=self.head_statement_interval,
        )
        if self.trust is None:
            trusted = tuple(k.public for k in self.keys.values())
            return replace(common, trusted_keys=trusted)
        own = self.trust.node_tls(region)
        return replace(
            common,
            trust_anchor=self.trust.anchor,
            also_trust_anchor=self.trust.also_anchor,
            certificate_chains=self.trust.chains(),
            key_revocations=tuple(self.trust.revocations),
            tls_ca=self.trust.ca,
            tls_cert=own.cert,
            tls_key=own.key,
        )

    def write_configs(self) -> None:
        """(Re)write every node's config; a running node reads it at its next start."""
        for region, *_ in self.topology:
            self.configs[region] = write_config(self.spec(region), self.root / region)

    def channel(self, region: str, client: str | None = None) -> grpc.Channel:
        """A channel to ``region``'s node. With ``secure`` it presents the client certificate
        ``client`` (``terminal-R``, ``operator-R``, ``node-R``; default: the operator of
        ``region``, who may call everything but Sync there); plain text otherwise."""
        options = message_options(DEFAULT_MAX_MESSAGE_BYTES)
        if self.trust is None:
            return grpc.insecure_channel(self.address(region), options=options)
        files = self.trust.client(client or f"operator-{region}")
        return grpc.secure_channel(
            self.address(region),
            channel_credentials(self.trust.ca, files.cert, files.key),
            options=options,
        )

    def address(self, region: str) -> str:
        return f"127.0.0.1:{self.ports[region][0]}"

    def metrics_url(self, region: str) -> str:
        return f"http://127.0.0.1:{self.ports[region][1]}/metrics"

    def start(self, regions: list[str] | None = None, timeout: float = 30.0) -> None:
        todo = regions or [r for r, *_ in self.topology]
        for region in todo:
            previous = self.nodes.get(region)
            if previous is not None:
                previous.close()  # a restart: the old process is gone, release its pipe
            self.nodes[region] = LocalNode.spawn(self.configs[region], name=region)
        for region in todo:
            self.nodes[region].wait_ready(timeout)

    def stop(self, region: str) -> int:
        return self.nodes[region].stop()

    def kill(self, region: str) -> None:
        self.nodes[region].kill()

    def restart(self, region: str, timeout: float = 30.0) -> None:
        node = self.nodes.get(region)
        if node is not None and node.running:
            node.stop()
        self.start([region], timeout)

    def stop_all(self) -> dict[str, int]:
        codes = {}
        for region in reversed([r for r, *_ in self.topology]):
            node = self.nodes.get(region)
            if node is not None and node.running:
                codes[region] = node.stop()
        return codes

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()

    def describe(self) -> str:
        return json.dumps(
            {
                r: {"grpc": self.address(r), "metrics": self.metrics_url(r)}
                for r, *_ in self.topology
            },
            indent=2,
        )
