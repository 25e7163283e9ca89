"""The sm2-sm3 suite (issue #14): known answers from the standards, the limits of its keys,
identifiers and signatures, and a feed whose chain continues from Ed25519 to SM2.

Vectors: SM3 from GB/T 32905-2016 Appendix A ("abc" and the 64-byte message); SM2 from
GB/T 32918.5 / GM/T 0003.5 Appendix A (signature over "message digest" with the default
distinguishing id on the recommended curve: its Z, its e and its (r, s)).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from blacklist import sm2
from blacklist.authority import Revocation, build_delta
from blacklist.certs import CertificateFormatError, issue_certificate
from blacklist.delta import FeedHead, sign_snapshot
from blacklist.entry import Reason
from blacklist.entryblock import EntryColumns
from blacklist.rejections import ForkedFeed
from blacklist.signing import (
    SUITES,
    KeyFormatError,
    Keyring,
    SigningKey,
    TrustedKey,
    digest_of,
    key_id_of,
    suite,
    suite_named,
)
from blacklist.sync.accept import accept_delta, accept_snapshot
from tests.conftest import card

SM3_ABC = "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
SM3_64 = "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"

# GM/T 0003.5-2012 Appendix A, the signature example.
D_A = bytes.fromhex("3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8")
P_A = bytes.fromhex(
    "04"
    "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
    "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13"
)
Z_A = "b2e14c5c79c6df5b85f4fe7ed8db7a262b9da7e07ccb0ea9f4747b8ccda8a4f3"
E = "f0b43e94ba45accaace692ed534382eb17e6ab5a19ce7b31f4486fdfc0d28640"
MESSAGE = b"message digest"
SIG = bytes.fromhex(
    "F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3"
    "B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA"
)
OTHER_ID = b"ALICE123@YAHOO.COM"


@pytest.mark.parametrize("sm3", [sm2._sm3_hashlib, sm2._sm3_tongsuo], ids=["hashlib", "tongsuo"])
def test_sm3_known_answers_of_gb_t_32905(sm3: object) -> None:
    assert callable(sm3)
    assert sm3(b"abc").hex() == SM3_ABC
    assert sm3(b"abcd" * 16).hex() == SM3_64


def test_the_suite_digest_is_sm3_for_sm2_and_sha256_for_ed25519() -> None:
    assert digest_of(2, b"abc").hex() == SM3_ABC
    assert digest_of(1, b"abc") == hashlib.sha256(b"abc").digest()
    assert suite_named("sm2-sm3").digest_name == "sm3"


def test_the_standard_example_key_z_and_e() -> None:
    assert sm2.public_from_private(D_A) == P_A
    assert sm2.z_digest(P_A).hex() == Z_A
    assert sm2.sm3(sm2.z_digest(P_A) + MESSAGE).hex() == E


def test_the_standard_example_signature_verifies_and_its_variants_do_not() -> None:
    s = suite(2)
    assert s.verify(P_A, MESSAGE, SIG)
    assert not s.verify(P_A, b"message digesT", SIG), "tampered message"
    assert not s.verify(P_A, MESSAGE, SIG, OTHER_ID), "wrong distinguishing id"
    assert not s.verify(P_A, MESSAGE, SIG[:32] + bytes(32)), "tampered s"
    other = s.public_from_private(s.generate_private())
    assert not s.verify(other, MESSAGE, SIG), "another key"
    # Through the raw path too (another id computes Z here): Z with the default id must
    # be the one Tongsuo computes, so the standard's signature verifies there as well.
    assert sm2._raw(sm2._public_key(P_A), bytes.fromhex(E), sm2.to_der(SIG))


@pytest.mark.parametrize("distid", [None, OTHER_ID], ids=["default-id", "other-id"])
def test_sign_verify_round_trip_and_rejections(distid: bytes | None) -> None:
    s = suite(2)
    private = s.generate_private()
    public = s.public_from_private(private)
    sig = s.sign(private, MESSAGE, distid)
    assert len(sig) == sm2.SIGNATURE_LENGTH
    assert s.verify(public, MESSAGE, sig, distid)
    assert not s.verify(public, MESSAGE + b"!", sig, distid), "tampered message"
    wrong = b"1234567812345679" if distid is None else None
    assert not s.verify(public, MESSAGE, sig, wrong), "wrong distinguishing id"


def test_the_default_id_spelled_out_is_the_default() -> None:
    s = suite(2)
    private = s.generate_private()
    sig = s.sign(private, MESSAGE, sm2.DEFAULT_DISTID)
    assert s.verify(s.public_from_private(private), MESSAGE, sig)
    key = SigningKey(2, private, "440100", ("4401",), sm2.DEFAULT_DISTID)
    assert key.distid is None  # one form: the default is None
    # The raw path with the default id signs what Tongsuo's own path verifies.
    der = sm2._raw(sm2._private_key(private), sm2.sm3(sm2.z_digest(key.public) + MESSAGE), None)
    assert s.verify(key.public, MESSAGE, sm2.from_der(bytes(der)))


def _off_curve(public: bytes) -> bytes:
    y = (int.from_bytes(public[33:], "big") + 1) % sm2.P
    return public[:33] + y.to_bytes(32, "big")


def test_a_point_off_the_curve_is_refused() -> None:
    bad = _off_curve(P_A)
    with pytest.raises(KeyFormatError, match="not a point on the SM2 curve"):
        suite(2).check_public(bad)
    assert not suite(2).verify(bad, MESSAGE, SIG)


@pytest.mark.parametrize(
    "public",
    [P_A[:-1], P_A + b"\x00", b"\x02" + P_A[1:33], b"\x04" + bytes(64)],
    ids=["64-bytes", "66-bytes", "compressed", "zero-point"],
)
def test_public_key_encodings_other_than_65_uncompressed_bytes_are_refused(public: bytes) -> None:
    with pytest.raises(KeyFormatError):
        suite(2).check_public(public)
    assert not suite(2).verify(public, MESSAGE, SIG)


@pytest.mark.parametrize(
    ("scalar", "ok"), [(0, False), (1, True), (sm2.N - 2, True), (sm2.N - 1, False)]
)
def test_private_scalar_range(scalar: int, ok: bool) -> None:
    """GB/T 32918.1 §6.1: d in 1..n-2, at and beyond both ends."""
    private = scalar.to_bytes(32, "big")
    if ok:
        assert len(suite(2).public_from_private(private)) == sm2.PUBLIC_LENGTH
    else:
        with pytest.raises(KeyFormatError, match=r"outside 1..n-2"):
            suite(2).public_from_private(private)


def test_private_key_length() -> None:
    for n in (31, 33):
        with pytest.raises(KeyFormatError, match=f"{n} bytes"):
            suite(2).sign(bytes([1]) * n, MESSAGE)


@pytest.mark.parametrize(("length", "ok"), [(0, False), (1, True), (8191, True), (8192, False)])
def test_distinguishing_id_length(length: int, ok: bool) -> None:
    """ENTL holds the id's length in bits in two bytes: 1..8191 bytes."""
    distid = b"a" * length
    if ok:
        key = SigningKey.generate("440100", ["4401"], "sm2-sm3", distid)
        assert key.trusted().verify(MESSAGE, key.sign(MESSAGE))
    else:
        with pytest.raises(KeyFormatError, match=r"1\.\.8191 bytes"):
            SigningKey.generate("440100", ["4401"], "sm2-sm3", distid)


def test_ed25519_takes_no_distinguishing_id() -> None:
    with pytest.raises(KeyFormatError, match="ed25519 keys take no distinguishing id"):
        SigningKey.generate("440100", ["4401"], "ed25519", b"x")


@pytest.mark.parametrize(
    "signature",
    [
        SIG[:-1],
        SIG + b"\x00",
        bytes(32) + SIG[32:],
        sm2.N.to_bytes(32, "big") + SIG[32:],
        SIG[:32] + sm2.N.to_bytes(32, "big"),
    ],
    ids=["63-bytes", "65-bytes", "r=0", "r=n", "s=n"],
)
def test_malformed_signatures_do_not_verify(signature: bytes) -> None:
    assert not suite(2).verify(P_A, MESSAGE, signature)
    assert not suite(2).verify(P_A, MESSAGE, signature, OTHER_ID)


def test_der_round_trip_and_range() -> None:
    assert sm2.from_der(sm2.to_der(SIG)) == SIG
    with pytest.raises(sm2.Sm2Error, match="not a DER"):
        sm2.from_der(b"\x30\x00junk")


def test_unknown_suites_are_named() -> None:
    with pytest.raises(KeyFormatError, match=r"unknown signing suite 'sm9' \(known: 1 ed25519"):
        suite_named("sm9")
    with pytest.raises(KeyFormatError, match=r"unknown signing suite id 3 \(known"):
        suite(3)
    assert sorted(s.name for s in SUITES.values()) == ["ed25519", "sm2-sm3"]


def test_key_ids_are_in_the_key_s_own_suite() -> None:
    ed = SigningKey.generate("440100", ["4401"])
    assert ed.key_id == hashlib.sha256(b"\x01" + ed.public).digest()[:8]  # as before #14
    sm = SigningKey.generate("440100", ["4401"], "sm2-sm3")
    assert sm.key_id == sm2.sm3(b"\x02" + sm.public)[:8]
    assert key_id_of(2, sm.public) == sm.trusted().key_id


def test_a_certificate_names_no_distinguishing_id() -> None:
    root = SigningKey.generate("000000", [], "sm2-sm3")
    odd = SigningKey.generate("440000", ["44"], "sm2-sm3", OTHER_ID)
    with pytest.raises(CertificateFormatError, match="names no SM2 distinguishing id"):
        issue_certificate(root, odd.trusted(), ["44"], 0, 10, 1)
    cert = issue_certificate(
        root, SigningKey.generate("440000", ["44"], "sm2-sm3"), ["44"], 0, 9, 1, form="binary"
    )
    assert root.trusted().verify_body(cert.body, cert.signature)
    assert root.trusted().verify(sm2.sm3(cert.body), cert.signature)  # SM3 of the body
    # X.509 (issue #14): SM2 over the TBS itself, as GM/T 0015 profiles it.
    x509 = issue_certificate(
        root, SigningKey.generate("440000", ["44"], "sm2-sm3"), ["44"], 0, 9, 1
    )
    assert root.trusted().verify(x509.signed_message, x509.signature)


def _revoke(n: int) -> list[Revocation]:
    return [Revocation(card(), Reason.LOSS, 0) for _ in range(n)]


def test_a_feed_continues_from_ed25519_to_sm2() -> None:
    """Rotation to an SM2 key: the first SM2 delta links to the last Ed25519 delta's
    SHA-256 digest (each item's digest is in its own suite), and the chain verifies on."""
    ed = SigningKey.generate("440100", ["4401"])
    sm = SigningKey.generate("440100", ["4401"], "sm2-sm3")
    ring = Keyring([ed.trusted(), sm.trusted()])
    head = FeedHead.genesis("440100")
    d1 = build_delta(ed, head, _revoke(2))
    head = accept_delta(head, d1, ring)
    assert head.digest == hashlib.sha256(d1.body).digest()
    d2 = build_delta(sm, head, _revoke(1))
    assert d2.header.suite_id == 2 and d2.prev_digest == d1.digest
    head = accept_delta(head, d2, ring)
    assert head.digest == d2.digest == sm2.sm3(d2.body)
    d3 = build_delta(sm, head, _revoke(1))
    assert accept_delta(head, d3, ring).version == 3
    snap = sign_snapshot(sm, head, EntryColumns.empty(), np.zeros(0, np.uint64), 0)
    assert accept_snapshot(FeedHead.genesis("440100"), snap, ring) == head


def test_a_link_recomputed_in_the_new_suite_is_a_fork() -> None:
    ed = SigningKey.generate("440100", ["4401"])
    sm = SigningKey.generate("440100", ["4401"], "sm2-sm3")
    ring = Keyring([ed.trusted(), sm.trusted()])
    d1 = build_delta(ed, FeedHead.genesis("440100"), _revoke(1))
    head = accept_delta(FeedHead.genesis("440100"), d1, ring)
    wrong = FeedHead("440100", 1, sm2.sm3(d1.body))
    with pytest.raises(ForkedFeed, match="does not match the head's"):
        accept_delta(head, build_delta(sm, wrong, _revoke(1)), ring)


def test_a_trusted_key_with_another_id_verifies_only_with_it() -> None:
    key = SigningKey.generate("440100", ["4401"], "sm2-sm3", OTHER_ID)
    sig = key.sign_body(b"body")
    assert key.trusted().verify_body(b"body", sig)
    plain = TrustedKey(2, key.public, "440100", ("4401",))
    assert not plain.verify_body(b"body", sig)
