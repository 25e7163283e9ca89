"""A caller's role comes from exactly one role URI and one region URI in its certificate
(node/tls.py): a certificate naming two roles (or two regions, or none, or an unknown one)
is ambiguous and carries no role, so the node answers UNAUTHENTICATED (issue #11, a rule
that had no test of its own). Certificates are made here by a real CA, as the CLI does."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from node.tls import REGION_URN, ROLE_URN, Identity, _load_ca, identity_from_pem, init_ca, issue


def leaf(ca_dir: Path, uris: list[str]) -> bytes:
    """A CA-signed leaf certificate whose SAN holds exactly ``uris``."""
    ca_cert, ca_key = _load_ca(ca_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "two-faced")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ca")
    init_ca(out)
    return out


def test_one_role_and_one_region_is_an_identity(ca: Path, tmp_path: Path) -> None:
    files = issue(ca, role="operator", region="440100", name="op", out=tmp_path)
    assert identity_from_pem(files.cert.read_bytes()) == Identity("operator", "440100")
    made_here = leaf(ca, [ROLE_URN + "terminal", REGION_URN + "110100"])
    assert identity_from_pem(made_here) == Identity("terminal", "110100")


@pytest.mark.parametrize(
    "uris",
    [
        [ROLE_URN + "terminal", ROLE_URN + "operator", REGION_URN + "440100"],
        [ROLE_URN + "node", ROLE_URN + "node", REGION_URN + "440100"],
        [ROLE_URN + "operator", REGION_URN + "440100", REGION_URN + "110100"],
        [ROLE_URN + "operator"],
        [REGION_URN + "440100"],
        [ROLE_URN + "admin", REGION_URN + "440100"],
        [ROLE_URN + "operator", REGION_URN + "4401"],
        [ROLE_URN + "operator", REGION_URN + "44010A"],
    ],
    ids=[
        "two-roles",
        "the-same-role-twice",
        "two-regions",
        "no-region",
        "no-role",
        "unknown-role",
        "short-region",
        "non-digit-region",
    ],
)
def test_an_ambiguous_or_incomplete_certificate_has_no_role(ca: Path, uris: list[str]) -> None:
    assert identity_from_pem(leaf(ca, uris)) is None
