"""The trust set-up of a local federation, made as a real deployment's operators would make
it (DESIGN.md §6, issue #5): every file is written by ``python -m node keys ...`` or
``python -m node tls ...``.

Certified keys::

    keys init-root                                    the ministry's root (pinned everywhere)
    keys generate --publisher 440000 --prefix 4499    a province signs its own feed's cards
    keys certify --issuer root.key --subject 440000.pub --scope 44      ... and may certify
    keys generate --publisher 440100 --prefix 4401                      its cities' keys
    keys certify --issuer 440000.key --issuer-cert 440000.crt --subject 440100.pub --scope 4401

so every node config pins ``keys/root.pub`` (``trust_anchor``) and lists every publisher's
chain (``certificate_chains``), never a bare public key. Mutual TLS: one CA (``tls init-ca``),
a ``node`` certificate per node (its server certificate and its client certificate towards
its upstream, for 127.0.0.1 and localhost), an ``operator`` certificate per node region
(Admin calls) and a ``terminal`` certificate per city (CardStatus calls).

The commands run in this process through :func:`node.cli.main` (the CLI's own parser and
functions): some thirty of them as subprocesses would cost over ten seconds of interpreter
start-ups on a small machine. :attr:`FederationTrust.commands` keeps each command line, so a
demo can print exactly what it ran.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.local.process import KeyPair
from node.tls import CertFiles

# Directories of the trust files, under the federation's root (node/local/up.py clears them).
TRUST_DIRS = ("keys", "certs", "revs", "tls")
MINISTRY = "000000"
CERT_DAYS = {"province": 730, "city": 365}
HOSTS = ("127.0.0.1", "localhost")

# region, role, parent, signing prefix (None: publishes nothing); as node/local/federation.py
Topology = Sequence[tuple[str, str, str | None, str | None]]


class TrustSetupError(RuntimeError):
    """A ``python -m node keys|tls`` command refused; the message quotes it and its error."""


def scope_of(region: str) -> str:
    """The prefix a region's certificate grants: its code without trailing ``00`` pairs
    (440000 → 44, a province's cities included; 440100 → 4401)."""
    prefix = region
    while prefix.endswith("00"):
        prefix = prefix[:-2]
    return prefix


@dataclass(frozen=True)
class Command:
    """One CLI command that was run, and what it printed."""

    args: tuple[str, ...]
    output: str

    def text(self, root: Path | None = None) -> str:
        """The command line, with paths relative to ``root`` (the federation's directory)."""
        prefix = f"{root}/" if root is not None else None
        shown = [a.removeprefix(prefix) if prefix else a for a in self.args]
        return "python -m node " + " ".join(shown)


def run_cli(args: Sequence[str | Path]) -> Command:
    """Run ``python -m node ARGS`` in this process; :class:`TrustSetupError` unless it exits 0."""
    from node.cli import (
        main as cli,  # the command line imports this module's users, not the reverse
    )

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    # cli.main configures logging for a command-line process; leave this process's as it was.
    root_logger = logging.getLogger()
    handlers, level = list(root_logger.handlers), root_logger.level
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code: Any = cli.main(argv)
    except SystemExit as exc:  # argparse refusing the arguments
        code = exc.code
    finally:
        root_logger.handlers[:] = handlers
        root_logger.setLevel(level)
    command = Command(tuple(argv), out.getvalue().strip())
    if code != 0:
        raise TrustSetupError(
            f"`{command.text()}` exited with code {code}: {err.getvalue().strip()}"
        )
    return command


@dataclass
class FederationTrust:
    """Every trust file of a federation, by what it is for."""

    root: Path
    anchor: Path  # keys/root.pub: every config's trust_anchor
    root_key: Path  # keys/root.key: the ministry keeps it offline
    ca: Path  # tls/ca/ca.crt: every config's tls_ca
    keys: dict[str, KeyPair] = field(default_factory=dict)  # publisher → its signing key
    prefixes: dict[str, str] = field(default_factory=dict)  # publisher → what it signs
    scopes: dict[str, str] = field(default_factory=dict)  # publisher → certified prefix
    issuers: dict[str, str] = field(default_factory=dict)  # publisher → its certifier
    certs: dict[str, Path] = field(default_factory=dict)  # publisher → its certificate
    days: dict[str, int] = field(default_factory=dict)  # publisher → its certificate's validity
    tls: dict[str, CertFiles] = field(default_factory=dict)  # node-/operator-/terminal-REGION
    revocations: list[Path] = field(default_factory=list)  # keys/revoke output, every config
    retired: list[tuple[Path, ...]] = field(default_factory=list)  # chains of revoked keys
    commands: list[Command] = field(default_factory=list)

    def _run(self, *args: str | Path) -> Command:
        command = run_cli(args)
        self.commands.append(command)
        return command

    def chain(self, publisher: str) -> tuple[Path, ...]:
        """``publisher``'s certificate chain, root-most first."""
        chain = [self.certs[publisher]]
        while (issuer := self.issuers[publisher]) != MINISTRY:
            chain.insert(0, self.certs[issuer])
            publisher = issuer
        return tuple(chain)

    def chains(self) -> tuple[tuple[Path, ...], ...]:
        """Every config's ``certificate_chains``: each publisher's current chain, and the
        chains of revoked keys, which still vouch for what those keys signed before their
        revocation (blacklist/trust.py, key rotation)."""
        return (*(self.chain(p) for p in self.certs), *self.retired)

    def node_tls(self, region: str) -> CertFiles:
        return self.tls[f"node-{region}"]

    def client(self, name: str) -> CertFiles:
        """A client certificate by name: ``terminal-R``, ``operator-R`` or ``node-R``."""
        try:
            return self.tls[name]
        except KeyError:
            raise TrustSetupError(
                f"no client certificate {name!r}; there are {', '.join(sorted(self.tls))}"
            ) from None

    # -- making it --------------------------------------------------------------------------

    def _certify(self, publisher: str, subject: Path, out: Path) -> None:
        issuer = self.issuers[publisher]
        if issuer == MINISTRY:
            by: list[str | Path] = ["--issuer", self.root_key]
        else:
            by = ["--issuer", self.keys[issuer].private, "--issuer-cert", self.certs[issuer]]
        self._run("keys", "certify", *by, "--subject", subject,
                  "--scope", self.scopes[publisher], "--days", str(self.days[publisher]), "--out", out)  # fmt: skip

    def _generate(self, publisher: str, out: Path) -> KeyPair:
        self._run("keys", "generate", "--publisher", publisher,
                  "--prefix", self.prefixes[publisher], "--out", out)  # fmt: skip
        return KeyPair(publisher, out / f"{publisher}.key", out / f"{publisher}.pub")

    def _issue(self, role: str, region: str, hosts: Sequence[str] = ()) -> None:
        name = f"{role}-{region}"
        host_args = [a for h in hosts for a in ("--host", h)]
        self._run("tls", "issue", "--ca", self.ca.parent, "--role", role, "--region", region,
                  "--name", name, *host_args, "--out", self.root / "tls")  # fmt: skip
        self.tls[name] = CertFiles(
            self.root / "tls" / f"{name}.crt", self.root / "tls" / f"{name}.key"
        )

    def rotate(
        self, publisher: str, reason: str = "compromised", last_version: int | None = None
    ) -> list[Command]:
        """Key rotation (issue #5): the certifier revokes ``publisher``'s key as of now
        (``keys revoke``; with ``last_version``, the head the old key stood behind: nothing it
        signs past that version is accepted, issue #11), and certifies a new key for the same
        publisher and scope. The
        caller rewrites the configs: the revocation goes into every ``key_revocations``,
        the new chain joins the old one, and the publisher's node signs with the new key."""
        old, issuer = self.keys[publisher], self.issuers[publisher]
        first = len(self.commands)
        n = 1 + sum(1 for r in self.revocations if r.name.startswith(f"{publisher}-"))
        revs = self.root / "revs"
        revs.mkdir(exist_ok=True)
        rev = revs / f"{publisher}-{n}.rev"
        issuer_key = self.root_key if issuer == MINISTRY else self.keys[issuer].private
        bound = [] if last_version is None else ["--last-version", str(last_version)]
        self._run("keys", "revoke", "--issuer", issuer_key, "--key", old.public,
                  "--as-of", "now", "--reason", reason, *bound, "--out", rev)  # fmt: skip
        self.retired.append(self.chain(publisher))
        self.revocations.append(rev)
        self.keys[publisher] = self._generate(
            publisher, self.root / "keys" / f"{publisher}-{n + 1}"
        )
        self.certs[publisher] = self.root / "certs" / f"{publisher}-{n + 1}.crt"
        self._certify(publisher, self.keys[publisher].public, self.certs[publisher])
        return self.commands[first:]

    def publish(self, address: str, issuer: str, files: Sequence[Path]) -> Command:
        """``keys publish``: an operator of ``issuer`` puts certificates and revocations its
        key issued into its feed, at its node ``address``."""
        operator = self.client(f"operator-{issuer}")
        return self._run("keys", "publish", "--node", address, "--ca", self.ca,
                         "--cert", operator.cert, "--key", operator.key, *files)  # fmt: skip


def make_trust(root: Path, topology: Topology) -> FederationTrust:
    """Keys, certificates and TLS files for every node of ``topology`` under ``root``."""
    keys_dir, certs_dir = root / "keys", root / "certs"
    certs_dir.mkdir(parents=True, exist_ok=True)
    trust = FederationTrust(
        root, keys_dir / "root.pub", keys_dir / "root.key", root / "tls" / "ca" / "ca.crt"
    )
    trust._run("keys", "init-root", "--out", keys_dir)
    for region, role, parent, prefix in topology:
        if prefix is None:
            continue
        if parent is None or (parent != MINISTRY and parent not in trust.keys):
            raise TrustSetupError(f"{region} publishes ({prefix}) but has no certifier above it")
        trust.prefixes[region] = prefix
        trust.scopes[region] = scope_of(region)
        trust.issuers[region] = parent
        trust.keys[region] = trust._generate(region, keys_dir)
        trust.certs[region] = certs_dir / f"{region}.crt"
        trust.days[region] = CERT_DAYS.get(role, CERT_DAYS["city"])
        trust._certify(region, trust.keys[region].public, trust.certs[region])
    trust._run("tls", "init-ca", "--out", trust.ca.parent)
    for region, *_ in topology:
        trust._issue("node", region, HOSTS)
    for region, *_ in topology:
        trust._issue("operator", region)
    for region, role, *_ in topology:
        if role == "city":
            trust._issue("terminal", region)
    return trust
