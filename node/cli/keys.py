"""``python -m node keys init-root | generate | certify | revoke``: the ministry's and
provinces' offline key chores for the certified hierarchy (DESIGN §6).

::

    python -m node keys init-root --suite sm2-sm3 --out keys/     # root.key (0600), root.pub
    python -m node keys generate --suite sm2-sm3 --publisher 440000 --prefix 44 --out keys/
    python -m node keys certify --issuer keys/root.key --subject 440000.pub --scope 44 \\
        --days 730 --out 440000.crt
    python -m node keys certify --issuer 440000.key --issuer-cert 440000.crt \\
        --subject 440100.pub --scope 4401 --days 365 --out 440100.crt
    python -m node keys revoke --issuer 440000.key --key 440100.pub --as-of now \\
        --reason superseded --out 440100-1.rev

Every output is created exclusively (an existing file is never overwritten) and private keys
are mode 0600. ``certify`` refuses a scope its issuer could not grant — outside the
``--issuer-cert`` prefixes, or outside the national scope for the root — because a verifier
would refuse the certificate anyway (:func:`blacklist.trust.verify_chain`) and it is better
to learn that at the desk than in the field. Exit status 2 and one ``error:`` line on any
refusal.

``--suite`` (``init-root``, ``generate``) picks the signing suite, ``ed25519`` (the default)
or ``sm2-sm3`` (SM2 with SM3, issue #14); on ``certify`` it insists on the subject's.
``--distid`` gives an SM2 key another distinguishing identifier than the standard
``1234567812345678`` (a pinned root or a plain trusted key only: ``certify`` refuses to
certify such a key, since a certificate names none).
Every key file names its suite, and an issuer of any suite may certify a subject of any
suite: that is how a hierarchy moves from Ed25519 to SM2 by ordinary rotations.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from blacklist.certs import (
    RevocationReason,
    canonical_prefixes,
    issue_certificate,
    issue_revocation,
)
from blacklist.isotime import TimeTextError, iso8601, parse_time
from blacklist.regions import MINISTRY_CODE
from blacklist.signing import SUITES_BY_NAME, KeyFormatError, SigningKey, suite
from blacklist.trust import ScopeViolation, check_delegation
from blacklist.x509certs import self_signed_root, to_pem
from node.cli import trust
from node.keyfiles import (
    KeyFileError,
    load_certificate,
    load_signing_key,
    load_trusted_key,
    write_key_pair,
    write_new_file,
)

DAY = 86_400
# Serials only need to be distinct per issuer; a random 63-bit one needs no counter file.
_SERIAL_BITS = 63


class KeyCommandError(Exception):
    """A refusal, reported as ``error: <message>`` with exit status 2."""


def _serial(args: argparse.Namespace) -> int:
    # X.509 serials are positive (RFC 5280 §4.1.2.2).
    return int(args.serial) if args.serial is not None else 1 + secrets.randbits(_SERIAL_BITS)


def _write(path: Path, data: bytes) -> Path:
    try:
        return write_new_file(path, data)
    except FileExistsError:
        raise KeyCommandError(f"{path} exists; refusing to overwrite it") from None
    except OSError as exc:
        raise KeyCommandError(f"{path}: {exc}") from None


def _new_key(args: argparse.Namespace, publisher: str, prefixes: list[str]) -> SigningKey:
    distid = None if args.distid is None else args.distid.encode("utf-8")
    try:
        return SigningKey.generate(publisher, prefixes, args.suite, distid)
    except KeyFormatError as exc:
        raise KeyCommandError(str(exc)) from None


def _write_pair(key: SigningKey, out: Path, stem: str | None = None) -> str:
    try:
        private, public = write_key_pair(key, out, stem=stem)
    except FileExistsError as exc:
        raise KeyCommandError(f"{exc.filename} exists; refusing to overwrite a key") from None
    return (
        f"wrote {private} (private, mode 0600) and {public}; suite {key.suite_name}, "
        f"key id {key.key_id.hex()}"
    )


def _init_root(args: argparse.Namespace) -> str:
    return _write_pair(_new_key(args, MINISTRY_CODE, []), args.out, stem="root")


def _generate(args: argparse.Namespace) -> str:
    return _write_pair(_new_key(args, args.publisher, args.prefix), args.out)


def _root_cert(args: argparse.Namespace) -> str:
    root = load_signing_key(args.issuer)
    if args.days < 1:
        raise KeyCommandError(f"--days must be at least 1, got {args.days}")
    now = int(time.time())
    try:
        cert = self_signed_root(root, now, now + args.days * DAY)
    except ValueError as exc:
        raise KeyCommandError(str(exc)) from None
    out = _write(args.out, to_pem(cert))
    return f"wrote {out}: self-signed root {root.key_id.hex()}, valid {iso8601(cert.not_after)}"


def _certify(args: argparse.Namespace) -> str:
    issuer = load_signing_key(args.issuer)
    subject = load_trusted_key(args.subject)
    named = suite(subject.suite_id).name
    if args.suite is not None and named != args.suite:
        # A migration certifies new SM2 keys beside old Ed25519 ones: the wrong file is
        # better refused at the desk than certified.
        raise KeyCommandError(
            f"refusing to certify {args.subject}: its key is {named}, not {args.suite}"
        )
    if args.days < 1:
        raise KeyCommandError(f"--days must be at least 1, got {args.days}")
    not_before = int(time.time())
    try:
        scope = canonical_prefixes(args.scope)
        cert = issue_certificate(
            issuer, subject, scope, not_before, not_before + args.days * DAY, _serial(args)
        )
    except ValueError as exc:  # CertificateFormatError: a scope, a subject's distid
        raise KeyCommandError(f"refusing to certify {args.subject}: {exc}") from None
    issuer_scope: tuple[str, ...] | None
    if args.issuer_cert is not None:
        issuer_cert = load_certificate(args.issuer_cert)
        if issuer_cert.key_id != issuer.key_id:
            raise KeyCommandError(
                f"{args.issuer_cert} certifies key {issuer_cert.key_id.hex()}, not the "
                f"issuer's key {issuer.key_id.hex()} ({args.issuer})"
            )
        issuer_scope = issuer_cert.prefixes
    elif issuer.publisher == MINISTRY_CODE:
        issuer_scope = None  # the root: national scope
    else:
        issuer_scope = ()  # unknown: not checked
    if issuer_scope != ():
        try:
            check_delegation(cert, issuer.publisher, issuer_scope)
        except ScopeViolation as exc:
            raise KeyCommandError(f"refusing to certify: {exc}") from None
    out = _write(args.out, cert.to_bytes())
    note = "" if issuer_scope != () else " (scope not checked: no --issuer-cert)"
    return (
        f"wrote {out}: key {cert.key_id.hex()} ({suite(cert.suite_id).name}) for "
        f"{cert.publisher}, prefixes {list(cert.prefixes)}, valid "
        f"{iso8601(cert.not_before)}..{iso8601(cert.not_after)}, signed by "
        f"{issuer.key_id.hex()} ({issuer.suite_name}){note}"
    )


def _as_of(text: str) -> int:
    if text == "now":
        return int(time.time())
    try:
        return parse_time(text)
    except TimeTextError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, or 'now'") from None


def _revoke(args: argparse.Namespace) -> str:
    issuer = load_signing_key(args.issuer)
    certificate_serial = 0  # --key: no certificate named, the CRL entry names the key alone
    if args.cert is not None:
        named = load_certificate(args.cert)
        revoked: Any = named.trusted()
        certificate_serial = named.serial
    else:
        revoked = load_trusted_key(args.key)
    if args.last_digest is not None and args.last_version is None:
        raise KeyCommandError(
            "--last-digest needs --last-version (the version it is the digest of)"
        )
    rev = issue_revocation(
        issuer,
        revoked.key_id,
        args.as_of,
        RevocationReason[args.reason.upper()],
        _serial(args),
        last_version=args.last_version,
        last_digest=args.last_digest,
        certificate_serial=certificate_serial,
    )
    out = _write(args.out, rev.to_bytes())
    bound = (
        ""
        if rev.last_version is None
        else f", nothing past feed version {rev.last_version} accepted"
    )
    return (
        f"wrote {out}: {rev.label}, effective at {iso8601(rev.effective_at)} ({args.reason}){bound}"
    )


def _version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a feed version") from None
    if not 0 <= value < 2**64:
        raise argparse.ArgumentTypeError(f"feed version {value} is not in 0..2^64-1")
    return value


def _digest(text: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not hexadecimal") from None
    if len(value) != 32:
        raise argparse.ArgumentTypeError(f"a head digest is 32 bytes, got {len(value)}")
    return value


def _run(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            print(fn(args))
        except (KeyCommandError, KeyFileError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0

    return run


def _suite_options(parser: Any) -> None:
    parser.add_argument(
        "--suite",
        choices=sorted(SUITES_BY_NAME),
        default="ed25519",
        help="signing suite of the new key (default ed25519; sm2-sm3: SM2 over SM3)",
    )
    parser.add_argument(
        "--distid",
        help="sm2-sm3 only: the key's distinguishing id (default 1234567812345678)",
    )


def add_command(sub: Any) -> None:
    """``keys``: every subcommand in one place, those made here and ``publish``, which
    sends what they made to a node (node/cli/trust.py)."""
    keys = sub.add_parser("keys", help="signing keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    register(keys_sub)
    trust.register_publish(keys_sub)


def register(keys_sub: Any) -> None:
    """Add ``init-root``, ``generate``, ``certify`` and ``revoke`` to the ``keys`` subcommand
    parsers."""
    init = keys_sub.add_parser("init-root", help="write the ministry root key root.key/root.pub")
    init.add_argument("--out", required=True, type=Path, help="directory for the key files")
    _suite_options(init)
    init.set_defaults(fn=_run(_init_root))

    root_cert = keys_sub.add_parser(
        "root-cert", help="the root key's self-signed X.509 certificate, for CA tools"
    )
    root_cert.add_argument("--issuer", required=True, type=Path, help="the root.key file")
    root_cert.add_argument("--days", required=True, type=int, help="validity from now, in days")
    root_cert.add_argument("--out", required=True, type=Path, help="the .crt (PEM) to create")
    root_cert.set_defaults(fn=_run(_root_cert))

    gen = keys_sub.add_parser("generate", help="write <publisher>.key and <publisher>.pub")
    gen.add_argument("--publisher", required=True, help="6-digit code, e.g. 440100")
    gen.add_argument("--prefix", action="append", required=True, help="region prefix, e.g. 4401")
    gen.add_argument("--out", required=True, type=Path, help="directory for the key files")
    _suite_options(gen)
    gen.set_defaults(fn=_run(_generate))

    cert = keys_sub.add_parser("certify", help="certify a public key for region prefixes")
    cert.add_argument("--issuer", required=True, type=Path, help="the certifier's .key file")
    cert.add_argument(
        "--issuer-cert", type=Path, help="the certifier's own .crt (refuses a wider scope)"
    )
    cert.add_argument("--subject", required=True, type=Path, help="the subject's .pub file")
    cert.add_argument(
        "--suite",
        choices=sorted(SUITES_BY_NAME),
        help="refuse unless the subject's key is of this suite (its file names it)",
    )
    cert.add_argument(
        "--scope", action="append", required=True, help="region prefix granted, e.g. 4401"
    )
    cert.add_argument("--days", required=True, type=int, help="validity from now, in days")
    cert.add_argument("--serial", type=int, help="certificate serial (default: random)")
    cert.add_argument("--out", required=True, type=Path, help="the .crt file to create")
    cert.set_defaults(fn=_run(_certify))

    rev = keys_sub.add_parser("revoke", help="revoke a key this issuer certified, as of a time")
    rev.add_argument("--issuer", required=True, type=Path, help="the certifier's .key file")
    which = rev.add_mutually_exclusive_group(required=True)
    which.add_argument("--key", type=Path, help="the revoked key's .pub file")
    which.add_argument(
        "--cert", type=Path, help="the revoked key's .crt (the CRL entry names its serial)"
    )
    rev.add_argument(
        "--as-of",
        required=True,
        type=_as_of,
        help="when the key is void from: ISO 8601 with an offset, unix seconds, or 'now'",
    )
    rev.add_argument("--reason", required=True, choices=[r.name.lower() for r in RevocationReason])
    rev.add_argument(
        "--last-version",
        type=_version,
        help="the last version of the key's feed it may stand behind (its head now): nothing "
        "it signs past it is accepted, whatever date it carries",
    )
    rev.add_argument(
        "--last-digest", type=_digest, help="that version's head digest (64 hex digits)"
    )
    rev.add_argument("--serial", type=int, help="revocation serial (default: random)")
    rev.add_argument("--out", required=True, type=Path, help="the .rev file to create")
    rev.set_defaults(fn=_run(_revoke))
