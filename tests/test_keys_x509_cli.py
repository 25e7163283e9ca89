"""The keys CLI writes X.509 (issue #14): certificates as DER that openssl reads, the
root's self-signed certificate for CA tools (`keys root-cert`), and revocations as CRLs
naming the revoked certificate's serial (`keys revoke --cert`) or none (`--key`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from node.keyfiles import load_certificate, load_revocation
from tests.test_keys_cli import ok, refused
from tests.test_x509certs import SCOPE_OID

OPENSSL = shutil.which("openssl")


@pytest.fixture(scope="module", params=["ed25519", "sm2-sm3"])
def keys(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    suite = ("--suite", request.param)
    ok("init-root", *suite, "--out", d)
    ok("generate", "--publisher", "440000", "--prefix", "4499", *suite, "--out", d)
    ok(
        "certify", "--issuer", d / "root.key", "--subject", d / "440000.pub",
        "--scope", "44", "--days", "30", "--serial", "41", "--out", d / "440000.crt",
    )  # fmt: skip
    ok("root-cert", "--issuer", d / "root.key", "--days", "30", "--out", d / "root.crt")
    return d


def test_certify_writes_an_x509_certificate(keys: Path) -> None:
    data = (keys / "440000.crt").read_bytes()
    assert data[:1] == b"\x30"  # a DER SEQUENCE, not the binary KCRT
    cert = load_certificate(keys / "440000.crt")
    assert (cert.serial, cert.publisher, cert.prefixes) == (41, "440000", ("44",))


@pytest.mark.skipif(OPENSSL is None, reason="no openssl command line")
def test_openssl_reads_the_cli_s_certificates(keys: Path) -> None:
    assert OPENSSL is not None
    text = subprocess.run(
        [OPENSSL, "x509", "-inform", "der", "-in", keys / "440000.crt", "-noout", "-text"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    assert f"{SCOPE_OID}: critical" in text and "Subject: CN = 440000" in text
    root = subprocess.run(
        [OPENSSL, "x509", "-in", keys / "root.crt", "-noout", "-subject", "-issuer"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    assert root.splitlines() == ["subject=CN = 000000", "issuer=CN = 000000"]
    assert load_certificate(keys / "root.crt").publisher == "000000"  # PEM read too


def test_revoke_by_certificate_names_its_serial(keys: Path, tmp_path: Path) -> None:
    by_cert, by_key = tmp_path / "by-cert.rev", tmp_path / "by-key.rev"
    common = ("--issuer", keys / "root.key", "--as-of", "now", "--reason", "superseded")
    ok("revoke", *common, "--cert", keys / "440000.crt", "--out", by_cert)
    ok("revoke", *common, "--key", keys / "440000.pub", "--last-version", "3", "--out", by_key)
    named, unnamed = load_revocation(by_cert), load_revocation(by_key)
    assert by_cert.read_bytes()[:1] == b"\x30"
    assert named.certificate_serial == 41 and unnamed.certificate_serial == 0  # type: ignore[attr-defined]
    assert (
        named.revoked_key_id
        == unnamed.revoked_key_id
        == load_certificate(keys / "440000.crt").key_id
    )
    assert unnamed.last_version == 3
    both = refused(
        "revoke", *common, "--cert", keys / "440000.crt", "--key", keys / "440000.pub",
        "--out", tmp_path / "both.rev",
    )  # fmt: skip
    assert "not allowed with argument" in both


def test_root_cert_refuses_a_non_root_key_and_no_days(keys: Path, tmp_path: Path) -> None:
    assert "publishes for 000000" in refused(
        "root-cert", "--issuer", keys / "440000.key", "--days", "30", "--out", tmp_path / "x.crt"
    )
    assert "--days must be at least 1" in refused(
        "root-cert", "--issuer", keys / "root.key", "--days", "0", "--out", tmp_path / "y.crt"
    )
