"""``python -m node edge --config ...`` (issue #16 part 1): the edge replica as a process on
a UNIX socket, answering a real gRPC client with the CardStatus API, its upstream a real
node process; and its config refusals."""

from __future__ import annotations

import random
from pathlib import Path

import grpc
import pytest

from node.gen.blacklist.v1 import card_status_pb2, card_status_pb2_grpc, types_pb2
from tests.node_harness import (
    NodeProcess,
    card_id,
    run_node_expecting_exit,
    write_config,
    write_node,
)
from tests.test_edge_replica import wait_until
from tests.test_node_integration import revoke

GZ = "440100"
S = types_pb2.CardStatusCode


def test_the_daemon_serves_checkcard_on_a_unix_socket(tmp_path: Path) -> None:
    """Catches up from a real node, answers CheckCard, BatchCheck and CheckStream over its
    socket; the node is killed: it keeps answering, then says STALE past max_feed_age with
    the copy's own answer beside; SIGTERM: exit 0 and the socket is gone."""
    files = write_node(tmp_path / "gz", GZ, extra={"head_statement_interval": 0.3})
    assert files.keys is not None
    rng = random.Random(19)
    revoked = [card_id(GZ, rng.getrandbits(64)) for _ in range(20)]
    fine = card_id(GZ, rng.getrandbits(64))
    socket_path = tmp_path / "run" / "edge.sock"
    with NodeProcess(files.config) as node:
        revoke(node, revoked)
        config = write_config(
            tmp_path / "edge.toml",
            {
                "data_dir": str(tmp_path / "edge-data"),
                "listen": f"unix:{socket_path}",
                "upstreams": [node.grpc],
                "trusted_keys": [str(files.keys.public)],
                "plaintext": True,
                "max_feed_age": 2.0,
                "sync_interval": 0.3,
            },
        )
        edge = NodeProcess(config, command="edge").start()
        try:
            assert edge.grpc == f"unix:{socket_path}" and socket_path.exists()
            stub = card_status_pb2_grpc.CardStatusStub(edge.channel)  # type: ignore[no-untyped-call]

            def check(card: str) -> card_status_pb2.CheckCardResponse:
                request = card_status_pb2.CheckCardRequest(card_id=card)
                response: card_status_pb2.CheckCardResponse = stub.CheckCard(request, timeout=10)
                return response

            wait_until("the catch-up", lambda: check(revoked[-1]).status == S.REVOKED)
            answer = check(revoked[0].lower())
            assert (answer.status, answer.publisher, answer.feed_version) == (S.REVOKED, GZ, 1)
            assert answer.card_id == revoked[0] and answer.reason == types_pb2.LOSS
            assert check(fine).status == S.NOT_REVOKED
            assert check(card_id("110100")).status == S.UNKNOWN_ISSUER
            batch = stub.BatchCheck(
                card_status_pb2.BatchCheckRequest(card_ids=[fine, *revoked[:3]]), timeout=10
            )
            assert batch.count == 4 and [c.index for c in batch.cards] == [1, 2, 3]
            assert [f.publisher for f in batch.feeds] == [GZ]
            stream = stub.CheckStream(
                iter([card_status_pb2.CheckCardRequest(card_id=c) for c in (fine, revoked[1])]),
                timeout=10,
            )
            assert [r.status for r in stream] == [S.NOT_REVOKED, S.REVOKED]
            with pytest.raises(grpc.RpcError) as bad:
                check("not a card")
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]

            node.kill()
            assert check(revoked[0]).status in (S.REVOKED, S.STALE)  # from its own store
            wait_until("STALE past max_feed_age", lambda: check(fine).status == S.STALE)
            stale = check(revoked[0])
            assert (stale.status, stale.copy_status) == (S.STALE, S.REVOKED)
            assert stale.feed_age_seconds > 2.0 and stale.reason == types_pb2.LOSS
            assert check(fine).copy_status == S.NOT_REVOKED
            batch = stub.BatchCheck(
                card_status_pb2.BatchCheckRequest(card_ids=[fine, revoked[0]]), timeout=10
            )
            assert [(c.index, c.status, c.copy_status) for c in batch.cards] == [
                (0, S.STALE, S.NOT_REVOKED),
                (1, S.STALE, S.REVOKED),
            ]
            assert edge.stop() == 0
            assert not socket_path.exists()
        finally:
            edge.close()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "'data_dir' is required"),
        ({"data_dir": "d", "listen": "unix:e.sock"}, "'upstreams'"),
        (
            {"data_dir": "d", "listen": "unix:e.sock", "upstreams": ["127.0.0.1:1"]},
            "tls_ca",
        ),
        (
            {
                "data_dir": "d",
                "listen": "unix:e.sock",
                "upstreams": ["127.0.0.1:1"],
                "plaintext": True,
            },
            "'trust_anchor' is required",
        ),
        ({"data_dir": "d", "colour": "red"}, "unknown config field(s): colour"),
        (
            {
                "data_dir": "d",
                "listen": "unix:e.sock",
                "upstreams": ["127.0.0.1:1"],
                "plaintext": True,
                "trust_anchor": "missing.pub",
            },
            "missing.pub",
        ),
    ],
)
def test_bad_configs_are_refused_naming_the_field(
    tmp_path: Path, fields: dict[str, object], message: str
) -> None:
    config = write_config(tmp_path / "edge.toml", fields)  # type: ignore[arg-type]
    code, err = run_node_expecting_exit(config, command="edge")
    assert code == 2 and message in err, err
