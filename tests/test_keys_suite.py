"""``keys init-root|generate|certify --suite`` (issue #14) run as subprocesses: an all-SM2
hierarchy, an Ed25519 root certifying an SM2 province (the first step of a migration), key
files that name their suite and id, and a node that refuses a key file whose suite it does
not know, naming it."""

from __future__ import annotations

import base64
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from blacklist.signing import suite
from blacklist.sm2 import DEFAULT_DISTID
from blacklist.trust import TrustAnchor, verify_chain
from node.keyfiles import (
    KeyFileError,
    load_certificate,
    load_signing_key,
    load_trust_anchor,
    load_trusted_key,
)
from node.local.process import NodeSpec, write_config
from tests.test_keys_cli import ROOT_DIR, ok, refused


def _chain(d: Path, root_suite: str, province_suite: str, city_suite: str) -> None:
    ok("init-root", "--suite", root_suite, "--out", d)
    ok("generate", "--suite", province_suite, "--publisher", "440000", "--prefix", "44",
       "--out", d)  # fmt: skip
    ok("generate", "--suite", city_suite, "--publisher", "440100", "--prefix", "4401",
       "--out", d)  # fmt: skip
    said = ok(
        "certify", "--issuer", d / "root.key", "--subject", d / "440000.pub",
        "--scope", "44", "--days", "30", "--out", d / "440000.crt",
    )  # fmt: skip
    assert f"({province_suite}) for 440000" in said and f"({root_suite})" in said
    ok(
        "certify", "--issuer", d / "440000.key", "--issuer-cert", d / "440000.crt",
        "--subject", d / "440100.pub", "--scope", "4401", "--days", "30",
        "--out", d / "440100.crt",
    )  # fmt: skip


@pytest.mark.parametrize(
    "suites",
    [("sm2-sm3", "sm2-sm3", "sm2-sm3"), ("ed25519", "sm2-sm3", "ed25519")],
    ids=["all-sm2", "mixed"],
)
def test_a_hierarchy_in_any_suites_verifies(tmp_path: Path, suites: tuple[str, str, str]) -> None:
    _chain(tmp_path, *suites)
    for stem, name in zip(("root", "440000", "440100"), suites, strict=True):
        key = load_signing_key(tmp_path / f"{stem}.key")
        assert suite(key.suite_id).name == name
        assert load_trusted_key(tmp_path / f"{stem}.pub") == key.trusted()
    anchor = load_trust_anchor(tmp_path / "root.pub")
    chain = [load_certificate(tmp_path / f"{p}.crt") for p in ("440000", "440100")]
    at = chain[1].not_before
    city = verify_chain(chain, anchor, [], at)
    assert city.publisher == "440100" and suite(city.suite_id).name == suites[2]


def test_key_files_name_their_suite_and_id(tmp_path: Path) -> None:
    said = ok("init-root", "--suite", "sm2-sm3", "--out", tmp_path)
    assert "suite sm2-sm3" in said
    for name in ("root.key", "root.pub"):
        data = tomllib.loads((tmp_path / name).read_text())
        assert data["suite"] == "sm2-sm3" and data["distid"] == DEFAULT_DISTID.decode()
    ok("generate", "--publisher", "440100", "--prefix", "4401", "--out", tmp_path)
    assert "distid" not in tomllib.loads((tmp_path / "440100.pub").read_text())
    assert tomllib.loads((tmp_path / "440100.pub").read_text())["suite"] == "ed25519"


def test_another_distinguishing_id_travels_in_the_key_files(tmp_path: Path) -> None:
    ok("init-root", "--suite", "sm2-sm3", "--distid", "MINISTRY@GOV", "--out", tmp_path)
    key = load_signing_key(tmp_path / "root.key")
    assert key.distid == b"MINISTRY@GOV"
    anchor = load_trust_anchor(tmp_path / "root.pub")
    assert anchor == TrustAnchor(2, key.public, b"MINISTRY@GOV")
    assert anchor.verify_body(b"body", key.sign_body(b"body"))


def test_certify_refuses_a_key_with_another_id(tmp_path: Path) -> None:
    ok("init-root", "--suite", "sm2-sm3", "--out", tmp_path)
    ok("generate", "--suite", "sm2-sm3", "--distid", "GD", "--publisher", "440000",
       "--prefix", "44", "--out", tmp_path)  # fmt: skip
    said = refused(
        "certify", "--issuer", tmp_path / "root.key", "--subject", tmp_path / "440000.pub",
        "--scope", "44", "--days", "30", "--out", tmp_path / "440000.crt",
    )  # fmt: skip
    assert "names no SM2 distinguishing id" in said
    assert not (tmp_path / "440000.crt").exists()


def test_certify_suite_insists_on_the_subject_s_suite(tmp_path: Path) -> None:
    ok("init-root", "--out", tmp_path)
    ok("generate", "--suite", "sm2-sm3", "--publisher", "440000", "--prefix", "44",
       "--out", tmp_path)  # fmt: skip
    args = ("certify", "--issuer", tmp_path / "root.key", "--subject", tmp_path / "440000.pub",
            "--scope", "44", "--days", "30")  # fmt: skip
    said = refused(*args, "--suite", "ed25519", "--out", tmp_path / "no.crt")
    assert "its key is sm2-sm3, not ed25519" in said and not (tmp_path / "no.crt").exists()
    assert "(sm2-sm3) for 440000" in ok(*args, "--suite", "sm2-sm3", "--out", tmp_path / "a.crt")


def test_refusals_of_the_suite_options(tmp_path: Path) -> None:
    said = refused("init-root", "--suite", "ed25519", "--distid", "X", "--out", tmp_path)
    assert "ed25519 keys take no distinguishing id" in said
    assert "1..8191 bytes" in refused(
        "generate", "--suite", "sm2-sm3", "--distid", "x" * 8192, "--publisher", "440100",
        "--prefix", "4401", "--out", tmp_path,
    )  # fmt: skip
    bad = subprocess.run(
        [sys.executable, "-m", "node", "keys", "init-root", "--suite", "sm9", "--out", tmp_path],
        cwd=ROOT_DIR, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "invalid choice: 'sm9'" in bad.stderr


def _rename_suite(path: Path, name: str) -> None:
    text = path.read_text()
    path.write_text(text.replace('suite = "ed25519"', f'suite = "{name}"'))


def test_loaders_refuse_an_unknown_suite_naming_it(tmp_path: Path) -> None:
    ok("generate", "--publisher", "440100", "--prefix", "4401", "--out", tmp_path)
    for name in ("440100.key", "440100.pub"):
        _rename_suite(tmp_path / name, "sm9")
    for load, name in ((load_signing_key, "440100.key"), (load_trusted_key, "440100.pub")):
        with pytest.raises(KeyFileError, match=r"unknown signing suite 'sm9'; this node knows"):
            load(tmp_path / name)


def test_loaders_refuse_a_point_off_the_curve(tmp_path: Path) -> None:
    ok("generate", "--suite", "sm2-sm3", "--publisher", "440100", "--prefix", "4401",
       "--out", tmp_path)  # fmt: skip
    pub = tmp_path / "440100.pub"
    data = tomllib.loads(pub.read_text())
    raw = bytearray(base64.b64decode(data["public"]))
    raw[-1] ^= 1
    pub.write_text(pub.read_text().replace(data["public"], base64.b64encode(raw).decode()))
    with pytest.raises(KeyFileError, match="not a point on the SM2 curve"):
        load_trusted_key(pub)


def test_a_node_refuses_a_key_file_of_an_unknown_suite(tmp_path: Path) -> None:
    ok("generate", "--publisher", "440100", "--prefix", "4401", "--out", tmp_path)
    _rename_suite(tmp_path / "440100.key", "sm9")
    config = write_config(
        NodeSpec("440100", signing_key=tmp_path / "440100.key"), tmp_path / "node"
    )
    done = subprocess.run(
        [sys.executable, "-m", "node", "run", "--config", str(config)],
        cwd=ROOT_DIR, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "config field 'signing_key'" in done.stderr
    assert "unknown signing suite 'sm9'" in done.stderr
