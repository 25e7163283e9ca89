"""Read replicas behind a real HAProxy (issue #18; node/local/scale.py, deploy/haproxy.cfg.in).

Everything here is a real process on loopback: Debian's haproxy, upstream and replica nodes
(`python -m node run`). A replica is NOT_SERVING on the gRPC health service (every process,
workers included) and 503 on /ready until it has caught up; HAProxy routes by it; a replica
whose upstream went silent leaves the pool past ``ready_max_age`` and rejoins when it is back.
Under load, a replica killed with SIGKILL costs no wrong answer and at most the calls in flight
on it, and comes back once it has caught up with what was published while it was down.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from node.gen.blacklist.v1 import admin_pb2, card_status_pb2, card_status_pb2_grpc, types_pb2
from node.local.drill import Drill
from node.local.scale import (
    Backend,
    Process,
    free_port,
    haproxy_path,
    haproxy_states,
    render_haproxy,
    spawn,
    stop,
)
from node.local.scale import replica_set as running_replicas
from tests.node_harness import NodeProcess, card_id, write_node

pytestmark = pytest.mark.skipif(
    haproxy_path() is None, reason="haproxy not installed (make tools installs it)"
)


def wait_for(what: str, ok: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def health_everywhere(address: str, n: int = 6) -> set[int]:
    """The overall health status as answered on ``n`` separate connections (so that, with
    workers, the answers come from more than one process)."""
    statuses = set()
    for _ in range(n):
        channel = grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        stub: Any = health_pb2_grpc.HealthStub(channel)  # type: ignore[no-untyped-call]
        for service in ("", "blacklist.v1.CardStatus"):
            statuses.add(
                stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
            )
        channel.close()
    return statuses


def ready(metrics_url: str) -> tuple[int, str]:
    url = metrics_url.replace("/metrics", "/ready")
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


SERVING = {health_pb2.HealthCheckResponse.SERVING}
NOT_SERVING = {health_pb2.HealthCheckResponse.NOT_SERVING}


def test_haproxy_routes_by_readiness(tmp_path: Path) -> None:
    """Not serving before the first round, serving once caught up, out again when the feed's
    freshness is older than ready_max_age, back when the upstream returns."""
    upstream_port = free_port()
    up_files = write_node(
        tmp_path / "upstream",
        "440100",
        extra={"listen": f"127.0.0.1:{upstream_port}", "head_statement_interval": 0.5},
    )
    assert up_files.keys is not None
    replica_files = write_node(
        tmp_path / "replica",
        "440100",
        signing=False,
        trusted=[up_files.keys.public],
        extra={
            "upstreams": [f"127.0.0.1:{upstream_port}"],
            "sync_interval": 0.5,
            "ready_max_age": 4.0,
            "workers": 2,
        },
    )
    replica = NodeProcess(replica_files.config).start()
    upstream = NodeProcess(up_files.config)
    haproxy: Process | None = None
    try:
        # Nothing listens at the upstream's address yet: the replica holds nothing.
        assert health_everywhere(replica.grpc) == NOT_SERVING
        code, text = ready(replica.metrics_url)
        assert code == 503 and text.startswith("NOT_SERVING bootstrapping")
        assert replica.scrape().value("blacklist_ready") == 0
        metrics = replica.metrics_url.removeprefix("http://").partition("/")[0]
        sock = tmp_path / "haproxy.sock"
        listen = f"127.0.0.1:{free_port()}"
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(render_haproxy(listen, [Backend("r1", replica.grpc, metrics)], sock))
        haproxy_bin = haproxy_path()
        assert haproxy_bin is not None
        haproxy = spawn("haproxy", [haproxy_bin, "-f", str(cfg), "-db"], tmp_path / "lb")
        wait_for("HAProxy's first checks", lambda: sock.exists() and "r1" in haproxy_states(sock))
        time.sleep(1.5)  # three check intervals: it stays DOWN
        assert haproxy_states(sock)["r1"].startswith("DOWN")
        through: Any = card_status_pb2_grpc.CardStatusStub(  # type: ignore[no-untyped-call]
            grpc.insecure_channel(listen)
        )
        card = card_id("440100")
        with pytest.raises(grpc.RpcError) as refused:
            through.CheckCard(card_status_pb2.CheckCardRequest(card_id=card), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # HAProxy: no server

        upstream.start()
        upstream.admin.Revoke(
            admin_pb2.RevokeRequest(
                revocations=[admin_pb2.Revocation(card_id=card, reason=types_pb2.LOSS)]
            ),
            timeout=10,
        )
        wait_for("the replica to serve", lambda: health_everywhere(replica.grpc) == SERVING)
        code, text = ready(replica.metrics_url)
        assert code == 200 and text.startswith("SERVING caught up")
        wait_for("HAProxy to route to it", lambda: haproxy_states(sock)["r1"].startswith("UP"))
        answer = through.CheckCard(card_status_pb2.CheckCardRequest(card_id=card), timeout=10)
        assert answer.status == types_pb2.REVOKED

        upstream.kill()  # silent: no more statements; past 4 s the copy is too old to serve
        wait_for("the replica to leave", lambda: health_everywhere(replica.grpc) == NOT_SERVING)
        assert "last proven current" in ready(replica.metrics_url)[1]
        wait_for("HAProxy to take it out", lambda: haproxy_states(sock)["r1"].startswith("DOWN"))

        upstream.start()
        wait_for("the replica to rejoin", lambda: health_everywhere(replica.grpc) == SERVING)
        wait_for("HAProxy to route again", lambda: haproxy_states(sock)["r1"].startswith("UP"))
        assert replica.scrape().value("blacklist_ready") == 1
    finally:
        if haproxy is not None:
            stop(haproxy)
        upstream.close()
        replica.close()


@pytest.fixture(name="replica_set")
def _replica_set(tmp_path: Path) -> Iterator[Path]:
    with running_replicas(tmp_path / "scale") as directory:
        yield directory


def test_kill_9_a_replica_under_load(replica_set: Path) -> None:
    report = Drill(replica_set, threads=4).run(seconds=6.0)
    assert report.calls > 100, report.lines()
    assert report.wrong_answers == 0, report.wrong_examples
    assert report.failed_calls <= report.threads, report.lines()  # at most those in flight
    assert report.rejoined_after_s is not None, report.lines()  # restarted and caught up
    assert report.reached_every_replica, report.lines()  # revocations reached both
