"""The node as a real process: every RPC, every bad input, shutdown, restart, metrics, health.

One authority node for 440100 (trusting a 110100 key whose feed never arrives, and with
``max_batch = 50``) serves the API tests for the whole module; tests that stop or kill a
node start their own. Each test reads the state it depends on before acting, so the order
of tests on the shared node does not matter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from node.gen.blacklist.v1 import admin_pb2, card_status_pb2, types_pb2
from tests.node_harness import (
    KeyFiles,
    NodeFiles,
    NodeProcess,
    TomlValue,
    card_id,
    run_node_expecting_exit,
    write_config,
    write_keys,
    write_node,
)

GZ = "440100"
BJ = "110100"  # trusted at the 440100 node, never published there → NO_DATA
NOWHERE = "120100"  # no trusted key covers 12xxxx → UNKNOWN_ISSUER
MAX_BATCH = 50
SERVER_MAX_MESSAGE = 16 * 1024 * 1024  # node/config.py DEFAULT_MAX_MESSAGE_BYTES
CARD_STATUS = "blacklist.v1.CardStatus"
ADMIN = "blacklist.v1.Admin"

Code = Any  # grpc.StatusCode (grpc ships no type stubs)
S = types_pb2.CardStatusCode


# ---------------------------------------------------------------------------- fixtures
@dataclass(frozen=True)
class World:
    root: Path
    gz: NodeFiles
    bj: KeyFiles  # 110100's key pair: trusted by gz, never run


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("nodes")
    bj = write_keys(root / "bj-keys", BJ, ["1101"])
    gz = write_node(root / "gz", GZ, trusted=[bj.public], extra={"max_batch": MAX_BATCH})
    return World(root, gz, bj)


@pytest.fixture(scope="module")
def gz(world: World) -> Iterator[NodeProcess]:
    node = NodeProcess(world.gz.config)
    with node:
        yield node


@pytest.fixture
def fresh_node(tmp_path: Path) -> Iterator[NodeProcess]:
    """A 440100 authority of its own, for tests that stop, kill or restart it."""
    files = write_node(tmp_path / "gz", GZ)
    node = NodeProcess(files.config)
    with node:
        yield node


# ---------------------------------------------------------------------------- helpers
def expect_error(code: Code, call: Callable[[], object]) -> str:
    """Run ``call``, which must fail with ``code``; the status details."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    error: Any = info.value
    assert error.code() == code, f"expected {code}, got {error.code()}: {error.details()}"
    details: str = error.details()
    return details


def revocation(card: str, reason: Any = types_pb2.LOSS, when: int = 0) -> admin_pb2.Revocation:
    # `reason` is Any: tests also send enum numbers the API does not define.
    return admin_pb2.Revocation(card_id=card, reason=reason, effective_time=when)


def revoke(
    node: NodeProcess, cards: Sequence[str], reason: Any = types_pb2.LOSS, when: int = 0
) -> admin_pb2.PublishResponse:
    request = admin_pb2.RevokeRequest(revocations=[revocation(c, reason, when) for c in cards])
    response: admin_pb2.PublishResponse = node.admin.Revoke(request, timeout=60)
    return response


def check(node: NodeProcess, card: str) -> card_status_pb2.CheckCardResponse:
    request = card_status_pb2.CheckCardRequest(card_id=card)
    response: card_status_pb2.CheckCardResponse = node.card_status.CheckCard(request, timeout=10)
    return response


def status(node: NodeProcess) -> admin_pb2.StatusResponse:
    response: admin_pb2.StatusResponse = node.admin.Status(admin_pb2.StatusRequest(), timeout=10)
    return response


def written(node: NodeProcess) -> tuple[int, list[tuple[str, int, bytes, int]]]:
    """What a write would change: entry count and each feed's version, digest and size."""
    s = status(node)
    return s.entries, [(f.publisher, f.version, f.digest, f.entries) for f in s.feeds]


def feed_version(node: NodeProcess, publisher: str = GZ) -> int:
    return next((f.version for f in status(node).feeds if f.publisher == publisher), 0)


def revoked_among(node: NodeProcess, cards: Sequence[str]) -> list[str]:
    request = card_status_pb2.BatchCheckRequest(card_ids=cards)
    response = node.card_status.BatchCheck(request, timeout=10)
    return [cards[c.index] for c in response.cards if c.status == S.REVOKED]


def stream(node: NodeProcess, cards: Sequence[str]) -> Iterator[card_status_pb2.CheckCardResponse]:
    requests = iter([card_status_pb2.CheckCardRequest(card_id=c) for c in cards])
    responses: Iterator[card_status_pb2.CheckCardResponse] = node.card_status.CheckStream(
        requests, timeout=10
    )
    return responses


# ---------------------------------------------------------------------------- CardStatus
def test_check_card_answers_all_four_statuses(gz: NodeProcess) -> None:
    card = card_id(GZ)
    published = revoke(gz, [card], types_pb2.DAMAGED, when=1_700_000_000)

    got = check(gz, card.lower())
    assert got.status == S.REVOKED
    assert got.card_id == card  # canonical upper case, whatever was asked
    assert got.reason == types_pb2.DAMAGED
    assert got.effective_time == 1_700_000_000
    assert got.publisher == GZ
    assert got.feed_version == published.version

    clean = check(gz, card_id(GZ))
    assert clean.status == S.NOT_REVOKED
    assert (clean.publisher, clean.feed_version) == (GZ, feed_version(gz))
    assert clean.reason == types_pb2.REASON_UNSPECIFIED

    unknown = check(gz, card_id(NOWHERE))
    assert unknown.status == S.UNKNOWN_ISSUER
    assert unknown.publisher == ""

    no_data = check(gz, card_id(BJ))
    assert no_data.status == S.NO_DATA
    assert no_data.publisher == BJ


def test_batch_check_lists_only_cards_that_are_not_valid(gz: NodeProcess) -> None:
    revoked = [card_id(GZ), card_id(GZ)]
    published = revoke(gz, revoked, types_pb2.REPLACED, when=1_700_000_100)
    cards = [
        card_id(GZ),
        revoked[0],
        card_id(NOWHERE),
        card_id(GZ),
        card_id(BJ),
        revoked[1].lower(),
        card_id(GZ),
    ]
    response = gz.card_status.BatchCheck(card_status_pb2.BatchCheckRequest(card_ids=cards))

    assert response.count == len(cards)
    listed = [(c.index, c.status, c.publisher) for c in response.cards]
    assert listed == [
        (1, S.REVOKED, GZ),
        (2, S.UNKNOWN_ISSUER, ""),
        (4, S.NO_DATA, BJ),
        (5, S.REVOKED, GZ),
    ]
    for c in response.cards:
        if c.status == S.REVOKED:
            assert (c.reason, c.effective_time) == (types_pb2.REPLACED, 1_700_000_100)
    feeds = {f.publisher: f.version for f in response.feeds}
    assert feeds == {GZ: published.version}  # 110100 has no feed here to report


def test_batch_check_of_valid_cards_lists_none(gz: NodeProcess) -> None:
    cards = [card_id(GZ) for _ in range(MAX_BATCH)]  # exactly the limit is allowed
    response = gz.card_status.BatchCheck(card_status_pb2.BatchCheckRequest(card_ids=cards))
    assert response.count == MAX_BATCH
    assert list(response.cards) == []


def test_check_stream_answers_in_order(gz: NodeProcess) -> None:
    revoked = card_id(GZ)
    revoke(gz, [revoked])
    cards = [card_id(GZ), revoked, card_id(NOWHERE), card_id(BJ), revoked.lower(), card_id(GZ)]
    answers = list(stream(gz, cards))
    assert [a.card_id for a in answers] == [c.upper() for c in cards]
    assert [a.status for a in answers] == [
        S.NOT_REVOKED,
        S.REVOKED,
        S.UNKNOWN_ISSUER,
        S.NO_DATA,
        S.REVOKED,
        S.NOT_REVOKED,
    ]


def test_check_stream_ends_with_invalid_argument_at_a_bad_id(gz: NodeProcess) -> None:
    good = card_id(GZ)
    responses = stream(gz, [good, "440100-not-a-card", card_id(GZ)])
    first = next(responses)
    assert (first.card_id, first.status) == (good, S.NOT_REVOKED)
    details = expect_error(grpc.StatusCode.INVALID_ARGUMENT, lambda: next(responses))
    assert "440100-not-a-card" in details
    assert "wrong length" in details


# ---------------------------------------------------------------------------- Admin
def test_revoke_adds_then_changes(gz: NodeProcess) -> None:
    before = feed_version(gz)
    cards = [card_id(GZ) for _ in range(3)]
    first = revoke(gz, cards, types_pb2.TEMPORARY_LOSS)
    assert (first.publisher, first.version) == (GZ, before + 1)
    assert (first.added, first.changed, first.removed, first.absent) == (3, 0, 0, 0)
    assert len(first.digest) == 32
    now = time.time()
    got = check(gz, cards[0])
    assert got.reason == types_pb2.TEMPORARY_LOSS
    assert abs(got.effective_time - now) < 120  # effective_time 0 means "now"

    again = revoke(gz, cards[:1], types_pb2.LOSS, when=1_700_000_000)
    assert again.version == before + 2
    assert (again.added, again.changed) == (0, 1)
    assert check(gz, cards[0]).reason == types_pb2.LOSS
    assert status(gz).feeds[0].digest == again.digest


def test_reinstate_makes_cards_valid_again(gz: NodeProcess) -> None:
    kept, reinstated, never = card_id(GZ), card_id(GZ), card_id(GZ)
    revoke(gz, [kept, reinstated], types_pb2.LOSS, when=1_700_000_200)
    entries_before = status(gz).entries
    response = gz.admin.Reinstate(admin_pb2.ReinstateRequest(card_ids=[reinstated, never.lower()]))
    assert response.publisher == GZ
    assert (response.removed, response.absent, response.added) == (1, 1, 0)
    assert response.version == feed_version(gz)
    assert status(gz).entries == entries_before - 1

    assert check(gz, reinstated).status == S.NOT_REVOKED
    assert check(gz, kept).status == S.REVOKED
    assert not gz.admin.GetEntry(admin_pb2.GetEntryRequest(card_id=reinstated)).found


def test_get_entry_found_and_not_found(gz: NodeProcess) -> None:
    card = card_id(GZ)
    published = revoke(gz, [card], types_pb2.CANCELLED, when=1_700_000_300)
    found = gz.admin.GetEntry(admin_pb2.GetEntryRequest(card_id=card.lower()))
    assert found.found
    assert [
        (e.card_id, e.reason, e.effective_time, e.publisher, e.version) for e in found.entries
    ] == [(card, types_pb2.CANCELLED, 1_700_000_300, GZ, published.version)]
    missing = gz.admin.GetEntry(admin_pb2.GetEntryRequest(card_id=card_id(GZ)))
    assert not missing.found
    assert list(missing.entries) == []


def test_list_entries_pages_chain_to_the_full_set(gz: NodeProcess) -> None:
    region = "440106"  # used by no other test here, so the listing is exactly these cards
    cards = sorted(card_id(region, serial) for serial in range(1000, 1025))
    published = revoke(gz, cards, types_pb2.EXPIRED, when=1_700_000_400)

    pages: list[list[str]] = []
    token = ""
    while True:
        request = admin_pb2.ListEntriesRequest(region_prefix=region, page_size=10, page_token=token)
        page = gz.admin.ListEntries(request)
        pages.append([e.card_id for e in page.entries])
        for e in page.entries:
            assert (e.reason, e.publisher, e.version) == (types_pb2.EXPIRED, GZ, published.version)
        token = page.next_page_token
        if not token:
            break
        assert len(pages) < 10, "page tokens do not advance"
    assert [len(p) for p in pages] == [10, 10, 5]
    listed = [c for p in pages for c in p]
    assert listed == cards  # key order, no duplicates, nothing missing

    everything = gz.admin.ListEntries(
        admin_pb2.ListEntriesRequest(region_prefix="4401", page_size=10_000)
    )
    assert set(cards) <= {e.card_id for e in everything.entries}
    assert len(everything.entries) == status(gz).entries
    elsewhere = gz.admin.ListEntries(admin_pb2.ListEntriesRequest(region_prefix="1101"))
    assert (list(elsewhere.entries), elsewhere.next_page_token) == ([], "")


def test_status_reports_role_region_and_feeds(gz: NodeProcess) -> None:
    published = revoke(gz, [card_id(GZ)])
    s = status(gz)
    assert (s.role, s.region, s.publisher, list(s.scope)) == ("city", GZ, GZ, ["4401"])
    assert [(f.publisher, f.version) for f in s.feeds] == [(GZ, published.version)]
    assert s.feeds[0].entries == s.entries > 0
    assert s.feeds[0].digest == published.digest
    assert s.build_version


# ---------------------------------------------------------------------------- bad input
BAD_ID = "440100D15600000G_NOT_HEX_AT_ALL!"  # 32 characters, the serial is not hex

Call = Callable[[NodeProcess, list[str]], object]
INVALID: list[tuple[str, Call, list[str]]] = [
    (
        "CheckCard-malformed",
        lambda n, good: check(n, BAD_ID),
        [BAD_ID, "serial"],
    ),
    (
        "CheckCard-bad-region",
        lambda n, good: check(n, "990100D156000005" + "0" * 16),
        ["990100", "not a province-level code"],
    ),
    (
        "BatchCheck-malformed",
        lambda n, good: n.card_status.BatchCheck(
            card_status_pb2.BatchCheckRequest(card_ids=[*good, "short"])
        ),
        ["'short'", "item 3", "wrong length 5"],
    ),
    (
        "BatchCheck-empty",
        lambda n, good: n.card_status.BatchCheck(card_status_pb2.BatchCheckRequest()),
        ["empty batch"],
    ),
    (
        "BatchCheck-over-limit",
        lambda n, good: n.card_status.BatchCheck(
            card_status_pb2.BatchCheckRequest(card_ids=[card_id(GZ) for _ in range(MAX_BATCH + 1)])
        ),
        [f"batch of {MAX_BATCH + 1}", f"limit of {MAX_BATCH}"],
    ),
    (
        "CheckStream-malformed",
        lambda n, good: list(stream(n, [*good, BAD_ID])),
        [BAD_ID],
    ),
    (
        "Revoke-malformed",
        lambda n, good: revoke(n, [*good, BAD_ID]),
        [BAD_ID, "serial"],
    ),
    (
        "Revoke-empty",
        lambda n, good: n.admin.Revoke(admin_pb2.RevokeRequest()),
        ["no cards to revoke"],
    ),
    (
        "Revoke-reason-0",
        lambda n, good: n.admin.Revoke(
            admin_pb2.RevokeRequest(
                revocations=[revocation(good[0]), revocation(good[1], types_pb2.REASON_UNSPECIFIED)]
            )
        ),
        ["{good1}", "reason 0 is not one of", "2=LOSS"],
    ),
    (
        "Revoke-reason-99",
        lambda n, good: n.admin.Revoke(
            admin_pb2.RevokeRequest(revocations=[revocation(good[0]), revocation(good[2], 99)])
        ),
        ["{good2}", "reason 99 is not one of"],
    ),
    (
        "Revoke-duplicate",
        lambda n, good: revoke(n, [good[0], good[1], good[0].lower()]),
        ["{good0}", "appears more than once"],
    ),
    (
        "Reinstate-malformed",
        lambda n, good: n.admin.Reinstate(admin_pb2.ReinstateRequest(card_ids=[*good, BAD_ID])),
        [BAD_ID],
    ),
    (
        "Reinstate-duplicate",
        lambda n, good: n.admin.Reinstate(admin_pb2.ReinstateRequest(card_ids=[good[2]] * 2)),
        ["{good2}", "appears more than once"],
    ),
    (
        "GetEntry-malformed",
        lambda n, good: n.admin.GetEntry(admin_pb2.GetEntryRequest(card_id="4401")),
        ["'4401'", "wrong length"],
    ),
    (
        "ListEntries-prefix-not-digits",
        lambda n, good: n.admin.ListEntries(admin_pb2.ListEntriesRequest(region_prefix="44a1")),
        ["region_prefix '44a1'", "0-6 digits"],
    ),
    (
        "ListEntries-prefix-too-long",
        lambda n, good: n.admin.ListEntries(admin_pb2.ListEntriesRequest(region_prefix="4401001")),
        ["region_prefix '4401001'"],
    ),
    (
        "ListEntries-token-not-hex",
        lambda n, good: n.admin.ListEntries(admin_pb2.ListEntriesRequest(page_token="zz")),
        ["page_token 'zz'"],
    ),
    (
        "ListEntries-token-wrong-length",
        lambda n, good: n.admin.ListEntries(admin_pb2.ListEntriesRequest(page_token="abcd")),
        ["page_token 'abcd'"],
    ),
    (
        "ListEntries-page-too-large",
        lambda n, good: n.admin.ListEntries(admin_pb2.ListEntriesRequest(page_size=10_001)),
        ["page_size 10001", "10000"],
    ),
]


@pytest.mark.parametrize(
    ("call", "fragments"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_bad_input_is_invalid_argument_and_writes_nothing(
    gz: NodeProcess, call: Call, fragments: list[str]
) -> None:
    # Valid cards ride along in the bad requests: none of them may be revoked afterwards.
    good = [card_id(GZ) for _ in range(3)]
    before = written(gz)
    details = expect_error(grpc.StatusCode.INVALID_ARGUMENT, lambda: call(gz, good))
    for fragment in fragments:
        expected = fragment.format(good0=good[0], good1=good[1], good2=good[2])
        assert expected in details, f"{expected!r} not in {details!r}"
    assert written(gz) == before
    assert revoked_among(gz, good) == []


def test_oversized_message_is_refused_by_grpc_and_the_node_keeps_serving(
    gz: NodeProcess,
) -> None:
    card = card_id(GZ)
    request = card_status_pb2.BatchCheckRequest(card_ids=[card] * 600_000)
    assert request.ByteSize() > SERVER_MAX_MESSAGE
    before = written(gz)
    # gRPC core refuses the message before any handler runs, so the answer is its status,
    # RESOURCE_EXHAUSTED ("SERVER: Received message larger than max (20400000 vs. 16777216)"),
    # not the servicer's INVALID_ARGUMENT for a batch over max_batch.
    details = expect_error(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        lambda: gz.card_status.BatchCheck(request, timeout=60),
    )
    assert "larger than max" in details
    assert str(SERVER_MAX_MESSAGE) in details
    assert gz.alive()
    assert check(gz, card).status == S.NOT_REVOKED
    assert written(gz) == before


def test_out_of_scope_revoke_is_permission_denied(gz: NodeProcess) -> None:
    good, foreign = card_id(GZ), card_id(BJ)
    before = written(gz)
    details = expect_error(grpc.StatusCode.PERMISSION_DENIED, lambda: revoke(gz, [good, foreign]))
    assert foreign in details
    assert "outside" in details
    details = expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        lambda: gz.admin.Reinstate(admin_pb2.ReinstateRequest(card_ids=[foreign])),
    )
    assert foreign in details
    assert written(gz) == before
    assert check(gz, good).status == S.NOT_REVOKED


def test_node_without_signing_key_refuses_writes(world: World, tmp_path: Path) -> None:
    assert world.gz.keys is not None
    files = write_node(
        tmp_path / "relay", "440000", role="province", signing=False, trusted=[world.gz.keys.public]
    )
    with NodeProcess(files.config) as relay:
        card = card_id(GZ)
        details = expect_error(grpc.StatusCode.FAILED_PRECONDITION, lambda: revoke(relay, [card]))
        assert "no signing key" in details
        expect_error(
            grpc.StatusCode.FAILED_PRECONDITION,
            lambda: relay.admin.Reinstate(admin_pb2.ReinstateRequest(card_ids=[card])),
        )
        s = status(relay)
        assert (s.role, s.region, s.publisher, list(s.scope), list(s.feeds)) == (
            "province",
            "440000",
            "",
            [],
            [],
        )
        assert check(relay, card).status == S.NO_DATA  # trusted, but no feed has arrived
        assert check(relay, card_id(BJ)).status == S.UNKNOWN_ISSUER


# ---------------------------------------------------------------------------- life cycle
def _started_revokes(node: NodeProcess) -> float:
    return node.scrape().get("grpc_server_started_total", grpc_method="Revoke")


def test_sigterm_lets_an_in_flight_call_finish(fresh_node: NodeProcess) -> None:
    node = fresh_node
    cards = [card_id(GZ) for _ in range(50_000)]
    request = admin_pb2.RevokeRequest(revocations=[revocation(c) for c in cards])
    started = _started_revokes(node)
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["response"] = node.admin.Revoke(request, timeout=60)
        except grpc.RpcError as exc:  # reported below, with the node's stderr
            outcome["error"] = exc

    caller = threading.Thread(target=call)
    caller.start()
    # SIGTERM once the server has the whole request and is handling it (the applying of
    # 50,000 cards takes a few hundred ms). If the call already finished, the test still
    # shows a clean exit; it cannot flake on timing.
    deadline = time.monotonic() + 30
    while _started_revokes(node) == started:
        assert time.monotonic() < deadline, "the Revoke never reached the node"
        time.sleep(0.002)
    node.terminate()
    caller.join(60)
    assert node.wait() == 0, node.stderr_text()
    assert "error" not in outcome, f"{outcome.get('error')}\n{node.stderr_text()}"
    response = outcome["response"]
    assert (response.version, response.added) == (1, 50_000)

    node.start()
    assert feed_version(node) == 1
    assert status(node).entries == 50_000
    assert revoked_among(node, cards[:MAX_BATCH]) == cards[:MAX_BATCH]


def test_restart_after_sigterm_and_after_sigkill_keeps_the_data(fresh_node: NodeProcess) -> None:
    node = fresh_node
    first = card_id(GZ)
    v1 = revoke(node, [first], types_pb2.LOSS, when=1_700_000_000)

    node.restart()  # SIGTERM (exit 0 asserted) and start on the same data dir
    got = check(node, first)
    assert (got.status, got.reason, got.effective_time) == (
        S.REVOKED,
        types_pb2.LOSS,
        1_700_000_000,
    )
    assert feed_version(node) == v1.version == 1
    assert status(node).feeds[0].digest == v1.digest

    second = card_id(GZ)
    v2 = revoke(node, [second])
    assert node.kill() == -9  # no clean-up: the saved index is now a generation behind
    node.start()
    assert revoked_among(node, [first, card_id(GZ), second]) == [first, second]
    assert feed_version(node) == v2.version == 2
    assert status(node).entries == 2
    # The feed chain continues from the recovered head.
    assert revoke(node, [card_id(GZ)]).version == 3


# ---------------------------------------------------------------------------- observability
def test_metrics_move_with_calls(gz: NodeProcess) -> None:
    card = card_id(GZ)
    revoke(gz, [card])
    before = gz.scrape()
    check(gz, card)
    check(gz, card_id(GZ))
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, lambda: check(gz, "nonsense"))
    call = {"grpc_method": "CheckCard", "grpc_service": CARD_STATUS, "grpc_type": "unary"}
    invalid = {"grpc_code": "INVALID_ARGUMENT", **call}
    # grpc.aio's context.abort() sends the status before it raises, so the node counts a
    # failed call just after the client has its answer: wait for that count to land.
    after = gz.scrape()
    deadline = time.monotonic() + 10
    while after.get("grpc_server_handled_total", **invalid) == before.get(
        "grpc_server_handled_total", **invalid
    ):
        assert time.monotonic() < deadline, "INVALID_ARGUMENT never counted"
        time.sleep(0.01)
        after = gz.scrape()

    def moved(name: str, **labels: str) -> float:
        return after.get(name, **labels) - before.get(name, **labels)

    assert moved("blacklist_checks_total", result="REVOKED") == 1
    assert moved("blacklist_checks_total", result="NOT_REVOKED") == 1
    assert moved("grpc_server_handled_total", grpc_code="OK", **call) == 2
    assert moved("grpc_server_handled_total", **invalid) == 1
    assert moved("grpc_server_started_total", **call) == 3
    # Every CheckCard call is timed once, by the Edge interceptor, refused ones too; the
    # check latency histogram is that same timing (node/metrics.py CheckSecondsView).
    assert moved("blacklist_check_seconds_count") == 3
    assert moved("grpc_server_handling_seconds_count", **call) == 3
    assert after.value("blacklist_check_seconds_bucket", le="+Inf") >= 3
    assert after.value("blacklist_feed_version", publisher=GZ) == feed_version(gz)
    assert after.value("blacklist_feed_entries", publisher=GZ) == status(gz).entries
    assert after.value("blacklist_build_info") == 1


def test_health_service_reports_serving(gz: NodeProcess) -> None:
    for service in ("", CARD_STATUS, ADMIN):
        answer = gz.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING, service
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        lambda: gz.health.Check(health_pb2.HealthCheckRequest(service="no.such.Service")),
    )


def test_reflection_lists_the_services(gz: NodeProcess) -> None:
    requests = iter(
        [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=CARD_STATUS),
        ]
    )
    listed, described = list(gz.reflection.ServerReflectionInfo(requests, timeout=10))
    names = {s.name for s in listed.list_services_response.service}
    # At least these: later issues add services (Sync) beside them.
    assert names >= {
        CARD_STATUS,
        ADMIN,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    assert described.file_descriptor_response.file_descriptor_proto  # the .proto is served


# ---------------------------------------------------------------------------- bad config
def _base_fields(world: World, directory: Path) -> dict[str, TomlValue]:
    assert world.gz.keys is not None
    return {
        "role": "city",
        "region": GZ,
        "listen": "127.0.0.1:0",
        "metrics_listen": "127.0.0.1:0",
        "data_dir": str(directory / "data"),
        "signing_key": str(world.gz.keys.private),
        "trusted_keys": [str(world.gz.keys.public)],
    }


Edit = Callable[[dict[str, TomlValue], World], object]
BAD_CONFIGS: list[tuple[str, Edit, list[str]]] = [
    ("missing-role", lambda f, w: f.pop("role"), ["config field 'role'", "None"]),
    ("bad-role", lambda f, w: f.update(role="town"), ["config field 'role'", "'town'"]),
    ("bad-region", lambda f, w: f.update(region="4401"), ["config field 'region'", "6-digit"]),
    (
        "impossible-region",
        lambda f, w: f.update(region="990100"),
        ["config field 'region'", "990100"],
    ),
    ("unknown-field", lambda f, w: f.update(colour="blue"), ["unknown config field", "colour"]),
    (
        "signing-key-of-another-publisher",
        lambda f, w: f.update(signing_key=str(w.bj.private)),
        ["config field 'signing_key'", "publishes for 110100", "region is 440100"],
    ),
    (
        "missing-signing-key-file",
        lambda f, w: f.update(signing_key=str(w.root / "absent.key")),
        ["config field 'signing_key'", "absent.key", "no such key file"],
    ),
    (
        "missing-trusted-key-file",
        lambda f, w: f.update(trusted_keys=[str(w.root / "absent.pub")]),
        ["config field 'trusted_keys'", "absent.pub", "no such key file"],
    ),
    ("bad-listen", lambda f, w: f.update(listen="localhost"), ["config field 'listen'"]),
    ("zero-max-batch", lambda f, w: f.update(max_batch=0), ["config field 'max_batch'"]),
]


@pytest.mark.parametrize(
    ("edit", "fragments"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_config_is_refused_at_start_up(
    world: World, tmp_path: Path, edit: Edit, fragments: list[str]
) -> None:
    fields = _base_fields(world, tmp_path)
    edit(fields, world)
    config = write_config(tmp_path / "node.toml", fields)
    code, stderr = run_node_expecting_exit(config)
    assert code == 2, stderr
    assert stderr.startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in stderr, f"{fragment!r} not in {stderr!r}"
    assert not (tmp_path / "data").exists()  # refused before opening the store
