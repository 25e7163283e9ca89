"""The attack matrix of issue #5, against real node processes over mutual TLS.

Two nodes of the certified hierarchy: province 440000 (an authority, certified for ``44`` by
the pinned root) and its child, city 440300. Keys, certificates and revocations come from
``python -m node keys``, TLS certificates from ``python -m node tls``. Every attack must be
refused with nothing applied and its cause counted in the node's metrics; the legitimate
paths around it (a city key certified later through the province's feed, a revocation in
the province's feed, the feed continuing under a rotated key) must work.

The whole matrix runs once per signing suite (issue #14), every key of the world in it.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from blacklist.authority import Revocation, build_delta
from blacklist.delta import FeedHead
from blacklist.deltadecode import decode_delta
from blacklist.entry import Reason
from node.gen.blacklist.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    card_status_pb2,
    card_status_pb2_grpc,
    sync_pb2,
    sync_pb2_grpc,
    types_pb2,
)
from node.keyfiles import load_certificate, load_signing_key
from node.local.process import LocalNode, NodeSpec, start_node
from node.tls import CertFiles, init_ca, issue
from tests.conftest import SUITE_NAMES
from tests.node_harness import Metrics, card_id

PROVINCE, GZ, SZ = "440000", "440100", "440300"
PSAM = "4401000000000000C0FFEE"
REVOKED = types_pb2.REVOKED


def _keys(*args: str | Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "node", "keys", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@dataclass
class World:
    keys: Path
    ca: Path
    certs: dict[str, CertFiles]
    province: LocalNode
    city: LocalNode

    def channel(self, node: LocalNode, cert: str | None) -> grpc.Channel:
        root = (self.ca / "ca.crt").read_bytes()
        if cert is None:
            creds = grpc.ssl_channel_credentials(root_certificates=root)
        else:
            files = self.certs[cert]
            creds = grpc.ssl_channel_credentials(
                root, files.key.read_bytes(), files.cert.read_bytes()
            )
        return grpc.secure_channel(node.grpc, creds)

    def admin(self, node: LocalNode, cert: str) -> Any:
        return admin_pb2_grpc.AdminStub(self.channel(node, cert))  # type: ignore[no-untyped-call]

    def status(self, node: LocalNode, cert: str | None = "terminal") -> Any:
        return card_status_pb2_grpc.CardStatusStub(self.channel(node, cert))  # type: ignore[no-untyped-call]

    def push(self, node: LocalNode, data: bytes) -> Any:
        sync: Any = sync_pb2_grpc.SyncStub(self.channel(node, "peer"))  # type: ignore[no-untyped-call]
        return sync.PushDeltas(sync_pb2.PushDeltasRequest(deltas=[data], node="test"), timeout=30)

    def check(self, node: LocalNode, card: str, psam: str = "") -> Any:
        request = card_status_pb2.CheckCardRequest(card_id=card, psam_id=psam)
        return self.status(node).CheckCard(request, timeout=10)

    def head(self, node: LocalNode, publisher: str) -> int:
        status = self.admin(node, "operator-gd").Status(admin_pb2.StatusRequest(), timeout=10)
        return next((f.version for f in status.feeds if f.publisher == publisher), 0)


def scrape(node: LocalNode) -> Metrics:
    return Metrics.of(node.metrics_url)


def wait_for(what: str, ok: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module", params=SUITE_NAMES)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    suite = request.param
    d = tmp_path_factory.mktemp("attack")
    k = d / "keys"
    _keys("init-root", "--suite", suite, "--out", k)
    _keys("init-root", "--suite", suite, "--out", d / "fake")  # someone's self-made root
    for name, publisher, prefix in (
        ("440000", PROVINCE, "44"),
        ("440100", GZ, "4401"),
        ("440100-new", GZ, "4401"),
        ("440300", SZ, "4403"),
        ("fake-440100", GZ, "4401"),
    ):
        _keys("generate", "--suite", suite, "--publisher", publisher, "--prefix", prefix,
              "--out", k / name)  # fmt: skip
        assert (k / name / f"{publisher}.key").exists()
    gd = k / "440000"
    _keys("certify", "--issuer", k / "root.key", "--subject", gd / "440000.pub",
          "--scope", "44", "--days", "30", "--out", k / "440000.crt")  # fmt: skip
    for name, scope in (("440100", "4401"), ("440100-new", "4401"), ("440300", "4403")):
        _keys("certify", "--issuer", gd / "440000.key", "--issuer-cert", k / "440000.crt",
              "--subject", k / name / f"{name[:6]}.pub", "--scope", scope, "--days", "30",
              "--out", k / f"{name}.crt")  # fmt: skip
    _keys("certify", "--issuer", d / "fake" / "root.key", "--subject",
          k / "fake-440100" / "440100.pub", "--scope", "4401", "--days", "30",
          "--out", k / "fake-440100.crt")  # fmt: skip

    ca = d / "ca"
    init_ca(ca)
    certs: dict[str, CertFiles] = {}
    for name, role, region in (
        ("province-node", "node", PROVINCE),
        ("city-node", "node", SZ),
        ("peer", "node", GZ),
        ("terminal", "terminal", SZ),
        ("operator-gd", "operator", PROVINCE),
        ("operator-gz", "operator", GZ),
    ):
        certs[name] = issue(
            ca, role=role, region=region, name=name, hosts=("127.0.0.1",), out=d / "tls"
        )
    # Only the province's and Shenzhen's chains are configured: Guangzhou's keys become
    # known through the province's feed (PublishTrust), as certificates travel with feeds.
    chains = ((k / "440000.crt",), (k / "440000.crt", k / "440300.crt"))

    def spec(region: str, role: str, key: Path, cert: str, **more: Any) -> NodeSpec:
        files = certs[cert]
        return NodeSpec(
            region, role=role, signing_key=key, trust_anchor=k / "root.pub",
            certificate_chains=chains, tls_ca=ca / "ca.crt", tls_cert=files.cert,
            tls_key=files.key, sync_interval=0.5, **more,
        )  # fmt: skip

    province = start_node(
        spec(PROVINCE, "province", gd / "440000.key", "province-node"), d / "n" / PROVINCE
    )
    try:
        city = start_node(
            spec(SZ, "city", k / "440300" / "440300.key", "city-node", upstreams=(province.grpc,)),
            d / "n" / SZ,
        )
    except BaseException:
        province.close()
        raise
    try:
        yield World(k, ca, certs, province, city)
        assert city.stop() == 0, city.log_tail()
        assert province.stop() == 0, province.log_tail()
    finally:
        city.close()
        province.close()


def rejected(node: LocalNode, cause: str) -> float:
    return scrape(node).get("blacklist_deltas_rejected_total", cause=cause)


def refused_push(world: World, node: LocalNode, data: bytes, cause: str) -> None:
    before = rejected(node, cause)
    answer = world.push(node, data)
    assert answer.applied == 0 and len(answer.rejected) == 1, answer
    assert answer.rejected[0].startswith(f"{cause}:"), answer.rejected
    assert rejected(node, cause) == before + 1


def test_a_city_signing_another_citys_cards(world: World) -> None:
    victim = card_id(SZ)
    data = gz_delta_for(world, "440100", FeedHead.genesis(GZ), victim)
    publish_gz_certificate(world)
    refused_push(world, world.province, data, "key_not_allowed")
    assert world.check(world.province, victim).status != REVOKED
    assert world.head(world.province, GZ) == 0


def test_a_province_signing_outside_its_prefix(world: World) -> None:
    key = dataclasses.replace(
        load_signing_key(world.keys / "440000" / "440000.key"), prefixes=("",)
    )
    beijing = card_id("110100")
    delta = build_delta(
        key, FeedHead(PROVINCE, 99, bytes(32)), [Revocation(beijing, Reason.LOSS, int(time.time()))],
        issued_at=int(time.time()),
    )  # fmt: skip
    refused_push(world, world.city, delta.to_bytes(), "key_not_allowed")
    assert world.check(world.city, beijing).status != REVOKED


def test_a_key_certified_by_a_self_made_root(world: World) -> None:
    card = card_id(GZ)
    data = gz_delta_for(world, "fake-440100", FeedHead.genesis(GZ), card)
    refused_push(world, world.province, data, "unknown_key")
    assert world.check(world.province, card).status != REVOKED


def gz_delta_for(world: World, key: str, head: FeedHead, card: str, at: int | None = None) -> bytes:
    # An attacker's own tooling signs whatever it likes: widen the key's claimed scope so
    # that the library's authority-side scope check does not stop it before the node can.
    signing = dataclasses.replace(
        load_signing_key(world.keys / key / "440100.key"), prefixes=("44",)
    )
    when = int(time.time()) if at is None else at
    return build_delta(
        signing, head, [Revocation(card, Reason.LOSS, when)], issued_at=when
    ).to_bytes()


def operator_cli(world: World, *args: str | Path, expect: int = 0) -> str:
    """``python -m node ...`` as the province's operator (mutual TLS)."""
    files = world.certs["operator-gd"]
    done = subprocess.run(
        [sys.executable, "-m", "node", *map(str, args), "--node", world.province.grpc,
         "--ca", str(world.ca / "ca.crt"), "--cert", str(files.cert), "--key", str(files.key)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == expect, (done.stdout, done.stderr)
    return done.stdout + done.stderr


def publish_gz_certificate(world: World) -> None:
    """The province publishes Guangzhou's certificates in its feed (`keys publish`; running
    it again publishes nothing new)."""
    crts = [world.keys / f"{n}.crt" for n in ("440100", "440100-new")]
    out = operator_cli(world, "keys", "publish", *crts)
    assert "published 2 record(s)" in out or "nothing new" in out, out


def test_revocation_in_the_certifiers_feed_then_rotation_and_replay(world: World) -> None:
    """A key used after its revocation time is refused on every node; the feed continues
    under the rotated key; an old-key delta for a version already taken is a fork (a second history for a held version: counted as tampering)."""
    publish_gz_certificate(world)
    wait_for("the certificates at the city", lambda: world.head(world.city, PROVINCE) >= 1)
    # Times on the certificates' clock: the CLI made them valid from their creation.
    now = load_certificate(world.keys / "440100-new.crt").not_before + 20
    first_card = card_id(GZ)
    v1 = decode_delta(gz_delta_for(world, "440100", FeedHead.genesis(GZ), first_card, now - 10))
    assert world.push(world.province, v1.to_bytes()).applied == 1
    wait_for("v1 at the city", lambda: world.check(world.city, first_card).status == REVOKED)

    # The province revokes the old Guangzhou key as of now, through its own feed.
    revocation = world.keys / "440100-revoked.rev"
    _keys("revoke", "--issuer", world.keys / "440000" / "440000.key", "--key",
          world.keys / "440100" / "440100.pub", "--as-of", str(now), "--reason", "compromised",
          "--out", revocation)  # fmt: skip
    province_version = world.head(world.province, PROVINCE)
    assert "published 1 record(s)" in operator_cli(world, "keys", "publish", revocation)
    wait_for(
        "the revocation at the city",
        lambda: world.head(world.city, PROVINCE) == province_version + 1,
    )
    v1_head = FeedHead(GZ, 1, v1.digest)
    late_card = card_id(GZ)
    late = gz_delta_for(world, "440100", v1_head, late_card, now + 1)
    for node in (world.province, world.city):
        refused_push(world, node, late, "key_revoked")
        assert world.check(node, late_card).status != REVOKED

    # The feed continues under the newly certified key ...
    rotated_card = card_id(GZ)
    v2 = gz_delta_for(world, "440100-new", v1_head, rotated_card, now + 2)
    assert world.push(world.province, v2).applied == 1
    wait_for("v2 at the city", lambda: world.check(world.city, rotated_card).status == REVOKED)
    # ... and a delta the old key signed before its revocation time (backdated: a stolen
    # key can claim any time) for the version the rotated key took is a fork.
    backdated_card = card_id(GZ)
    backdated = gz_delta_for(world, "440100", v1_head, backdated_card, now - 5)
    for node in (world.province, world.city):
        refused_push(world, node, backdated, "fork")
        assert world.check(node, backdated_card).status != REVOKED
        assert world.head(node, GZ) == 2


def test_a_client_without_a_certificate(world: World) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        world.status(world.city, cert=None).CheckCard(
            card_status_pb2.CheckCardRequest(card_id=card_id(SZ)), timeout=10
        )
    # grpcio cannot "request but not require" a client certificate: the handshake fails.
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def _denied(node: LocalNode, method: str) -> float:
    return scrape(node).get(
        "blacklist_denied_calls_total", reason="permission_denied", grpc_method=method
    )


def test_a_terminal_calling_revoke(world: World) -> None:
    before = _denied(world.city, "Revoke")
    card = card_id(SZ)
    with pytest.raises(grpc.RpcError) as caught:
        world.admin(world.city, "terminal").Revoke(
            admin_pb2.RevokeRequest(
                revocations=[admin_pb2.Revocation(card_id=card, reason=types_pb2.LOSS)]
            ),
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _denied(world.city, "Revoke") == before + 1
    assert world.check(world.city, card).status != REVOKED


def test_an_operator_of_440100_revoking_a_110100_card(world: World) -> None:
    before = _denied(world.province, "Revoke")
    card = card_id("110100")
    with pytest.raises(grpc.RpcError) as caught:
        world.admin(world.province, "operator-gz").Revoke(
            admin_pb2.RevokeRequest(
                revocations=[admin_pb2.Revocation(card_id=card, reason=types_pb2.LOSS)]
            ),
            timeout=10,
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "outside the certificate's region" in (caught.value.details() or "")
    assert _denied(world.province, "Revoke") == before + 1


def test_a_revoked_psam_checking_a_card(world: World) -> None:
    assert "denied 1 PSAM(s)" in operator_cli(world, "psam", "revoke", "--reason", "loss", PSAM)
    shown = operator_cli(world, "psam", "show", PSAM)
    assert "denied by 440000 (loss" in shown
    assert re.search(r"since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ, feed version", shown), shown
    audit = world.admin(world.province, "operator-gd").ListAudit(
        admin_pb2.ListAuditRequest(card_id=PSAM), timeout=10
    )
    assert [(r.action, r.operator) for r in audit.records] == [
        (admin_pb2.AUDIT_ACTION_PSAM_REVOKE, "operator:440000:operator-gd")
    ]
    card = card_id(SZ)

    def refused_at_city() -> bool:
        try:
            world.check(world.city, card, psam=PSAM)
        except grpc.RpcError:
            return True
        return False

    wait_for("the PSAM denial at the city", refused_at_city)
    before = scrape(world.city).get("blacklist_psam_refusals_total", grpc_method="CheckCard")
    with pytest.raises(grpc.RpcError) as caught:
        world.check(world.city, card, psam=PSAM.lower())
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert ("blacklist-refusal", "psam-denied") in tuple(caught.value.trailing_metadata() or ())
    assert (
        scrape(world.city).get("blacklist_psam_refusals_total", grpc_method="CheckCard")
        == before + 1
    )
    # Other PSAMs, and checks without one, are answered as usual.
    assert world.check(world.city, card, psam="440300" + "0" * 16).status != REVOKED
    assert world.check(world.city, card).status != REVOKED
    with pytest.raises(grpc.RpcError) as bad:
        world.check(world.city, card, psam="not-a-psam")
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # A PSAM outside the operator's scope is refused at the edge, like a card.
    with pytest.raises(grpc.RpcError) as scoped:
        world.admin(world.province, "operator-gz").RevokePsam(
            admin_pb2.RevokePsamRequest(
                revocations=[admin_pb2.PsamRevocation(psam_id="4403" + "0" * 18, reason=1)]
            ),
            timeout=10,
        )
    assert scoped.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Lifting the denial lets the terminal work again, everywhere.
    assert "lifted 1 denial(s)" in operator_cli(world, "psam", "reinstate", PSAM)
    wait_for("the lifted denial at the city", lambda: not refused_at_city())


def test_publish_trust_takes_the_authoritys_own_certificate_not_anothers(world: World) -> None:
    """`keys publish` of the province's own certificate (issued by the root) is accepted,
    so a rotated certifier's new certificate can travel in its own feed; the root's
    certificate of another publisher is refused at the door, naming why."""
    out = operator_cli(world, "keys", "publish", world.keys / "440000.crt")
    assert "published 1 record(s)" in out or "nothing new" in out, out
    fake = operator_cli(world, "keys", "publish", world.keys / "fake-440100.crt", expect=1)
    assert "INVALID_ARGUMENT" in fake and "not by this authority's signing key" in fake, fake
