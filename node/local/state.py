"""``DIR/federation.json``: the nodes `make up` left running, as ``down``, ``status`` and
``card --node REGION`` find them (node/local/up.py writes it; node/cli/client.py reads it)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

STATE_FILE = "federation.json"


@dataclass(frozen=True)
class NodeRecord:
    """One detached node, as written to federation.json."""

    region: str
    role: str
    pid: int  # the node (python -m node run)
    keeper: int  # the sh that waits for it and records its exit code
    grpc: str
    metrics: str
    config: str
    log: str
    exit_file: str


def state_path(directory: Path) -> Path:
    return directory / STATE_FILE


def write_state(directory: Path, records: list[NodeRecord]) -> None:
    path = state_path(directory)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "nodes": [asdict(r) for r in records],
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    tmp.replace(path)  # atomic: down never reads half a file


def read_state(directory: Path) -> list[NodeRecord]:
    data: Mapping[str, Any] = json.loads(state_path(directory).read_text(encoding="utf-8"))
    return [NodeRecord(**n) for n in data["nodes"]]
