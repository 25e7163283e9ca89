"""``python -m node keys init-root | certify | revoke`` run as subprocesses: build the chain
root → Guangdong (44) → Guangzhou (4401), verify it, revoke, and check the refusals."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blacklist.certs import RevocationReason
from blacklist.isotime import iso8601
from blacklist.trust import CertifiedKeys, KeyRevoked, TrustAnchor, verify_chain
from node.keyfiles import (
    KeyFileError,
    load_certificate,
    load_revocation,
    load_signing_key,
    load_trusted_key,
)

ROOT_DIR = Path(__file__).resolve().parent.parent


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", "keys", *map(str, args)],
        cwd=ROOT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(*args: str | Path) -> str:
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def refused(*args: str | Path) -> str:
    result = cli(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "error: " in result.stderr
    return result.stderr


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    ok("init-root", "--out", d)
    ok("generate", "--publisher", "440000", "--prefix", "44", "--out", d)
    ok("generate", "--publisher", "440100", "--prefix", "4401", "--out", d)
    ok("generate", "--publisher", "110000", "--prefix", "11", "--out", d)
    ok(
        "certify", "--issuer", d / "root.key", "--subject", d / "440000.pub",
        "--scope", "44", "--days", "730", "--out", d / "440000.crt",
    )  # fmt: skip
    ok(
        "certify", "--issuer", d / "440000.key", "--issuer-cert", d / "440000.crt",
        "--subject", d / "440100.pub", "--scope", "4401", "--days", "365",
        "--out", d / "440100.crt",
    )  # fmt: skip
    return d


def test_times_print_as_iso_8601(chain: Path) -> None:
    said = ok(
        "certify", "--issuer", chain / "440000.key", "--issuer-cert", chain / "440000.crt",
        "--subject", chain / "440100.pub", "--scope", "4401", "--days", "30",
        "--out", chain / "440100-iso.crt",
    )  # fmt: skip
    cert = load_certificate(chain / "440100-iso.crt")
    assert f"valid {iso8601(cert.not_before)}..{iso8601(cert.not_after)}" in said
    assert re.search(r"valid \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\.\.", said), said
    said = ok(
        "revoke", "--issuer", chain / "440000.key", "--key", chain / "440100.pub",
        "--as-of", "2030-01-01T08:00:00+08:00", "--reason", "retired",
        "--out", chain / "440100-iso.rev",
    )  # fmt: skip
    assert "effective at 2030-01-01T00:00:00Z (retired)" in said
    assert load_revocation(chain / "440100-iso.rev").effective_at == 1_893_456_000


def test_the_chain_verifies(chain: Path) -> None:
    anchor = TrustAnchor.of(load_trusted_key(chain / "root.pub"))
    gd, gz = load_certificate(chain / "440000.crt"), load_certificate(chain / "440100.crt")
    key = verify_chain([gd, gz], anchor, [], int(time.time()))
    assert (key.publisher, key.prefixes) == ("440100", ("4401",))
    assert key.key_id == load_signing_key(chain / "440100.key").key_id
    assert gz.not_after - gz.not_before == 365 * 86_400
    assert gd.issuer_key_id == anchor.key_id


def test_permissions(chain: Path) -> None:
    assert mode(chain / "root.key") == 0o600
    assert load_signing_key(chain / "root.key").publisher == "000000"
    for public in ("root.pub", "440000.crt", "440100.crt"):
        assert not mode(chain / public) & 0o022, public  # nobody else may rewrite it


def test_revoke(chain: Path) -> None:
    as_of = int(time.time()) + 100
    out = chain / "440100-superseded.rev"
    ok(
        "revoke", "--issuer", chain / "440000.key", "--key", chain / "440100.pub",
        "--as-of", str(as_of), "--reason", "superseded", "--out", out,
    )  # fmt: skip
    rev = load_revocation(out)
    assert (rev.effective_at, rev.reason) == (as_of, RevocationReason.SUPERSEDED)
    assert not mode(out) & 0o022
    anchor = TrustAnchor.of(load_trusted_key(chain / "root.pub"))
    certs = [load_certificate(chain / "440000.crt"), load_certificate(chain / "440100.crt")]
    verify_chain(certs, anchor, [rev], as_of - 1)
    with pytest.raises(KeyRevoked):
        verify_chain(certs, anchor, [rev], as_of)


def test_revoke_now(chain: Path) -> None:
    out = chain / "110000-now.rev"
    before = int(time.time())
    ok(
        "revoke", "--issuer", chain / "root.key", "--key", chain / "110000.pub",
        "--as-of", "now", "--reason", "compromised", "--out", out,
    )  # fmt: skip
    rev = load_revocation(out)
    assert before <= rev.effective_at <= int(time.time())
    assert rev.reason is RevocationReason.COMPROMISED
    refused(
        "revoke", "--issuer", chain / "root.key", "--key", chain / "110000.pub",
        "--as-of", "yesterday", "--reason", "retired", "--out", chain / "x.rev",
    )  # fmt: skip


def test_refuses_a_scope_outside_the_issuers(chain: Path) -> None:
    out = chain / "bad.crt"
    err = refused(
        "certify", "--issuer", chain / "440000.key", "--issuer-cert", chain / "440000.crt",
        "--subject", chain / "110000.pub", "--scope", "1101", "--days", "30", "--out", out,
    )  # fmt: skip
    assert "publisher 110000 is outside" in err
    assert not out.exists()
    err = refused(
        "certify", "--issuer", chain / "440000.key", "--issuer-cert", chain / "440000.crt",
        "--subject", chain / "440100.pub", "--scope", "4401", "--scope", "4501",
        "--days", "30", "--out", out,
    )  # fmt: skip
    assert "'4501'" in err and not out.exists()
    # The root's scope is national: a prefix of no province is refused too.
    err = refused(
        "certify", "--issuer", chain / "root.key", "--subject", chain / "440000.pub",
        "--scope", "00", "--days", "30", "--out", out,
    )  # fmt: skip
    assert "national scope" in err and not out.exists()


def test_refuses_an_issuer_cert_for_another_key(chain: Path) -> None:
    err = refused(
        "certify", "--issuer", chain / "110000.key", "--issuer-cert", chain / "440000.crt",
        "--subject", chain / "440100.pub", "--scope", "4401", "--days", "30",
        "--out", chain / "other.crt",
    )  # fmt: skip
    assert "440000.crt" in err and not (chain / "other.crt").exists()


def test_refuses_to_overwrite(chain: Path) -> None:
    before = (chain / "440100.crt").read_bytes()
    err = refused(
        "certify", "--issuer", chain / "440000.key", "--issuer-cert", chain / "440000.crt",
        "--subject", chain / "440100.pub", "--scope", "4401", "--days", "30",
        "--out", chain / "440100.crt",
    )  # fmt: skip
    assert "exists" in err
    assert (chain / "440100.crt").read_bytes() == before
    root = (chain / "root.key").read_bytes()
    assert "exists" in refused("init-root", "--out", chain)
    assert (chain / "root.key").read_bytes() == root


def test_loaders_name_the_file(tmp_path: Path, chain: Path) -> None:
    with pytest.raises(KeyFileError, match=r"missing\.crt.*no such certificate"):
        load_certificate(tmp_path / "missing.crt")
    with pytest.raises(KeyFileError, match=r"root\.pub.*not a valid certificate"):
        load_certificate(chain / "root.pub")
    with pytest.raises(KeyFileError, match=r"440000\.crt.*not a valid key revocation"):
        load_revocation(chain / "440000.crt")
    err = refused(
        "certify", "--issuer", chain / "440000.key", "--issuer-cert", chain / "root.pub",
        "--subject", chain / "440100.pub", "--scope", "4401", "--days", "30",
        "--out", chain / "never.crt",
    )  # fmt: skip
    assert "root.pub" in err


def test_revoke_with_a_last_version(chain: Path) -> None:
    """``--last-version`` writes a bounded revocation (format 2): key_at carries it as the
    key's max_version, whatever date the item claims (issue #11)."""
    out = chain / "440100-bounded.rev"
    digest = "ab" * 32
    text = ok(
        "revoke", "--issuer", chain / "440000.key", "--key", chain / "440100.pub",
        "--as-of", "now", "--reason", "superseded", "--last-version", "7",
        "--last-digest", digest, "--out", out,
    )  # fmt: skip
    assert "nothing past feed version 7 accepted" in text
    rev = load_revocation(out)
    assert (rev.last_version, rev.last_digest, rev.format) == (7, bytes.fromhex(digest), 2)
    anchor = TrustAnchor.of(load_trusted_key(chain / "root.pub"))
    certs = (load_certificate(chain / "440000.crt"), load_certificate(chain / "440100.crt"))
    keys = CertifiedKeys(anchor, [certs[:1], certs], [rev], at=int(time.time()))
    key = keys.key_at(certs[1].key_id, rev.effective_at - 1, now=int(time.time()))
    assert key is not None and key.max_version == 7
    refused(
        "revoke", "--issuer", chain / "440000.key", "--key", chain / "440100.pub",
        "--as-of", "now", "--reason", "superseded", "--last-digest", digest,
        "--out", chain / "y.rev",
    )  # fmt: skip
    refused(
        "revoke", "--issuer", chain / "440000.key", "--key", chain / "440100.pub",
        "--as-of", "now", "--reason", "superseded", "--last-version", "-1",
        "--out", chain / "z.rev",
    )  # fmt: skip


def test_refuses_to_hand_its_own_prefix_to_another_publisher(chain: Path) -> None:
    """A key certifies only its own rotation or strictly narrower prefixes (issue #11)."""
    out = chain / "same-prefix.crt"
    ok("generate", "--publisher", "440101", "--prefix", "4401", "--out", chain / "o")
    err = refused(
        "certify", "--issuer", chain / "440100.key", "--issuer-cert", chain / "440100.crt",
        "--subject", chain / "o" / "440101.pub", "--scope", "4401", "--days", "30",
        "--out", out,
    )  # fmt: skip
    assert "not strictly narrower" in err and not out.exists()
