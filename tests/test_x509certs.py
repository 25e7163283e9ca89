"""X.509 key certificates and key revocation CRLs (issue #14): what the project writes is
read by the OpenSSL 3 command line, what the command line issues is read by the project,
and the decoder refuses what the profile does not allow."""

from __future__ import annotations

import dataclasses
import datetime
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from blacklist import der
from blacklist.certs import (
    RevocationReason,
    decode_certificate,
    decode_revocation,
    decode_trust_record,
    issue_certificate,
    issue_revocation,
)
from blacklist.errors import CodecError
from blacklist.signing import SigningKey
from blacklist.trust import KeyRevoked, ScopeViolation, TrustAnchor, TrustError, verify_chain
from blacklist.x509certs import (
    KEY_REVOCATION_OID,
    SCOPE_OID,
    X509Certificate,
    X509Revocation,
    from_pem,
    self_signed_root,
    to_pem,
)
from blacklist.x509decode import MAX_DER_BYTES

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="no openssl command line")
DAY = 86_400
NOW = int(time.time())
START, END = NOW - DAY, NOW + 30 * DAY


class Tree:
    def __init__(self) -> None:
        self.root = SigningKey.generate("000000", [""])
        self.anchor = TrustAnchor.of(self.root)
        self.gd = SigningKey.generate("440000", ["4499"])
        self.gz = SigningKey.generate("440100", ["4401"])
        self.gd_cert = issue_certificate(self.root, self.gd, ["44"], START, END, serial=1)
        self.gz_cert = issue_certificate(self.gd, self.gz, ["4401"], START, END, serial=10)


@pytest.fixture(scope="module")
def t() -> Tree:
    return Tree()


def _openssl(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    return subprocess.run(
        [OPENSSL, *map(str, args)], capture_output=True, text=True, check=check, timeout=30
    )


def _private_pem(key: SigningKey) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(key.private).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _public_pem(key: SigningKey) -> bytes:
    return (
        Ed25519PrivateKey.from_private_bytes(key.private)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _write(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


# --- what the project writes, the command line reads -----------------------------------------


def test_the_types_and_round_trip(t: Tree) -> None:
    assert isinstance(t.gz_cert, X509Certificate)
    back = decode_certificate(t.gz_cert.to_bytes())
    assert back == t.gz_cert and back.digest == t.gz_cert.digest
    assert decode_trust_record(t.gz_cert.to_bytes()) == t.gz_cert
    assert decode_certificate(from_pem(to_pem(t.gz_cert))) == t.gz_cert
    rev = issue_revocation(
        t.gd, t.gz.key_id, NOW, RevocationReason.COMPROMISED, 3,
        last_version=7, last_digest=bytes(range(32)), certificate_serial=10,
    )  # fmt: skip
    assert isinstance(rev, X509Revocation)
    assert decode_revocation(rev.to_bytes()) == rev == decode_trust_record(rev.to_bytes())
    unbounded = issue_revocation(t.gd, t.gz.key_id, NOW, RevocationReason.RETIRED, 4)
    back_rev = decode_revocation(unbounded.to_bytes())
    assert back_rev.last_version is None and back_rev.last_digest is None


@needs_openssl
def test_openssl_shows_the_scope_in_a_critical_extension(t: Tree, tmp_path: Path) -> None:
    crt = _write(tmp_path, "gz.crt", t.gz_cert.to_bytes())
    text = _openssl("x509", "-inform", "der", "-in", crt, "-noout", "-text").stdout
    assert "Serial Number: 10" in text and "Subject: CN = 440100" in text
    assert f"{SCOPE_OID}: critical" in text and "440100" in text and "4401" in text
    assert "Basic Constraints: critical" in text and "CA:TRUE" in text
    assert "Certificate Sign, CRL Sign" in text
    parsed = _openssl(
        "x509", "-inform", "der", "-in", crt, "-noout", "-text", "-certopt", "ext_parse"
    ).stdout
    assert "NUMERICSTRING     :440100" in parsed and "NUMERICSTRING     :4401" in parsed


@needs_openssl
def test_openssl_verifies_the_chain_but_only_if_told_to_ignore_the_scope(
    t: Tree, tmp_path: Path
) -> None:
    root = _write(tmp_path, "root.pem", to_pem(self_signed_root(t.root, START, END)))
    gd = _write(tmp_path, "gd.pem", to_pem(t.gd_cert))
    gz = _write(tmp_path, "gz.pem", to_pem(t.gz_cert))
    refused = _openssl("verify", "-CAfile", root, "-untrusted", gd, gz, check=False)
    assert refused.returncode != 0 and "unhandled critical extension" in refused.stderr
    ok = _openssl("verify", "-ignore_critical", "-CAfile", root, "-untrusted", gd, gz)
    assert ok.stdout.strip().endswith("OK")
    # A certificate whose issuer is not the key that signed it: refused even so.
    other = SigningKey.generate("440000", ["4499"])
    forged = issue_certificate(other, t.gz, ["4401"], START, END, serial=10)
    bad = _write(tmp_path, "forged.pem", to_pem(forged))
    out = _openssl(
        "verify", "-ignore_critical", "-CAfile", root, "-untrusted", gd, bad, check=False
    )
    assert out.returncode != 0


@needs_openssl
def test_openssl_verifies_the_signature_over_the_tbs(t: Tree, tmp_path: Path) -> None:
    """The signature is the issuer's over the DER TBSCertificate, checked with the issuer's
    public key alone (pkeyutl, Ed25519 over the raw message)."""
    pub = _write(tmp_path, "gd.pub.pem", _public_pem(t.gd))
    tbs = _write(tmp_path, "tbs.der", t.gz_cert.signed_message)
    sig = _write(tmp_path, "sig.bin", t.gz_cert.signature)
    args = ("pkeyutl", "-verify", "-pubin", "-inkey", pub, "-rawin", "-in", tbs, "-sigfile", sig)
    assert "Signature Verified Successfully" in _openssl(*args).stdout
    _write(tmp_path, "tbs.der", t.gz_cert.signed_message[:-1] + b"\x00")
    assert _openssl(*args, check=False).returncode != 0


@needs_openssl
def test_openssl_reads_and_verifies_the_revocation_crl(t: Tree, tmp_path: Path) -> None:
    rev = issue_revocation(
        t.gd, t.gz.key_id, NOW, RevocationReason.SUPERSEDED, 77, last_version=5,
        certificate_serial=t.gz_cert.serial,
    )  # fmt: skip
    crl = _write(tmp_path, "gz.crl", to_pem(rev))
    gd = _write(tmp_path, "gd.pem", to_pem(t.gd_cert))
    out = _openssl("crl", "-in", crl, "-noout", "-text", "-CAfile", gd)
    assert "verify OK" in out.stderr + out.stdout
    text = out.stdout
    assert "Issuer: CN = 440000" in text and "CRL Number: \n                77" in text
    assert "Serial Number: 0A" in text and "Superseded" in text
    assert f"{KEY_REVOCATION_OID}: critical" in text


# --- what the command line issues, the project reads -----------------------------------------


def _scope_der(publisher: str, prefixes: Sequence[str]) -> str:
    return der.seq(der.numeric(publisher), der.seq(*map(der.numeric, prefixes))).hex()


def _openssl_issue(t: Tree, tmp_path: Path, extensions: list[str], serial: int = 77) -> bytes:
    """``openssl x509 -req``: Guangdong's key certifies Guangzhou's from a CSR."""
    gd_key = _write(tmp_path, "gd.key.pem", _private_pem(t.gd))
    gz_key = _write(tmp_path, "gz.key.pem", _private_pem(t.gz))
    gd_crt = _write(tmp_path, "gd.pem", to_pem(t.gd_cert))
    cnf = _write(tmp_path, "ext.cnf", ("[v3]\n" + "\n".join(extensions) + "\n").encode())
    csr = tmp_path / "gz.csr"
    _openssl("req", "-new", "-key", gz_key, "-subj", "/O=MOHRSS/CN=440100", "-out", csr)
    out = tmp_path / "gz-openssl.der"
    _openssl("x509", "-req", "-in", csr, "-CA", gd_crt, "-CAkey", gd_key,
             "-set_serial", str(serial), "-days", "30", "-extfile", cnf, "-extensions", "v3",
             "-outform", "der", "-out", out)  # fmt: skip
    return out.read_bytes()


def _profile(t: Tree) -> list[str]:
    return [
        "basicConstraints = critical, CA:TRUE",
        "keyUsage = critical, digitalSignature, keyCertSign, cRLSign",
        f"subjectKeyIdentifier = {t.gz.key_id.hex()}",
        "authorityKeyIdentifier = keyid:always",
        f"{SCOPE_OID} = critical, DER:{_scope_der('440100', ['4401'])}",
    ]


@needs_openssl
def test_a_certificate_issued_by_openssl_is_trusted(t: Tree, tmp_path: Path) -> None:
    data = _openssl_issue(t, tmp_path, _profile(t))
    cert = decode_certificate(data)
    assert cert.to_bytes() == data  # the bytes the CA signed, kept
    assert (cert.serial, cert.publisher, cert.prefixes) == (77, "440100", ("4401",))
    key = verify_chain([t.gd_cert, cert], t.anchor, [], cert.not_before)
    assert (key.publisher, key.prefixes, key.key_id) == ("440100", ("4401",), t.gz.key_id)


@needs_openssl
def test_an_openssl_certificate_beyond_its_issuer_is_refused_by_the_rules(
    t: Tree, tmp_path: Path
) -> None:
    """The CA tool writes whatever scope it is told; the subset rule is the project's."""
    wide = [*_profile(t)[:-1], f"{SCOPE_OID} = critical, DER:{_scope_der('440100', ['1101'])}"]
    cert = decode_certificate(_openssl_issue(t, tmp_path, wide))
    with pytest.raises(ScopeViolation, match="prefix '1101' is outside the issuer's scope"):
        verify_chain([t.gd_cert, cert], t.anchor, [], cert.not_before)


@needs_openssl
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("unknown_critical", "unknown critical extension 1.2.3.4"),
        ("no_scope", "no critical region scope"),
        ("scope_not_critical", "no critical region scope"),
        ("wrong_ski", "is not the key's id"),
        ("no_aki", "authority key identifier"),
    ],
)
def test_an_openssl_certificate_outside_the_profile_is_refused(
    t: Tree, tmp_path: Path, change: str, message: str
) -> None:
    exts = _profile(t)
    if change == "unknown_critical":
        exts.append("1.2.3.4 = critical, DER:0500")
    elif change == "no_scope":
        exts = exts[:-1]
    elif change == "scope_not_critical":
        exts[-1] = exts[-1].replace("critical, ", "")
    elif change == "wrong_ski":
        exts[2] = f"subjectKeyIdentifier = {bytes(8).hex()}"
    else:
        exts[3] = "authorityKeyIdentifier = none"
    with pytest.raises(CodecError, match=message):
        decode_certificate(_openssl_issue(t, tmp_path, exts))


# --- the decoder's own refusals -------------------------------------------------------------


def _parts(cert: X509Certificate) -> tuple[bytes, bytes]:
    return cert.signed_message, der.seq(der.oid("1.3.101.112"))


def test_two_signature_algorithms_are_refused(t: Tree) -> None:
    tbs, _ = _parts(t.gz_cert)
    sm2 = der.seq(der.oid("1.2.156.10197.1.501"))
    with pytest.raises(CodecError, match="differs inside and outside"):
        decode_certificate(der.seq(tbs, sm2, der.bits(t.gz_cert.signature)))


def test_a_signature_with_unused_bits_is_refused(t: Tree) -> None:
    tbs, alg = _parts(t.gz_cert)
    data = der.seq(tbs, alg, der.tlv(der.BIT_STRING, b"\x01" + t.gz_cert.signature))
    with pytest.raises(CodecError, match="unused bits"):
        decode_certificate(data)


def test_the_size_bound_at_below_and_above(t: Tree) -> None:
    tbs, alg = _parts(t.gz_cert)
    base = len(der.seq(tbs, alg, der.bits(t.gz_cert.signature)))
    for size, refused in (
        (MAX_DER_BYTES - 1, False),
        (MAX_DER_BYTES, False),
        (MAX_DER_BYTES + 1, True),
    ):
        # Pad the signature to reach ``size`` bytes: the bound is checked before parsing.
        pad = size - base - 2  # the longer length form takes two more bytes
        data = der.seq(tbs, alg, der.bits(t.gz_cert.signature + bytes(pad)))
        assert len(data) == size
        with pytest.raises(CodecError) as info:
            decode_certificate(data)
        assert (f"more than {MAX_DER_BYTES}" in str(info.value)) is refused


def test_a_serial_that_is_not_positive_is_refused(t: Tree) -> None:
    with pytest.raises(ValueError, match="serial 0"):
        issue_certificate(t.gd, t.gz, ["4401"], START, END, serial=0)
    with pytest.raises(CodecError, match="not positive"):
        tbs = t.gz_cert.signed_message.replace(der.integer(10), der.integer(-10), 1)
        decode_certificate(der.seq(tbs, _parts(t.gz_cert)[1], der.bits(t.gz_cert.signature)))


def test_a_crl_with_two_entries_is_refused(t: Tree) -> None:
    key = Ed25519PrivateKey.from_private_bytes(t.gd.private)
    builder = (
        cx509.CertificateRevocationListBuilder()
        .issuer_name(cx509.Name([cx509.NameAttribute(cx509.NameOID.COMMON_NAME, "440000")]))
        .last_update(datetime.datetime.fromtimestamp(NOW, datetime.UTC))
        .next_update(datetime.datetime.fromtimestamp(END, datetime.UTC))
    )
    for serial in (1, 2):
        builder = builder.add_revoked_certificate(
            cx509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(datetime.datetime.fromtimestamp(NOW, datetime.UTC))
            .build()
        )
    data = builder.sign(key, None).public_bytes(serialization.Encoding.DER)
    with pytest.raises(CodecError, match="2 entries"):
        decode_revocation(data)


# --- old and new together -------------------------------------------------------------------


def test_binary_and_x509_certificates_chain_together(t: Tree) -> None:
    """The migration decision: records already held in the binary layout keep verifying,
    and an X.509 certificate can hang below a binary one (and the reverse)."""
    gd_binary = issue_certificate(t.root, t.gd, ["44"], START, END, 1, form="binary")
    assert gd_binary.to_bytes()[:4] == b"KCRT"
    key = verify_chain([decode_certificate(gd_binary.to_bytes()), t.gz_cert], t.anchor, [], NOW)
    assert key.key_id == t.gz.key_id
    gz_binary = issue_certificate(t.gd, t.gz, ["4401"], START, END, 10, form="binary")
    assert verify_chain([t.gd_cert, gz_binary], t.anchor, [], NOW).key_id == t.gz.key_id


def test_a_crl_revokes_the_key_whatever_certificate_names_it(t: Tree) -> None:
    rev = issue_revocation(
        t.gd, t.gz.key_id, NOW - 60, RevocationReason.COMPROMISED, 5, certificate_serial=10
    )
    renewed = issue_certificate(t.gd, t.gz, ["4401"], START, END, serial=11)
    for cert in (t.gz_cert, renewed):
        with pytest.raises(KeyRevoked, match="revoked as of"):
            verify_chain([t.gd_cert, cert], t.anchor, [decode_revocation(rev.to_bytes())], NOW)
        assert verify_chain([t.gd_cert, cert], t.anchor, [rev], NOW - 61).key_id == t.gz.key_id
    # Signed by another key than the certifier's: ignored.
    stranger = SigningKey.generate("440000", ["4499"])
    forged = dataclasses.replace(rev, signature=stranger.sign(rev.signed_message))
    assert verify_chain([t.gd_cert, t.gz_cert], t.anchor, [forged], NOW).key_id == t.gz.key_id


# --- SM2 (GM/T 0015: SM2 keys, SM2-with-SM3) ------------------------------------------------


def _sm2_tree(root_suite: str = "sm2-sm3") -> tuple[SigningKey, list[X509Certificate]]:
    root = SigningKey.generate("000000", [""], root_suite)
    gd = SigningKey.generate("440000", ["4499"], "sm2-sm3")
    gz = SigningKey.generate("440100", ["4401"], "sm2-sm3")
    chain = [
        issue_certificate(root, gd, ["44"], START, END, serial=1),
        issue_certificate(gd, gz, ["4401"], START, END, serial=10),
    ]
    return root, chain  # type: ignore[return-value]


@pytest.mark.parametrize("root_suite", ["sm2-sm3", "ed25519"])
def test_an_sm2_chain_verifies_and_round_trips(root_suite: str) -> None:
    root, chain = _sm2_tree(root_suite)
    back = [decode_certificate(c.to_bytes()) for c in chain]
    assert back == chain and [c.digest for c in back] == [c.digest for c in chain]
    key = verify_chain(back, TrustAnchor.of(root), [], NOW)
    assert key.suite_id == 2 and key.publisher == "440100"
    # SM2 records are identified by SM3 of their TBS; an Ed25519-signed one by SHA-256.
    assert len(chain[1].digest) == 32 and chain[1].digest != chain[0].digest
    tampered = dataclasses.replace(chain[1], prefixes=("4403",))
    with pytest.raises(TrustError):
        verify_chain([chain[0], tampered], TrustAnchor.of(root), [], NOW)


@needs_openssl
@pytest.mark.parametrize("root_suite", ["sm2-sm3", "ed25519"])
def test_openssl_verifies_an_sm2_chain(root_suite: str, tmp_path: Path) -> None:
    root, chain = _sm2_tree(root_suite)
    root_pem = _write(tmp_path, "root.pem", to_pem(self_signed_root(root, START, END)))
    gd = _write(tmp_path, "gd.pem", to_pem(chain[0]))
    gz = _write(tmp_path, "gz.pem", to_pem(chain[1]))
    text = _openssl("x509", "-in", gz, "-noout", "-text").stdout
    assert "Signature Algorithm: SM2-with-SM3" in text and "ASN1 OID: SM2" in text
    # OpenSSL 3.0 verifies SM2 in X.509 with an empty distinguishing id unless told the
    # standard one (GM/T 0009 §10, which GM/T 0015 certificates use), and -vfyopt names it
    # for the certificate verified only, not for the intermediates: so link by link.
    distid = ("-vfyopt", "distid:1234567812345678")
    links = ((root_pem, gd, root_suite == "sm2-sm3"), (gd, gz, True))
    for issuer, subject, by_sm2 in links:
        ok = _openssl("verify", "-ignore_critical", "-partial_chain", *(distid if by_sm2 else ()),
                      "-CAfile", issuer, subject)  # fmt: skip
        assert ok.stdout.strip().endswith("OK")
    plain = _openssl("verify", "-ignore_critical", "-partial_chain", "-CAfile", gd, gz, check=False)
    assert plain.returncode != 0 and "signature failure" in plain.stdout + plain.stderr


def test_an_sm2_crl_revokes_and_round_trips() -> None:
    root = SigningKey.generate("000000", [""], "sm2-sm3")
    gd = SigningKey.generate("440000", ["4499"], "sm2-sm3")
    gd_cert = issue_certificate(root, gd, ["44"], START, END, serial=1)
    rev = issue_revocation(
        root, gd.key_id, NOW - 60, RevocationReason.SUPERSEDED, 3, last_version=4,
        certificate_serial=1,
    )  # fmt: skip
    back = decode_revocation(rev.to_bytes())
    assert back == rev
    with pytest.raises(KeyRevoked):
        verify_chain([gd_cert], TrustAnchor.of(root), [back], NOW)


def test_a_record_signed_in_another_suite_than_it_names_is_refused(t: Tree) -> None:
    """An SM2 key's signature presented in a certificate that names Ed25519 (or the
    reverse) is refused: the algorithm the record names must be its issuer key's."""
    sm2_root = SigningKey.generate("000000", [""], "sm2-sm3")
    cert = issue_certificate(sm2_root, t.gd, ["44"], START, END, serial=1)
    named_ed = dataclasses.replace(cert, issuer_suite_id=1)  # re-encoded, naming Ed25519
    renamed = decode_certificate(
        der.seq(named_ed.signed_message, der.seq(der.oid("1.3.101.112")), der.bits(cert.signature))
    )
    with pytest.raises(TrustError):
        verify_chain([renamed], TrustAnchor.of(sm2_root), [], NOW)
