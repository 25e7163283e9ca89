"""BatchCheck's packed form through a real node: it answers what the repeated form answers,
names every malformed id by index with its cause while checking the others, and holds the
node's ``max_batch`` limit at, below and above it (and the 32-byte framing)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.gen.blacklist.v1 import admin_pb2, card_status_pb2, types_pb2
from tests.node_harness import NodeProcess, card_id, write_keys, write_node

GZ, BJ = "440100", "110100"
MAX_BATCH = 40
S = types_pb2.CardStatusCode


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, list[str]]]:
    root = tmp_path_factory.mktemp("packed")
    bj = write_keys(root / "bj-keys", BJ, ["1101"])
    files = write_node(root / "gz", GZ, trusted=[bj.public], extra={"max_batch": MAX_BATCH})
    with NodeProcess(files.config) as running:
        revoked = [card_id(GZ) for _ in range(30)]
        running.admin.Revoke(
            admin_pb2.RevokeRequest(
                revocations=[
                    admin_pb2.Revocation(card_id=c, reason=types_pb2.LOSS) for c in revoked
                ]
            ),
            timeout=60,
        )
        yield running, revoked


def batch(n: NodeProcess, **fields: Any) -> card_status_pb2.BatchCheckResponse:
    answer: card_status_pb2.BatchCheckResponse = n.card_status.BatchCheck(
        card_status_pb2.BatchCheckRequest(**fields), timeout=30
    )
    return answer


def refused(n: NodeProcess, **fields: Any) -> str:
    with pytest.raises(grpc.RpcError) as info:
        batch(n, **fields)
    error: Any = info.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    details: str = error.details()
    return details


def _cards(answer: card_status_pb2.BatchCheckResponse) -> list[tuple[int, int, int, str]]:
    return [(c.index, c.status, c.effective_time, c.publisher) for c in answer.cards]


@given(data=st.data())
@settings(
    max_examples=25,
    deadline=None,
    # The node is read, never written, by the examples: sharing it between them is safe.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_packed_and_repeated_agree(node: tuple[NodeProcess, list[str]], data: Any) -> None:
    n, revoked = node
    serials = st.integers(0, 2**64 - 1)
    pick = st.one_of(
        st.sampled_from(revoked),
        st.builds(card_id, st.just(GZ), serials),
        st.builds(card_id, st.just(BJ), serials),  # NO_DATA
        st.builds(card_id, st.just("120100"), serials),  # UNKNOWN_ISSUER
    )
    either_case = st.tuples(pick, st.booleans()).map(lambda p: p[0].lower() if p[1] else p[0])
    ids = data.draw(st.lists(either_case, min_size=1, max_size=MAX_BATCH))
    repeated = batch(n, card_ids=ids)
    packed = batch(n, packed_ids="".join(ids).encode())
    assert packed.count == repeated.count == len(ids)
    assert _cards(packed) == _cards(repeated)
    assert [(f.publisher, f.version) for f in packed.feeds] == [
        (f.publisher, f.version) for f in repeated.feeds
    ]


def test_every_malformed_id_is_answered_by_index_with_its_cause(
    node: tuple[NodeProcess, list[str]],
) -> None:
    n, revoked = node
    fine = card_id(GZ)
    ids = [
        revoked[0],
        "99" + fine[2:],
        fine,
        fine[:20] + "G" + fine[21:],
        revoked[1].lower(),
        fine[:10] + " " + fine[11:],
    ]
    answer = batch(n, packed_ids="".join(ids).encode())
    assert answer.count == len(ids)
    got = [(c.index, S.Name(c.status), c.error) for c in answer.cards]
    assert got == [
        (0, "REVOKED", ""),
        (1, "INVALID_CARD_ID", "impossible region '990100': '99' is not a province-level code"),
        (3, "INVALID_CARD_ID", f"serial {fine[16:20] + 'G' + fine[21:]!r} is not 16 hex digits"),
        (4, "REVOKED", ""),
        (5, "INVALID_CARD_ID", "contains whitespace"),
    ]
    # The repeated form still refuses the call at the first bad id, as it always has.
    assert "(item 1)" in refused(n, card_ids=ids)


@pytest.mark.parametrize("count", [1, MAX_BATCH - 1, MAX_BATCH, MAX_BATCH + 1])
def test_the_batch_limit_below_at_and_above(
    node: tuple[NodeProcess, list[str]], count: int
) -> None:
    n, _ = node
    ids = "".join(card_id(GZ) for _ in range(count)).encode()
    if count <= MAX_BATCH:
        assert batch(n, packed_ids=ids).count == count
    else:
        details = refused(n, packed_ids=ids)
        assert f"batch of {count} card ids ({32 * count} bytes)" in details
        assert f"limit of {MAX_BATCH}" in details


@pytest.mark.parametrize("cut", [1, 31])
def test_a_packed_batch_of_part_ids_is_refused(
    node: tuple[NodeProcess, list[str]], cut: int
) -> None:
    n, _ = node
    ids = (card_id(GZ) * 2).encode()[: 32 + cut]
    assert "is cut short" in refused(n, packed_ids=ids)


def test_both_forms_at_once_are_refused(node: tuple[NodeProcess, list[str]]) -> None:
    n, _ = node
    one = card_id(GZ)
    assert "not both" in refused(n, card_ids=[one], packed_ids=one.encode())
    assert "empty batch" in refused(n)


def test_a_batch_of_random_bytes_names_every_row(node: tuple[NodeProcess, list[str]]) -> None:
    n, _ = node
    rng = random.Random(7)
    noise = bytes(rng.randrange(256) for _ in range(32 * MAX_BATCH))
    answer = batch(n, packed_ids=noise)
    assert [c.index for c in answer.cards] == list(range(MAX_BATCH))
    assert all(c.status == S.INVALID_CARD_ID and c.error for c in answer.cards)
