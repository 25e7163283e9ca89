"""Mutual TLS and caller roles, end to end: real certificates (made here, the CA and the node
certificates through ``python -m node tls``), real node processes (node/local/process.py) and
real TLS channels.

A province node (440000) and a city node (440100, its child, an authority for 4401) both
serve TLS and sync with each other over mTLS. Clients hold terminal, operator or node
certificates; the role in the certificate decides what they may call (node/grpc/calls.py).
"""

from __future__ import annotations

import datetime
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from node.gen.blacklist.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    card_status_pb2,
    card_status_pb2_grpc,
    sync_pb2,
    sync_pb2_grpc,
    types_pb2,
)
from node.grpc.calls import ALLOWED_ROLES
from node.local.process import LocalNode, NodeSpec, generate_keys, start_node
from node.tls import CertFiles, identity_from_pem, init_ca, issue
from tests.node_harness import (
    Metrics,
    card_id,
    run_node_expecting_exit,
    write_config,
    write_node,
)

GZ = "440100"
PROVINCE = "440000"
BJ = "110100"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", "tls", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _no_role_cert(ca_dir: Path, out: Path) -> CertFiles:
    """A client certificate signed by the right CA but carrying no role URI."""
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    ca_key: Any = serialization.load_pem_private_key(
        (ca_dir / "ca.key").read_bytes(), password=None
    )
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nobody")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    files = CertFiles(out / "nobody.crt", out / "nobody.key")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


@dataclass
class Pki:
    ca: Path  # the CA's directory (ca.crt, ca.key)
    certs: dict[str, CertFiles]


@dataclass
class Cluster:
    pki: Pki
    province: LocalNode
    city: LocalNode

    def channel(self, node: LocalNode, cert: str | None) -> grpc.Channel:
        root = (self.pki.ca / "ca.crt").read_bytes()
        if cert is None:
            creds = grpc.ssl_channel_credentials(root_certificates=root)
        else:
            files = self.pki.certs[cert]
            creds = grpc.ssl_channel_credentials(
                root_certificates=root,
                private_key=files.key.read_bytes(),
                certificate_chain=files.cert.read_bytes(),
            )
        return grpc.secure_channel(node.grpc, creds)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = root / "ca"
    done = _cli("init-ca", "--out", str(ca))
    assert done.returncode == 0, done.stderr
    certs: dict[str, CertFiles] = {}
    for name, region in (("gz-node", GZ), ("province-node", PROVINCE)):
        done = _cli(
            "issue", "--ca", str(ca), "--role", "node", "--region", region, "--name", name,
            "--host", "127.0.0.1", "--out", str(root / "certs"),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        certs[name] = CertFiles(root / "certs" / f"{name}.crt", root / "certs" / f"{name}.key")
    # Client certificates in process (the same function the CLI calls), to save start-ups.
    for name, role, region in (
        ("terminal", "terminal", GZ),
        ("operator-gz", "operator", GZ),
        ("operator-bj", "operator", BJ),
        ("sync-peer", "node", BJ),
    ):
        certs[name] = issue(ca, role=role, region=region, name=name, out=root / "certs")
    other = init_ca(root / "other-ca", name="someone else's CA")
    certs["foreign"] = issue(
        root / "other-ca", role="operator", region=GZ, name="foreign", out=root / "certs"
    )
    assert other.cert.exists()
    certs["no-role"] = _no_role_cert(ca, root / "certs")
    return Pki(ca, certs)


@pytest.fixture(scope="module")
def cluster(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("tls-nodes")
    gz_keys = generate_keys(GZ, ["4401"], root / "keys")

    def tls(name: str) -> dict[str, Path]:
        files = pki.certs[name]
        return {"tls_ca": pki.ca / "ca.crt", "tls_cert": files.cert, "tls_key": files.key}

    province = start_node(
        NodeSpec(PROVINCE, role="province", trusted_keys=(gz_keys.public,), **tls("province-node")),
        root / PROVINCE,
    )
    try:
        city = start_node(
            NodeSpec(
                GZ,
                signing_key=gz_keys.private,
                upstreams=(province.grpc,),
                sync_interval=0.5,
                **tls("gz-node"),
            ),
            root / GZ,
        )
    except BaseException:
        province.close()
        raise
    try:
        yield Cluster(pki, province, city)
        assert city.stop() == 0, city.log_tail()
        assert province.stop() == 0, province.log_tail()
    finally:
        city.close()
        province.close()


def _scrape(node: LocalNode) -> Metrics:
    return Metrics.of(node.metrics_url)


def _denied(node: LocalNode, reason: str, method: str) -> float:
    return _scrape(node).get("blacklist_denied_calls_total", reason=reason, grpc_method=method)


def _revoke(channel: grpc.Channel, card: str) -> Any:
    admin: Any = admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
    return admin.Revoke(
        admin_pb2.RevokeRequest(
            revocations=[admin_pb2.Revocation(card_id=card, reason=types_pb2.LOSS)]
        ),
        timeout=10,
    )


def _check(channel: grpc.Channel, card: str) -> Any:
    status: Any = card_status_pb2_grpc.CardStatusStub(channel)  # type: ignore[no-untyped-call]
    return status.CheckCard(card_status_pb2.CheckCardRequest(card_id=card), timeout=10)


def _error(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


# ---------------------------------------------------------------------------- certificates
def test_cli_writes_keys_0600_and_the_role_into_the_certificate(pki: Pki) -> None:
    assert stat.S_IMODE((pki.ca / "ca.key").stat().st_mode) == 0o600
    gz = pki.certs["gz-node"]
    assert stat.S_IMODE(gz.key.stat().st_mode) == 0o600
    identity = identity_from_pem(gz.cert.read_bytes())
    assert identity is not None
    assert (identity.role, identity.region) == ("node", GZ)
    cert = x509.load_pem_x509_certificate(gz.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "urn:blacklist:role:node",
        f"urn:blacklist:region:{GZ}",
    ]
    assert identity_from_pem(pki.certs["no-role"].cert.read_bytes()) is None
    again = _cli("init-ca", "--out", str(pki.ca))
    assert again.returncode == 2
    assert "refusing to overwrite" in again.stderr


# ---------------------------------------------------------------------------- roles
def test_terminal_may_check_but_not_revoke_or_sync(cluster: Cluster) -> None:
    before = _denied(cluster.city, "permission_denied", "Revoke")
    with cluster.channel(cluster.city, "terminal") as channel:
        answer = _check(channel, card_id(GZ))  # answered: NO_DATA before the first revoke
        assert answer.status in (types_pb2.NOT_REVOKED, types_pb2.NO_DATA)
        err = _error(lambda: _revoke(channel, card_id(GZ)))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "'terminal'" in err.details() and "Admin/Revoke" in err.details()
        sync: Any = sync_pb2_grpc.SyncStub(channel)  # type: ignore[no-untyped-call]
        err = _error(lambda: sync.GetUpdates(sync_pb2.GetUpdatesRequest(node=GZ), timeout=10))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "'terminal'" in err.details() and "Sync/GetUpdates" in err.details()
        stream = sync.Subscribe(sync_pb2.SubscribeRequest(node=GZ), timeout=10)
        err = _error(lambda: next(iter(stream)))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "Sync/Subscribe" in err.details()
    assert _denied(cluster.city, "permission_denied", "Revoke") == before + 1
    assert _denied(cluster.city, "permission_denied", "GetUpdates") >= 1


def test_operator_may_revoke_only_within_its_region(cluster: Cluster) -> None:
    card = card_id(GZ)
    with cluster.channel(cluster.city, "operator-gz") as channel:
        assert _revoke(channel, card).added == 1
        assert _check(channel, card).status == types_pb2.REVOKED
    before = _denied(cluster.city, "permission_denied", "Revoke")
    with cluster.channel(cluster.city, "operator-bj") as channel:
        err = _error(lambda: _revoke(channel, card_id(GZ)))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'operator' of region 110100" in err.details()
    assert "Admin/Revoke" in err.details()
    assert _denied(cluster.city, "permission_denied", "Revoke") == before + 1


def test_a_node_certificate_may_sync_but_not_administer(cluster: Cluster) -> None:
    with cluster.channel(cluster.city, "sync-peer") as channel:
        sync: Any = sync_pb2_grpc.SyncStub(channel)  # type: ignore[no-untyped-call]
        sync.GetUpdates(sync_pb2.GetUpdatesRequest(node=BJ), timeout=10)
        err = _error(lambda: _revoke(channel, card_id(GZ)))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'node'" in err.details()


# ---------------------------------------------------------------------------- the matrix
# Who may call what, written out by hand (issue #13's decision, node/grpc/calls.py ALLOWED_ROLES):
# any authenticated caller may check a card (operators and nodes see no more through
# CardStatus than Admin.GetEntry or Sync already show them); Admin is for operators (writes
# only within their region); Sync for nodes; health and reflection answer every certificate
# of the CA, even one without a role (load balancers probe; the schema is public in proto/).
OK, DENIED, NO_ROLE = (
    grpc.StatusCode.OK,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
)
CALLERS = ("terminal", "operator-gz", "operator-bj", "sync-peer", "no-role")
MATRIX: dict[str, tuple[grpc.StatusCode, ...]] = {
    # method:                 terminal  operator-gz  operator-bj  sync-peer  no-role
    "CardStatus/CheckCard":   (OK,      OK,          OK,          OK,        NO_ROLE),
    "CardStatus/BatchCheck":  (OK,      OK,          OK,          OK,        NO_ROLE),
    "Admin/GetEntry":         (DENIED,  OK,          OK,          DENIED,    NO_ROLE),
    "Admin/Status":           (DENIED,  OK,          OK,          DENIED,    NO_ROLE),
    "Admin/Revoke":           (DENIED,  OK,          DENIED,      DENIED,    NO_ROLE),
    "Sync/GetUpdates":        (DENIED,  DENIED,      DENIED,      OK,        NO_ROLE),
    "Health/Check":           (OK,      OK,          OK,          OK,        OK),
    "Reflection/List":        (OK,      OK,          OK,          OK,        OK),
}  # fmt: skip


def _call(channel: grpc.Channel, method: str) -> Any:
    stub: Any
    if method.startswith("CardStatus/"):
        stub = card_status_pb2_grpc.CardStatusStub(channel)  # type: ignore[no-untyped-call]
        if method.endswith("CheckCard"):
            return _check(channel, card_id(GZ))
        return stub.BatchCheck(
            card_status_pb2.BatchCheckRequest(card_ids=[card_id(GZ)]), timeout=10
        )
    if method == "Admin/GetEntry":
        stub = admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
        return stub.GetEntry(admin_pb2.GetEntryRequest(card_id=card_id(GZ)), timeout=10)
    if method == "Admin/Status":
        stub = admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
        return stub.Status(admin_pb2.StatusRequest(), timeout=10)
    if method == "Admin/Revoke":
        return _revoke(channel, card_id(GZ))
    if method == "Sync/GetUpdates":
        stub = sync_pb2_grpc.SyncStub(channel)  # type: ignore[no-untyped-call]
        return stub.GetUpdates(sync_pb2.GetUpdatesRequest(node=BJ), timeout=10)
    if method == "Health/Check":
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert method == "Reflection/List"
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    return next(iter(stub.ServerReflectionInfo(iter([request]), timeout=10)))


@pytest.mark.parametrize("method", list(MATRIX))
def test_the_role_matrix(cluster: Cluster, method: str) -> None:
    got = []
    for caller in CALLERS:
        with cluster.channel(cluster.city, caller) as channel:
            try:
                _call(channel, method)
                got.append(OK)
            except grpc.RpcError as exc:
                got.append(exc.code())
    assert dict(zip(CALLERS, got, strict=True)) == dict(zip(CALLERS, MATRIX[method], strict=True))


def test_the_matrix_is_the_nodes_role_table() -> None:
    """Every metered method above is in ALLOWED_ROLES with exactly the roles the matrix lets
    through (so the table in node/grpc/calls.py and this one cannot drift apart)."""
    roles = {"terminal": "terminal", "operator-gz": "operator", "sync-peer": "node"}
    for method, codes in MATRIX.items():
        service, name = method.split("/")
        if service in ("Health", "Reflection"):
            assert (service, name) not in ALLOWED_ROLES  # not metered: any CA certificate
            continue
        allowed = {
            roles[c] for c, code in zip(CALLERS, codes, strict=False) if c in roles and code is OK
        }
        assert ALLOWED_ROLES[(service, name)] == allowed, method


# ---------------------------------------------------------------------------- authentication
def test_a_certificate_without_a_role_is_unauthenticated(cluster: Cluster) -> None:
    before = _denied(cluster.city, "unauthenticated", "CheckCard")
    with cluster.channel(cluster.city, "no-role") as channel:
        err = _error(lambda: _check(channel, card_id(GZ)))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "no blacklist role" in err.details()
    assert _denied(cluster.city, "unauthenticated", "CheckCard") == before + 1


@pytest.mark.parametrize("cert", [None, "foreign"], ids=["no-client-cert", "other-ca"])
def test_the_handshake_refuses_a_client_without_a_valid_certificate(
    cluster: Cluster, cert: str | None
) -> None:
    # grpcio cannot request a client certificate without requiring it (node/tls.py), so the
    # TLS handshake fails and the client sees UNAVAILABLE, never reaching a servicer.
    with cluster.channel(cluster.city, cert) as channel:
        err = _error(lambda: _check(channel, card_id(GZ)))
    assert err.code() == grpc.StatusCode.UNAVAILABLE


# ---------------------------------------------------------------------------- sync over mTLS
def test_a_revoke_at_the_child_reaches_the_parent_over_mtls(cluster: Cluster) -> None:
    card = card_id(GZ)
    with cluster.channel(cluster.city, "operator-gz") as channel:
        assert _revoke(channel, card).added == 1
    deadline = time.monotonic() + 20
    with cluster.channel(cluster.province, "terminal") as channel:
        while True:
            status = _check(channel, card).status
            if status == types_pb2.REVOKED or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert status == types_pb2.REVOKED, cluster.city.log_tail()
    connected = _scrape(cluster.city).value(
        "blacklist_upstream_connected", upstream=cluster.province.grpc
    )
    assert connected == 1


# ---------------------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    ("given", "missing"),
    [({}, ["'tls_ca'", "'tls_cert'", "'tls_key'"]), ({"tls_ca": "ca.crt"}, ["'tls_cert'"])],
    ids=["neither-tls-nor-plaintext", "tls-incomplete"],
)
def test_a_config_without_tls_or_plaintext_is_refused(
    tmp_path: Path, given: dict[str, str], missing: list[str]
) -> None:
    files = write_node(tmp_path / "node", GZ)
    fields = {k: v for k, v in files.fields.items() if k != "plaintext"}
    config = write_config(tmp_path / "node" / "node.toml", {**fields, **given})
    code, stderr = run_node_expecting_exit(config)
    assert code == 2, stderr
    assert stderr.startswith("error: "), stderr
    for fragment in [*missing, "'plaintext = true'"]:
        assert fragment in stderr, f"{fragment!r} not in {stderr!r}"
    assert not files.data_dir.exists()
