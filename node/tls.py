"""Mutual TLS for the gRPC edge: a local CA, leaf certificates that carry a caller's role,
and reading that role back from a verified peer certificate.

A leaf certificate names its holder's role and region in two SAN URIs (RFC 5280 §4.2.1.6)::

    urn:blacklist:role:terminal | operator | node
    urn:blacklist:region:440100

so the role is part of what the CA signed, not something a caller claims. Keys are EC P-256
(BoringSSL, under grpc, accepts them for both server and client certificates). Private keys
are written with mode 0600 and never overwritten; certificates are public (0644).

    python -m node tls init-ca --out DIR
    python -m node tls issue --ca DIR --role node --region 440100 --name gz --host 127.0.0.1 --out DIR

A ``node`` certificate is both the node's server certificate and its client certificate
towards its upstreams, so it gets both extended key usages.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CALLER_ROLES = ("terminal", "operator", "node")
ROLE_URN = "urn:blacklist:role:"
REGION_URN = "urn:blacklist:region:"
CA_CERT = "ca.crt"
CA_KEY = "ca.key"
CA_DAYS = 3650
LEAF_DAYS = 397  # the CA/Browser Forum ceiling for a leaf; plenty for a node certificate


class TlsError(ValueError):
    """A certificate or key that cannot be made, read or used; the message names the file."""


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Identity:
    """Who a verified peer certificate says the caller is."""

    role: str
    region: str

    def covers(self, card_id: str) -> bool:
        """Whether a card lies within this identity's region: a code's trailing ``00`` pairs
        are wildcards (440100 → cards 4401…, 440000 → 44…, 000000 → every card)."""
        prefix = self.region
        while prefix.endswith("00"):
            prefix = prefix[:-2]
        return card_id[:6].startswith(prefix)


def _write_private(path: Path, data: bytes) -> None:
    # O_EXCL: never overwrite a key; the mode is set at creation, so there is no window in
    # which another user could read it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_public(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _check_region(region: str) -> None:
    if len(region) != 6 or not region.isdigit():
        raise TlsError(f"region must be a 6-digit code, got {region!r}")


def init_ca(out: str | os.PathLike[str], name: str = "blacklist local CA") -> CertFiles:
    """Write ``ca.crt`` and ``ca.key`` (0600) in ``out``; refuses to overwrite either."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    files = CertFiles(d / CA_CERT, d / CA_KEY)
    for p in (files.cert, files.key):
        if p.exists():
            raise FileExistsError(0, "exists", str(p))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(files.key, _key_pem(key))
    _write_public(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    return files


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, Any]:
    try:
        cert = x509.load_pem_x509_certificate((ca_dir / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise TlsError(f"cannot read the CA in {ca_dir}: {exc}") from None
    return cert, key


def issue(
    ca_dir: str | os.PathLike[str],
    *,
    role: str,
    region: str,
    name: str,
    out: str | os.PathLike[str],
    hosts: tuple[str, ...] = (),
) -> CertFiles:
    """Write ``NAME.crt`` and ``NAME.key`` (0600) in ``out``, signed by the CA in ``ca_dir``.
    ``hosts`` (IP addresses or DNS names) make it usable as a server certificate."""
    if role not in CALLER_ROLES:
        raise TlsError(f"role must be one of {', '.join(CALLER_ROLES)}, got {role!r}")
    _check_region(region)
    if not name or "/" in name or name.startswith("."):
        raise TlsError(f"name must be a plain file name, got {name!r}")
    ca_cert, ca_key = _load_ca(Path(ca_dir))
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    files = CertFiles(d / f"{name}.crt", d / f"{name}.key")
    for p in (files.cert, files.key):
        if p.exists():
            raise FileExistsError(0, "exists", str(p))
    key = ec.generate_private_key(ec.SECP256R1())
    san: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(ROLE_URN + role),
        x509.UniformResourceIdentifier(REGION_URN + region),
    ]
    for host in hosts:
        try:
            san.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            san.append(x509.DNSName(host))
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if role == "node" or hosts:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(files.key, _key_pem(key))
    _write_public(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    return files


@functools.lru_cache(maxsize=1024)  # parsed once per peer certificate, not once per call
def identity_from_pem(pem: bytes) -> Identity | None:
    """The role and region a certificate carries; None if it carries no (valid) role."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
        uris = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.UniformResourceIdentifier)
    except (ValueError, x509.ExtensionNotFound):
        return None
    roles = [u.removeprefix(ROLE_URN) for u in uris if u.startswith(ROLE_URN)]
    regions = [u.removeprefix(REGION_URN) for u in uris if u.startswith(REGION_URN)]
    # Exactly one of each: a certificate naming two roles is ambiguous, so it has none.
    if len(roles) != 1 or len(regions) != 1 or roles[0] not in CALLER_ROLES:
        return None
    region = regions[0]
    if len(region) != 6 or not region.isdigit():
        return None
    return Identity(roles[0], region)


def identity_of(auth_context: dict[str, list[bytes]]) -> Identity | None:
    """The caller's identity from ``context.auth_context()`` of a TLS call. gRPC puts the peer's
    certificate there only after verifying it against the CA (``x509_pem_cert``); a call
    without a client certificate has no such key."""
    pems = auth_context.get("x509_pem_cert") or []
    return identity_from_pem(pems[0]) if pems else None


def load_private_key(pem: bytes) -> Any:
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise TlsError(f"not an unencrypted PEM private key: {exc}") from None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsError(f"cannot read the {what} {path}: {exc.strerror}") from None


def server_credentials(ca: Path, cert: Path, key: Path) -> Any:
    """Server credentials that require a client certificate signed by ``ca``.

    grpcio's ``require_client_auth=False`` does not *request* a client certificate at all
    (GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE: ``auth_context()`` then holds no peer
    certificate even when the client has one), and Python has no "request, verify if sent"
    mode. So the handshake itself refuses a client without a certificate, or with one from
    another CA: the client sees UNAVAILABLE and the call never reaches the Meter. A verified
    certificate without a role reaches it and is answered UNAUTHENTICATED.
    """
    import grpc

    return grpc.ssl_server_credentials(
        [(_read(key, "TLS key"), _read(cert, "TLS certificate"))],
        root_certificates=_read(ca, "TLS CA certificate"),
        require_client_auth=True,
    )


def channel_credentials(ca: Path, cert: Path, key: Path) -> Any:
    """Client credentials: trust ``ca`` for the server, present ``cert`` as the client."""
    import grpc

    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca, "TLS CA certificate"),
        private_key=_read(key, "TLS key"),
        certificate_chain=_read(cert, "TLS certificate"),
    )


# ---------------------------------------------------------------------------- command line
def _init_ca_command(args: argparse.Namespace) -> int:
    try:
        files = init_ca(args.out)
    except FileExistsError as exc:
        print(f"error: {exc.filename} exists; refusing to overwrite a CA", file=sys.stderr)
        return 2
    print(f"wrote {files.cert} and {files.key} (private, mode 0600)")
    return 0


def _issue_command(args: argparse.Namespace) -> int:
    try:
        files = issue(
            args.ca,
            role=args.role,
            region=args.region,
            name=args.name,
            out=args.out,
            hosts=tuple(args.host or ()),
        )
    except FileExistsError as exc:
        print(f"error: {exc.filename} exists; refusing to overwrite", file=sys.stderr)
        return 2
    except TlsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {files.cert} ({args.role} of {args.region}) and {files.key} (mode 0600)")
    return 0


def add_commands(sub: Any) -> None:
    """``tls init-ca`` and ``tls issue`` under ``python -m node``."""
    tls = sub.add_parser("tls", help="a local CA and certificates for mutual TLS")
    tls_sub = tls.add_subparsers(dest="tls_command", required=True)
    init = tls_sub.add_parser("init-ca", help="write ca.crt and ca.key")
    init.add_argument("--out", required=True, type=Path, help="directory for the CA files")
    init.set_defaults(fn=_init_ca_command)
    leaf = tls_sub.add_parser("issue", help="write NAME.crt and NAME.key signed by the CA")
    leaf.add_argument("--ca", required=True, type=Path, help="the directory init-ca wrote")
    leaf.add_argument("--role", required=True, choices=CALLER_ROLES)
    leaf.add_argument("--region", required=True, help="6-digit code, e.g. 440100")
    leaf.add_argument("--name", required=True, help="file name stem (and common name)")
    leaf.add_argument("--out", required=True, type=Path, help="directory for the files")
    leaf.add_argument(
        "--host", action="append", help="IP or DNS name to serve as (repeatable; server certs)"
    )
    leaf.set_defaults(fn=_issue_command)
