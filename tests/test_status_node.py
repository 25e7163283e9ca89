"""``python -m node status`` against real nodes: a province and its city converge (exit 0);
the province goes down (exit 3, a message, no traceback); it comes back where the city cannot
find it, holding an older head of the city's feed (exit 1, divergence). And the operator
tools (status, import-csv, export-csv) against a node that requires mutual TLS."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from node.gen.blacklist.v1 import admin_pb2
from node.tls import init_ca, issue
from tests.node_harness import ROOT, NodeProcess, card_id, write_config, write_node

CITY, PROVINCE = "440100", "440000"


def status_cli(*addresses: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", "status", *addresses, "--timeout", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def city_version(node: NodeProcess) -> int:
    status = node.admin.Status(admin_pb2.StatusRequest(), timeout=10)
    return next((f.version for f in status.feeds if f.publisher == CITY), 0)


def revoke(node: NodeProcess, n: int) -> int:
    request = admin_pb2.RevokeRequest(
        revocations=[admin_pb2.Revocation(card_id=card_id(CITY), reason=2) for _ in range(n)]
    )
    response: admin_pb2.PublishResponse = node.admin.Revoke(request, timeout=30)
    return response.version


def wait_for_version(node: NodeProcess, version: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while city_version(node) != version:
        assert time.monotonic() < deadline, f"{node.grpc} never reached v{version}"
        time.sleep(0.1)


def test_status_of_a_province_and_its_city(tmp_path: Path) -> None:
    province_files = write_node(tmp_path / "gd", PROVINCE, ["4499"], role="province")
    assert province_files.keys is not None
    city_files = write_node(tmp_path / "gz", CITY, trusted=[province_files.keys.public])
    assert city_files.keys is not None
    # The province trusts the city's key, to accept the deltas the city pushes up.
    trusted = [province_files.fields["trusted_keys"], [str(city_files.keys.public)]]
    write_config(
        province_files.config,
        {**province_files.fields, "trusted_keys": [k for ks in trusted for k in ks]},
    )
    with NodeProcess(province_files.config) as province:
        write_config(
            city_files.config,
            {**city_files.fields, "upstreams": [province.grpc], "sync_interval": 1},
        )
        with NodeProcess(city_files.config) as city:
            first = revoke(city, 3)
            wait_for_version(province, first)

            agreed = status_cli(city.grpc, province.grpc)
            assert agreed.returncode == 0, agreed.stdout + agreed.stderr
            assert "OK: 1 feed(s) identical on 2 node(s), none stale" in agreed.stdout
            assert f"city {CITY}" in agreed.stdout and f"province {PROVINCE}" in agreed.stdout
            row = next(line for line in agreed.stdout.splitlines() if line.startswith(CITY))
            assert row.split()[1] == "ok" and row.count(f"v{first} ") == 2

            # The province is down: the city revokes on its own.
            old_address = province.grpc
            province.stop()
            second = revoke(city, 2)
            assert second == first + 1
            down = status_cli(city.grpc, old_address)
            assert down.returncode == 3, down.stdout + down.stderr
            assert f"UNREACHABLE: {old_address}: nothing listens at {old_address}" in down.stdout
            assert "Traceback" not in down.stderr
            assert f"v{second} " in down.stdout  # the city's column is still shown

            # Back on another port, which the city does not know: it keeps the old head.
            province.start()
            assert province.grpc != old_address
            diverged = status_cli(city.grpc, province.grpc)
            assert diverged.returncode == 1, diverged.stdout + diverged.stderr
            assert f"DIVERGED: feed {CITY}: v{second} " in diverged.stdout
            assert f"at {city.grpc}; v{first} " in diverged.stdout
            assert f"at {province.grpc}" in diverged.stdout
            row = next(line for line in diverged.stdout.splitlines() if line.startswith(CITY))
            assert row.split()[1] == "DIVERGED" and "<" in row  # the province is behind


def test_operator_tools_over_mutual_tls(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca")
    node_cert = issue(
        tmp_path / "ca", role="node", region=CITY, name="gz", out=tmp_path, hosts=("127.0.0.1",)
    )
    operator = issue(tmp_path / "ca", role="operator", region=CITY, name="op", out=tmp_path)
    terminal = issue(tmp_path / "ca", role="terminal", region=CITY, name="pos", out=tmp_path)
    files = write_node(tmp_path / "gz", CITY)
    fields = {k: v for k, v in files.fields.items() if k != "plaintext"}
    tls = {"tls_ca": str(ca.cert), "tls_cert": str(node_cert.cert), "tls_key": str(node_cert.key)}
    write_config(files.config, {**fields, **tls})
    as_operator = ["--ca", str(ca.cert), "--cert", str(operator.cert), "--key", str(operator.key)]
    listed = tmp_path / "list.csv"
    card = card_id(CITY)
    listed.write_text(f"{card},挂失,2024-01-01\n", encoding="utf-8")

    with NodeProcess(files.config) as node:  # the harness's plaintext stubs stay unused
        imported = run(["import-csv", str(listed), "--node", node.grpc, *as_operator])
        assert imported.returncode == 0, imported.stdout + imported.stderr
        assert "imported:  1 " in imported.stdout
        exported = run(["export-csv", "--node", node.grpc, "--prefix", "4401", *as_operator])
        assert exported.returncode == 0, exported.stderr
        assert exported.stdout.splitlines()[1].startswith(f"{card},loss,2024-01-01 00:00:00,")
        fine = run(["status", node.grpc, *as_operator])
        assert fine.returncode == 0, fine.stdout + fine.stderr
        assert "OK: 1 feed(s) identical on 1 node(s)" in fine.stdout

        plain = run(["status", node.grpc, "--timeout", "3"])  # no client certificate
        assert plain.returncode == 3 and "UNREACHABLE" in plain.stdout
        assert f"the node at {node.grpc} requires mutual TLS: pass --ca" in plain.stdout
        assert "Socket closed" not in plain.stdout
        # The bulk tools say the same, and print nothing else: no summary, no CSV header.
        for tool in (
            ["import-csv", str(listed), "--node", node.grpc],
            ["export-csv", "--node", node.grpc, "--prefix", "4401"],
        ):
            bare = run(tool)
            assert bare.returncode == 3 and bare.stdout == "", (tool, bare.stdout)
            assert bare.stderr.startswith(f"error: the node at {node.grpc} requires mutual TLS")
            assert "again" not in bare.stderr
        as_terminal = [
            "--ca",
            str(ca.cert),
            "--cert",
            str(terminal.cert),
            "--key",
            str(terminal.key),
        ]
        refused = run(["status", node.grpc, *as_terminal])
        assert refused.returncode == 3
        # Refused, not unreachable: the node answered, and said which role it takes.
        assert (
            f"REFUSED: {node.grpc}: refused by {node.grpc} (PERMISSION_DENIED): role "
            "'terminal' may not call Admin/Status; Admin calls take an operator certificate"
            in refused.stdout
        )
        assert "UNREACHABLE" not in refused.stdout
        assert "PROBLEM: 1 node(s) refused" in refused.stdout
        exported = run(["export-csv", "--node", node.grpc, "--prefix", "4401", *as_terminal])
        assert exported.returncode == 2 and exported.stdout == ""
        assert "PERMISSION_DENIED" in exported.stderr
        half = run(["status", node.grpc, "--ca", str(ca.cert)])
        assert half.returncode == 2 and "go together" in half.stderr


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
