"""``python -m node export-filter`` against a real certified node's store, while the node
runs: every card the store holds as revoked is MAYBE_REVOKED in the file (Python and C
readers), the file verifies from the pinned root, a key not certified for the scope is
refused before anything is written, and an update after new revocations ships only the
partition that moved."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from blacklist.filters import offline_read
from blacklist.filters.offline import Verdict
from blacklist.follower import StoreFollower
from node.gen.blacklist.v1 import admin_pb2, admin_pb2_grpc, types_pb2
from node.keyfiles import load_trust_anchor
from node.local.process import LocalNode, generate_keys
from tests.test_certified_node import _config, _keys

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def hierarchy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("hierarchy")
    _keys("init-root", "--out", d)
    for publisher, prefix in (("440000", "44"), ("440100", "4401")):
        generate_keys(publisher, [prefix], d)
    _keys("certify", "--issuer", d / "root.key", "--subject", d / "440000.pub",
          "--scope", "44", "--days", "30", "--out", d / "440000.crt")  # fmt: skip
    _keys("certify", "--issuer", d / "440000.key", "--issuer-cert", d / "440000.crt",
          "--subject", d / "440100.pub", "--scope", "4401", "--days", "30",
          "--out", d / "440100.crt")  # fmt: skip
    return d


def _export(config: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", "export-filter", "--config", str(config), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _revoke(admin: Any, cards: list[str]) -> None:
    admin.Revoke(
        admin_pb2.RevokeRequest(
            revocations=[admin_pb2.Revocation(card_id=c, reason=types_pb2.LOSS) for c in cards]
        ),
        timeout=30,
    )


def _card(i: int, region: str = "440103") -> str:
    return f"{region}D156000005{i * 2654435761 + 11:016X}"


def _held(data_dir: Path) -> list[str]:
    follower = StoreFollower(data_dir, background=False)
    try:
        return [e.card_id for e in follower.iter_entries("4401")]
    finally:
        follower.close()


def test_export_filter_from_a_running_node(hierarchy: Path, tmp_path: Path) -> None:
    d = hierarchy
    config = _config(
        tmp_path / "440100",
        "440100",
        signing_key=str(d / "440100.key"),
        trust_anchor=str(d / "root.pub"),
        certificate_chains=[[str(d / "440000.crt"), str(d / "440100.crt")]],
    )
    anchor = load_trust_anchor(d / "root.pub")
    with LocalNode.spawn(config, name="440100") as node:
        node.wait_ready()
        admin: Any = admin_pb2_grpc.AdminStub(grpc.insecure_channel(node.grpc))  # type: ignore[no-untyped-call]
        _revoke(admin, [_card(i) for i in range(3000)])
        _revoke(admin, [_card(i, "440106") for i in range(500)])
        admin.Reinstate(
            admin_pb2.ReinstateRequest(card_ids=[_card(i) for i in range(100)]), timeout=30
        )

        out = tmp_path / "4401.filter"
        done = _export(config, "--scope", "4401", "--out", out)
        assert done.returncode == 0, done.stderr
        assert "1 partitions (1 built, 0 taken over), 3400 cards" in done.stdout
        f = offline_read.verify(out.read_bytes(), anchor, now=int(time.time()))
        held = _held(tmp_path / "440100" / "data")
        assert len(held) == 3400
        now = int(time.time())
        assert all(f.check_card(c, now).verdict is Verdict.MAYBE_REVOKED for c in held)
        cc = shutil.which("cc")
        assert cc is not None
        binary = tmp_path / "offline_filter"
        subprocess.run([cc, "-std=c99", "-O2", "-o", binary, ROOT / "reader/offline_filter.c"])
        c_out = subprocess.run(  # with the pinned root: verified, then answered
            [binary, "check", out, str(now), anchor.public.hex()],
            input="".join(c + "\n" for c in held),
            capture_output=True,
            text=True,
            check=True,
        )
        assert {line.split()[0] for line in c_out.stdout.splitlines()} == {"MAYBE_REVOKED"}

        # The city's key is certified for 4401: it may not sign a filter for all of 44.
        wide = tmp_path / "44.filter"
        done = _export(config, "--scope", "44", "--out", wide)
        assert done.returncode == 2
        assert "certified for ['4401'], not for the filter's scope '44'" in done.stderr
        assert not wide.exists()

        # 1,000 new revocations: one partition rebuilt, the update is about its body.
        _revoke(admin, [_card(i, "440104") for i in range(10_000, 11_000)])
        new, update = tmp_path / "4401.new.filter", tmp_path / "4401.update"
        done = _export(
            config, "--scope", "4401", "--out", new, "--previous", out, "--update-out", update
        )
        assert done.returncode == 0, done.stderr
        g = offline_read.verify(update.read_bytes(), anchor, previous=f)
        assert g.to_bytes() == new.read_bytes()
        assert g.check_card(_card(10_500, "440104"), now).verdict is Verdict.MAYBE_REVOKED
        assert node.stop() == 0


@pytest.mark.parametrize(("hours", "ok"), [(0, False), (1, True), (744, True), (745, False)])
def test_valid_hours_limit(hierarchy: Path, tmp_path: Path, hours: int, ok: bool) -> None:
    d = hierarchy
    config = _config(
        tmp_path / "440100",
        "440100",
        signing_key=str(d / "440100.key"),
        trust_anchor=str(d / "root.pub"),
        certificate_chains=[[str(d / "440000.crt"), str(d / "440100.crt")]],
    )
    if ok:  # an empty store of its own: the node was never run, so make one
        with LocalNode.spawn(config, name="440100") as node:
            node.wait_ready()
            assert node.stop() == 0
    out = tmp_path / "f.filter"
    done = _export(config, "--scope", "4401", "--out", out, "--valid-hours", str(hours))
    assert done.returncode == (0 if ok else 2), done.stderr
    if ok:
        f = offline_read.verify(out.read_bytes(), load_trust_anchor(d / "root.pub"))
        assert f.expires_at - f.issued_at == hours * 3600
    else:
        assert "--valid-hours" in done.stderr


def test_a_node_without_a_signing_key_or_anchor_is_refused(hierarchy: Path, tmp_path: Path) -> None:
    bare = _config(tmp_path / "r", "440100")
    done = _export(bare, "--scope", "4401", "--out", tmp_path / "f")
    assert done.returncode == 2 and "no signing_key" in done.stderr
    no_chain = _config(
        tmp_path / "n",
        "440100",
        signing_key=str(hierarchy / "440100.key"),
        trust_anchor=str(hierarchy / "root.pub"),
        certificate_chains=[[str(hierarchy / "440000.crt")]],
    )
    done = _export(no_chain, "--scope", "4401", "--out", tmp_path / "f")
    assert done.returncode == 2 and "is not certified for 440100" in done.stderr
