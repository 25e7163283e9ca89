"""End times on the wire (issue #17): the expiry section of delta and snapshot bodies, its
canonical form, hostile bytes, what old bodies keep, and the acceptance rules."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blacklist.binary import Reader, Writer
from blacklist.delta import FeedHead, sign_delta, sign_snapshot
from blacklist.deltadecode import decode, decode_delta
from blacklist.entry import Reason
from blacklist.entryblock import CardColumns, EntryColumns
from blacklist.errors import CodecError
from blacklist.expiry import read_expiry, write_expiry
from blacklist.rejections import BadEndTime, MalformedDelta
from blacklist.signing import Keyring, SigningKey
from blacklist.sync.accept import AcceptPolicy, accept_delta, accept_signed, accept_snapshot

KEY = SigningKey(1, bytes(range(32)), "440100", ("4401",))
RING = Keyring([KEY.trusted()])
T = 1_750_000_000
DAY = 86_400
GENESIS = FeedHead.genesis("440100")


def cards(n: int, region: int = 440100) -> CardColumns:
    return CardColumns(
        np.full(n, region, np.uint32),
        np.full(n, 5, np.uint64),
        np.arange(1, n + 1, dtype=np.uint64) * 7919,
    )


def entries(reasons: list[int], times: list[int], ends: list[int] | None = None) -> EntryColumns:
    n = len(reasons)
    return EntryColumns(
        cards(n),
        np.array(reasons, np.uint8),
        np.array(times, np.int64),
        None if ends is None else np.array(ends, np.int64),
    )


def golden() -> tuple[bytes, bytes]:
    """The container digests of a delta and a snapshot as the code before end times wrote
    them (computed with that code, commit 8b7a253): they must never change."""
    c = CardColumns(
        np.array([440100] * 3, np.uint32), np.array([5, 5, 9], np.uint64), np.array([1, 2, 3])
    )
    adds = EntryColumns(c, np.array([1, 2, 1], np.uint8), np.array([T, T + 100, T + 200]))
    d = sign_delta(KEY, GENESIS, adds, CardColumns.empty(), T + 300)
    s = sign_snapshot(KEY, FeedHead("440100", 1, d.digest), adds, np.ones(3, np.uint64), T + 400)
    return hashlib.sha256(d.to_bytes()).digest(), hashlib.sha256(s.to_bytes()).digest()


def test_bodies_without_end_times_keep_their_bytes() -> None:
    delta, snapshot = golden()
    assert delta.hex() == "7fae4a959b8f1ac4a5ff907545f3244366e425e035c00473783454998fcca329"
    assert snapshot.hex() == "f7972b87259088cb8a42a5b3394c2030df230b6eb289bf4b5e36a49d79803174"


def test_delta_and_snapshot_round_trip_end_times() -> None:
    adds = entries([1, 2, 1, 7], [T, T, T + 5, T + 9], [T + 10 * DAY, 0, T + 7 * DAY, T + 60])
    d = sign_delta(KEY, GENESIS, adds, CardColumns.empty(), T)
    back = decode_delta(d.to_bytes())
    assert back.adds == adds and back.body == d.body
    s = sign_snapshot(KEY, FeedHead("440100", 1, d.digest), adds, np.ones(4, np.uint64), T)
    snap = decode(s.to_bytes())
    assert snap.entries == adds  # type: ignore[union-attr]
    # One section flag more, nothing else: the same delta without end times is shorter by
    # exactly the section and shares every byte before it.
    plain = sign_delta(KEY, GENESIS, adds.with_expires(np.zeros(4)), CardColumns.empty(), T)
    assert d.body[: len(plain.body) - 1] == plain.body[:-1]
    assert d.body[len(plain.body) - 1] == plain.body[-1] | 4


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-(2**40), 2**40), st.none() | st.integers(1, 2**62)),
        min_size=1,
        max_size=40,
    )
)
def test_section_round_trips_any_end_times(rows: list[tuple[int, int | None]]) -> None:
    times = [t for t, _ in rows]
    ends = [0 if lapse is None else t + lapse for t, lapse in rows]
    if not any(ends):
        ends[0] = times[0] + 1
    e = entries([1] * len(rows), times, ends)
    w = Writer()
    write_expiry(w, e)
    data = w.getvalue()
    r = Reader(data)
    assert read_expiry(r, e.with_expires(np.zeros(len(rows)))) == e
    r.expect_end()
    for cut in range(len(data)):  # every truncation is refused, never a crash
        with pytest.raises(CodecError):
            read_expiry(Reader(data[:cut]), e)


def section(e: EntryColumns) -> bytes:
    w = Writer()
    write_expiry(w, e)
    return w.getvalue()


def test_writer_refuses_an_end_not_after_the_effective_time() -> None:
    for end in (T, T - 1):
        with pytest.raises(ValueError, match="not after its effective time"):
            section(entries([1], [T], [end]))
    # k=1, min lapse 1, unit 1, lw 0
    assert section(entries([1], [T], [T + 1])) == bytes([1, 1, 1, 0])
    # Whole-day periods of 7..15 days: unit one day, offsets of a few bits.
    days = entries([1, 1, 1], [T, T + 5, T + 9], [T + 7 * DAY, T + 5 + 15 * DAY, T + 9 + 8 * DAY])
    data = section(days)
    head = Writer()
    for value in (3, 7 * DAY, DAY):  # k, min lapse, unit
        head.uvarint(value)
    head.u8(4)  # width: 8 days above the minimum
    assert data == head.getvalue() + bytes([0b0000_1000, 0b0001_0000])  # 0, 8, 1 days
    assert read_expiry(Reader(data), days.with_expires(np.zeros(3))) == days


def test_reader_refuses_what_the_writer_would_not_write() -> None:
    plain = entries([1, 1, 1], [T, T, T])
    bad = {
        "flagged but empty": bytes([0]),
        "expiry count": bytes([4, 1, 0]),  # k > n
        "min lapse 0": bytes([3, 0, 0]),
        "padded": bytes([3, 0x81, 0x00, 0]),
        "not the minimal": bytes([3, 1, 1, 2, 0]),  # width 2 for all-zero offsets
        "not the smallest": bytes([3, 1, 1, 1, 0b11100000]),  # every offset 1
        "exceeds 64": bytes([3, 1, 1, 65]),
        "overflows int64": bytes([3, *[0xFF] * 8, 0x7F, 1, 0]),
        "lapse unit 0": bytes([3, 1, 0, 0]),
        # Offsets 0, 2, 2 with unit 1: the unit should have been 2.
        "not the greatest common divisor": bytes([3, 1, 1, 2, 0b00101000]),
        "overflows 64 bits": bytes([3, 1, *[0x80] * 9, 0x01, 2, 0b00101100]),
    }
    with pytest.raises(CodecError, match="not the greatest common divisor"):
        read_expiry(Reader(bytes([3, 1, 2, 0])), plain)  # equal lapses: the unit is 1
    for message, data in bad.items():
        with pytest.raises(CodecError, match=message):
            read_expiry(Reader(data), plain)
    # Positions past the block or repeated ones (k < n, Elias–Fano of row indices).
    w = Writer()
    w.uvarint(2)
    from blacklist.eliasfano import write_sequence

    write_sequence(w, np.array([1, 3], np.uint64))
    w.uvarint(1)
    w.u8(0)
    with pytest.raises(CodecError, match="not below 3"):
        read_expiry(Reader(w.getvalue()), plain)
    w = Writer()
    w.uvarint(2)
    write_sequence(w, np.array([1, 1], np.uint64))
    w.uvarint(1)
    w.u8(0)
    with pytest.raises(CodecError, match="repeat"):
        read_expiry(Reader(w.getvalue()), plain)


def test_a_hostile_count_costs_nothing_before_it_is_checked() -> None:
    # 2**60 end times declared over three entries and no bytes: refused at the count.
    w = Writer()
    w.uvarint(2**60)
    with pytest.raises(CodecError, match="expiry count"):
        read_expiry(Reader(w.getvalue()), entries([1, 1, 1], [T, T, T]))


def test_a_flag_on_an_empty_block_is_refused() -> None:
    from blacklist.delta import Envelope
    from blacklist.deltadecode import decode_body

    empty = sign_delta(KEY, GENESIS, EntryColumns.empty(), CardColumns.empty(), T)
    assert empty.body[-1] == 0  # the sections byte ends a body with no sections
    flagged = empty.body[:-1] + bytes([4, 0])
    with pytest.raises(CodecError, match="flagged but empty"):
        decode_body(Envelope(empty.header, flagged, b""))
    with pytest.raises(CodecError):
        decode_body(Envelope(empty.header, empty.body[:-1] + bytes([4]), b""))
    with pytest.raises(CodecError, match="unknown section flags 0x08"):
        decode_body(Envelope(empty.header, empty.body[:-1] + bytes([8]), b""))
    # A PSAM denial cannot carry an end time (nothing encodes it).
    with pytest.raises(ValueError, match="PSAM"):
        sign_delta(
            KEY,
            GENESIS,
            EntryColumns.empty(),
            CardColumns.empty(),
            T,
            psam_adds=entries([1], [T], [T + DAY]),
        )


def test_size_of_100k_temporary_losses_stays_near_the_plain_delta() -> None:
    n = 100_000
    rng = np.random.default_rng(17)
    c = CardColumns(
        rng.integers(440100, 440120, n).astype(np.uint32),
        np.full(n, 5, np.uint64),
        rng.integers(0, 2**63, n).astype(np.uint64),
    )
    times = T + rng.integers(0, DAY, n)
    plain = EntryColumns(c, np.ones(n, np.uint8), times)
    lapsing = plain.with_expires(times + 10 * DAY)
    a = len(sign_delta(KEY, GENESIS, plain, CardColumns.empty(), T).body)
    b = len(sign_delta(KEY, GENESIS, lapsing, CardColumns.empty(), T).body)
    assert b - a <= 8  # one lapse period for all: count, min lapse, width
    assert (b - a) / n < 0.001


# ---------------------------------------------------------------------------- acceptance


def test_accept_end_times_only_on_reasons_that_lapse() -> None:
    for reason in (Reason.TEMPORARY_LOSS, Reason.OTHER):
        d = sign_delta(KEY, GENESIS, entries([reason], [T], [T + DAY]), CardColumns.empty(), T)
        assert accept_delta(GENESIS, d, RING).version == 1
    for reason in (Reason.LOSS, Reason.DAMAGED, Reason.CANCELLED):
        d = sign_delta(KEY, GENESIS, entries([reason], [T], [T + DAY]), CardColumns.empty(), T)
        with pytest.raises(BadEndTime, match=f"reason {reason.name} does not lapse"):
            accept_signed(d.to_bytes(), lambda _: GENESIS_POS, RING)


GENESIS_POS = __import__("blacklist.sync.accept", fromlist=["FeedPosition"]).FeedPosition(GENESIS)


def test_accept_bounds_the_lapse_at_below_and_above_the_node_limit() -> None:
    policy = AcceptPolicy(max_lapse=10 * DAY)
    for lapse, ok in ((10 * DAY - 1, True), (10 * DAY, True), (10 * DAY + 1, False)):
        d = sign_delta(KEY, GENESIS, entries([1], [T], [T + lapse]), CardColumns.empty(), T)
        if ok:
            accept_delta(GENESIS, d, RING, policy)
        else:
            with pytest.raises(BadEndTime, match="more than this node's 864000"):
                accept_delta(GENESIS, d, RING, policy)
    with pytest.raises(ValueError, match="max_lapse"):
        AcceptPolicy(max_lapse=0)


def test_a_delta_may_not_add_an_entry_already_over_when_issued() -> None:
    for issued, ok in ((T + DAY - 1, True), (T + DAY, False), (T + DAY + 1, False)):
        d = sign_delta(KEY, GENESIS, entries([1], [T], [T + DAY]), CardColumns.empty(), issued)
        if ok:
            accept_delta(GENESIS, d, RING)
        else:
            with pytest.raises(BadEndTime, match="not after the delta's issued_at"):
                accept_delta(GENESIS, d, RING)
    # A snapshot may carry one (its signer's sweep may not have run); checks answer by clock.
    e = entries([1], [T], [T + DAY])
    s = sign_snapshot(KEY, FeedHead("440100", 3, bytes(32)), e, np.ones(1, np.uint64), T + DAY)
    assert accept_snapshot(GENESIS, s, RING).version == 3


def test_bad_bytes_in_a_signed_body_are_malformed_not_a_crash() -> None:
    d = sign_delta(KEY, GENESIS, entries([1, 1], [T, T], [T + DAY, 0]), CardColumns.empty(), T)
    for cut in range(1, 6):
        body = d.body[:-cut]
        forged = sign_delta(KEY, GENESIS, EntryColumns.empty(), CardColumns.empty(), T)
        # Re-sign the truncated body so that only the decoder can refuse it.
        from blacklist.delta import _container

        data = _container(body, KEY.sign(hashlib.sha256(body).digest()))
        with pytest.raises(MalformedDelta, match="does not decode"):
            accept_signed(data, lambda _: GENESIS_POS, RING)
        assert forged.version == 1


def test_the_nodes_lapse_bound_holds_on_every_path_and_names_the_lapse() -> None:
    """The node's max_lapse reaches the end-time rule through accept_signed, accept_delta
    and accept_snapshot alike (never the default), and the refusal names the item, the card
    and the lapse; 1 s is the smallest bound a node may set."""
    policy = AcceptPolicy(max_lapse=DAY)
    assert AcceptPolicy(max_lapse=1).max_lapse == 1
    e = entries([1], [T], [T + DAY + 1])
    card_id = e.cards.card_id(0)
    d = sign_delta(KEY, GENESIS, e, CardColumns.empty(), T)
    s = sign_snapshot(KEY, FeedHead("440100", 3, bytes(32)), e, np.ones(1, np.uint64), T)
    tail = f"{card_id} lapses {DAY + 1} s after its effective time, more than this node's {DAY}"
    for call, label in (
        (lambda: accept_signed(d.to_bytes(), lambda _: GENESIS_POS, RING, policy), "delta"),
        (lambda: accept_delta(GENESIS, d, RING, policy), "delta"),
        (lambda: accept_signed(s.to_bytes(), lambda _: GENESIS_POS, RING, policy), "snapshot"),
        (lambda: accept_snapshot(GENESIS, s, RING, policy), "snapshot"),
    ):
        with pytest.raises(BadEndTime) as info:
            call()
        version = 1 if label == "delta" else 3
        assert str(info.value) == f"{label} 440100 v{version}: {tail}"
