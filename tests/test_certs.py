"""The certified key hierarchy at the certificate level: codec round trips, hostile bytes, and
the attack matrix, one test per failure, each asserting which TrustError (and cause) it got."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blacklist.certs import (
    Certificate,
    CertificateFormatError,
    KeyRevocation,
    RevocationReason,
    decode_certificate,
    decode_revocation,
    issue_certificate,
    issue_revocation,
)
from blacklist.errors import CodecError
from blacklist.signing import SigningKey
from blacklist.trust import (
    ALL_TRUST_CAUSES,
    BadCertificateSignature,
    CertificateExpired,
    ConflictingCertificates,
    KeyRevoked,
    MalformedCertificate,
    NotYetValid,
    ScopeViolation,
    TrustAnchor,
    TrustError,
    UnknownIssuer,
    decode_chain,
    key_valid_at,
    keyring_from_chains,
    verify_chain,
    verify_chain_bytes,
)

NOW = 1_750_000_000
DAY = 86_400
START, END = NOW - 365 * DAY, NOW + 365 * DAY


class Hierarchy:
    """Ministry root → Guangdong (44), Beijing (11) → Guangzhou (4401), Shenzhen (4403)."""

    def __init__(self) -> None:
        self.root = SigningKey.generate("000000", [""])
        self.anchor = TrustAnchor.of(self.root)
        self.gd = SigningKey.generate("440000", ["44"])
        self.bj = SigningKey.generate("110000", ["11"])
        self.gz = SigningKey.generate("440100", ["4401"])
        self.sz = SigningKey.generate("440300", ["4403"])
        self.gd_cert = issue_certificate(self.root, self.gd, ["44"], START, END, serial=1)
        self.bj_cert = issue_certificate(self.root, self.bj, ["11"], START, END, serial=2)
        self.gz_cert = issue_certificate(self.gd, self.gz, ["4401"], START, END, serial=10)
        self.sz_cert = issue_certificate(self.gd, self.sz, ["4403"], START, END, serial=11)

    @property
    def gz_chain(self) -> list[Certificate]:
        return [self.gd_cert, self.gz_cert]


@pytest.fixture(scope="module")
def h() -> Hierarchy:
    return Hierarchy()


def fails(
    kind: type[TrustError],
    fn: Callable[[], object],
    names: Certificate | None = None,
    value: str | None = None,
) -> TrustError:
    """``fn`` raises exactly ``kind``; its message names the certificate and the value."""
    with pytest.raises(TrustError) as info:
        fn()
    err = info.value
    assert type(err) is kind, f"expected {kind.__name__}, got {err!r}"
    assert err.cause == kind.cause and err.cause in ALL_TRUST_CAUSES
    if names is not None:
        assert err.certificate == names
        assert names.label in str(err)
    if value is not None:
        assert value in str(err)
    return err


def test_causes_are_distinct() -> None:
    assert len(set(ALL_TRUST_CAUSES)) == len(ALL_TRUST_CAUSES)
    for cause in (
        "unknown_issuer",
        "bad_certificate_signature",
        "scope_violation",
        "expired",
        "not_yet_valid",
        "key_revoked",
        "malformed_certificate",
    ):
        assert cause in ALL_TRUST_CAUSES


# --- the good paths -------------------------------------------------------------------------


def test_city_chain_yields_the_city_key_with_its_scope(h: Hierarchy) -> None:
    key = verify_chain(h.gz_chain, h.anchor, [], NOW)
    assert key == h.gz.trusted()
    assert (key.publisher, key.prefixes) == ("440100", ("4401",))
    assert key.allows_region("440105") and not key.allows_region("440300")


def test_province_chain_and_the_anchor_itself(h: Hierarchy) -> None:
    assert verify_chain([h.gd_cert], h.anchor, [], NOW) == h.gd.trusted()
    root = verify_chain([], h.anchor, [], NOW)
    assert (root.key_id, root.publisher, root.prefixes) == (h.root.key_id, "000000", ("",))


def test_longer_prefixes_under_a_province_are_within_the_national_scope(h: Hierarchy) -> None:
    key = SigningKey.generate("449900", ["4499"])
    cert = issue_certificate(h.root, key, ["449900", "4499"], START, END, serial=3)
    assert verify_chain([cert], h.anchor, [], NOW).prefixes == ("4499", "449900")


def test_a_city_may_certify_inside_its_own_scope(h: Hierarchy) -> None:
    """Depth is bounded by scope: a sub-key of Guangzhou gets nothing Guangzhou lacks."""
    sub = SigningKey.generate("440100", ["440105"])
    cert = issue_certificate(h.gz, sub, ["440105"], START, END, serial=1)
    assert verify_chain([*h.gz_chain, cert], h.anchor, [], NOW) == sub.trusted()


def test_bytes_chain_verifies(h: Hierarchy) -> None:
    chain = [c.to_bytes() for c in h.gz_chain]
    assert decode_chain(chain) == h.gz_chain
    assert verify_chain_bytes(chain, h.anchor, [], NOW) == h.gz.trusted()


# --- scope ----------------------------------------------------------------------------------


def test_city_key_certifying_another_citys_prefix(h: Hierarchy) -> None:
    """Guangzhou (4401, certified by 44) tries to certify a key for Beijing's 1101."""
    rogue = SigningKey.generate("110100", ["1101"])
    cert = issue_certificate(h.gz, rogue, ["1101"], START, END, serial=1)
    fails(ScopeViolation, lambda: verify_chain([*h.gz_chain, cert], h.anchor, [], NOW), cert)


def test_city_key_claiming_another_prefix_under_its_own_publisher(h: Hierarchy) -> None:
    rogue = SigningKey.generate("440100", ["1101"])
    cert = issue_certificate(h.gz, rogue, ["4401", "1101"], START, END, serial=2)
    chain = [*h.gz_chain, cert]
    fails(ScopeViolation, lambda: verify_chain(chain, h.anchor, [], NOW), cert, "'1101'")


def test_province_signing_outside_its_prefix(h: Hierarchy) -> None:
    rogue = SigningKey.generate("110100", ["1101"])
    cert = issue_certificate(h.gd, rogue, ["1101"], START, END, serial=99)
    fails(ScopeViolation, lambda: verify_chain([h.gd_cert, cert], h.anchor, [], NOW), cert)


def test_province_adding_a_foreign_prefix_to_its_own_city(h: Hierarchy) -> None:
    cert = issue_certificate(h.gd, h.gz, ["4401", "1101"], START, END, serial=98)
    chain = [h.gd_cert, cert]
    fails(ScopeViolation, lambda: verify_chain(chain, h.anchor, [], NOW), cert, "'1101'")


def test_province_cannot_hand_out_another_provinces_feed(h: Hierarchy) -> None:
    """Scope inside 44, but the publisher is Beijing's: that key could write (and fork)
    Beijing's feed, so the publisher code must lie in the issuer's scope too."""
    rogue = SigningKey.generate("110100", ["4401"])
    cert = issue_certificate(h.gd, rogue, ["4401"], START, END, serial=97)
    chain = [h.gd_cert, cert]
    fails(ScopeViolation, lambda: verify_chain(chain, h.anchor, [], NOW), cert, "110100")


@pytest.mark.parametrize("prefix", ["4", "99", "00", "990000", "16"])
def test_ministry_cannot_certify_outside_the_provinces(h: Hierarchy, prefix: str) -> None:
    key = SigningKey.generate("440000", ["44"])
    cert = issue_certificate(h.root, key, [prefix], START, END, serial=5)
    fails(ScopeViolation, lambda: verify_chain([cert], h.anchor, [], NOW), cert, repr(prefix))


def test_empty_prefix_cannot_be_certified(h: Hierarchy) -> None:
    with pytest.raises(CertificateFormatError):
        issue_certificate(h.root, h.gd, [""], START, END, serial=1)
    with pytest.raises(CertificateFormatError):
        issue_certificate(h.root, h.gd, [], START, END, serial=1)


# --- issuers and signatures -----------------------------------------------------------------


def test_self_made_fake_root(h: Hierarchy) -> None:
    fake_root = SigningKey.generate("000000", [""])
    fake_gd = issue_certificate(fake_root, h.gd, ["44"], START, END, serial=1)
    fake_gz = issue_certificate(h.gd, h.gz, ["4401"], START, END, serial=10)
    chain = [fake_gd, fake_gz]
    fails(UnknownIssuer, lambda: verify_chain(chain, h.anchor, [], NOW), fake_gd, "root")
    # The same chain does verify under the root it was made for: the pin is what matters.
    assert verify_chain(chain, TrustAnchor.of(fake_root), [], NOW) == h.gz.trusted()


def test_fake_root_claiming_the_pinned_key_id(h: Hierarchy) -> None:
    fake_root = SigningKey.generate("000000", [""])
    real = issue_certificate(h.root, h.gd, ["44"], START, END, serial=1)
    forged = dataclasses.replace(real, signature=fake_root.sign(real.signed_message))
    fails(BadCertificateSignature, lambda: verify_chain([forged], h.anchor, [], NOW), forged)


def test_city_certificate_without_its_province(h: Hierarchy) -> None:
    fails(UnknownIssuer, lambda: verify_chain([h.gz_cert], h.anchor, [], NOW), h.gz_cert)


def test_chain_in_the_wrong_order(h: Hierarchy) -> None:
    chain = [h.gz_cert, h.gd_cert]
    fails(UnknownIssuer, lambda: verify_chain(chain, h.anchor, [], NOW), h.gz_cert)


def test_city_certificate_from_another_province(h: Hierarchy) -> None:
    chain = [h.bj_cert, h.gz_cert]
    fails(UnknownIssuer, lambda: verify_chain(chain, h.anchor, [], NOW), h.gz_cert)


def test_widened_scope_breaks_the_signature(h: Hierarchy) -> None:
    widened = dataclasses.replace(h.gz_cert, prefixes=("44",))
    chain = [h.gd_cert, widened]
    fails(BadCertificateSignature, lambda: verify_chain(chain, h.anchor, [], NOW), widened)


def test_every_bit_flip_is_refused(h: Hierarchy) -> None:
    data = h.gz_cert.to_bytes()
    province = h.gd_cert.to_bytes()
    causes: set[str] = set()
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(TrustError) as info:
            verify_chain_bytes([province, bytes(flipped)], h.anchor, [], NOW)
        assert type(info.value) in (MalformedCertificate, BadCertificateSignature, UnknownIssuer)
        causes.add(info.value.cause)
    assert causes == {"malformed_certificate", "bad_certificate_signature", "unknown_issuer"}


def test_malformed_bytes_name_their_position(h: Hierarchy) -> None:
    chain = [h.gd_cert.to_bytes(), h.gz_cert.to_bytes()[:-1]]
    fails(
        MalformedCertificate,
        lambda: verify_chain_bytes(chain, h.anchor, [], NOW),
        None,
        "certificate 1 of the chain",
    )


# --- validity -------------------------------------------------------------------------------


def test_validity_bounds_are_inclusive(h: Hierarchy) -> None:
    cert = issue_certificate(h.gd, h.gz, ["4401"], NOW, NOW + DAY, serial=20)
    chain = [h.gd_cert, cert]
    assert verify_chain(chain, h.anchor, [], NOW) == h.gz.trusted()
    assert verify_chain(chain, h.anchor, [], NOW + DAY) == h.gz.trusted()
    fails(NotYetValid, lambda: verify_chain(chain, h.anchor, [], NOW - 1), cert, str(NOW))
    fails(
        CertificateExpired,
        lambda: verify_chain(chain, h.anchor, [], NOW + DAY + 1),
        cert,
        str(NOW + DAY),
    )


def test_an_expired_province_voids_its_cities(h: Hierarchy) -> None:
    old_gd = issue_certificate(h.root, h.gd, ["44"], START, NOW - 1, serial=30)
    chain = [old_gd, h.gz_cert]
    fails(CertificateExpired, lambda: verify_chain(chain, h.anchor, [], NOW), old_gd)


def test_inverted_validity_cannot_be_issued(h: Hierarchy) -> None:
    with pytest.raises(CertificateFormatError):
        issue_certificate(h.gd, h.gz, ["4401"], NOW, NOW - 1, serial=1)


# --- revocation and rotation ----------------------------------------------------------------

T = NOW + 1000


def test_key_used_before_and_after_its_revocation(h: Hierarchy) -> None:
    rev = issue_revocation(h.gd, h.gz.key_id, T, RevocationReason.COMPROMISED, serial=1)
    assert verify_chain(h.gz_chain, h.anchor, [rev], T - 1) == h.gz.trusted()
    for at in (T, T + 1, END):
        with pytest.raises(KeyRevoked, match=f"{h.gz_cert.label}: .* revoked as of {T}"):
            verify_chain(h.gz_chain, h.anchor, [rev], at)
    assert key_valid_at(h.gz.key_id, h.gd.trusted(), [rev], T - 1)
    assert not key_valid_at(h.gz.key_id, h.gd.trusted(), [rev], T)
    assert key_valid_at(h.sz.key_id, h.gd.trusted(), [rev], T)


def test_earliest_revocation_wins(h: Hierarchy) -> None:
    late = issue_revocation(h.gd, h.gz.key_id, T + 50, RevocationReason.RETIRED, serial=2)
    early = issue_revocation(h.gd, h.gz.key_id, T, RevocationReason.COMPROMISED, serial=3)
    fails(KeyRevoked, lambda: verify_chain(h.gz_chain, h.anchor, [late, early], T), h.gz_cert)
    assert not key_valid_at(h.gz.key_id, h.gd.trusted(), [late, early], T)


def test_a_revoked_province_voids_its_cities(h: Hierarchy) -> None:
    rev = issue_revocation(h.root, h.gd.key_id, T, RevocationReason.COMPROMISED, serial=1)
    fails(KeyRevoked, lambda: verify_chain(h.gz_chain, h.anchor, [rev], T), h.gd_cert)
    assert verify_chain(h.gz_chain, h.anchor, [rev], T - 1) == h.gz.trusted()


def _forged_revocations(h: Hierarchy) -> list[KeyRevocation]:
    """Attempts to revoke Guangzhou's key by anyone but its certifier (Guangdong's key)."""
    real = issue_revocation(h.gd, h.gz.key_id, T, RevocationReason.COMPROMISED, serial=7)
    attacker = SigningKey.generate("440000", ["44"])
    claims_gd = dataclasses.replace(real, signature=attacker.sign(real.signed_message))
    # Unsigned copy with an earlier time: the digest changes, the old signature does not fit.
    backdated = dataclasses.replace(real, effective_at=T - 10**6)
    return [
        issue_revocation(h.bj, h.gz.key_id, T, RevocationReason.COMPROMISED, serial=1),
        issue_revocation(h.sz, h.gz.key_id, T, RevocationReason.COMPROMISED, serial=2),
        issue_revocation(h.gz, h.gz.key_id, T, RevocationReason.RETIRED, serial=3),
        issue_revocation(h.root, h.gz.key_id, T, RevocationReason.COMPROMISED, serial=4),
        issue_revocation(attacker, h.gz.key_id, T, RevocationReason.COMPROMISED, serial=5),
        claims_gd,
        backdated,
    ]


def test_forged_revocations_are_ignored(h: Hierarchy) -> None:
    forged = _forged_revocations(h)
    assert verify_chain(h.gz_chain, h.anchor, forged, T + 1) == h.gz.trusted()
    assert key_valid_at(h.gz.key_id, h.gd.trusted(), forged, T + 1)
    # A forged revocation of the province (signed by the province itself) is ignored too.
    self_revoked = issue_revocation(h.gd, h.gd.key_id, T, RevocationReason.RETIRED, serial=8)
    assert verify_chain(h.gz_chain, h.anchor, [self_revoked], T + 1) == h.gz.trusted()


def test_rotation_old_key_revoked_new_key_verifies(h: Hierarchy) -> None:
    new_gz = SigningKey.generate("440100", ["4401"])
    new_cert = issue_certificate(h.gd, new_gz, ["4401"], T - 100, END, serial=12)
    rev = issue_revocation(h.gd, h.gz.key_id, T, RevocationReason.SUPERSEDED, serial=1)
    new_chain = [h.gd_cert, new_cert]
    # Before T both keys are good; from T only the new one, for the same publisher.
    assert verify_chain(h.gz_chain, h.anchor, [rev], T - 1) == h.gz.trusted()
    fails(KeyRevoked, lambda: verify_chain(h.gz_chain, h.anchor, [rev], T), h.gz_cert)
    new = verify_chain(new_chain, h.anchor, [rev], T)
    assert (new.key_id, new.publisher, new.prefixes) == (new_gz.key_id, "440100", ("4401",))
    ring, errors = keyring_from_chains([h.gz_chain, new_chain], h.anchor, [rev], T)
    assert set(ring) == {new_gz.key_id}
    assert [type(e) for e in errors] == [KeyRevoked]
    assert ring.publishers() == {"440100": ("4401",)}


def test_replayed_certificates_of_a_rotated_key_stay_revoked(h: Hierarchy) -> None:
    """Revocation is of the key: the old certificate, and even a fresh certificate for the
    same key from the same certifier, cannot bring it back."""
    rev = issue_revocation(h.gd, h.gz.key_id, T, RevocationReason.SUPERSEDED, serial=1)
    reissued = issue_certificate(h.gd, h.gz, ["4401"], T + 1, END, serial=13)
    for chain in ([h.gd_cert, h.gz_cert], [h.gd_cert, reissued]):
        replay = [decode_certificate(c.to_bytes()) for c in chain]
        with pytest.raises(KeyRevoked) as info:
            verify_chain(replay, h.anchor, [rev], T + 2)
        assert info.value.certificate == replay[1]


# --- keyring --------------------------------------------------------------------------------


def test_keyring_keeps_only_verifiable_chains(h: Hierarchy) -> None:
    rogue = SigningKey.generate("110100", ["1101"])
    rogue_cert = issue_certificate(h.gd, rogue, ["1101"], START, END, serial=50)
    fake_root = SigningKey.generate("000000", [""])
    fake = issue_certificate(fake_root, h.bj, ["11"], START, END, serial=1)
    chains: list[Sequence[Certificate]] = [
        [],
        [h.gd_cert],
        h.gz_chain,
        [h.gd_cert, h.sz_cert],
        [h.bj_cert],
        [h.gd_cert, rogue_cert],
        [fake],
        [h.sz_cert],
    ]
    ring, errors = keyring_from_chains(chains, h.anchor, [], NOW)
    assert set(ring) == {k.key_id for k in (h.root, h.gd, h.gz, h.sz, h.bj)}
    assert ring[h.gz.key_id] == h.gz.trusted()
    assert [e.cause for e in errors] == ["scope_violation", "unknown_issuer", "unknown_issuer"]
    assert ring.publishers()["440000"] == ("44",)


def test_keyring_merges_scopes_and_drops_conflicts(h: Hierarchy) -> None:
    extra = issue_certificate(h.gd, h.gz, ["4402"], START, END, serial=60)
    ring, errors = keyring_from_chains([h.gz_chain, [h.gd_cert, extra]], h.anchor, [], NOW)
    assert ring[h.gz.key_id].prefixes == ("4401", "4402") and errors == []
    other = dataclasses.replace(h.gz.trusted(), publisher="440300")
    conflicting = issue_certificate(h.gd, other, ["4403"], START, END, serial=61)
    ring, errors = keyring_from_chains(
        [h.gz_chain, [h.gd_cert, conflicting], [h.gd_cert, h.sz_cert]], h.anchor, [], NOW
    )
    assert set(ring) == {h.sz.key_id}
    assert [type(e) for e in errors] == [ConflictingCertificates] * 2


# --- codec ----------------------------------------------------------------------------------


def test_certificate_and_revocation_round_trip(h: Hierarchy) -> None:
    for cert in (h.gd_cert, h.gz_cert):
        assert decode_certificate(cert.to_bytes()) == cert
    rev = issue_revocation(h.gd, h.gz.key_id, T, RevocationReason.RETIRED, serial=9)
    assert decode_revocation(rev.to_bytes()) == rev
    with pytest.raises(CodecError):
        decode_certificate(rev.to_bytes())
    with pytest.raises(CodecError):
        decode_revocation(h.gz_cert.to_bytes())


def test_prefixes_are_canonical(h: Hierarchy) -> None:
    cert = issue_certificate(
        h.gd, h.gz, ["4403", "4401", "4403", "440105"], START, END, 1, form="binary"
    )
    assert cert.prefixes == ("4401", "440105", "4403")
    # The same certificate with its prefixes stored out of order does not decode.
    data = cert.to_bytes()
    swapped = data.replace(b"\x044401\x06440105", b"\x06440105\x044401")
    assert swapped != data
    with pytest.raises(CodecError, match="canonical"):
        decode_certificate(swapped)


def test_non_minimal_signature_length_is_refused(h: Hierarchy) -> None:
    cert = h.gz_cert
    padded = cert.body + bytes([0x80 | len(cert.signature), 0x00]) + cert.signature
    with pytest.raises(CodecError):
        decode_certificate(padded)


def test_truncated_and_extended_bytes(h: Hierarchy) -> None:
    rev = issue_revocation(h.gd, h.gz.key_id, T, RevocationReason.RETIRED, serial=9)
    cases: list[tuple[bytes, Callable[[bytes], object]]] = [
        (h.gz_cert.to_bytes(), decode_certificate),
        (rev.to_bytes(), decode_revocation),
    ]
    for data, decode in cases:
        for n in range(len(data)):
            with pytest.raises(CodecError):
                decode(data[:n])
        with pytest.raises(CodecError):
            decode(data + b"\x00")


digits = st.from_regex(r"[0-9]{1,6}", fullmatch=True)
i64 = st.integers(-(2**63), 2**63 - 1)


@st.composite
def certificates(draw: st.DrawFn) -> Certificate:
    a, b = sorted((draw(i64), draw(i64)))
    return Certificate(
        serial=draw(st.integers(0, 2**64 - 1)),
        publisher=draw(st.from_regex(r"[0-9]{6}", fullmatch=True)),
        suite_id=1,
        public=draw(st.binary(min_size=1, max_size=255)),
        prefixes=tuple(draw(st.lists(digits, min_size=1, max_size=20))),
        not_before=a,
        not_after=b,
        issuer_key_id=draw(st.binary(min_size=8, max_size=8)),
        signature=draw(st.binary(max_size=300)),
    )


revocations = st.builds(
    KeyRevocation,
    serial=st.integers(0, 2**64 - 1),
    issuer_key_id=st.binary(min_size=8, max_size=8),
    revoked_key_id=st.binary(min_size=8, max_size=8),
    effective_at=i64,
    reason=st.sampled_from(RevocationReason),
    signature=st.binary(max_size=300),
)


@settings(max_examples=200, deadline=None)
@given(certificates())
def test_any_certificate_round_trips(cert: Certificate) -> None:
    data = cert.to_bytes()
    assert decode_certificate(data) == cert
    assert decode_certificate(data).to_bytes() == data


@settings(max_examples=200, deadline=None)
@given(revocations)
def test_any_revocation_round_trips(rev: KeyRevocation) -> None:
    assert decode_revocation(rev.to_bytes()) == rev


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_decode_cleanly(data: bytes) -> None:
    for prefix in (b"", b"KCRT\x01", b"KREV\x01"):
        for decode in (decode_certificate, decode_revocation):
            with contextlib.suppress(CodecError):
                decode(prefix + data)


@settings(max_examples=200, deadline=None)
@given(certificates(), st.data())
def test_mutated_certificates_decode_cleanly(cert: Certificate, data: st.DataObject) -> None:
    raw = bytearray(cert.to_bytes())
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        decoded = decode_certificate(bytes(raw[:cut]))
    except CodecError:
        return
    assert decoded.to_bytes() == bytes(raw[:cut])
