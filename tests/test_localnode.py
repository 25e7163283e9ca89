"""NodeSpec → config text → NodeConfig: what the local federation writes is what a node reads."""

from __future__ import annotations

import tomllib
from pathlib import Path

from node.config import parse_config
from node.local.process import NodeSpec, config_text


def test_workers_reach_the_node_config(tmp_path: Path) -> None:
    one = parse_config(tomllib.loads(config_text(NodeSpec("440100"))), tmp_path)
    two = parse_config(tomllib.loads(config_text(NodeSpec("440100", workers=2))), tmp_path)
    assert (one.workers, two.workers) == (1, 2)
    assert "workers" not in config_text(NodeSpec("440100"))
