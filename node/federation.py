"""The national scenario on one machine: ministry, two provinces, three cities, each a
separate node process on loopback (DESIGN.md §2)::

    ministry 000000
      ├── province 440000 (Guangdong) ── city 440100 (Guangzhou), city 440300 (Shenzhen)
      └── province 110000 (Beijing)   ── city 110100 (Beijing)

Every city is the authority for its prefix, a province for its pooling prefix (e.g. 4499).
Ports are chosen once, up front, so a node restarted after a crash comes back where its
children look for it. Used by `make demo`, `make up`, the fault tests and the sync benchmarks.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from pathlib import Path

from node.localnode import KeyPair, LocalNode, NodeSpec, generate_keys, write_config

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
    topology: tuple[tuple[str, str, str | None, str | None], ...] = TOPOLOGY
    keys: dict[str, KeyPair] = field(default_factory=dict)
    ports: dict[str, tuple[int, int]] = field(default_factory=dict)
    nodes: dict[str, LocalNode] = field(default_factory=dict)
    configs: dict[str, Path] = field(default_factory=dict)

    def prepare(self) -> None:
        """Keys for every publisher, ports and a config for every node."""
        for region, _, _, prefix in self.topology:
            if prefix is not None:
                self.keys[region] = generate_keys(region, [prefix], self.root / "keys")
            self.ports[region] = (free_port(), free_port())
        trusted = tuple(k.public for k in self.keys.values())
        for region, role, parent, _ in self.topology:
            grpc_port, metrics_port = self.ports[region]
            spec = NodeSpec(
                region,
                role=role,
                signing_key=self.keys[region].private if region in self.keys else None,
                trusted_keys=trusted,
                listen=f"127.0.0.1:{grpc_port}",
                metrics_listen=f"127.0.0.1:{metrics_port}",
                upstreams=(self.address(parent),) if parent else (),
                sync_interval=self.sync_interval,
                retain_deltas=self.retain_deltas,
                subscribe=self.subscribe,
            )
            self.configs[region] = write_config(spec, self.root / region)

    def address(self, region: str) -> str:
        return f"127.0.0.1:{self.ports[region][0]}"

    def metrics_url(self, region: str) -> str:
        return f"http://127.0.0.1:{self.ports[region][1]}/metrics"

    def start(self, regions: list[str] | None = None, timeout: float = 30.0) -> None:
        todo = regions or [r for r, *_ in self.topology]
        for region in todo:
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
