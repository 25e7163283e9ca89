"""A check fails closed, and answers from one snapshot (issue #11 items 9 and 10).

Fault injection: the LMDB read that confirms a fingerprint hit is made to raise, on the
writer's checker and on a worker's following checker, through the C fast path and the pure
Python fallback, for CheckCard, BatchCheck and CheckStream as the node serves them (the
servicer behind the Meter): the client gets UNAVAILABLE (LMDB) or INTERNAL (anything else),
never NOT_REVOKED. A denied PSAM is refused on every CardStatus method. And a batch that
runs while a delta commits reports the feed version of the snapshot its entries came from.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import lmdb
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

import blacklist.checker as checker_module
import blacklist.follower as follower_module
from blacklist.authority import Authority, Revocation
from blacklist.checker import Checker, CheckStatus
from blacklist.clock import ManualClock
from blacklist.entry import Reason
from blacklist.errors import CheckUnavailable
from blacklist.fastpath import HAVE_SPEEDUPS, python_probe_in, python_scan
from blacklist.follower import FollowingChecker, StoreFollower
from blacklist.signing import Keyring, SigningKey
from blacklist.store import RevocationStore
from blacklist.storereader import StoreReader
from node.gen.blacklist.v1 import admin_pb2, card_status_pb2, types_pb2
from node.grpc.calls import Meter
from node.grpc.card_status import REFUSAL_HEADER, CardStatusServicer
from node.metrics import NodeMetrics
from tests import node_harness
from tests.conftest import card

T = 1_750_000_000
GZ = SigningKey.generate("440100", ["4401"])
KEYS = Keyring([GZ.trusted()])
SERVICE = "blacklist.v1.CardStatus"
PSAM = "440100" + "00000000DEADBEEF"


class Aborted(Exception):
    pass


class Context:
    """What the Meter and CardStatusServicer read of a grpc.aio.ServicerContext."""

    def __init__(self) -> None:
        self.status: grpc.StatusCode | None = None
        self.details = ""
        self.trailing: tuple[tuple[str, str], ...] = ()

    def code(self) -> grpc.StatusCode | None:
        return self.status

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.trailing = metadata

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.status, self.details = code, details
        raise Aborted(details)


class Served:
    """CardStatus as node/server.py serves it: the servicer's methods behind the Meter."""

    def __init__(self, checker: Checker) -> None:
        self.metrics = NodeMetrics(CollectorRegistry())
        servicer = CardStatusServicer(checker, self.metrics, max_batch=1000)
        meter = Meter(self.metrics)
        self._check = meter.unary(SERVICE, "CheckCard", servicer.CheckCard)
        self._batch = meter.unary(SERVICE, "BatchCheck", servicer.BatchCheck)
        self._stream = meter.bidi(SERVICE, "CheckStream", servicer.CheckStream)

    def call(self, method: str, card_ids: list[str], psam: str = "") -> tuple[Any, Context]:
        """(the answer or None, the context the call ended with)."""
        ctx = Context()

        async def run() -> Any:
            try:
                if method == "CheckCard":
                    request = card_status_pb2.CheckCardRequest(card_id=card_ids[0], psam_id=psam)
                    return await self._check(request, ctx)
                if method == "BatchCheck":
                    batch = card_status_pb2.BatchCheckRequest(card_ids=card_ids, psam_id=psam)
                    return await self._batch(batch, ctx)

                async def requests() -> AsyncIterator[card_status_pb2.CheckCardRequest]:
                    for c in card_ids:
                        yield card_status_pb2.CheckCardRequest(card_id=c, psam_id=psam)

                return [r async for r in self._stream(requests(), ctx)]
            except Aborted:
                return None

        return asyncio.run(run()), ctx


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[tuple[RevocationStore, Authority]]:
    clock = ManualClock(float(T))
    store = RevocationStore(tmp_path / "w", clock=clock, map_size=1 << 28)
    yield store, Authority(store, GZ, KEYS, clock=clock)
    store.close()


REVOKED = card("440100", 1)
FINE = card("440100", 2)


def _checkers(store: RevocationStore, kind: str) -> Checker:
    if kind == "writer":
        return Checker(store, KEYS)
    follower = StoreFollower(store.path, env=store.env, background=False)
    return FollowingChecker(follower, KEYS)


@pytest.fixture(params=["c", "python"] if HAVE_SPEEDUPS else ["python"])
def front_half(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The C fast path (when built) and the pure-Python fallback of probe/scan."""
    if request.param == "python":
        monkeypatch.setattr(checker_module, "probe_in", python_probe_in)
        monkeypatch.setattr(checker_module, "scan", python_scan)
    return str(request.param)


class _FailingEntryReads:
    """A read transaction whose reads of the entries database raise ``error``: the LMDB
    read that confirms a fingerprint hit (the point get, or the walk behind it)."""

    def __init__(self, txn: Any, entries_db: Any, error: Exception, asked: list[bytes]) -> None:
        self._txn, self._entries, self._error, self._asked = txn, entries_db, error, asked

    def get(self, key: bytes, default: Any = None, db: Any = None) -> Any:
        if db is self._entries:
            self._asked.append(key)
            raise self._error
        return self._txn.get(key, default, db)

    def cursor(self, db: Any = None) -> Any:
        if db is self._entries:
            self._asked.append(b"cursor")
            raise self._error
        return self._txn.cursor(db=db)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._txn, name)


def _break_find(
    monkeypatch: pytest.MonkeyPatch, store: StoreReader, error: Exception
) -> list[bytes]:
    """Make the LMDB read of a fingerprint hit raise ``error``; the keys it was asked. Checks
    read through their thread's long-lived transaction (storereader.py): both ways to it
    hand out one that fails."""
    asked: list[bytes] = []
    for name in ("current_txn", "renew_txn"):
        real = getattr(store, name)

        def failing(real: Any = real) -> Any:
            return _FailingEntryReads(real(), store.entries_db, error, asked)

        monkeypatch.setattr(store, name, failing)
    return asked


METHODS = ["CheckCard", "BatchCheck", "CheckStream"]


@pytest.mark.parametrize("kind", ["writer", "worker"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("error", "status"),
    [
        (lmdb.ReadersFullError("injected"), grpc.StatusCode.UNAVAILABLE),
        (lmdb.CorruptedError("injected"), grpc.StatusCode.UNAVAILABLE),
        (RuntimeError("injected"), grpc.StatusCode.INTERNAL),
    ],
)
def test_a_failing_confirmation_is_an_error_status_never_not_revoked(
    writer: tuple[RevocationStore, Authority],
    monkeypatch: pytest.MonkeyPatch,
    front_half: str,
    kind: str,
    method: str,
    error: Exception,
    status: grpc.StatusCode,
) -> None:
    store, gz = writer
    gz.publish([Revocation(REVOKED, Reason.LOSS, T)])
    checker = _checkers(store, kind)
    served = Served(checker)
    answer, ctx = served.call(method, [REVOKED])
    assert ctx.status is None and answer is not None  # healthy: answered (REVOKED)
    asked = _break_find(monkeypatch, checker._store, error)  # the store this checker reads
    ids = [FINE, REVOKED] if method != "CheckCard" else [REVOKED]
    answer, ctx = served.call(method, ids)
    assert asked, "the fault was not reached: the test would prove nothing"
    assert ctx.status == status, (ctx.status, ctx.details)
    if method == "CheckStream":
        # Answers before the failing one may have gone out; none of them for the card.
        assert answer is None or all(r.card_id != REVOKED for r in answer)
    else:
        assert answer is None


@pytest.mark.parametrize("method", METHODS)
def test_a_failing_read_transaction_is_unavailable(
    writer: tuple[RevocationStore, Authority], monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    store, gz = writer
    gz.publish([Revocation(REVOKED, Reason.LOSS, T)])
    served = Served(Checker(store, KEYS))

    def no_txn() -> Any:
        raise lmdb.ReadersFullError("injected: MDB_READERS_FULL")

    # The writer's checker begins its thread's read transaction there (storereader.py).
    monkeypatch.setattr(store, "renew_txn", no_txn)
    answer, ctx = served.call(method, [REVOKED])
    assert answer is None and ctx.status == grpc.StatusCode.UNAVAILABLE
    assert "MDB_READERS_FULL" in ctx.details


def test_a_batch_with_an_unconfirmed_hit_is_refused() -> None:
    statuses = np.array([1, checker_module.UNCONFIRMED, 2], dtype=np.uint8)
    checker_module._refuse_unconfirmed(statuses[[0, 2]], [0, 1])  # all confirmed
    with pytest.raises(CheckUnavailable, match="batch id 1"):
        checker_module._refuse_unconfirmed(statuses, [0, 1, 2])


def test_a_worker_whose_catch_up_failed_still_refuses_a_denied_psam(
    writer: tuple[RevocationStore, Authority], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A catch-up that raised half-way must not leave the follower believing it is current
    with the old PSAM deny list (the next catch-up would skip re-reading it)."""
    store, gz = writer
    follower = StoreFollower(store.path, env=store.env, background=False)
    served = Served(FollowingChecker(follower, KEYS))
    gz.publish_psams([Revocation(PSAM, Reason.LOSS, T)])
    real = follower_module.PsamList
    failures = [1]

    def flaky(env: Any, txn: Any = None) -> Any:
        if failures:
            failures.pop()
            raise lmdb.DiskError("injected")
        return real(env, txn)

    monkeypatch.setattr(follower_module, "PsamList", flaky)
    answer, ctx = served.call("CheckCard", [FINE], psam=PSAM)
    assert answer is None and ctx.status == grpc.StatusCode.UNAVAILABLE
    answer, ctx = served.call("CheckCard", [FINE], psam=PSAM)
    assert answer is None and ctx.status == grpc.StatusCode.FAILED_PRECONDITION


# ---------------------------------------------------------------------------- denied PSAM
@pytest.mark.parametrize("kind", ["writer", "worker"])
@pytest.mark.parametrize("method", METHODS)
def test_a_denied_psam_is_refused_on_every_check_method(
    writer: tuple[RevocationStore, Authority], kind: str, method: str
) -> None:
    store, gz = writer
    served = Served(_checkers(store, kind))
    gz.publish_psams([Revocation(PSAM, Reason.LOSS, T)])
    answer, ctx = served.call(method, [FINE], psam=PSAM)
    assert answer is None or answer == []  # CheckStream: refused before its first answer
    assert ctx.status == grpc.StatusCode.FAILED_PRECONDITION
    assert ctx.trailing == ((REFUSAL_HEADER, "psam-denied"),)
    assert PSAM in ctx.details
    refusals = served.metrics.psam_refusals.labels(method)._value.get()
    assert refusals == 1
    other = "440100" + "00000000DEADBEEE"  # not denied: answered
    answer, ctx = served.call(method, [FINE], psam=other)
    assert ctx.status is None and answer


# ---------------------------------------------------------------------------- one snapshot
def _during_commit(store: RevocationStore, action: Callable[[], None]) -> None:
    """Run ``action`` once, right after the store's next commit and before its in-memory
    state (feed heads, removals from the index) follows: the window a concurrent check on
    the event loop can fall into while the writer thread applies a delta."""
    after = store._after_commit

    def hooked(*args: Any) -> None:
        store._after_commit = after  # type: ignore[method-assign]
        action()
        after(*args)

    store._after_commit = hooked  # type: ignore[method-assign]


def test_an_answer_reports_the_feed_version_of_the_snapshot_it_read(
    writer: tuple[RevocationStore, Authority], front_half: str
) -> None:
    store, gz = writer
    gz.publish([Revocation(FINE, Reason.LOSS, T)], [])
    gz.publish([], [FINE])  # v2: FINE is valid again
    checker = Checker(store, KEYS)
    checker.check_many([FINE])  # answers cached at v2
    seen: dict[str, Any] = {}

    def look() -> None:
        seen["batch"] = checker.check_many([FINE, REVOKED])
        seen["one"] = checker.check(REVOKED)

    _during_commit(store, look)
    gz.publish([Revocation(REVOKED, Reason.LOSS, T)])  # v3, committed when look() runs
    batch, one = seen["batch"], seen["one"]
    hit = batch[1]
    assert hit.status is CheckStatus.REVOKED and hit.entry is not None
    assert hit.entry.version == 3 and hit.feed_version == 3
    assert batch[0].feed_version == 3 and batch[0].status is CheckStatus.NOT_REVOKED
    assert [f.feed_version for f in batch.answering_feeds()] == [3]
    assert one.status is CheckStatus.REVOKED and one.feed_version == 3


def test_a_batch_does_not_answer_from_an_index_that_moved_under_it(
    writer: tuple[RevocationStore, Authority], monkeypatch: pytest.MonkeyPatch, front_half: str
) -> None:
    """A reinstatement commits (and its fingerprint leaves the index) after the batch opened
    its snapshot and before it probed the index: answering NOT_REVOKED "as of" the older
    snapshot, in which the card is revoked, would be wrong; the batch runs again."""
    store, gz = writer
    gz.publish([Revocation(REVOKED, Reason.LOSS, T)])  # v1
    checker = Checker(store, KEYS)
    real_scan = checker_module.scan
    calls = []

    def scan_after_a_write(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:  # the writer thread gets the GIL right here
            done = threading.Thread(target=lambda: gz.publish([], [REVOKED]))
            done.start()
            done.join()
        return real_scan(*args)

    monkeypatch.setattr(checker_module, "scan", scan_after_a_write)
    result = checker.check_many([REVOKED])
    assert len(calls) == 2  # it ran again
    assert (result[0].status, result[0].feed_version) == (CheckStatus.NOT_REVOKED, 2)


def test_a_single_check_does_not_answer_from_an_index_that_moved_under_it(
    writer: tuple[RevocationStore, Authority], monkeypatch: pytest.MonkeyPatch, front_half: str
) -> None:
    """As for a batch: the reinstatement's fingerprint leaves the index between the check's
    look at the store and its probe; the cached answer it holds is of the older state (the
    card revoked), so it must ask again rather than say NOT_REVOKED as of version 1."""
    store, gz = writer
    gz.publish([Revocation(REVOKED, Reason.LOSS, T)])  # v1
    checker = Checker(store, KEYS)
    assert checker.check(FINE).feed_version == 1  # v1's answer cached
    real_probe = checker_module.probe_in
    calls = []

    def probe_after_a_write(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            done = threading.Thread(target=lambda: gz.publish([], [REVOKED]))
            done.start()
            done.join()
        return real_probe(*args)

    monkeypatch.setattr(checker_module, "probe_in", probe_after_a_write)
    result = checker.check(REVOKED)
    assert len(calls) == 2
    assert (result.status, result.feed_version) == (CheckStatus.NOT_REVOKED, 2)


def test_a_batch_that_never_sees_a_still_store_fails_closed(
    writer: tuple[RevocationStore, Authority], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, gz = writer
    gz.publish([Revocation(REVOKED, Reason.LOSS, T)])
    checker = Checker(store, KEYS)
    real_scan = checker_module.scan

    def scan_while_writing(*args: Any) -> Any:
        store.epoch += 1  # as every commit's in-memory update does
        return real_scan(*args)

    monkeypatch.setattr(checker_module, "scan", scan_while_writing)
    with pytest.raises(CheckUnavailable, match=f"{checker_module.MAX_TRIES} tries"):
        checker.check_many([REVOKED])


def test_a_single_check_that_never_sees_a_still_store_fails_closed(
    writer: tuple[RevocationStore, Authority], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A miss is asked again while the index moves, exactly MAX_TRIES times in all, then
    CheckUnavailable naming them: never an answer from an index that moved, never forever."""
    store, gz = writer
    gz.publish([Revocation(REVOKED, Reason.LOSS, T)])
    checker = Checker(store, KEYS)
    real_probe = checker_module.probe_in
    calls = []

    def probe_while_writing(*args: Any) -> Any:
        calls.append(1)
        store.epoch += 1  # as every commit's in-memory update does
        return real_probe(*args)

    monkeypatch.setattr(checker_module, "probe_in", probe_while_writing)
    with pytest.raises(CheckUnavailable) as info:
        checker.check(card("440100"))
    assert len(calls) == checker_module.MAX_TRIES
    assert (
        str(info.value)
        == f"the store changed under {checker_module.MAX_TRIES} tries to check a card"
    )


def test_the_node_reports_the_snapshot_version_in_batch_check(
    writer: tuple[RevocationStore, Authority],
) -> None:
    store, gz = writer
    gz.publish([Revocation(FINE, Reason.LOSS, T)])
    served = Served(Checker(store, KEYS))
    seen: dict[str, Any] = {}
    _during_commit(store, lambda: seen.update(answer=served.call("BatchCheck", [REVOKED])[0]))
    gz.publish([Revocation(REVOKED, Reason.LOSS, T)])  # v2
    answer = seen["answer"]
    [hit] = answer.cards
    assert hit.status == types_pb2.REVOKED
    assert [(f.publisher, f.version) for f in answer.feeds] == [("440100", 2)]


# ---------------------------------------------------------------------------- real process
def test_a_real_node_whose_lmdb_read_fails_answers_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same fault in a node process (tests/faulty_node.py), seen by a gRPC client: each
    CardStatus method ends UNAVAILABLE for the card whose confirmation fails, and the node
    goes on answering every other card."""
    faulty, other = card("440100"), card("440100")
    monkeypatch.setenv("BLACKLIST_FAULT_CARD", faulty)

    def faulty_command(config: Path, command: str = "run") -> list[str]:
        return [sys.executable, "-m", "tests.faulty_node", command, "--config", str(config)]

    monkeypatch.setattr(node_harness, "node_command", faulty_command)
    files = node_harness.write_node(tmp_path / "gz", "440100")
    with node_harness.NodeProcess(files.config) as node:
        revoke = admin_pb2.RevokeRequest(
            revocations=[admin_pb2.Revocation(card_id=c, reason=2) for c in (faulty, other)]
        )
        node.admin.Revoke(revoke, timeout=30)
        stub = node.card_status
        calls = {
            "CheckCard": lambda: stub.CheckCard(
                card_status_pb2.CheckCardRequest(card_id=faulty), timeout=30
            ),
            "BatchCheck": lambda: stub.BatchCheck(
                card_status_pb2.BatchCheckRequest(card_ids=[FINE, faulty]), timeout=30
            ),
            "CheckStream": lambda: list(
                stub.CheckStream(iter([card_status_pb2.CheckCardRequest(card_id=faulty)]))
            ),
        }
        for method, call in calls.items():
            with pytest.raises(grpc.RpcError) as caught:
                call()
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, method
            assert "injected read fault" in (caught.value.details() or ""), method
        answer = stub.CheckCard(card_status_pb2.CheckCardRequest(card_id=other), timeout=30)
        assert answer.status == types_pb2.REVOKED
        assert stub.CheckCard(card_status_pb2.CheckCardRequest(card_id=FINE)).status == (
            types_pb2.NOT_REVOKED
        )
