"""The smaller edges of issue #11 item 11, each asserting the status a client sees:
GetSnapshot of a malformed or unknown publisher, an error about a huge card id, a private
key file others may read, and operator region scoping of Admin.PublishTrust."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry

from blacklist.authority import Authority
from blacklist.certs import RevocationReason, issue_certificate, issue_revocation
from blacklist.clock import ManualClock
from blacklist.errors import SHOWN_CHARS, CardIdError, clipped, shown
from blacklist.signing import Keyring, SigningKey
from blacklist.store import RevocationStore
from node.gen.blacklist.v1 import admin_pb2, card_status_pb2, sync_pb2, sync_pb2_grpc, types_pb2
from node.grpc.admin import AdminServicer
from node.grpc.admin_trust import TrustAdmin
from node.grpc.calls import MAX_DETAIL, Meter, detail_of
from node.ingest import Ingest
from node.keyfiles import KeyFileError, load_signing_key
from node.metrics import NodeMetrics
from node.tls import init_ca, issue
from tests.node_harness import NodeProcess, card_id, run_node_expecting_exit, write_node
from tests.test_audit import Aborted, TlsContext

NOW = 1_750_000_000


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    files = write_node(tmp_path_factory.mktemp("edge") / "gz", "440100")
    with NodeProcess(files.config) as proc:
        yield proc


def _snapshot_error(node: NodeProcess, publisher: str) -> grpc.RpcError:
    sync = sync_pb2_grpc.SyncStub(node.channel)  # type: ignore[no-untyped-call]
    with pytest.raises(grpc.RpcError) as caught:
        list(sync.GetSnapshot(sync_pb2.GetSnapshotRequest(publisher=publisher), timeout=10))
    return caught.value


def test_get_snapshot_of_a_malformed_publisher_is_invalid_argument(node: NodeProcess) -> None:
    for publisher in ("44010", "4401000", "44O100", ""):
        error = _snapshot_error(node, publisher)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (publisher, error.details())
        assert "not a 6-digit code" in (error.details() or "")


def test_get_snapshot_of_an_unknown_publisher_is_not_found(node: NodeProcess) -> None:
    error = _snapshot_error(node, "990100")
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "990100" in (error.details() or "")


def test_a_huge_card_id_is_invalid_argument_with_a_short_message(node: NodeProcess) -> None:
    huge = "4" * (15 << 20)  # 15 MiB: under the 16 MiB request limit
    for call in (
        lambda: node.card_status.CheckCard(
            card_status_pb2.CheckCardRequest(card_id=huge), timeout=30
        ),
        lambda: node.card_status.BatchCheck(
            card_status_pb2.BatchCheckRequest(card_ids=[card_id(), huge]), timeout=30
        ),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = caught.value.details() or ""
        assert len(details) < 300 and f"({15 << 20} characters)" in details, details
    # The node answers on (its own feed has not started: NO_DATA).
    ok = node.card_status.CheckCard(card_status_pb2.CheckCardRequest(card_id=card_id()))
    assert ok.status == types_pb2.NO_DATA


def test_shown_cuts_a_value_at_the_limit_not_below() -> None:
    at = "x" * (SHOWN_CHARS - 2)  # repr adds two quotes: exactly SHOWN_CHARS
    assert shown(at) == repr(at)
    above = at + "y"
    assert shown(above) == repr(above)[:SHOWN_CHARS] + f"... ({len(above)} characters)"
    assert str(CardIdError("wrong length", "1" * 1000)).count("1") < SHOWN_CHARS + 10
    assert clipped("x" * SHOWN_CHARS) == "x" * SHOWN_CHARS
    assert (
        clipped("x" * (SHOWN_CHARS + 1))
        == "x" * SHOWN_CHARS + f"... ({SHOWN_CHARS + 1} characters)"
    )


def test_detail_of_caps_any_message_at_the_limit() -> None:
    assert detail_of(ValueError("a" * MAX_DETAIL)) == "a" * MAX_DETAIL
    capped = detail_of(ValueError("a" * (MAX_DETAIL + 1)))
    assert capped == "a" * MAX_DETAIL + f"... ({MAX_DETAIL + 1} characters in all)"


# ---------------------------------------------------------------------------- key file mode
def test_a_signing_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    files = write_node(tmp_path / "gz", "440100")
    assert files.keys is not None
    key = files.keys.private
    load_signing_key(key)  # 0600 as written: loads
    for mode in (0o640, 0o604, 0o620):
        os.chmod(key, mode)
        with pytest.raises(KeyFileError) as caught:
            load_signing_key(key)
        assert str(key) in str(caught.value) and f"{mode:04o}" in str(caught.value)
    os.chmod(key, 0o644)
    code, stderr = run_node_expecting_exit(files.config)
    assert code == 2
    assert "signing_key" in stderr and str(key) in stderr and "0644" in stderr
    os.chmod(key, 0o400)  # owner-only, read-only: fine
    load_signing_key(key)


# ---------------------------------------------------------------------------- PublishTrust
_GD = SigningKey.generate("440000", ["44"])  # its certified scope: it certifies 4401, 4403
_GZ = SigningKey.generate("440100", ["4401"])
_SZ = SigningKey.generate("440300", ["4403"])


def _cert(subject: SigningKey) -> bytes:
    return issue_certificate(_GD, subject, subject.prefixes, NOW - 10, NOW + 86400, 1).to_bytes()


def _revoke_sz() -> bytes:
    return issue_revocation(_GD, _SZ.key_id, NOW, RevocationReason.COMPROMISED, 2).to_bytes()


def _publish_trust(tmp_path: Path, region: str, records: list[bytes]) -> grpc.StatusCode | None:
    """PublishTrust at province 440000's node by an operator of ``region`` over (fake) TLS,
    through the Meter as node/server.py serves it; the status it ended with (None: OK)."""
    init_ca(tmp_path / "ca")
    op = issue(tmp_path / "ca", role="operator", region=region, name="op", out=tmp_path)
    clock = ManualClock(float(NOW))
    store = RevocationStore(tmp_path / "store", clock=clock, map_size=1 << 30)
    metrics = NodeMetrics(CollectorRegistry())
    ring = Keyring([_GD.trusted(), _GZ.trusted(), _SZ.trusted()])

    async def call() -> grpc.StatusCode | None:
        with ThreadPoolExecutor(1) as pool:
            admin = AdminServicer(
                role="province",
                region="440000",
                store=store,
                authority=Authority(store, _GD, ring, clock=clock),
                metrics=metrics,
                writer=pool,
                clock=clock,
                build_version="test",
                hub=Ingest(store, ring, pool, metrics, clock=clock),
            )
            trust = TrustAdmin(admin, store, metrics)
            meter = Meter(
                metrics, enforce=True, scoped={("Admin", "PublishTrust"): trust.record_regions}
            )
            publish = meter.unary("blacklist.v1.Admin", "PublishTrust", trust.PublishTrust)
            ctx = TlsContext(op.cert.read_bytes())
            with contextlib.suppress(Aborted):
                await publish(admin_pb2.PublishTrustRequest(records=records), ctx)
            return ctx.status

    try:
        return asyncio.run(call())
    finally:
        store.close()


@pytest.mark.parametrize(
    ("region", "records", "status"),
    [
        # A Guangzhou operator may not publish Shenzhen's certificate, nor revoke Shenzhen's
        # key, at the province: as it may not revoke a Shenzhen card there.
        ("440100", [_cert(_SZ)], grpc.StatusCode.PERMISSION_DENIED),
        ("440100", [_revoke_sz()], grpc.StatusCode.PERMISSION_DENIED),
        ("440100", [_cert(_GZ), _cert(_SZ)], grpc.StatusCode.PERMISSION_DENIED),
        ("440100", [_cert(_GZ)], None),  # its own city's certificate
        ("440000", [_cert(_SZ), _revoke_sz()], None),  # the province's own operator
    ],
)
def test_publish_trust_is_scoped_to_the_operators_region(
    tmp_path: Path, region: str, records: list[bytes], status: grpc.StatusCode | None
) -> None:
    assert _publish_trust(tmp_path, region, records) == status
