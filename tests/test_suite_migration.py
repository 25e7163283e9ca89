"""A running federation moves from Ed25519 to SM2 with no downtime (issue #14), with real
processes over mutual TLS: six nodes pin the Ed25519 root and the new SM2 root from the
start; every authority rotates through ordinary key rotation, province by province and city
by city, while cards are revoked and reinstated at every city throughout; at the end every
node holds the same heads and answers every card as its city last said. No node restarts
but each rotated authority, once, to sign with its new key.

Each province: the SM2 root certifies its new SM2 key, and the certificate travels in the
province's own feed (signed by its Ed25519 key, which stays valid). Then each of its cities:
the province's new SM2 key certifies the city's new SM2 key (the certificate in the city's
own feed), the province's Ed25519 key (the one that certified the old city key, so the only
one whose revocation counts) revokes the old city key as of now and after the city's head
(superseded, issue #11's bound) in the province's feed, and the city restarts under SM2.
Last the province restarts under SM2. What the old keys signed stays valid and answering.
(The order is Admin.PublishTrust's: an authority publishes only what its current key issued,
or its own certificate.)

Not done here: the old root revoking the provinces' Ed25519 keys. A root's records travel
in the ministry's feed, and the ministry node of this topology publishes nothing (it has no
signing key), so those keys are left to expire with their certificates; the old root is
unpinned by a config change once nothing chains to it.
"""

from __future__ import annotations

import io
import secrets
import time
from pathlib import Path

from blacklist.certs import RevocationReason, issue_certificate, issue_revocation
from blacklist.regions import MINISTRY_CODE
from blacklist.signing import SigningKey
from node.gen.blacklist.v1 import admin_pb2, types_pb2
from node.keyfiles import load_signing_key, load_trusted_key, write_key_pair, write_new_file
from node.local.federation import Federation
from node.local.pki import FederationTrust
from node.local.process import KeyPair, generate_keys
from node.local.session import RPC_TIMEOUT, Session
from node.local.up import wait_linked

DAY = 86_400
ORDER = (("440000", ("440100", "440300")), ("110000", ("110100",)))
CITIES = tuple(c for _, cities in ORDER for c in cities)
CONVERGE_TIMEOUT = 30.0


def _heads(s: Session, region: str) -> dict[str, tuple[int, bytes]]:
    status = s.admin[region].Status(admin_pb2.StatusRequest(), timeout=RPC_TIMEOUT)
    return {f.publisher: (f.version, bytes(f.digest)) for f in status.feeds}


def _wait_feed(s: Session, publisher: str, version: int) -> None:
    deadline = time.monotonic() + CONVERGE_TIMEOUT
    for region in s.federation.nodes:
        while _heads(s, region).get(publisher, (0, b""))[0] < version:
            assert time.monotonic() < deadline, f"{region} never reached {publisher} v{version}"
            time.sleep(0.05)


class Migration:
    def __init__(self, s: Session, trust: FederationTrust, sm2_root: SigningKey) -> None:
        self.s = s
        self.fed = s.federation
        self.trust = trust
        self.sm2_root = sm2_root
        self.expected: dict[str, int] = {}  # card -> REVOKED / NOT_REVOKED, as its city said
        self.restarts: dict[str, int] = {}
        # Every config's certificate_chains: the chains at the start, and each new one. The
        # old ones stay: they vouch for what the old keys signed (and a city's old chain runs
        # through its province's old key until the city moves too).
        self.chains = list(trust.chains())
        trust.chains = lambda: tuple(self.chains)  # type: ignore[method-assign]

    def churn(self) -> None:
        """At every city: revoke a new card, and reinstate one revoked earlier."""
        for city in CITIES:
            revocation = self.s.revocation(city, int(time.time()))
            self.s.revoke(city, [revocation])
            self.expected[revocation.card_id] = types_pb2.REVOKED
            earlier = [
                c
                for c, st in self.expected.items()
                if st == types_pb2.REVOKED and c.startswith(city) and c != revocation.card_id
            ]
            if earlier:
                self.s.admin[city].Reinstate(
                    admin_pb2.ReinstateRequest(card_ids=[earlier[0]]), timeout=RPC_TIMEOUT
                )
                self.expected[earlier[0]] = types_pb2.NOT_REVOKED

    def _certify(self, issuer: SigningKey, subject: KeyPair, publisher: str, name: str) -> Path:
        now = int(time.time())
        cert = issue_certificate(
            issuer, load_trusted_key(subject.public), [self.trust.scopes[publisher]],
            now, now + 365 * DAY, 1 + secrets.randbits(62),
        )  # fmt: skip
        return write_new_file(self.fed.root / "certs" / name, cert.to_bytes())

    def _publish(self, publisher: str, files: list[Path]) -> None:
        self.trust.publish(self.fed.address(publisher), publisher, files)
        _wait_feed(self.s, publisher, _heads(self.s, publisher)[publisher][0])

    def _restart(self, region: str) -> None:
        self.fed.write_configs()
        self.s.close_channels()
        self.fed.restart(region)
        self.s.connect()
        wait_linked(self.fed)
        self.restarts[region] = self.restarts.get(region, 0) + 1

    def _move(self, publisher: str, key: KeyPair, chain: tuple[Path, ...]) -> None:
        """The configs' view after a rotation: the publisher's new key and chain."""
        self.trust.keys[publisher] = key
        self.trust.certs[publisher] = chain[-1]
        self.chains.append(chain)

    def certify_province(self, province: str) -> tuple[KeyPair, Path]:
        """The SM2 root certifies the province's new SM2 key; the certificate travels in the
        province's own feed, signed by its Ed25519 key (a feed may carry its own certificate)."""
        new = generate_keys(province, [self.trust.prefixes[province]],
                            self.fed.root / "keys" / f"{province}-sm2", "sm2-sm3")  # fmt: skip
        cert = self._certify(self.sm2_root, new, province, f"{province}-sm2.crt")
        self._publish(province, [cert])
        return new, cert

    def move_province(self, province: str, new: KeyPair, cert: Path) -> None:
        self._move(province, new, (cert,))
        self._restart(province)
        assert load_signing_key(self.trust.keys[province].private).suite_name == "sm2-sm3"

    def city(self, province: str, new_province: tuple[KeyPair, Path], city: str) -> None:
        """The province's new SM2 key certifies the city's new SM2 key (the certificate in
        the city's own feed); the province's Ed25519 key, which certified the old city key,
        revokes it as of now and after the city's head, in the province's feed; the city
        restarts under SM2."""
        new = generate_keys(city, [self.trust.prefixes[city]],
                            self.fed.root / "keys" / f"{city}-sm2", "sm2-sm3")  # fmt: skip
        cert = self._certify(
            load_signing_key(new_province[0].private), new, city, f"{city}-sm2.crt"
        )
        self._publish(city, [cert])
        head = _heads(self.s, city)[city][0]
        time.sleep(1.1)  # the revocation is as of now: after the city's last delta's issued_at
        old_province_key = load_signing_key(self.trust.keys[province].private)
        rev = issue_revocation(
            old_province_key, load_trusted_key(self.trust.keys[city].public).key_id,
            int(time.time()), RevocationReason.SUPERSEDED, 1 + secrets.randbits(62),
            last_version=head,
        )  # fmt: skip
        (self.fed.root / "revs").mkdir(exist_ok=True)
        rev_path = write_new_file(self.fed.root / "revs" / f"{city}-sm2.rev", rev.to_bytes())
        self._publish(province, [rev_path])
        self.trust.revocations.append(rev_path)
        self._move(city, new, (new_province[1], cert))
        self._restart(city)

    def converged(self) -> None:
        deadline = time.monotonic() + CONVERGE_TIMEOUT
        while True:
            heads = {r: _heads(self.s, r) for r in self.fed.nodes}
            if len({tuple(sorted(h.items())) for h in heads.values()}) == 1:
                break
            assert time.monotonic() < deadline, f"heads differ: {heads}"
            time.sleep(0.1)
        for city in CITIES:
            for card, status in self.expected.items():
                assert self.s.check(city, card).status == status, (city, card, status)


def test_a_federation_moves_every_authority_and_the_root_to_sm2(tmp_path: Path) -> None:
    fed = Federation(tmp_path / "fed", sync_interval=1.0)
    fed.prepare()
    trust = fed.trust
    assert trust is not None
    # The new root is pinned beside the old one from the start (two roots, issue #14).
    sm2_root = SigningKey.generate(MINISTRY_CODE, [], "sm2-sm3")
    _, sm2_pub = write_key_pair(sm2_root, fed.root / "keys" / "sm2-root", stem="root")
    trust.also_anchor = sm2_pub
    fed.write_configs()
    s = Session(io.StringIO())
    s.fed = fed
    try:
        fed.start()
        wait_linked(fed)
        s.connect()
        pids = {region: node.pid for region, node in fed.nodes.items()}
        m = Migration(s, trust, sm2_root)
        m.churn()
        first_cards = dict(m.expected)  # signed by the Ed25519 keys
        for province, cities in ORDER:
            new, cert = m.certify_province(province)
            m.churn()
            for city in cities:
                m.city(province, (new, cert), city)
                m.churn()
            m.move_province(province, new, cert)
            m.churn()
        m.converged()
        # Every authority signs with SM2 now; what the Ed25519 keys signed still answers.
        for publisher, pair in trust.keys.items():
            assert load_signing_key(pair.private).suite_name == "sm2-sm3", publisher
        assert any(st == types_pb2.REVOKED for st in first_cards.values())
        for card, status in first_cards.items():
            if m.expected[card] == status:
                assert s.check("110100", card).status == status
        # No node restarted but each rotated authority, once; the ministry never.
        assert m.restarts == {r: 1 for r in trust.keys}
        assert fed.nodes[MINISTRY_CODE].pid == pids[MINISTRY_CODE]
        for region, node in fed.nodes.items():
            assert (node.pid == pids[region]) is (region not in trust.keys)
        s.close_channels()
        assert set(fed.stop_all().values()) == {0}
    finally:
        s.close()
