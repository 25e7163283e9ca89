"""The edge replica (issue #16 part 1) against real node processes on loopback.

The replica runs in the test's process (it is a library); its upstream is a real
``python -m node run`` (tests/node_harness.py), killed and restarted as a WAN link or a
city node would be; lying upstreams are relays in the test process that forge what they
forward (tests/tampering_relay.py) or a fake upstream serving a forged snapshot
(tests/fake_upstream.py). Nothing waits on a wall-clock bound: every wait is for a state,
with a generous deadline.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from blacklist.checker import CheckStatus
from blacklist.edge import EdgeReplica, EdgeStatus
from node.keyfiles import load_signing_key, load_trusted_key
from tests.fake_upstream import Damage, FakeUpstream
from tests.node_harness import NodeFiles, NodeProcess, card_id, write_node
from tests.tampering_relay import DELTA, STATEMENT, TamperingRelay
from tests.test_node_integration import revoke
from tests.test_prometheus import free_port
from tests.test_sync_faults import feed_snapshot

GZ = "440100"
TIMEOUT = 60.0
DEAD = "127.0.0.1:9"  # discard port: nothing listens there (a link that is down)


def wait_until(
    what: str,
    condition: Callable[[], bool],
    timeout: float = TIMEOUT,
    detail: Callable[[], object] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {detail() if detail else ''}")
        time.sleep(0.05)


@pytest.fixture
def authority(tmp_path: Path) -> Iterator[tuple[NodeFiles, NodeProcess]]:
    """City 440100's node, signing a head statement every 0.3 s, keeping 3 deltas."""
    files = write_node(
        tmp_path / "gz",
        GZ,
        extra={
            "head_statement_interval": 0.3,
            "retain_deltas": 3,
            "listen": f"127.0.0.1:{free_port()}",  # the same address after a restart
        },
    )
    with NodeProcess(files.config) as node:
        yield files, node


def open_replica(
    tmp_path: Path, files: NodeFiles, upstreams: list[str], **options: object
) -> EdgeReplica:
    assert files.keys is not None
    return EdgeReplica.open(
        tmp_path / "edge",
        upstreams=upstreams,
        trusted_keys=[load_trusted_key(files.keys.public)],
        sync_interval=0.3,
        **options,  # type: ignore[arg-type]
    )


def status_of(replica: EdgeReplica, card: str) -> EdgeStatus:
    return replica.check(card).status


def test_replica_follows_survives_the_lost_link_and_resumes(
    authority: tuple[NodeFiles, NodeProcess], tmp_path: Path
) -> None:
    """Catches up and answers in-process; the upstream is killed: it keeps answering from
    its store with a growing signed age, turns STALE past max_feed_age (still saying what
    the copy holds), and when the node returns it resumes by deltas and is fresh again."""
    files, node = authority
    rng = random.Random(16)
    revoked = [card_id(GZ, rng.getrandbits(64)) for _ in range(50)]
    revoke(node, revoked)
    fine = card_id(GZ, rng.getrandbits(64))
    with open_replica(tmp_path, files, [node.grpc], max_feed_age=3.0) as replica:
        wait_until(
            "the replica to catch up", lambda: status_of(replica, revoked[-1]) is EdgeStatus.REVOKED
        )
        assert all(replica.check(c).status is EdgeStatus.REVOKED for c in revoked)
        assert status_of(replica, fine) is EdgeStatus.NOT_REVOKED
        assert status_of(replica, card_id("110100")) is EdgeStatus.UNKNOWN_ISSUER
        batch = replica.check_many([*revoked[:10], fine])
        assert batch.counts() == {EdgeStatus.REVOKED: 10, EdgeStatus.NOT_REVOKED: 1}
        answer = replica.check(revoked[0])
        assert answer.publisher == GZ and answer.feed_version == 1
        assert answer.reason is not None and answer.feed_age_seconds is not None
        # Statements every 0.3 s keep the copy fresh while the link is up.
        wait_until(
            "a head statement to arrive", lambda: replica.counters.statements["accepted"] > 0
        )

        node.kill()
        age = replica.feed_age(GZ)
        assert age is not None
        wait_until("the age to grow", lambda: (replica.feed_age(GZ) or 0) > age + 1.0)
        assert replica.check(revoked[0]).copy_status is EdgeStatus.REVOKED  # from its store
        wait_until("STALE past max_feed_age", lambda: status_of(replica, fine) is EdgeStatus.STALE)
        stale = replica.check(revoked[0])
        assert stale.status is EdgeStatus.STALE and stale.copy_status is EdgeStatus.REVOKED
        assert stale.revoked and stale.feed_age_seconds is not None and stale.feed_age_seconds > 3.0
        assert replica.check(fine).copy_status is EdgeStatus.NOT_REVOKED
        batch = replica.check_many([revoked[0], fine, card_id("110100")])
        assert batch.statuses.tolist() == [
            EdgeStatus.STALE,
            EdgeStatus.STALE,
            EdgeStatus.UNKNOWN_ISSUER,
        ]
        assert batch[0].copy_status is EdgeStatus.REVOKED

        node.start()  # the same address: the replica's next session finds it
        later = [card_id(GZ, rng.getrandbits(64)) for _ in range(20)]
        revoke(node, later)
        wait_until(
            "the replica to resume", lambda: status_of(replica, later[-1]) is EdgeStatus.REVOKED
        )
        assert status_of(replica, fine) is EdgeStatus.NOT_REVOKED  # fresh again
        assert replica.store.head(GZ).version == 2
        assert replica.counters.rejected == {}


def test_restart_is_instant_from_its_own_store_and_resumes_by_snapshot(
    authority: tuple[NodeFiles, NodeProcess], tmp_path: Path
) -> None:
    """Closed and reopened with no upstream reachable, the replica answers at once from its
    store. Meanwhile the authority published more deltas than it retains (3), so it cannot
    prove continuity from the replica's head: the replica resumes by snapshot."""
    files, node = authority
    rng = random.Random(17)
    first = [card_id(GZ, rng.getrandbits(64)) for _ in range(30)]
    revoke(node, first)
    with open_replica(tmp_path, files, [node.grpc]) as replica:
        wait_until("the first catch-up", lambda: status_of(replica, first[0]) is EdgeStatus.REVOKED)
    with open_replica(tmp_path, files, [DEAD]) as replica:
        assert replica.check(first[0]).status is EdgeStatus.REVOKED  # before any sync
        assert not replica.wait_synced(0.5)
    later = []
    for _ in range(6):  # six deltas; the node keeps three
        batch = [card_id(GZ, rng.getrandbits(64)) for _ in range(5)]
        revoke(node, batch)
        later += batch
    with open_replica(tmp_path, files, [node.grpc]) as replica:
        wait_until("the catch-up", lambda: replica.store.head(GZ).version == 7)
        assert replica.counters.snapshots["ok"] >= 1
        assert all(replica.check(c).status is EdgeStatus.REVOKED for c in [*first, *later])


def test_fails_over_to_the_next_upstream(
    authority: tuple[NodeFiles, NodeProcess], tmp_path: Path
) -> None:
    files, node = authority
    card = card_id(GZ)
    revoke(node, [card])
    with open_replica(tmp_path, files, [DEAD, node.grpc]) as replica:
        wait_until("failover", lambda: status_of(replica, card) is EdgeStatus.REVOKED)
        # The card can arrive in the session's first pull, before the session marks its
        # upstream (that follows the pull): wait for the mark, do not race it.
        wait_until("the session's mark", lambda: replica.connected_to == node.grpc)


@pytest.mark.parametrize("kind", [DELTA, STATEMENT])
def test_a_lying_upstream_is_refused_and_nothing_changes(
    authority: tuple[NodeFiles, NodeProcess], tmp_path: Path, kind: str
) -> None:
    """A relay that forges every delta (or head statement) it forwards: each forged item is
    refused by its signature and counted, and the replica's copy does not move; a forged
    statement cannot keep a feed looking fresh. Once the relay forwards honestly, the same
    items are taken."""
    files, node = authority
    card = card_id(GZ)
    with TamperingRelay(node.grpc, publisher=GZ) as relay:
        relay.tamper = kind
        if kind == STATEMENT:
            revoke(node, [card])
        with open_replica(tmp_path, files, [relay.address]) as replica:
            if kind == DELTA:
                wait_until("a first pull", lambda: replica.wait_synced(0))
                revoke(node, [card])
                wait_until(
                    "forged deltas to be refused",
                    lambda: (
                        replica.counters.rejected["bad_signature"] >= 2
                        and replica.counters.snapshots["rejected"] >= 1
                    ),
                    detail=lambda: (replica.counters, replica.store.heads()),
                )
                assert replica.store.heads() == {}
                assert status_of(replica, card) is EdgeStatus.NO_DATA
            else:
                wait_until("the delta", lambda: status_of(replica, card) is EdgeStatus.REVOKED)
                wait_until(
                    "forged statements to be refused",
                    lambda: replica.counters.statements["bad_signature"] >= 3,
                )
                assert replica.store.statements.newest(GZ) is None
                checked = replica.store.feeds[GZ].checked_at
                assert checked == replica.store.feeds[GZ].issued_at  # only the delta's own time
            assert replica.counters.statements["accepted"] == 0 or kind == DELTA
            assert relay.forged > 0
            relay.tamper = None
            wait_until("the honest items", lambda: status_of(replica, card) is EdgeStatus.REVOKED)
            wait_until(
                "a verified statement", lambda: replica.store.statements.newest(GZ) is not None
            )


def test_a_forged_snapshot_is_refused_and_the_intact_one_taken(tmp_path: Path) -> None:
    """A fake upstream whose snapshot's content is forged under matching chunk checksums:
    only the signature catches it; the replica holds nothing until the intact one comes."""
    files = write_node(tmp_path / "keys", GZ)
    assert files.keys is not None
    key = load_signing_key(files.keys.private)
    data, cards = feed_snapshot(key, random.Random(5))
    with (
        FakeUpstream(data, chunk_bytes=4096, mode=Damage.FORGED_CONTENT) as fake,
        open_replica(tmp_path, files, [fake.address]) as replica,
    ):
        wait_until(
            "the forged snapshot to be refused",
            lambda: replica.counters.snapshots["rejected"] >= 1,
        )
        assert replica.counters.rejected["bad_signature"] >= 1
        assert replica.store.heads() == {} and status_of(replica, cards[0]) is EdgeStatus.NO_DATA
        fake.mode = Damage.NONE
        wait_until(
            "the intact snapshot", lambda: status_of(replica, cards[0]) is EdgeStatus.REVOKED
        )
        assert replica.store.head(GZ).version == 7


def test_checks_from_many_threads_while_it_applies(
    authority: tuple[NodeFiles, NodeProcess], tmp_path: Path
) -> None:
    """Eight threads check revoked and fine cards while deltas arrive: no thread ever sees
    a revoked card as anything else, nor an error."""
    files, node = authority
    rng = random.Random(18)
    revoked = [card_id(GZ, rng.getrandbits(64)) for _ in range(200)]
    revoke(node, revoked)
    with open_replica(tmp_path, files, [node.grpc]) as replica:
        wait_until("the catch-up", lambda: status_of(replica, revoked[-1]) is EdgeStatus.REVOKED)
        stop = threading.Event()
        wrong: list[str] = []

        def checker() -> None:
            while not stop.is_set():
                for card in revoked[:50]:
                    if replica.check(card).copy.status is not CheckStatus.REVOKED:
                        wrong.append(card)
                batch = replica.check_many(revoked)
                if batch.counts() != {EdgeStatus.REVOKED: len(revoked)}:
                    wrong.append("batch")

        threads = [threading.Thread(target=checker) for _ in range(8)]
        for t in threads:
            t.start()
        try:
            for _ in range(5):
                revoke(node, [card_id(GZ, rng.getrandbits(64)) for _ in range(100)])
            wait_until("the writes to arrive", lambda: replica.store.head(GZ).version == 6)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert wrong == []
