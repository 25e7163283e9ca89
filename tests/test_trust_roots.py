"""Two pinned roots while the ministry's root moves (issue #14): chains are judged against
the root that issued them, the empty chain is each root itself, and the bound (at most
MAX_ROOTS, no root twice) holds in the library and in the config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from blacklist.certs import RevocationReason, issue_certificate, issue_revocation
from blacklist.signing import SigningKey
from blacklist.sync.trust_rules import check_trust_records
from blacklist.trust import (
    MAX_ROOTS,
    CertifiedKeys,
    KeyRevoked,
    TooManyRoots,
    TrustAnchor,
    UnknownIssuer,
    certified_keys_from_records,
    chains_from_records,
    keyring_from_chains,
)
from node.config import ConfigError, parse_config
from node.keyfiles import write_key_pair

DAY = 86_400
NOW = 1_800_000_000
START, END = NOW - 30 * DAY, NOW + 365 * DAY


class Move:
    """The old Ed25519 root certifies Guangdong; the new SM2 root certifies Beijing and,
    after the move, Guangdong's new SM2 key."""

    def __init__(self) -> None:
        self.old = SigningKey.generate("000000", [""])
        self.new = SigningKey.generate("000000", [""], "sm2-sm3")
        self.roots = (TrustAnchor.of(self.old), TrustAnchor.of(self.new))
        self.gd = SigningKey.generate("440000", ["4499"])
        self.gd2 = SigningKey.generate("440000", ["4499"], "sm2-sm3")
        self.bj = SigningKey.generate("110000", ["1199"], "sm2-sm3")
        self.gz = SigningKey.generate("440100", ["4401"])
        self.gd_cert = issue_certificate(self.old, self.gd, ["44"], START, END, 1)
        self.bj_cert = issue_certificate(self.new, self.bj, ["11"], START, END, 2)
        self.gd2_cert = issue_certificate(self.new, self.gd2, ["44"], NOW, END, 3)
        self.gz_cert = issue_certificate(self.gd, self.gz, ["4401"], START, END, 4)
        self.gz2_cert = issue_certificate(self.gd2, self.gz, ["4401"], NOW, END, 5)


@pytest.fixture(scope="module")
def m() -> Move:
    return Move()


def test_the_number_of_roots_at_below_and_above_the_bound(m: Move) -> None:
    assert MAX_ROOTS == 2
    third = TrustAnchor.of(SigningKey.generate("000000", [""]))
    with pytest.raises(TooManyRoots, match=r"1\.\.2 root keys, got 0"):
        CertifiedKeys((), [], [], NOW)
    assert len(CertifiedKeys(m.roots[0], [], [], NOW).anchors) == 1
    assert CertifiedKeys(m.roots, [], [], NOW).anchors == m.roots
    with pytest.raises(TooManyRoots, match="got 3"):
        CertifiedKeys((*m.roots, third), [], [], NOW)
    with pytest.raises(TooManyRoots, match="twice"):
        CertifiedKeys((m.roots[0], m.roots[0]), [], [], NOW)


def test_each_chain_is_judged_against_the_root_that_issued_it(m: Move) -> None:
    chains = [[m.gd_cert], [m.bj_cert], [m.gd_cert, m.gz_cert], []]
    keys = CertifiedKeys(m.roots, chains, [], NOW)
    assert {keys[k].publisher for k in keys} == {"000000", "440000", "110000", "440100"}
    # Both roots are themselves trusted (the empty chain names each), in their suites.
    assert {(k.suite_id, k.publisher) for k in keys.values() if k.publisher == "000000"} == {
        (1, "000000"),
        (2, "000000"),
    }
    assert keys.key_at(m.bj.key_id, NOW, now=NOW) is not None
    # With only the old root pinned, Beijing's chain has an unknown issuer.
    ring, errors = keyring_from_chains(chains, m.roots[0], [], NOW)
    assert m.bj.key_id not in ring and any(isinstance(e, UnknownIssuer) for e in errors)


def test_chains_are_built_from_either_root(m: Move) -> None:
    certs = [m.gz2_cert, m.gd2_cert, m.bj_cert, m.gd_cert, m.gz_cert]
    chains = chains_from_records(m.roots, certs)
    assert (m.gd2_cert, m.gz2_cert) in chains and (m.gd_cert, m.gz_cert) in chains
    assert (m.bj_cert,) in chains
    assert (m.bj_cert,) not in chains_from_records(m.roots[0], certs)


def test_a_province_moves_to_the_new_root(m: Move) -> None:
    """The old root revokes Guangdong's old key (superseded, as of the new certificate's
    not_before); the new root's certificate of the new key and the re-certified city hold."""
    rev = issue_revocation(m.old, m.gd.key_id, NOW, RevocationReason.SUPERSEDED, 9)
    records = [c.to_bytes() for c in (m.gd2_cert, m.gz2_cert, m.bj_cert)] + [rev.to_bytes()]
    keys = certified_keys_from_records(m.roots, [[m.gd_cert, m.gz_cert]], records, [], NOW)
    assert keys[m.gd2.key_id].suite_id == 2 and m.gd.key_id not in keys
    assert keys.key_at(m.gz.key_id, NOW, now=NOW) is not None  # through the new province key
    assert keys.key_at(m.gd.key_id, NOW - DAY, now=NOW) is not None  # old deltas still verify
    with pytest.raises(KeyRevoked):
        keys.key_at(m.gd.key_id, NOW + 1, now=NOW + 1)
    # Either root's records belong in the ministry's feed.
    assert {m.gd2_cert.digest, m.bj_cert.digest, rev.digest} <= keys.feed_records("000000")


def test_the_ministry_feed_may_carry_either_roots_records(m: Move) -> None:
    keys = CertifiedKeys(m.roots, [[m.gd_cert], []], [], NOW)
    for root, cert in ((m.roots[0], m.gd_cert), (m.roots[1], m.bj_cert)):
        signer = keys.claimed(root.key_id)
        assert signer is not None and signer.publisher == "000000"
        check_trust_records(signer, "item", [cert.to_bytes()], keys)


# --- the config -----------------------------------------------------------------------------


def _fields(tmp_path: Path, anchor: Any) -> dict[str, Any]:
    return {
        "role": "city",
        "region": "440100",
        "listen": "127.0.0.1:0",
        "metrics_listen": "127.0.0.1:0",
        "data_dir": str(tmp_path / "data"),
        "plaintext": True,
        "trust_anchor": anchor,
    }


def _roots(tmp_path: Path, n: int) -> list[str]:
    out = []
    for i in range(n):
        _, public = write_key_pair(
            SigningKey.generate("000000", [], "sm2-sm3" if i % 2 else "ed25519"),
            tmp_path / "roots",
            stem=f"root{i}",
        )
        out.append(str(public))
    return out


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_the_config_names_one_or_two_roots(tmp_path: Path, n: int) -> None:
    roots = _roots(tmp_path, n)
    if 1 <= n <= MAX_ROOTS:
        config = parse_config(_fields(tmp_path, roots), tmp_path)
        anchors = config.trust_anchors()
        assert [a.suite_id for a in anchors] == [1, 2][:n]
        assert len(config.certified_keys(NOW).anchors) == n
    else:
        with pytest.raises(ConfigError, match=r"a list of 1\.\.2 paths"):
            parse_config(_fields(tmp_path, roots), tmp_path)


def test_the_config_takes_one_root_as_a_string_and_refuses_one_twice(tmp_path: Path) -> None:
    (root,) = _roots(tmp_path, 1)
    assert parse_config(_fields(tmp_path, root), tmp_path).also_trust_anchor_paths == ()
    with pytest.raises(ConfigError, match="twice"):
        parse_config(_fields(tmp_path, [root, root]), tmp_path)
