"""The PKI of a local federation (its keys, certificates, key revocations and TLS files), made
as a real deployment's operators would make it (DESIGN.md §6, issue #5): every file is the
one ``python -m node keys ...`` or ``python -m node tls ...`` writes.

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

Each step calls what its command calls (the library's key and certificate functions,
node/keyfiles.py, node/tls.py, Admin.PublishTrust), in this process: some thirty commands as
subprocesses would cost over ten seconds of interpreter start-ups on a small machine.
:attr:`FederationTrust.commands` keeps, for each step, the command line an operator would
type for it, so a demo can print what was done as a deployment would do it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from blacklist.certs import RevocationReason, issue_certificate, issue_revocation
from blacklist.regions import MINISTRY_CODE
from blacklist.signing import SigningKey
from node.gen.blacklist.v1 import admin_pb2, admin_pb2_grpc
from node.keyfiles import load_signing_key, load_trusted_key, write_key_pair, write_new_file
from node.local.process import KeyPair, generate_keys
from node.tls import CertFiles, channel_credentials, init_ca, issue

# Directories of the trust files, under the federation's root (node/local/up.py clears them).
TRUST_DIRS = ("keys", "certs", "revs", "tls")
MINISTRY = MINISTRY_CODE
CERT_DAYS = {"province": 730, "city": 365}
DAY = 86_400
SERIAL_BITS = 63  # as the keys commands: distinct per issuer without a counter file
PUBLISH_TIMEOUT = 10.0
HOSTS = ("127.0.0.1", "localhost")

# region, role, parent, signing prefix (None: publishes nothing); as node/local/federation.py
Topology = Sequence[tuple[str, str, str | None, str | None]]


class TrustSetupError(RuntimeError):
    """A trust step failed; the message quotes its command line and the error."""


def scope_of(region: str) -> str:
    """The prefix a region's certificate grants: its code without trailing ``00`` pairs
    (440000 → 44, a province's cities included; 440100 → 4401)."""
    prefix = region
    while prefix.endswith("00"):
        prefix = prefix[:-2]
    return prefix


@dataclass(frozen=True)
class Command:
    """One step, as the command line that does it (``args``), and what it did."""

    args: tuple[str, ...]
    output: str

    def text(self, root: Path | None = None) -> str:
        """The command line, with paths relative to ``root`` (the federation's directory)."""
        prefix = f"{root}/" if root is not None else None
        shown = [a.removeprefix(prefix) if prefix else a for a in self.args]
        return "python -m node " + " ".join(shown)


@dataclass
class FederationTrust:
    """Every trust file of a federation, by what it is for."""

    root: Path
    anchor: Path  # keys/root.pub: every config's trust_anchor
    root_key: Path  # keys/root.key: the ministry keeps it offline
    ca: Path  # tls/ca/ca.crt: every config's tls_ca
    also_anchor: Path | None = None  # a second pinned root while the root moves (issue #14)
    suite: str = "ed25519"  # the signing suite of every key it generates (issue #14)
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

    def _record(self, output: str, *args: str | Path) -> Command:
        command = Command(tuple(str(a) for a in args), output)
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

    def _issuer_key(self, publisher: str) -> tuple[SigningKey, list[str | Path]]:
        """The key that certifies ``publisher``'s, and the options naming it in a command."""
        issuer = self.issuers[publisher]
        if issuer == MINISTRY:
            return load_signing_key(self.root_key), ["--issuer", self.root_key]
        private = self.keys[issuer].private
        return load_signing_key(private), ["--issuer", private, "--issuer-cert", self.certs[issuer]]

    def _certify(self, publisher: str, subject: Path, out: Path) -> None:
        issuer, by = self._issuer_key(publisher)
        scope, days = self.scopes[publisher], self.days[publisher]
        now = int(time.time())
        cert = issue_certificate(
            issuer, load_trusted_key(subject), [scope], now, now + days * DAY,
            secrets.randbits(SERIAL_BITS),
        )  # fmt: skip
        write_new_file(out, cert.to_bytes())
        self._record(f"wrote {out}", "keys", "certify", *by, "--subject", subject,
                     "--scope", scope, "--days", str(days), "--out", out)  # fmt: skip

    def _generate(self, publisher: str, out: Path) -> KeyPair:
        pair = generate_keys(publisher, [self.prefixes[publisher]], out, self.suite)
        self._record(f"wrote {pair.private} and {pair.public}", "keys", "generate",
                     "--publisher", publisher, "--prefix", self.prefixes[publisher],
                     "--suite", self.suite, "--out", out)  # fmt: skip
        return pair

    def _issue(self, role: str, region: str, hosts: Sequence[str] = ()) -> None:
        name = f"{role}-{region}"
        files = issue(self.ca.parent, role=role, region=region, name=name,
                      out=self.root / "tls", hosts=tuple(hosts))  # fmt: skip
        host_args = [a for h in hosts for a in ("--host", h)]
        self._record(f"wrote {files.cert}", "tls", "issue", "--ca", self.ca.parent, "--role",
                     role, "--region", region, "--name", name, *host_args,
                     "--out", self.root / "tls")  # fmt: skip
        self.tls[name] = files

    def rotate(
        self, publisher: str, reason: str = "compromised", last_version: int | None = None
    ) -> list[Command]:
        """Key rotation (issue #5): the certifier revokes ``publisher``'s key as of now
        (``keys revoke``; with ``last_version``, the head the old key stood behind: nothing it
        signs past that version is accepted, issue #11), and certifies a new key for the same
        publisher and scope. The
        caller rewrites the configs: the revocation goes into every ``key_revocations``,
        the new chain joins the old one, and the publisher's node signs with the new key."""
        old = self.keys[publisher]
        first = len(self.commands)
        n = 1 + sum(1 for r in self.revocations if r.name.startswith(f"{publisher}-"))
        revs = self.root / "revs"
        revs.mkdir(exist_ok=True)
        rev = revs / f"{publisher}-{n}.rev"
        issuer_key, by = self._issuer_key(publisher)
        revocation = issue_revocation(
            issuer_key, load_trusted_key(old.public).key_id, int(time.time()),
            RevocationReason[reason.upper()], secrets.randbits(SERIAL_BITS),
            last_version=last_version,
        )  # fmt: skip
        write_new_file(rev, revocation.to_bytes())
        bound = [] if last_version is None else ["--last-version", str(last_version)]
        self._record(f"wrote {rev}: {revocation.label}", "keys", "revoke", *by[:2], "--key",
                     old.public, "--as-of", "now", "--reason", reason, *bound, "--out", rev)  # fmt: skip
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
        credentials = channel_credentials(self.ca, operator.cert, operator.key)
        with grpc.secure_channel(address, credentials) as channel:
            admin = admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
            request = admin_pb2.PublishTrustRequest(records=[f.read_bytes() for f in files])
            answer = admin.PublishTrust(request, timeout=PUBLISH_TIMEOUT)
        output = f"published {answer.added} record(s) in feed {answer.publisher} version {answer.version}"
        return self._record(output, "keys", "publish", "--node", address, "--ca", self.ca,
                            "--cert", operator.cert, "--key", operator.key, *files)  # fmt: skip


def make_trust(root: Path, topology: Topology, suite: str = "ed25519") -> FederationTrust:
    """Keys (every one in signing suite ``suite``), certificates and TLS files for every node
    of ``topology`` under ``root``."""
    keys_dir, certs_dir = root / "keys", root / "certs"
    certs_dir.mkdir(parents=True, exist_ok=True)
    trust = FederationTrust(
        root,
        keys_dir / "root.pub",
        keys_dir / "root.key",
        root / "tls" / "ca" / "ca.crt",
        suite=suite,
    )
    root_key = SigningKey.generate(MINISTRY, [], suite)
    private, public = write_key_pair(root_key, keys_dir, stem="root")
    trust._record(f"wrote {private} and {public}", "keys", "init-root", "--suite", suite,
                  "--out", keys_dir)  # fmt: skip
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
    ca = init_ca(trust.ca.parent)
    trust._record(f"wrote {ca.cert} and {ca.key}", "tls", "init-ca", "--out", trust.ca.parent)
    for region, *_ in topology:
        trust._issue("node", region, HOSTS)
    for region, *_ in topology:
        trust._issue("operator", region)
    for region, role, *_ in topology:
        if role == "city":
            trust._issue("terminal", region)
    return trust
