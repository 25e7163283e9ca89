"""A node in the certified hierarchy (``trust_anchor`` + ``certificate_chains``), as real
processes: the operator's key chores with ``python -m node keys``, then ``python -m node run``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from node.gen.blacklist.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    card_status_pb2,
    card_status_pb2_grpc,
    types_pb2,
)
from node.local.process import LocalNode, generate_keys

CARD = "440100D156000005ABCDEF0123456789"
REVOKED = 2  # card_status_pb2 CheckCardResponse status


def _keys(*args: str | Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "node", "keys", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def hierarchy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root → province 440000 (44) → city 440100 (4401); and a forged city 110100 (1101)
    that the 44 province key certified, which its issuer's scope forbids."""
    d = tmp_path_factory.mktemp("hierarchy")
    _keys("init-root", "--out", d)
    for publisher, prefix in (("440000", "44"), ("440100", "4401"), ("110100", "1101")):
        generate_keys(publisher, [prefix], d)
    _keys("certify", "--issuer", d / "root.key", "--subject", d / "440000.pub",
          "--scope", "44", "--days", "30", "--out", d / "440000.crt")  # fmt: skip
    _keys("certify", "--issuer", d / "440000.key", "--issuer-cert", d / "440000.crt",
          "--subject", d / "440100.pub", "--scope", "4401", "--days", "30",
          "--out", d / "440100.crt")  # fmt: skip
    # Without --issuer-cert the CLI cannot check the scope, so it writes the bad certificate.
    _keys("certify", "--issuer", d / "440000.key", "--subject", d / "110100.pub",
          "--scope", "1101", "--days", "30", "--out", d / "110100.crt")  # fmt: skip
    return d


def _config(directory: Path, region: str, **fields: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        'role = "city"',
        f"region = {json.dumps(region)}",
        'listen = "127.0.0.1:0"',
        'metrics_listen = "127.0.0.1:0"',
        'data_dir = "data"',
        "map_size_gib = 1",
        "plaintext = true",
        *(f"{name} = {json.dumps(value)}" for name, value in fields.items()),
    ]
    path = directory / "node.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _refused(config: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "node", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, (done.returncode, done.stderr)
    return done.stderr


def test_certified_city_revokes_and_answers(hierarchy: Path, tmp_path: Path) -> None:
    d = hierarchy
    config = _config(
        tmp_path / "440100",
        "440100",
        signing_key=str(d / "440100.key"),
        trust_anchor=str(d / "root.pub"),
        certificate_chains=[[str(d / "440000.crt"), str(d / "440100.crt")]],
    )
    with LocalNode.spawn(config, name="440100") as node:
        node.wait_ready()
        admin: Any = admin_pb2_grpc.AdminStub(grpc.insecure_channel(node.grpc))  # type: ignore[no-untyped-call]
        admin.Revoke(
            admin_pb2.RevokeRequest(
                revocations=[admin_pb2.Revocation(card_id=CARD, reason=types_pb2.LOSS)]
            ),
            timeout=10,
        )
        status: Any = card_status_pb2_grpc.CardStatusStub(grpc.insecure_channel(node.grpc))  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + 10
        answer = status.CheckCard(card_status_pb2.CheckCardRequest(card_id=CARD), timeout=10)
        while answer.status != REVOKED and time.monotonic() < deadline:
            time.sleep(0.05)
            answer = status.CheckCard(card_status_pb2.CheckCardRequest(card_id=CARD), timeout=10)
        assert answer.status == REVOKED, answer
        assert node.stop() == 0


def test_scope_violation_in_a_chain_refuses_start_up(hierarchy: Path, tmp_path: Path) -> None:
    d = hierarchy
    config = _config(
        tmp_path / "110100",
        "110100",
        signing_key=str(d / "110100.key"),
        trust_anchor=str(d / "root.pub"),
        certificate_chains=[[str(d / "440000.crt"), str(d / "110100.crt")]],
    )
    stderr = _refused(config)
    assert "certificate_chains" in stderr and "scope_violation" in stderr, stderr


def test_own_key_without_a_chain_refuses_start_up(hierarchy: Path, tmp_path: Path) -> None:
    d = hierarchy
    config = _config(
        tmp_path / "440100",
        "440100",
        signing_key=str(d / "440100.key"),
        trust_anchor=str(d / "root.pub"),
        certificate_chains=[[str(d / "440000.crt")]],
    )
    stderr = _refused(config)
    assert "signing_key" in stderr and "not certified" in stderr, stderr


def test_missing_certificate_file_refuses_start_up(hierarchy: Path, tmp_path: Path) -> None:
    d = hierarchy
    config = _config(
        tmp_path / "440100",
        "440100",
        trust_anchor=str(d / "root.pub"),
        certificate_chains=[[str(d / "440000.crt"), str(d / "nowhere.crt")]],
    )
    stderr = _refused(config)
    assert "certificate_chains" in stderr and "nowhere.crt" in stderr, stderr


def test_trust_anchor_and_trusted_keys_refused_together(hierarchy: Path, tmp_path: Path) -> None:
    d = hierarchy
    config = _config(
        tmp_path / "440100",
        "440100",
        trust_anchor=str(d / "root.pub"),
        certificate_chains=[[str(d / "440000.crt"), str(d / "440100.crt")]],
        trusted_keys=[str(d / "440000.pub")],
    )
    stderr = _refused(config)
    assert "'trust_anchor'" in stderr and "'trusted_keys'" in stderr, stderr
