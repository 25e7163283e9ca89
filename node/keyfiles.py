"""Key files: a node's private signing key and the public keys it trusts.

Both are small TOML files so an operator can read them::

    # 440100.key (mode 0600)                # 440100.pub
    suite = "sm2-sm3"                        suite = "sm2-sm3"
    publisher = "440100"                     publisher = "440100"
    prefixes = ["4401"]                      prefixes = ["4401"]
    distid = "1234567812345678"              distid = "1234567812345678"
    private = "<base64 raw key>"             public = "<base64 raw key>"

``suite`` names the signing suite (:mod:`blacklist.signing`: ``ed25519`` or ``sm2-sm3``); a
file naming one this node does not know is refused, naming it. ``distid`` (SM2 only,
optional) is the key's distinguishing identifier as UTF-8 text, the standard default when
absent; an Ed25519 file that names one is refused.

The ministry root key pair is ``root.key``/``root.pub`` (publisher 000000, no prefixes: its
national scope is implied). Certificates (``.crt``) and key revocations (``.rev``) are the raw
bytes of :mod:`blacklist.certs`, written by ``python -m node keys certify`` / ``keys revoke``.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import tomli_w

from blacklist.certs import Certificate, KeyRevocation, decode_certificate, decode_revocation
from blacklist.errors import CodecError
from blacklist.signing import (
    SUITES_BY_NAME,
    KeyFormatError,
    SigningKey,
    TrustedKey,
    suite,
)
from blacklist.sm2 import DEFAULT_DISTID
from blacklist.trust import TrustAnchor
from blacklist.x509certs import from_pem


class KeyFileError(ValueError):
    """A key file is missing, unreadable or malformed; the message names the file and field."""


def _read(path: Path, private: bool = False) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            if private:
                _refuse_shared(path, os.fstat(f.fileno()).st_mode)
            return tomllib.load(f)
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise KeyFileError(f"{path}: {exc}") from None


def _refuse_shared(path: Path, mode: int) -> None:
    """A private key that group or others may read is refused, as ssh refuses an identity
    file ("UNPROTECTED PRIVATE KEY FILE"): anyone who read it may sign as this authority."""
    if mode & 0o077:
        raise KeyFileError(
            f"{path}: private key file has mode {stat.S_IMODE(mode):04o}, readable or "
            f"writable by group or others; it must be 0600 (chmod 600 {path})"
        )


def _field(data: dict[str, Any], path: Path, name: str, kind: type) -> Any:
    value = data.get(name)
    if not isinstance(value, kind):
        raise KeyFileError(f"{path}: field {name!r} must be a {kind.__name__}, got {value!r}")
    return value


def _common(data: dict[str, Any], path: Path) -> tuple[int, str, tuple[str, ...]]:
    suite_name = _field(data, path, "suite", str)
    if suite_name not in SUITES_BY_NAME:
        raise KeyFileError(
            f"{path}: unknown signing suite {suite_name!r}; this node knows "
            f"{', '.join(sorted(SUITES_BY_NAME))}"
        )
    publisher = _field(data, path, "publisher", str)
    if len(publisher) != 6 or not publisher.isdigit():
        raise KeyFileError(f"{path}: publisher {publisher!r} is not a 6-digit code")
    prefixes = _field(data, path, "prefixes", list)
    if not all(isinstance(p, str) and p.isdigit() and len(p) <= 6 for p in prefixes):
        raise KeyFileError(f"{path}: prefixes {prefixes!r} must be strings of 1-6 digits")
    return SUITES_BY_NAME[suite_name].suite_id, publisher, tuple(prefixes)


def _b64(data: dict[str, Any], path: Path, name: str) -> bytes:
    try:
        return base64.b64decode(_field(data, path, name, str), validate=True)
    except binascii.Error:
        raise KeyFileError(f"{path}: field {name!r} is not base64") from None


def _distid(data: dict[str, Any], path: Path) -> bytes | None:
    if "distid" not in data:
        return None
    return str(_field(data, path, "distid", str)).encode("utf-8")


def load_signing_key(path: str | os.PathLike[str]) -> SigningKey:
    p = Path(path)
    data = _read(p, private=True)
    suite_id, publisher, prefixes = _common(data, p)
    try:
        key = SigningKey(suite_id, _b64(data, p, "private"), publisher, prefixes, _distid(data, p))
        key.public  # noqa: B018 - validates the private key bytes
    except ValueError as exc:
        raise KeyFileError(f"{p}: {exc}") from None
    return key


def load_trusted_key(path: str | os.PathLike[str]) -> TrustedKey:
    p = Path(path)
    data = _read(p)
    suite_id, publisher, prefixes = _common(data, p)
    public = _b64(data, p, "public")
    try:
        suite(suite_id).check_public(public)
        return TrustedKey(suite_id, public, publisher, prefixes, distid=_distid(data, p))
    except KeyFormatError as exc:
        raise KeyFileError(f"{p}: {exc}") from None


def load_trusted_keys(paths: Iterable[str | os.PathLike[str]]) -> list[TrustedKey]:
    return [load_trusted_key(p) for p in paths]


def write_key_pair(
    key: SigningKey, directory: str | os.PathLike[str], stem: str | None = None
) -> tuple[Path, Path]:
    """Write ``<stem>.key`` (0600, created exclusively) and ``<stem>.pub``; the stem defaults
    to the publisher code."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    name = suite(key.suite_id).name
    stem = key.publisher if stem is None else stem
    private = d / f"{stem}.key"
    public = d / f"{stem}.pub"
    common: dict[str, str | list[str]] = {
        "suite": name,
        "publisher": key.publisher,
        "prefixes": list(key.prefixes),
    }
    if name == "sm2-sm3":  # the file names the id it signs with, the default included
        common["distid"] = (key.distid or DEFAULT_DISTID).decode("utf-8")
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(tomli_w.dumps({**common, "private": base64.b64encode(key.private).decode()}))
    public.write_text(tomli_w.dumps({**common, "public": base64.b64encode(key.public).decode()}))
    return private, public


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such {what} file") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: {exc}") from None


def load_certificate(path: str | os.PathLike[str]) -> Certificate:
    """One certificate: X.509 (DER or PEM) or the old binary layout (not verified here: see
    :func:`blacklist.trust.verify_chain`)."""
    p = Path(path)
    try:
        return decode_certificate(from_pem(_read_bytes(p, "certificate")))
    except CodecError as exc:
        raise KeyFileError(f"{p}: not a valid certificate: {exc}") from None


def load_revocation(path: str | os.PathLike[str]) -> KeyRevocation:
    """One key revocation's bytes (its signature is checked by whoever relies on it)."""
    p = Path(path)
    try:
        return decode_revocation(from_pem(_read_bytes(p, "key revocation")))
    except CodecError as exc:
        raise KeyFileError(f"{p}: not a valid key revocation: {exc}") from None


def load_trust_anchor(path: str | os.PathLike[str]) -> TrustAnchor:
    """The pinned ministry root from its ``root.pub`` (publisher 000000, DESIGN §6)."""
    p = Path(path)
    key = load_trusted_key(p)
    try:
        return TrustAnchor.of(key)
    except ValueError as exc:
        raise KeyFileError(f"{p}: not a root key: {exc}") from None


def load_certificate_chain(paths: Iterable[str | os.PathLike[str]]) -> list[Certificate]:
    """One chain's certificates, root-most first, as listed (verified by the caller)."""
    return [load_certificate(p) for p in paths]


def write_new_file(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> Path:
    """Create ``path`` exclusively (FileExistsError if it exists) with ``mode``; for public
    objects such as certificates and revocations."""
    p = Path(path)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return p
