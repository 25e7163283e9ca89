"""``python -m node card ...`` against real nodes over mutual TLS (issue #13).

A province node (440000) and its child city (440100, the authority for 4401) serve TLS; a
third node serves plain text. The CLI runs as its own process, as a person would run it:
check, revoke at the authority, seen at the province, entry, reinstate; then the errors that
must say what to do: no TLS options at a TLS node, TLS options at a plain-text node, a
foreign CA, nothing listening, PERMISSION_DENIED by role and by region, a bad card id, and a
region code instead of an address (``make up``'s federation.json).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from blacklist.isotime import iso8601
from node.gen.blacklist.v1 import card_status_pb2, card_status_pb2_grpc, types_pb2
from node.local.process import LocalNode, NodeSpec, generate_keys, start_node
from node.tls import CertFiles, channel_credentials, init_ca, issue
from tests.node_harness import ROOT, NodeProcess, card_id, write_node

GZ, PROVINCE, BJ = "440100", "440000", "110100"


@dataclass
class Nodes:
    ca: Path
    certs: dict[str, CertFiles]
    province: LocalNode
    city: LocalNode
    plain: NodeProcess

    def tls(self, name: str) -> list[str]:
        files = self.certs[name]
        return ["--ca", str(self.ca), "--cert", str(files.cert), "--key", str(files.key)]


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    root = tmp_path_factory.mktemp("card-cli")
    ca = init_ca(root / "ca")
    certs = {
        name: issue(root / "ca", role=role, region=region, name=name, out=root / "certs", hosts=h)
        for name, role, region, h in (
            ("province-node", "node", PROVINCE, ("127.0.0.1",)),
            ("city-node", "node", GZ, ("127.0.0.1",)),
            ("terminal", "terminal", BJ, ()),
            ("operator-gz", "operator", GZ, ()),
            ("operator-bj", "operator", BJ, ()),
        )
    }
    other = root / "other-ca"
    init_ca(other, name="someone else's CA")
    certs["foreign"] = issue(other, role="operator", region=GZ, name="foreign", out=root / "x")
    keys = generate_keys(GZ, ["4401"], root / "keys")

    def tls(name: str) -> dict[str, Path]:
        return {"tls_ca": ca.cert, "tls_cert": certs[name].cert, "tls_key": certs[name].key}

    province = start_node(
        NodeSpec(PROVINCE, role="province", trusted_keys=(keys.public,), **tls("province-node")),
        root / PROVINCE,
    )
    city = plain = None
    try:
        city = start_node(
            NodeSpec(GZ, signing_key=keys.private, upstreams=(province.grpc,), **tls("city-node")),
            root / GZ,
        )
        plain = NodeProcess(write_node(root / "plain", GZ).config).start()
        yield Nodes(ca.cert, certs, province, city, plain)
    finally:
        if plain is not None:
            plain.close()
        if city is not None:
            city.close()
        province.close()


def card(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", "card", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        # From another directory too, this checkout's node package (not an installed one).
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def wait_status(nodes: Nodes, node: LocalNode, card_id: str, want: int) -> None:
    """Until ``node`` answers ``want`` for the card (sync from the city is asynchronous)."""
    files = nodes.certs["terminal"]
    creds = channel_credentials(nodes.ca, files.cert, files.key)
    with grpc.secure_channel(node.grpc, creds) as channel:
        stub = card_status_pb2_grpc.CardStatusStub(channel)  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + 30
        while True:
            reply = stub.CheckCard(card_status_pb2.CheckCardRequest(card_id=card_id), timeout=10)
            if reply.status == want:
                return
            assert time.monotonic() < deadline, f"{node.grpc} still says {reply.status}"
            time.sleep(0.05)


def test_check_revoke_at_the_authority_seen_elsewhere_entry_and_reinstate(nodes: Nodes) -> None:
    cid = card_id(GZ)
    done = card("check", cid, "--node", nodes.city.grpc, *nodes.tls("terminal"))
    assert done.returncode == 0, done.stderr
    # A feed that never published anything is no list at all: NO_DATA, even at its authority.
    assert done.stdout.split()[:2] == [cid, "NO_DATA"], done.stdout

    done = card(
        "revoke", cid, "--reason", "loss", "--effective", "2026-01-02T08:00:00+08:00",
        "--node", nodes.city.grpc, *nodes.tls("operator-gz"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"revoked at {nodes.city.grpc} (1 added, 0 changed")
    assert f"feed {GZ} is at version" in done.stdout

    wait_status(nodes, nodes.province, cid, types_pb2.REVOKED)
    done = card("check", cid, "--node", nodes.province.grpc, *nodes.tls("terminal"))
    assert done.returncode == 0, done.stderr
    # ISO 8601 in UTC: 08:00 China time is midnight UTC.
    assert f"{cid}  REVOKED  LOSS since 2026-01-02T00:00:00Z  (feed {GZ} v" in done.stdout

    done = card("entry", cid, "--node", nodes.province.grpc, *nodes.tls("operator-bj"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{cid}  LOSS since 2026-01-02T00:00:00Z  (feed {GZ}, added")

    done = card("reinstate", cid, "--node", nodes.city.grpc, *nodes.tls("operator-gz"))
    assert done.returncode == 0, done.stderr
    assert "(1 reinstated, 0 were not revoked)" in done.stdout
    wait_status(nodes, nodes.province, cid, types_pb2.NOT_REVOKED)
    done = card("entry", cid, "--node", nodes.province.grpc, *nodes.tls("operator-bj"))
    assert done.returncode == 0 and done.stdout == f"{cid}: on no list this node holds\n"


def test_an_end_time_is_sent_and_shown(nodes: Nodes) -> None:
    cid = card_id(GZ)
    now = int(time.time())
    since, until = iso8601(now - 86400), iso8601(now + 30 * 86400)  # within max_lapse_days
    done = card(
        "revoke", cid, "--reason", "TEMPORARY_LOSS", "--effective", since, "--expires", until,
        "--node", nodes.city.grpc, *nodes.tls("operator-gz"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = card("check", cid, "--node", nodes.city.grpc, *nodes.tls("terminal"))
    assert f"TEMPORARY_LOSS since {since} until {until}" in done.stdout, done.stdout
    done = card("entry", cid, "--node", nodes.city.grpc, *nodes.tls("operator-gz"))
    assert f"until {until}  (feed" in done.stdout, done.stdout


def test_no_tls_options_at_a_tls_node_say_it_requires_mutual_tls(nodes: Nodes) -> None:
    done = card("check", card_id(GZ), "--node", nodes.city.grpc)
    assert done.returncode == 3 and done.stdout == ""
    assert f"the node at {nodes.city.grpc} requires mutual TLS" in done.stderr
    assert "--ca" in done.stderr and "--role terminal" in done.stderr
    assert "Socket closed" not in done.stderr
    done = card("revoke", card_id(GZ), "--reason", "LOSS", "--node", nodes.city.grpc)
    assert done.returncode == 3 and "--role operator" in done.stderr


def test_tls_options_at_a_plaintext_node_say_to_drop_them(nodes: Nodes) -> None:
    done = card("check", card_id(GZ), "--node", nodes.plain.grpc, *nodes.tls("terminal"))
    assert done.returncode == 3, done.stderr
    assert "serves plain text" in done.stderr and "drop --ca, --cert and --key" in done.stderr


def test_a_certificate_of_another_ca_is_a_failed_handshake(nodes: Nodes) -> None:
    done = card("entry", card_id(GZ), "--node", nodes.city.grpc, *nodes.tls("foreign"))
    assert done.returncode == 3
    assert f"the TLS handshake with {nodes.city.grpc} failed" in done.stderr, done.stderr


def test_nothing_listening_is_said_so(nodes: Nodes) -> None:
    port = nodes.plain.grpc.rpartition(":")[2]
    address = f"127.0.0.1:{1 if port != '1' else 2}"
    done = card("check", card_id(GZ), "--node", address)
    assert done.returncode == 3
    assert f"nothing listens at {address} (connection refused)" in done.stderr


def test_permission_denied_says_which_role_and_region(nodes: Nodes) -> None:
    cid = card_id(GZ)
    done = card(
        "revoke", cid, "--reason", "LOSS", "--node", nodes.city.grpc, *nodes.tls("terminal")
    )
    assert done.returncode == 1
    assert "PERMISSION_DENIED" in done.stderr and "role 'terminal'" in done.stderr
    assert "operator certificate" in done.stderr
    done = card(
        "revoke", cid, "--reason", "LOSS", "--node", nodes.city.grpc, *nodes.tls("operator-bj")
    )
    assert done.returncode == 1
    assert f"of region {BJ}" in done.stderr and "outside the certificate's region" in done.stderr


def test_a_bad_card_id_is_the_nodes_own_message(nodes: Nodes) -> None:
    done = card("check", "1234", "--node", nodes.plain.grpc)
    assert done.returncode == 1
    assert "INVALID_ARGUMENT" in done.stderr and "expected 32 characters" in done.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--reason", "lost-it"], "unknown reason 'lost-it'"),
        (["--reason", "9"], "unknown reason code 9"),
        (["--reason", "2", "--effective", "2026-01-02T08:00:00"], "has no offset"),
        (["--reason", "2", "--ca", "x"], "--ca, --cert and --key go together"),
    ],
)
def test_bad_usage_exits_2_before_any_call(nodes: Nodes, extra: list[str], message: str) -> None:
    done = card("revoke", card_id(GZ), "--node", nodes.plain.grpc, *extra)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_a_region_code_names_a_node_of_make_ups_federation(nodes: Nodes, tmp_path: Path) -> None:
    state = {"nodes": [_record(GZ, nodes.plain.grpc, tmp_path)]}
    (tmp_path / ".federation").mkdir()
    (tmp_path / ".federation" / "federation.json").write_text(json.dumps(state))
    cid = card_id(GZ)
    done = card("check", cid, "--node", GZ, cwd=tmp_path)  # default --federation .federation
    assert done.returncode == 0 and done.stdout.startswith(f"{cid}  NO_DATA"), done.stderr
    done = card("check", cid, "--node", BJ, cwd=tmp_path)
    assert done.returncode == 2 and f"--node {BJ}: no such node" in done.stderr
    done = card("check", cid, "--node", GZ, "--federation", str(tmp_path / "none"))
    assert done.returncode == 2 and "does not exist; give host:port" in done.stderr


def _record(region: str, grpc_address: str, where: Path) -> dict[str, object]:
    return {
        "region": region, "role": "city", "pid": 1, "keeper": 1, "grpc": grpc_address,
        "metrics": "", "config": str(where), "log": "", "exit_file": "",
    }  # fmt: skip
