"""Head statements (blacklist/sync/freshness.py), pure: the codec at every length bound, and
each acceptance rule with its own rejection, without LMDB or sockets."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable

import pytest

from blacklist.authority import Revocation, build_delta
from blacklist.certs import RevocationReason, issue_certificate, issue_revocation
from blacklist.delta import FeedHead
from blacklist.deltadecode import decode
from blacklist.entry import Reason
from blacklist.errors import CodecError
from blacklist.signing import Keyring, SigningKey
from blacklist.sync.freshness import (
    BODY_LENGTH,
    MAX_SIGNATURE,
    MAX_STATEMENT_BYTES,
    STATEMENT_MAGIC,
    FeedFreshness,
    HeadStatement,
    MalformedStatement,
    StatementBadSignature,
    StatementFork,
    StatementFromFuture,
    StatementKeyNotAllowed,
    StatementKeyRevoked,
    StatementTimeBackwards,
    StatementUnknownKey,
    accept_statement,
    decode_statement,
    fresh_after_apply,
    plan_statement_push,
    push_batches,
    sign_statement,
    statement_time,
    statements_within,
)
from blacklist.trust import CertifiedKeys, TrustAnchor
from tests.conftest import card

GZ = "440100"
NOW = 1_750_000_000
SKEW = 30
D3 = hashlib.sha256(b"v3").digest()
D4 = hashlib.sha256(b"v4").digest()
HEAD3 = FeedHead(GZ, 3, D3)


@pytest.fixture(scope="module")
def gz(signing_suite: str) -> SigningKey:
    """Guangzhou's key, in each signing suite in turn (conftest.SUITE_NAMES)."""
    return SigningKey.generate(GZ, ["4401"], signing_suite)


@pytest.fixture(scope="module")
def sz(signing_suite: str) -> SigningKey:
    return SigningKey.generate("440300", ["4403"], signing_suite)


@pytest.fixture(scope="module")
def ring(gz: SigningKey, sz: SigningKey) -> Keyring:
    return Keyring([gz.trusted(), sz.trusted()])


def held(
    head: FeedHead = HEAD3,
    issued_at: int = NOW - 600,
    digest_at: Callable[[int], bytes | None] = lambda v: None,
) -> FeedFreshness:
    """A node holding ``head`` (issued 10 minutes ago, so fresh as of then)."""
    return FeedFreshness(head, issued_at, fresh_as_of=issued_at, digest_at=digest_at)


def forged(key: SigningKey, publisher: str, version: int, digest: bytes, t: int) -> HeadStatement:
    """A statement for ``publisher`` signed by ``key`` whatever its publisher is."""
    s = HeadStatement(publisher, version, digest, t, key.suite_id, key.key_id, b"x")
    return dataclasses.replace(s, signature=key.sign_body(s.body))


# ---------------------------------------------------------------------------- the codec
def test_a_statement_round_trips_and_its_layout_is_the_documented_one(gz: SigningKey) -> None:
    s = sign_statement(gz, HEAD3, NOW)
    data = s.to_bytes()
    assert len(s.body) == BODY_LENGTH == 66
    assert len(data) == BODY_LENGTH + 1 + 64  # Ed25519, and SM2's r || s
    assert data[:4] == STATEMENT_MAGIC and data[4] == 1
    assert int.from_bytes(data[5:9], "big") == 440100
    assert int.from_bytes(data[9:17], "big") == 3 and data[17:49] == D3
    assert int.from_bytes(data[49:57], "big") == NOW
    assert decode_statement(data) == s
    assert decode_statement(data).head == HEAD3


def _with_signature(s: HeadStatement, length: int) -> bytes:
    return s.body + bytes([length]) + b"\x01" * length


@pytest.mark.parametrize("length", [1, MAX_SIGNATURE - 1, MAX_SIGNATURE])
def test_signature_lengths_up_to_the_bound_decode(gz: SigningKey, length: int) -> None:
    s = sign_statement(gz, HEAD3, NOW)
    data = _with_signature(s, length)
    assert len(data) <= MAX_STATEMENT_BYTES
    assert decode_statement(data).signature == b"\x01" * length


def test_the_longest_statement_is_exactly_max_statement_bytes(gz: SigningKey) -> None:
    data = _with_signature(sign_statement(gz, HEAD3, NOW), MAX_SIGNATURE)
    assert len(data) == MAX_STATEMENT_BYTES
    decode_statement(data)
    with pytest.raises(MalformedStatement, match=f"at most {MAX_STATEMENT_BYTES}"):
        decode_statement(data + b"\x00")  # one byte over: refused before parsing


def test_signature_length_zero_and_over_the_bound_are_refused(gz: SigningKey) -> None:
    s = sign_statement(gz, HEAD3, NOW)
    with pytest.raises(MalformedStatement, match="signature length 0"):
        decode_statement(s.body + b"\x00")
    # A length byte over the bound, with the bytes present up to the total limit.
    over = s.body + bytes([MAX_SIGNATURE + 1]) + b"\x01" * MAX_SIGNATURE
    with pytest.raises(MalformedStatement, match=f"signature length {MAX_SIGNATURE + 1}"):
        decode_statement(over)


def test_truncated_and_padded_statements_are_refused(gz: SigningKey) -> None:
    data = sign_statement(gz, HEAD3, NOW).to_bytes()
    for cut in (0, 3, BODY_LENGTH - 1, BODY_LENGTH, BODY_LENGTH + 1, len(data) - 1):
        with pytest.raises(MalformedStatement):
            decode_statement(data[:cut])
    with pytest.raises(MalformedStatement, match="1 trailing bytes"):
        decode_statement(data + b"\x00")


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (0, ord("X"), "bad magic"),
        (4, 2, "format 2"),
        (5, 0xFF, "more than 6 digits"),  # publisher code >= 0xFF000000
        (49, 0x80, "before 1970"),  # issued_at negative
    ],
)
def test_fields_out_of_range_are_refused(
    gz: SigningKey, offset: int, value: int, message: str
) -> None:
    data = bytearray(sign_statement(gz, HEAD3, NOW).to_bytes())
    data[offset] = value
    with pytest.raises(MalformedStatement, match=message):
        decode_statement(bytes(data))


def test_domain_separation_from_deltas_and_certificates(gz: SigningKey) -> None:
    """A statement's body starts with 'H', a delta's with its kind (1, 2), a certificate's
    and a key revocation's with 'K': no signature of one kind verifies as another."""
    s = sign_statement(gz, HEAD3, NOW)
    delta = build_delta(gz, FeedHead.genesis(GZ), [Revocation(card(), Reason.LOSS, NOW)], (), NOW)
    cert = issue_certificate(gz, gz, ["4401"], NOW, NOW + 1, serial=1, form="binary")
    assert s.body[0] == ord("H") and delta.body[0] in (1, 2) and cert.body[0] == ord("K")
    # An X.509 certificate is signed over its DER TBS (a SEQUENCE, 0x30, far longer than
    # the 32-byte digest every other message signs).
    x509 = issue_certificate(gz, gz, ["4401"], NOW, NOW + 1, serial=1)
    assert x509.signed_message[0] == 0x30 and len(x509.signed_message) > 100
    with pytest.raises(MalformedStatement, match="bad magic"):
        decode_statement(delta.to_bytes()[: MAX_STATEMENT_BYTES - 1])
    with pytest.raises(CodecError, match="bad magic"):
        decode(s.to_bytes())
    # The statement's signature over its body is no signature of any delta body.
    assert not gz.trusted().verify(hashlib.sha256(delta.body).digest(), s.signature)


# ---------------------------------------------------------------------------- acceptance
def test_a_statement_for_the_held_head_makes_the_feed_fresh_as_of_its_time(
    gz: SigningKey, ring: Keyring
) -> None:
    s = sign_statement(gz, HEAD3, NOW - 5)
    after = accept_statement(held(), s, ring, NOW, SKEW)
    assert (after.newest, after.fresh_as_of, after.lag) == (s, NOW - 5, 0)
    assert after.age(NOW) == 5
    # A byte-identical copy is a duplicate: the state itself, nothing verified again.
    assert accept_statement(after, s, ring, NOW, SKEW) is after


def test_a_statement_ahead_of_the_head_is_kept_but_the_age_stays(
    gz: SigningKey, ring: Keyring
) -> None:
    """The node is behind: the statement proves the feed moved on; the age stays measured
    from the last time the authority said "my head is what you hold"."""
    ahead = sign_statement(gz, FeedHead(GZ, 7, D4), NOW)
    state = held()
    after = accept_statement(state, ahead, ring, NOW, SKEW)
    assert after.newest == ahead and after.lag == 4
    assert after.fresh_as_of == state.fresh_as_of == NOW - 600
    assert after.age(NOW) == 600


def test_unknown_key(gz: SigningKey) -> None:
    s = sign_statement(gz, HEAD3, NOW)
    with pytest.raises(StatementUnknownKey, match=gz.key_id.hex()):
        accept_statement(held(), s, Keyring(), NOW, SKEW)


def test_another_publishers_key_is_not_allowed(sz: SigningKey, ring: Keyring) -> None:
    s = forged(sz, GZ, 3, D3, NOW)
    with pytest.raises(StatementKeyNotAllowed, match="signs for publisher 440300"):
        accept_statement(held(), s, ring, NOW, SKEW)


def test_bad_signature(gz: SigningKey, ring: Keyring) -> None:
    s = sign_statement(gz, HEAD3, NOW)
    broken = dataclasses.replace(s, signature=bytes([s.signature[0] ^ 1]) + s.signature[1:])
    with pytest.raises(StatementBadSignature):
        accept_statement(held(), broken, ring, NOW, SKEW)
    # A changed claim under the original signature: the same.
    with pytest.raises(StatementBadSignature):
        accept_statement(held(), dataclasses.replace(s, issued_at=NOW - 1), ring, NOW, SKEW)
    with pytest.raises(StatementBadSignature):
        other_suite = dataclasses.replace(s, suite_id=3 - s.suite_id)
        accept_statement(held(), other_suite, ring, NOW, SKEW)


def test_a_key_may_not_stand_behind_versions_past_its_max_version(gz: SigningKey) -> None:
    bounded = Keyring([dataclasses.replace(gz.trusted(), max_version=3)])
    accept_statement(held(), sign_statement(gz, HEAD3, NOW), bounded, NOW, SKEW)
    with pytest.raises(StatementKeyRevoked, match="up to 3"):
        accept_statement(held(), sign_statement(gz, FeedHead(GZ, 4, D4), NOW), bounded, NOW, SKEW)


def test_a_revoked_key_signs_nothing_dated_at_or_after_its_revocation() -> None:
    root = SigningKey.generate("000000", [])
    gd = SigningKey.generate("440000", ["44"])
    gz = SigningKey.generate(GZ, ["4401"])
    start, end = NOW - 86_400, NOW + 86_400
    chains = [
        [issue_certificate(root, gd, ["44"], start, end, serial=1)],
        [
            issue_certificate(root, gd, ["44"], start, end, serial=1),
            issue_certificate(gd, gz, ["4401"], start, end, serial=2),
        ],
    ]
    revoked = issue_revocation(gd, gz.key_id, NOW, RevocationReason.COMPROMISED, serial=1)
    keys = CertifiedKeys(TrustAnchor.of(root), chains, [revoked], at=NOW)
    accept_statement(held(), sign_statement(gz, HEAD3, NOW - 1), keys, NOW, SKEW)
    with pytest.raises(StatementKeyRevoked):
        accept_statement(held(), sign_statement(gz, HEAD3, NOW), keys, NOW, SKEW)
    # A forgery naming the revoked key is a bad signature, not a revocation.
    other = SigningKey.generate(GZ, ["4401"])
    s = sign_statement(gz, HEAD3, NOW)
    fake = dataclasses.replace(s, signature=other.sign(hashlib.sha256(s.body).digest()))
    with pytest.raises(StatementBadSignature):
        accept_statement(held(), fake, keys, NOW, SKEW)


@pytest.mark.parametrize(("ahead", "ok"), [(SKEW - 1, True), (SKEW, True), (SKEW + 1, False)])
def test_time_ahead_of_the_clock_by_at_most_the_skew(
    gz: SigningKey, ring: Keyring, ahead: int, ok: bool
) -> None:
    s = sign_statement(gz, HEAD3, NOW + ahead)
    if ok:
        assert accept_statement(held(), s, ring, NOW, SKEW).fresh_as_of == NOW + ahead
    else:
        with pytest.raises(StatementFromFuture, match=f"{SKEW + 1} s ahead"):
            accept_statement(held(), s, ring, NOW, SKEW)


def test_time_never_goes_backwards(gz: SigningKey, ring: Keyring) -> None:
    newest = sign_statement(gz, HEAD3, NOW - 10)
    state = accept_statement(held(), newest, ring, NOW, SKEW)
    with pytest.raises(StatementTimeBackwards, match=f"v3 at {NOW - 10}"):
        accept_statement(state, sign_statement(gz, HEAD3, NOW - 11), ring, NOW, SKEW)
    # At the same second only a later version is newer (a publication and its statement).
    ahead = sign_statement(gz, FeedHead(GZ, 4, D4), NOW - 10)
    assert accept_statement(state, ahead, ring, NOW, SKEW).newest == ahead
    later = accept_statement(state, sign_statement(gz, HEAD3, NOW - 9), ring, NOW, SKEW)
    assert later.fresh_as_of == NOW - 9


def test_a_second_digest_for_the_held_head_is_a_fork(gz: SigningKey, ring: Keyring) -> None:
    with pytest.raises(StatementFork, match="differs from the held head"):
        accept_statement(held(), sign_statement(gz, FeedHead(GZ, 3, D4), NOW), ring, NOW, SKEW)


def test_a_second_digest_for_a_held_older_version_is_a_fork(gz: SigningKey, ring: Keyring) -> None:
    d2 = hashlib.sha256(b"v2").digest()
    state = held(digest_at={2: d2}.get)
    old = NOW - 700  # before the head was issued: an honest old statement
    assert accept_statement(state, sign_statement(gz, FeedHead(GZ, 2, d2), old), ring, NOW, SKEW)
    with pytest.raises(StatementFork, match="differs from the held delta"):
        accept_statement(state, sign_statement(gz, FeedHead(GZ, 2, D4), old), ring, NOW, SKEW)


def test_the_same_version_and_time_with_another_digest_is_a_fork(
    gz: SigningKey, ring: Keyring
) -> None:
    ahead = FeedHead(GZ, 5, D4)
    state = accept_statement(held(), sign_statement(gz, ahead, NOW), ring, NOW, SKEW)
    other = sign_statement(gz, FeedHead(GZ, 5, D3), NOW)
    with pytest.raises(StatementFork, match="a second statement of that version and time"):
        accept_statement(state, other, ring, NOW, SKEW)


def test_a_later_statement_for_an_older_or_other_head_is_a_fork(
    gz: SigningKey, ring: Keyring
) -> None:
    """Statements of one publisher contradict each other: the head went back, or one
    version got a second digest."""
    state = accept_statement(held(), sign_statement(gz, FeedHead(GZ, 7, D4), NOW), ring, NOW, SKEW)
    with pytest.raises(StatementFork, match="contradicts the statement held"):
        accept_statement(state, sign_statement(gz, FeedHead(GZ, 5, D4), NOW + 1), ring, NOW, SKEW)
    with pytest.raises(StatementFork, match="contradicts the statement held"):
        accept_statement(state, sign_statement(gz, FeedHead(GZ, 7, D3), NOW + 1), ring, NOW, SKEW)
    later = accept_statement(
        state, sign_statement(gz, FeedHead(GZ, 7, D4), NOW + 1), ring, NOW, SKEW
    )
    assert later.newest is not None and later.newest.issued_at == NOW + 1


def test_claims_that_contradict_the_held_deltas_time_are_forks(
    gz: SigningKey, ring: Keyring
) -> None:
    """The node's head v3 was issued at NOW - 600: the publisher cannot have had v2 after
    that, nor v5 before it."""
    d2 = hashlib.sha256(b"v2").digest()
    with pytest.raises(StatementFork, match="claims an older head"):
        accept_statement(held(), sign_statement(gz, FeedHead(GZ, 2, d2), NOW), ring, NOW, SKEW)
    accept_statement(held(), sign_statement(gz, FeedHead(GZ, 2, d2), NOW - 600), ring, NOW, SKEW)
    with pytest.raises(StatementFork, match="before that version was issued"):
        accept_statement(
            held(), sign_statement(gz, FeedHead(GZ, 5, D4), NOW - 601), ring, NOW, SKEW
        )


def test_a_statement_for_another_feed_is_a_programming_error(gz: SigningKey) -> None:
    with pytest.raises(ValueError, match="state is for 440300"):
        accept_statement(
            held(FeedHead.genesis("440300")), sign_statement(gz, HEAD3, NOW), Keyring(), NOW, 0
        )
    with pytest.raises(ValueError, match="cannot state the head of 440300"):
        sign_statement(gz, FeedHead.genesis("440300"), NOW)


# ---------------------------------------------------------------------------- after apply, push
def test_reaching_a_held_statements_version_makes_the_feed_fresh_as_of_it(
    gz: SigningKey,
) -> None:
    ahead = sign_statement(gz, FeedHead(GZ, 7, D4), NOW - 5)
    # The delta that brings the head to v7 was issued earlier than the statement.
    assert fresh_after_apply(NOW - 600, FeedHead(GZ, 7, D4), NOW - 50, ahead) == NOW - 5
    # A v7 with another digest does not satisfy it (the delta's own time still counts).
    assert fresh_after_apply(NOW - 600, FeedHead(GZ, 7, D3), NOW - 50, ahead) == NOW - 50
    # Not there yet: the delta's time only.
    assert fresh_after_apply(NOW - 600, FeedHead(GZ, 6, D3), NOW - 50, ahead) == NOW - 50
    # Never earlier than before.
    assert fresh_after_apply(NOW - 10, FeedHead(GZ, 6, D3), NOW - 50, None) == NOW - 10


def test_plan_statement_push_sends_what_the_upstream_lacks_or_has_older(
    gz: SigningKey, sz: SigningKey
) -> None:
    a_old = sign_statement(gz, HEAD3, NOW - 60)
    a_new = sign_statement(gz, HEAD3, NOW)
    b = sign_statement(sz, FeedHead.genesis("440300"), NOW)
    assert plan_statement_push({GZ: a_new, "440300": b}, {GZ: a_old}) == [a_new, b]
    assert plan_statement_push({GZ: a_old}, {GZ: a_new}) == []
    assert plan_statement_push({GZ: a_new}, {GZ: a_new}) == []


def test_an_authority_never_dates_a_statement_before_its_head_or_its_last(
    gz: SigningKey,
) -> None:
    last = sign_statement(gz, HEAD3, NOW)
    assert statement_time(None, HEAD3, NOW - 5, NOW) == NOW
    assert statement_time(None, HEAD3, NOW + 5, NOW) == NOW + 5
    assert statement_time(last, HEAD3, NOW - 5, NOW - 100) == NOW  # clock stepped back


# ---------------------------------------------------------------------------- message budgets
def test_statements_within_fills_the_room_exactly_and_takes_turns() -> None:
    held = [bytes([i]) * 100 for i in range(5)]  # each costs 1 + 1 + 100 bytes on the wire
    assert statements_within(held, 5 * 102, 0) == (held, 5)
    assert statements_within(held, 3 * 102, 0) == (held[:3], 3)  # at the room
    assert statements_within(held, 3 * 102 - 1, 0) == (held[:2], 2)  # one byte below
    assert statements_within(held, 3 * 102 + 1, 0) == (held[:3], 3)  # one byte above
    # The next answer starts where this one stopped, wrapping round: every publisher's
    # statement comes round at a limit too small for all of them.
    assert statements_within(held, 3 * 102, 3) == ([held[3], held[4], held[0]], 6)
    assert statements_within(held, 3 * 102, 6) == (held[1:4], 4)
    assert statements_within(held, 0, 2) == ([], 2)
    assert statements_within(held, -10, 0) == ([], 0)
    assert statements_within([], 1000, 7) == ([], 0)


def test_push_batches_stay_within_the_bytes_and_the_count() -> None:
    items = [bytes([i]) * 200 for i in range(6)]  # 1 + 2 + 200 = 203 bytes each
    assert push_batches(items, 3 * 203, 100) == [items[:3], items[3:]]  # at the limit
    assert push_batches(items, 3 * 203 - 1, 100) == [items[:2], items[2:4], items[4:]]
    assert push_batches(items, 3 * 203 + 1, 100) == [items[:3], items[3:]]
    assert push_batches(items, 10_000, 2) == [items[:2], items[2:4], items[4:]]
    assert push_batches(items, 10_000, 6) == [items]
    assert push_batches([], 10_000, 6) == []
    # One statement larger than the room still goes alone (the upstream says why).
    assert push_batches(items[:2], 100, 10) == [items[:1], items[1:2]]
