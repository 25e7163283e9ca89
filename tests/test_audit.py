"""The audit log (blacklist/audit.py) over a real store, and Admin's Revoke/Reinstate/ListAudit
in process, with a fake gRPC context."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from blacklist.audit import AuditAction, AuditChange, AuditRecord
from blacklist.authority import Authority, OutOfScope
from blacklist.clock import ManualClock
from blacklist.entry import Reason
from blacklist.store import RevocationStore
from node.gen.blacklist.v1 import admin_pb2
from node.grpc.admin import AdminServicer
from node.grpc.calls import Meter, caller_of
from node.ingest import Ingest
from node.metrics import NodeMetrics
from node.tls import init_ca, issue
from tests.conftest import Keys, card

T = 1_750_000_000


def _record(
    store: RevocationStore, action: AuditAction, cards: list[str], when: int, version: int = 1
) -> list[AuditRecord]:
    changes = [
        AuditChange(c, int(Reason.LOSS) if action == AuditAction.REVOKE else 0) for c in cards
    ]
    return store.audit.record(
        action, changes, operator="op:440100:alice", feed_version=version, when=when
    )


def test_record_and_read_back(store: RevocationStore) -> None:
    a = card()
    written = _record(store, AuditAction.REVOKE, [a], T, version=7)
    [rec] = list(store.audit.records())
    assert rec == written[0]
    assert (rec.time, rec.action, rec.card_id, rec.reason, rec.feed_version, rec.operator) == (
        T,
        AuditAction.REVOKE,
        a,
        Reason.LOSS,
        7,
        "op:440100:alice",
    )


def test_same_second_records_keep_their_order(store: RevocationStore) -> None:
    cards = [card() for _ in range(3)]
    _record(store, AuditAction.REVOKE, cards[:2], T)
    _record(store, AuditAction.REINSTATE, cards[2:], T)
    recs = list(store.audit.records())
    assert [r.sequence for r in recs] == [0, 1, 2]
    assert [r.card_id for r in recs] == cards


def test_filter_by_card_and_time_range(store: RevocationStore) -> None:
    a, b = card(), card()
    _record(store, AuditAction.REVOKE, [a, b], T)
    _record(store, AuditAction.REINSTATE, [a], T + 10)
    _record(store, AuditAction.REVOKE, [a], T + 20)
    assert [r.time for r in store.audit.records(card_id=a)] == [T, T + 10, T + 20]
    assert [r.card_id for r in store.audit.records(card_id=b)] == [b]
    assert [r.time for r in store.audit.records(since=T + 10, until=T + 10)] == [T + 10]
    assert [r.time for r in store.audit.records(since=T + 5)] == [T + 10, T + 20]
    assert list(store.audit.records(until=T - 1)) == []


def test_paging_resumes_after_the_token(store: RevocationStore) -> None:
    cards = [card() for _ in range(5)]
    for i, c in enumerate(cards):
        _record(store, AuditAction.REVOKE, [c], T + i // 2)
    first = list(store.audit.records())[:2]
    rest = list(store.audit.records(after=first[-1].key))
    assert [r.card_id for r in first + rest] == cards


def test_records_survive_reopening(tmp_path: Path, clock: ManualClock) -> None:
    a = card()
    with RevocationStore(tmp_path / "s", clock=clock, map_size=1 << 30) as s:
        _record(s, AuditAction.REVOKE, [a], T)
    with RevocationStore(tmp_path / "s", clock=clock, map_size=1 << 30) as s:
        assert [r.card_id for r in s.audit.records()] == [a]
        _record(s, AuditAction.REINSTATE, [a], T)  # same second: continues the sequence
        assert [r.sequence for r in s.audit.records()] == [0, 1]


# ---------------------------------------------------------------------- Admin in process
class Aborted(Exception):
    pass


class FakeContext:
    """Just what AdminServicer reads of a grpc.aio.ServicerContext in plain-text mode."""

    def __init__(self) -> None:
        self.status: grpc.StatusCode | None = None

    def code(self) -> grpc.StatusCode | None:
        return self.status

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50505"

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"transport_security_type": [b"insecure"]}

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.status = code
        raise Aborted(details)


def _admin(
    store: RevocationStore,
    keys: Keys,
    clock: ManualClock,
    pool: ThreadPoolExecutor,
    tls: bool = False,
) -> AdminServicer:
    metrics = NodeMetrics(CollectorRegistry())
    admin = AdminServicer(
        role="city",
        region="440100",
        store=store,
        authority=Authority(store, keys.gz, keys.ring, clock=clock),
        metrics=metrics,
        writer=pool,
        clock=clock,
        build_version="test",
        hub=Ingest(store, keys.ring, pool, metrics, clock=clock),
    )
    # As node/server.py serves it: role checks and error statuses come from the Meter.
    admin.ListAudit = Meter(metrics, enforce=tls).unary(  # type: ignore[method-assign]
        "blacklist.v1.Admin", "ListAudit", admin.ListAudit
    )
    return admin


def test_revoke_and_reinstate_are_audited_refusals_are_not(
    store: RevocationStore, keys: Keys, clock: ManualClock
) -> None:
    a = card("440100")

    async def scenario() -> tuple[Any, ...]:
        with ThreadPoolExecutor(1) as pool:
            admin = _admin(store, keys, clock, pool)
            ctx = FakeContext()
            revoked = await admin.Revoke(
                admin_pb2.RevokeRequest(revocations=[admin_pb2.Revocation(card_id=a, reason=2)]),
                ctx,
            )
            clock.advance(5)
            reinstated = await admin.Reinstate(admin_pb2.ReinstateRequest(card_ids=[a]), ctx)
            with pytest.raises(OutOfScope):
                await admin.Revoke(
                    admin_pb2.RevokeRequest(
                        revocations=[admin_pb2.Revocation(card_id=card("110100"), reason=2)]
                    ),
                    ctx,
                )
            listed = await admin.ListAudit(admin_pb2.ListAuditRequest(), ctx)
            paged = await admin.ListAudit(admin_pb2.ListAuditRequest(page_size=1), ctx)
            bad = FakeContext()
            with pytest.raises(Aborted):
                await admin.ListAudit(admin_pb2.ListAuditRequest(since=10, until=5), bad)
            return revoked, reinstated, listed, paged, bad.status

    revoked, reinstated, listed, paged, bad_code = asyncio.run(scenario())
    assert [
        (r.operator, r.time, r.action, r.card_id, r.reason, r.feed_version) for r in listed.records
    ] == [
        ("plaintext:ipv4:127.0.0.1:50505", T, 1, a, 2, revoked.version),
        ("plaintext:ipv4:127.0.0.1:50505", T + 5, 2, a, 0, reinstated.version),
    ]
    assert reinstated.version == revoked.version + 1
    assert len(paged.records) == 1 and paged.next_page_token
    assert bad_code == grpc.StatusCode.INVALID_ARGUMENT


class TlsContext(FakeContext):
    """A TLS call as gRPC presents it: the verified peer certificate in the auth context."""

    def __init__(self, pem: bytes) -> None:
        super().__init__()
        self._pem = pem

    def auth_context(self) -> dict[str, list[bytes]]:
        return {
            "transport_security_type": [b"ssl"],
            "x509_pem_cert": [self._pem],
            "x509_common_name": [b"alice"],
        }


def test_tls_caller_is_named_and_only_operators_may_list(
    tmp_path: Path, store: RevocationStore, keys: Keys, clock: ManualClock
) -> None:
    init_ca(tmp_path / "ca")
    op = issue(tmp_path / "ca", role="operator", region="440100", name="alice", out=tmp_path)
    term = issue(tmp_path / "ca", role="terminal", region="440100", name="pos", out=tmp_path)
    assert caller_of(TlsContext(op.cert.read_bytes())) == "operator:440100:alice"

    async def scenario() -> grpc.StatusCode | None:
        with ThreadPoolExecutor(1) as pool:
            admin = _admin(store, keys, clock, pool, tls=True)
            await admin.ListAudit(admin_pb2.ListAuditRequest(), TlsContext(op.cert.read_bytes()))
            denied = TlsContext(term.cert.read_bytes())
            with pytest.raises(Aborted):
                await admin.ListAudit(admin_pb2.ListAuditRequest(), denied)
            return denied.status

    assert asyncio.run(scenario()) == grpc.StatusCode.PERMISSION_DENIED
