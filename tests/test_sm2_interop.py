"""SM2 interoperability with the OpenSSL 3 command line (``make tools`` installs Debian's):
a signature made by the project verifies with ``openssl pkeyutl -verify``, one made by
``openssl pkeyutl -sign`` verifies in the project, and a tampered message or a wrong
distinguishing id is refused on both sides.

OpenSSL 3 needs ``-rawin -digest sm3`` (it computes e = SM3(Z || M) itself) and the id as
``-pkeyopt distid:...``: without it OpenSSL 3 uses an empty id, not GM/T 0009's default, so
the project's (default-id) signatures do not verify there.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from tongsuopy.crypto import serialization

from blacklist import sm2
from blacklist.signing import SigningKey, suite

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="`make tools`: openssl")

MESSAGE = b"a delta body's digest, or any message"
OTHER_ID = "ALICE123@YAHOO.COM"


def _openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, text=True, timeout=30, check=False
    )


def _pem(public: bytes) -> bytes:
    return bytes(
        sm2._public_key(public).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _verify(tmp: Path, public: bytes, message: bytes, der: bytes, distid: str | None) -> bool:
    (tmp / "pub.pem").write_bytes(_pem(public))
    (tmp / "msg").write_bytes(message)
    (tmp / "sig").write_bytes(der)
    opts = [] if distid is None else ["-pkeyopt", f"distid:{distid}"]
    done = _openssl(
        "pkeyutl", "-verify", "-pubin", "-inkey", tmp / "pub.pem", "-rawin", "-digest", "sm3",
        *opts, "-in", tmp / "msg", "-sigfile", tmp / "sig",
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    return done.returncode == 0 and "Signature Verified Successfully" in done.stdout


@pytest.mark.parametrize("distid", [None, OTHER_ID], ids=["default-id", "other-id"])
def test_a_project_signature_verifies_with_openssl(tmp_path: Path, distid: str | None) -> None:
    raw_id = None if distid is None else distid.encode()
    key = SigningKey.generate("440100", ["4401"], "sm2-sm3", raw_id)
    der = sm2.to_der(key.sign(MESSAGE))
    named = distid or sm2.DEFAULT_DISTID.decode()
    assert _verify(tmp_path, key.public, MESSAGE, der, named)
    assert not _verify(tmp_path, key.public, MESSAGE + b"!", der, named), "tampered message"
    assert not _verify(tmp_path, key.public, MESSAGE, der, "1234567812345679"), "wrong id"


def test_openssl_needs_the_id_spelled_out(tmp_path: Path) -> None:
    """Why the interop command names distid: OpenSSL 3's own default id is empty."""
    key = SigningKey.generate("440100", ["4401"], "sm2-sm3")
    assert not _verify(tmp_path, key.public, MESSAGE, sm2.to_der(key.sign(MESSAGE)), None)


@pytest.mark.parametrize("distid", [None, OTHER_ID], ids=["default-id", "other-id"])
def test_an_openssl_signature_verifies_in_the_project(tmp_path: Path, distid: str | None) -> None:
    key_pem = tmp_path / "key.pem"
    made = _openssl("genpkey", "-algorithm", "SM2", "-out", key_pem)
    assert made.returncode == 0, made.stderr
    spki = tmp_path / "pub.der"
    assert (
        _openssl("pkey", "-in", key_pem, "-pubout", "-outform", "DER", "-out", spki).returncode == 0
    )
    public = spki.read_bytes()[-sm2.PUBLIC_LENGTH :]  # the BIT STRING's uncompressed point
    (tmp_path / "msg").write_bytes(MESSAGE)
    named = distid or sm2.DEFAULT_DISTID.decode()
    signed = _openssl(
        "pkeyutl", "-sign", "-inkey", key_pem, "-rawin", "-digest", "sm3",
        "-pkeyopt", f"distid:{named}", "-in", tmp_path / "msg", "-out", tmp_path / "sig",
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    signature = sm2.from_der((tmp_path / "sig").read_bytes())
    s, raw_id = suite(2), None if distid is None else distid.encode()
    s.check_public(public)
    assert s.verify(public, MESSAGE, signature, raw_id)
    assert not s.verify(public, MESSAGE + b"!", signature, raw_id), "tampered message"
    assert not s.verify(public, MESSAGE, signature, b"1234567812345679"), "wrong id"
    bad_point = public[:-1] + bytes([public[-1] ^ 1])
    assert not s.verify(bad_point, MESSAGE, signature, raw_id), "wrong curve point"
