"""What an edge replica is given and what it reports (blacklist/edge/replica.py): the mutual
TLS towards its upstream, and the counts of what it received and what became of it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc


@dataclass(frozen=True)
class EdgeTls:
    """Mutual TLS towards the upstream: the CA that signed it, and this gateway's
    certificate and key (a ``node`` certificate: the Sync API admits only nodes)."""

    ca: Path
    cert: Path
    key: Path

    def credentials(self) -> Any:
        return grpc.ssl_channel_credentials(
            root_certificates=Path(self.ca).read_bytes(),
            private_key=Path(self.key).read_bytes(),
            certificate_chain=Path(self.cert).read_bytes(),
        )


@dataclass
class EdgeCounters:
    """What the replica received and what became of it (by ingest outcome and cause)."""

    deltas: Counter[str] = field(default_factory=Counter)  # outcome → count
    rejected: Counter[str] = field(default_factory=Counter)  # cause → count
    statements: Counter[str] = field(default_factory=Counter)  # accepted/duplicate/cause
    snapshots: Counter[str] = field(default_factory=Counter)  # ok/rejected/corrupt/too_large
    received_bytes: Counter[str] = field(default_factory=Counter)  # delta/snapshot → bytes
    sessions: int = 0
    last_pull: float = 0.0  # the clock at the end of the last complete pull
