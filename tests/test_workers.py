"""``workers = N`` as real processes: one port, several serving processes (issue #6).

With ``workers = 2`` two worker processes serve CheckCard on the node's port and the writer
serves none of it (issue #15: a delta it applies never holds up a check); every Admin call
reaches the writer through a worker's relay; a revocation is seen on every connection as soon
as Revoke returned; a worker killed with SIGKILL is restarted; SIGTERM stops everything
with exit 0.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from node.gen.blacklist.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    card_status_pb2_grpc,
    sync_pb2,
    sync_pb2_grpc,
    types_pb2,
)
from node.gen.blacklist.v1.card_status_pb2 import CheckCardRequest
from node.tls import CertFiles, init_ca, issue
from node.workers.relay import encode_auth
from tests.node_harness import (
    CHANNEL_OPTIONS,
    Metrics,
    NodeProcess,
    card_id,
    run_node_expecting_exit,
    write_config,
    write_keys,
    write_node,
)

GZ = "440100"
S = types_pb2.CardStatusCode
CONNECTIONS = 24  # P(all on one of two processes) = 2**-23


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One node for the tests that leave its processes as they were."""
    files = write_node(tmp_path_factory.mktemp("shared") / "gz", GZ, extra={"workers": 2})
    with NodeProcess(files.config) as process:
        yield process


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    files = write_node(tmp_path / "gz", GZ, extra={"workers": 2})
    with NodeProcess(files.config) as process:
        yield process


def fresh_channels(node: NodeProcess, n: int = CONNECTIONS) -> list[grpc.Channel]:
    """Channels that each open their own TCP connection (no shared subchannel), so that
    SO_REUSEPORT spreads them over the serving processes."""
    options = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
    return [grpc.insecure_channel(node.grpc, options=options) for _ in range(n)]


def scrape(url: str) -> Metrics:
    return Metrics.of(url)


def worker_urls(node: NodeProcess) -> dict[int, str]:
    """pid → /metrics URL of every live worker, from the writer's blacklist_worker_info."""
    info = node.scrape().samples.get("blacklist_worker_info", [])
    return {int(labels["pid"]): labels["metrics_url"] for labels, _ in info}


def checks_answered(url: str) -> float:
    return sum(v for _, v in scrape(url).samples.get("blacklist_checks_total", []))


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def check_everywhere(channels: list[grpc.Channel], card: str) -> set[int]:
    statuses = set()
    for channel in channels:
        stub = card_status_pb2_grpc.CardStatusStub(channel)  # type: ignore[no-untyped-call]
        statuses.add(stub.CheckCard(CheckCardRequest(card_id=card), timeout=10).status)
    return statuses


def test_two_workers_answer_on_one_port_and_the_writer_none(shared: NodeProcess) -> None:
    pids = worker_urls(shared)
    ready: dict[str, Any] = dict(shared.ready)  # parsed JSON (the harness types it as str)
    assert len(pids) == 2 and ready["workers"] == list(pids)
    assert shared.scrape().value("blacklist_workers") == 2
    urls = [shared.metrics_url, *pids.values()]
    before = [checks_answered(u) for u in urls]
    channels = fresh_channels(shared)
    assert len(check_everywhere(channels, card_id())) == 1  # one answer on every connection
    after = [checks_answered(u) for u in urls]
    writer, *served = [a - b for a, b in zip(after, before, strict=True)]
    assert writer == 0  # the writer answered no check
    assert sum(served) == CONNECTIONS and all(n > 0 for n in served), served
    for channel in channels:
        channel.close()


def test_a_revocation_is_seen_on_every_connection_once_revoke_returned(
    shared: NodeProcess,
) -> None:
    urls = list(worker_urls(shared).values())
    channels = fresh_channels(shared)
    cards = [card_id() for _ in range(5)]
    assert len(check_everywhere(channels, cards[0])) == 1  # connections up
    versions = []
    for card in cards:
        # Each Revoke goes over a fresh connection, to a worker, which relays it.
        admin = admin_pb2_grpc.AdminStub(fresh_channels(shared, 1)[0])  # type: ignore[no-untyped-call]
        done = admin.Revoke(
            admin_pb2.RevokeRequest(
                revocations=[admin_pb2.Revocation(card_id=card, reason=types_pb2.LOSS)]
            ),
            timeout=10,
        )
        versions.append(done.version)
        assert check_everywhere(channels, card) == {S.REVOKED}
    reinstated = admin_pb2_grpc.AdminStub(channels[-1]).Reinstate(  # type: ignore[no-untyped-call]
        admin_pb2.ReinstateRequest(card_ids=[cards[0]]), timeout=10
    )
    assert reinstated.version == versions[-1] + 1
    assert check_everywhere(channels, cards[0]) == {S.NOT_REVOKED}
    assert check_everywhere(channels, cards[1]) == {S.REVOKED}
    # Every connection's Status (relayed or not) reports the writer's one feed.
    for channel in channels[:4]:
        status = admin_pb2_grpc.AdminStub(channel).Status(  # type: ignore[no-untyped-call]
            admin_pb2.StatusRequest(), timeout=10
        )
        assert [f.version for f in status.feeds] == [reinstated.version]
    relayed = [scrape(u).samples.get("blacklist_relayed_calls_total", []) for u in urls]
    assert sum(v for samples in relayed for _, v in samples) >= len(cards) + 1 + 4
    audit = shared.admin.ListAudit(admin_pb2.ListAuditRequest(), timeout=10)
    assert all(r.operator.startswith("plaintext:ipv4:127.0.0.1") for r in audit.records)
    for channel in channels:
        channel.close()


def test_health_is_serving_on_every_process(shared: NodeProcess) -> None:
    for channel in fresh_channels(shared, 8):
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", "blacklist.v1.CardStatus", "blacklist.v1.Admin"):
            answer = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        channel.close()


def test_a_killed_worker_is_restarted_and_serves_again(node: NodeProcess) -> None:
    old, other = worker_urls(node)
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: node.scrape().value("blacklist_worker_restarts_total") == 1, "a restart")
    wait_for(lambda: node.scrape().value("blacklist_workers") == 2, "two serving processes")
    ((new, url),) = ((p, u) for p, u in worker_urls(node).items() if p != other)
    assert new != old
    card = card_id()
    node.admin.Revoke(
        admin_pb2.RevokeRequest(
            revocations=[admin_pb2.Revocation(card_id=card, reason=types_pb2.LOSS)]
        ),
        timeout=10,
    )
    before = checks_answered(url)
    channels = fresh_channels(node)
    assert check_everywhere(channels, card) == {S.REVOKED}
    assert checks_answered(url) > before
    for channel in channels:
        channel.close()


def test_sigterm_stops_the_writer_and_its_workers_with_exit_0(node: NodeProcess) -> None:
    workers = list(worker_urls(node))
    assert node.stop() == 0
    for worker in workers:
        wait_for(lambda w=worker: not _running(w), f"worker {worker} to exit", timeout=10)


def test_a_worker_dies_with_its_writer(node: NodeProcess) -> None:
    workers = list(worker_urls(node))
    node.kill()
    for worker in workers:
        wait_for(lambda w=worker: not _running(w), f"worker {worker} to exit", timeout=10)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


# ---------------------------------------------------------------------------- sync
def test_sync_through_a_node_with_workers(tmp_path: Path) -> None:
    """Two cities sync through a province with 3 serving processes: PushDeltas up and the
    Subscribe stream down may each land on a worker and be relayed. Scheduled pulls are a
    minute apart, so arrival within the wait is the push path."""
    gz_keys = write_keys(tmp_path / "keys", GZ, ["4401"])
    sz_keys = write_keys(tmp_path / "keys", "440300", ["4403"])
    province = write_node(
        tmp_path / "gd",
        "440000",
        role="province",
        signing=False,
        trusted=[gz_keys.public, sz_keys.public],
        extra={"workers": 3},
    )
    with NodeProcess(province.config) as gd:
        cities = [
            NodeProcess(
                write_node(
                    tmp_path / region,
                    region,
                    signing=False,
                    trusted=[gz_keys.public, sz_keys.public],
                    extra={
                        "signing_key": str(own.private),
                        "upstreams": [gd.grpc],
                        "sync_interval": 60,
                    },
                ).config
            )
            for region, own in ((GZ, gz_keys), ("440300", sz_keys))
        ]
        with cities[0] as gz, cities[1] as sz:
            wait_for(  # relayed or not, every subscription is held by the writer's hub
                lambda: gd.scrape().value("blacklist_sync_subscribers") == 2, "subscriptions"
            )
            cards = [card_id() for _ in range(3)]
            for card in cards:
                gz.admin.Revoke(
                    admin_pb2.RevokeRequest(
                        revocations=[admin_pb2.Revocation(card_id=card, reason=types_pb2.LOSS)]
                    ),
                    timeout=10,
                )
            stub: Any = card_status_pb2_grpc.CardStatusStub(sz.channel)  # type: ignore[no-untyped-call]
            wait_for(
                lambda: all(
                    stub.CheckCard(CheckCardRequest(card_id=c), timeout=10).status == S.REVOKED
                    for c in cards
                ),
                "the revocations at 440300",
            )
            assert check_everywhere(fresh_channels(gd, 8), cards[-1]) == {S.REVOKED}


# ---------------------------------------------------------------------------- mutual TLS
def test_with_tls_relayed_calls_keep_the_callers_role_and_identity(tmp_path: Path) -> None:
    """Roles are checked by the writer for relayed calls exactly as for direct ones, from
    the certificate the worker saw; a client cannot claim another identity in metadata."""
    ca = tmp_path / "ca"
    init_ca(ca)
    certs = tmp_path / "certs"
    server = issue(ca, role="node", region=GZ, name="gz-node", out=certs, hosts=("127.0.0.1",))
    operator = issue(ca, role="operator", region=GZ, name="operator-gz", out=certs)
    terminal = issue(ca, role="terminal", region=GZ, name="terminal-gz", out=certs)
    peer = issue(ca, role="node", region="110100", name="peer", out=certs)
    files = write_node(tmp_path / "gz", GZ)
    fields = {k: v for k, v in files.fields.items() if k != "plaintext"}
    fields.update(
        workers=2, tls_ca=str(ca / "ca.crt"), tls_cert=str(server.cert), tls_key=str(server.key)
    )
    config = write_config(tmp_path / "tls.toml", fields)

    def channels(cert: CertFiles) -> list[grpc.Channel]:
        creds = grpc.ssl_channel_credentials(
            root_certificates=(ca / "ca.crt").read_bytes(),
            private_key=cert.key.read_bytes(),
            certificate_chain=cert.cert.read_bytes(),
        )
        options = [("grpc.use_local_subchannel_pool", 1)]
        return [grpc.secure_channel(gz.grpc, creds, options) for _ in range(12)]

    with NodeProcess(config) as gz:
        urls = list(worker_urls(gz).values())
        for n, channel in enumerate(channels(operator)):
            _revoke(channel, card_id(serial=n))
        forged = (("blacklist-forwarded-auth-bin", encode_auth({"x509_pem_cert": [b""]})),)
        for channel in channels(terminal):
            for metadata in ((), forged):
                with pytest.raises(grpc.RpcError) as caught:
                    _revoke(channel, card_id(), metadata)
                assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        for channel in channels(peer):
            sync: Any = sync_pb2_grpc.SyncStub(channel)  # type: ignore[no-untyped-call]
            sync.GetUpdates(sync_pb2.GetUpdatesRequest(), timeout=10)
        relayed = [scrape(u).samples.get("blacklist_relayed_calls_total", []) for u in urls]
        assert sum(v for samples in relayed for _, v in samples) >= 12 + 24 + 12  # all of them
        admin: Any = admin_pb2_grpc.AdminStub(channels(operator)[0])  # type: ignore[no-untyped-call]
        audit = admin.ListAudit(admin_pb2.ListAuditRequest(), timeout=10)
        assert len(audit.records) == 12
        assert {r.operator for r in audit.records} == {"operator:440100:operator-gz"}


def _revoke(channel: grpc.Channel, card: str, metadata: Any = ()) -> Any:
    admin: Any = admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
    return admin.Revoke(
        admin_pb2.RevokeRequest(
            revocations=[admin_pb2.Revocation(card_id=card, reason=types_pb2.LOSS)]
        ),
        metadata=metadata,
        timeout=10,
    )


def test_a_port_another_node_holds_is_refused_rather_than_shared(
    shared: NodeProcess, tmp_path: Path
) -> None:
    files = write_node(tmp_path / "other", GZ, extra={"workers": 2, "listen": shared.grpc})
    code, err = run_node_expecting_exit(files.config)
    assert code == 2 and f"cannot listen on {shared.grpc}" in err


def test_one_process_exports_the_same_series(tmp_path: Path) -> None:
    """workers = 1: blacklist_workers is 1 (the writer) and no worker ever restarted."""
    with NodeProcess(write_node(tmp_path / "gz", GZ).config) as alone:
        metrics = alone.scrape()
        assert metrics.value("blacklist_workers") == 1
        assert metrics.value("blacklist_worker_restarts_total") == 0
        assert "blacklist_worker_info" not in metrics.samples


def test_workers_out_of_range_is_refused(tmp_path: Path) -> None:
    files = write_node(tmp_path / "gz", GZ)
    config = write_config(tmp_path / "bad.toml", {**files.fields, "workers": 0})
    code, err = run_node_expecting_exit(config)
    assert code == 2 and "'workers'" in err and "1..64" in err
