"""A child fails over down its upstream list: the first upstream is dead, the second serves."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc

from node.gen.blacklist.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    card_status_pb2,
    card_status_pb2_grpc,
    types_pb2,
)
from node.local.federation import Federation, free_port
from node.local.process import NodeSpec, start_node

TOPOLOGY = (("000000", "ministry", None, None), ("440000", "province", "000000", "4499"),
            ("440100", "city", "440000", "4401"))  # fmt: skip


def test_city_fails_over_to_its_second_upstream(tmp_path: Path) -> None:
    # Plain text and bare keys: the standby below is configured with bare trusted keys.
    fed = Federation(tmp_path, sync_interval=0.5, topology=TOPOLOGY, secure=False)
    fed.prepare()
    fed.start()
    dead = f"127.0.0.1:{free_port()}"  # nothing listens here: a province that is down
    standby = None
    try:
        card = "440100D156000005ABCDEF0123456789"
        admin: Any = admin_pb2_grpc.AdminStub(grpc.insecure_channel(fed.address("440100")))  # type: ignore[no-untyped-call]
        admin.Revoke(
            admin_pb2.RevokeRequest(
                revocations=[admin_pb2.Revocation(card_id=card, reason=types_pb2.LOSS)]
            )
        )
        spec = NodeSpec(
            "440300",
            trusted_keys=tuple(k.public for k in fed.keys.values()),
            upstreams=(dead, fed.address("440000")),
            sync_interval=0.5,
        )
        standby = start_node(spec, tmp_path / "standby")
        status: Any = card_status_pb2_grpc.CardStatusStub(grpc.insecure_channel(standby.grpc))  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + 30
        answer = None
        while time.monotonic() < deadline:
            answer = status.CheckCard(card_status_pb2.CheckCardRequest(card_id=card))
            if answer.status == 2:  # REVOKED
                break
            time.sleep(0.05)
        assert answer is not None and answer.status == 2, f"no failover: {answer}"
        # The card can arrive in the session's first pull, before the session marks its
        # upstream connected (that follows the pull): wait for the gauge, do not race it.
        connected = f'blacklist_upstream_connected{{upstream="{fed.address("440000")}"}} 1.0'
        while True:
            metrics = urllib.request.urlopen(standby.metrics_url).read().decode()
            if connected in metrics or time.monotonic() > deadline + 10:
                break
            time.sleep(0.05)
        assert connected in metrics
        assert f'blacklist_upstream_connected{{upstream="{dead}"}} 0.0' in metrics
        assert standby.stop() == 0
    finally:
        if standby is not None:
            standby.close()
        fed.stop_all()
        fed.close()
