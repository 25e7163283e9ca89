"""Time in trust is bounded by what the node knows (issue #11 item 1, the trust half):
revocations that name the last version a key may stand behind, certificates checked at the
node's clock as well as at the item's date, and chain building in bounded work (item 2).

Acceptance refusing a delta or snapshot past ``max_version`` is the acceptance module's
test; here the key as :meth:`CertifiedKeys.key_at` returns it, and the codec."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from blacklist.certs import (
    REVOCATION_BOUNDED_FORMAT,
    CertificateFormatError,
    KeyRevocation,
    RevocationReason,
    decode_revocation,
    decode_trust_record,
    issue_certificate,
    issue_revocation,
)
from blacklist.errors import CodecError
from blacklist.signing import Ed25519Suite, SigningKey
from blacklist.trust import (
    MAX_CHAINS_PER_KEY,
    CertificateExpired,
    CertifiedKeys,
    KeyRevoked,
    TrustAnchor,
    certified_keys_from_records,
    chains_from_records,
    verify_chain,
)

NOW = 1_750_000_000
DAY = 86_400
START, END = NOW - 365 * DAY, NOW + 365 * DAY
T = NOW + 1_000  # Guangzhou's key is void from here on
L = 41  # ... and stands behind nothing past this version of its feed


class Tree:
    """Root → Guangdong (44) → Guangzhou (4401)."""

    def __init__(self) -> None:
        self.root = SigningKey.generate("000000", [])
        self.anchor = TrustAnchor.of(self.root)
        self.gd = SigningKey.generate("440000", ["44"])
        self.gz = SigningKey.generate("440100", ["4401"])
        self.gd_cert = issue_certificate(self.root, self.gd, ["44"], START, END, serial=1)
        self.gz_cert = issue_certificate(self.gd, self.gz, ["4401"], START, END, serial=10)
        self.bounded = issue_revocation(
            self.gd, self.gz.key_id, T, RevocationReason.COMPROMISED, 2, last_version=L
        )
        # The same in the binary layout of issue #11 (records already held keep it).
        self.bounded_binary = issue_revocation(
            self.gd, self.gz.key_id, T, RevocationReason.COMPROMISED, 2, last_version=L,
            form="binary",
        )  # fmt: skip

    def keys(self, *revocations: KeyRevocation, at: int = NOW) -> CertifiedKeys:
        return CertifiedKeys(
            self.anchor, [[self.gd_cert], [self.gd_cert, self.gz_cert]], revocations, at
        )


@pytest.fixture(scope="module")
def t() -> Tree:
    return Tree()


# --- the record -----------------------------------------------------------------------------


def test_an_unbounded_revocation_keeps_the_old_format(t: Tree) -> None:
    """Stores and configs hold format-1 records: their bytes (so digests and signatures)
    must not change, and they still decode, with no version bound."""
    old = issue_revocation(t.gd, t.gz.key_id, T, RevocationReason.SUPERSEDED, 1, form="binary")
    data = old.to_bytes()
    assert data[4] == 1 and len(old.body) == 4 + 1 + 8 + 8 + 8 + 8 + 1
    back = decode_revocation(data)
    assert back == old and back.last_version is None and back.last_digest is None


def test_a_bounded_revocation_round_trips(t: Tree) -> None:
    digest = bytes(range(32))
    for rev in (
        t.bounded_binary,
        issue_revocation(
            t.gd,
            t.gz.key_id,
            T,
            RevocationReason.SUPERSEDED,
            3,
            last_version=0,
            last_digest=digest,
            form="binary",
        ),
        issue_revocation(
            t.gd,
            t.gz.key_id,
            T,
            RevocationReason.RETIRED,
            4,
            last_version=2**64 - 1,
            form="binary",
        ),
    ):
        data = rev.to_bytes()
        assert data[4] == REVOCATION_BOUNDED_FORMAT
        assert decode_trust_record(data) == rev and t.gd.trusted().verify(rev.digest, rev.signature)
    assert decode_revocation(t.bounded_binary.to_bytes()).last_version == L
    assert decode_revocation(t.bounded.to_bytes()).last_version == L


def test_bounded_revocation_fields_are_checked(t: Tree) -> None:
    with pytest.raises(CertificateFormatError, match="last_digest needs last_version"):
        issue_revocation(
            t.gd, t.gz.key_id, T, RevocationReason.SUPERSEDED, 1, last_digest=b"x" * 32
        )
    with pytest.raises(CertificateFormatError, match="last digest"):
        issue_revocation(
            t.gd, t.gz.key_id, T, RevocationReason.SUPERSEDED, 1, last_version=1,
            last_digest=b"x" * 31,
        )  # fmt: skip
    with pytest.raises(CertificateFormatError, match="last_version"):
        issue_revocation(t.gd, t.gz.key_id, T, RevocationReason.SUPERSEDED, 1, last_version=2**64)
    body = bytearray(t.bounded_binary.to_bytes())
    flag = len(t.bounded_binary.body) - 1  # has_digest, 0 here
    body[flag] = 2
    with pytest.raises(CodecError, match="has_digest 2"):
        decode_revocation(bytes(body))
    body[flag] = 1  # claims a digest that is not there
    with pytest.raises(CodecError):
        decode_revocation(bytes(body))
    unknown = bytearray(t.bounded_binary.to_bytes())
    unknown[4] = 3
    with pytest.raises(CodecError, match="unknown format version 3"):
        decode_revocation(bytes(unknown))


# --- the version bound ----------------------------------------------------------------------


def test_a_bounded_revocation_caps_the_key_whatever_date_the_item_claims(t: Tree) -> None:
    keys = t.keys(t.bounded)
    # The thief's item, backdated before T, judged once the revocation is in effect.
    key = keys.key_at(t.gz.key_id, T - 1, now=T + 10)
    assert key is not None and key.max_version == L
    assert keys.key_at(t.gz.key_id, START, now=T)
    assert keys.key_at(t.gz.key_id, START, now=T).max_version == L  # type: ignore[union-attr]
    # Items dated T or later are refused by the date, as before.
    with pytest.raises(KeyRevoked, match=f"revoked as of {T}"):
        keys.key_at(t.gz.key_id, T, now=T + 10)
    # Before the revocation takes effect by the node's clock, nothing bounds the key.
    early = keys.key_at(t.gz.key_id, T - 5, now=T - 1)
    assert early is not None and early.max_version is None
    # Without the node's clock, the keys' own build time stands for it.
    late = t.keys(t.bounded, at=T + 1).key_at(t.gz.key_id, T - 1)
    assert late is not None and late.max_version == L


def test_the_smallest_bound_wins_and_forged_bounds_are_ignored(t: Tree) -> None:
    tighter = issue_revocation(
        t.gd, t.gz.key_id, T + 50, RevocationReason.COMPROMISED, 5, last_version=L - 10
    )
    thief = SigningKey.generate("440000", ["44"])
    forged = dataclasses.replace(
        issue_revocation(
            thief, t.gz.key_id, START, RevocationReason.COMPROMISED, 6, last_version=0
        ),
        issuer_key_id=t.gd.key_id,
    )
    keys = t.keys(t.bounded, tighter, forged)
    assert keys.key_at(t.gz.key_id, T - 1, now=T + 100).max_version == L - 10  # type: ignore[union-attr]
    assert keys.key_at(t.gz.key_id, T - 1, now=T + 10).max_version == L  # type: ignore[union-attr]
    # Signed by a key that never certified Guangzhou: no bound.
    other = issue_revocation(
        thief, t.gz.key_id, START, RevocationReason.COMPROMISED, 7, last_version=0
    )
    assert t.keys(other).key_at(t.gz.key_id, NOW, now=NOW).max_version is None  # type: ignore[union-attr]


def test_a_second_chain_does_not_lift_the_bound(t: Tree) -> None:
    """Guangzhou also certified by the province's rotated key: the old certifier's bounded
    revocation still caps the key (the bound is the key's, not one chain's)."""
    gd2 = SigningKey.generate("440000", ["44"])
    gd2_cert = issue_certificate(t.root, gd2, ["44"], START, END, serial=3)
    gz_by_gd2 = issue_certificate(gd2, t.gz, ["4401"], START, END, serial=20)
    keys = CertifiedKeys(
        t.anchor,
        [[t.gd_cert], [gd2_cert], [t.gd_cert, t.gz_cert], [gd2_cert, gz_by_gd2]],
        [t.bounded],
        NOW,
    )
    # At T+5 the first chain is revoked, the second verifies: still capped at L.
    key = keys.key_at(t.gz.key_id, T + 5, now=T + 10)
    assert key is not None and key.max_version == L


def test_a_provinces_bound_is_its_own_feeds(t: Tree) -> None:
    """Versions of different feeds are not comparable: the province's last version bounds
    the province's key only; its city's items signed before the province key's
    effective_at stand, those after do not (as for any revocation)."""
    gd_bounded = issue_revocation(
        t.root, t.gd.key_id, T, RevocationReason.SUPERSEDED, 8, last_version=3
    )
    keys = t.keys(gd_bounded)
    assert keys.key_at(t.gd.key_id, T - 1, now=T + 1).max_version == 3  # type: ignore[union-attr]
    city = keys.key_at(t.gz.key_id, T - 1, now=T + 1)
    assert city is not None and city.max_version is None
    with pytest.raises(KeyRevoked):
        keys.key_at(t.gz.key_id, T, now=T + 1)


# --- the node's clock -----------------------------------------------------------------------


def test_an_expired_certificate_cannot_sign_a_backdated_item(t: Tree) -> None:
    """Issue #11: a reinstatement was accepted 31 days after the key expired, dated before
    expiry. With the node's clock, the certificate's validity is checked at both."""
    short = issue_certificate(t.gd, t.gz, ["4401"], START, NOW + DAY, serial=30)
    keys = CertifiedKeys(t.anchor, [[t.gd_cert], [t.gd_cert, short]], [], NOW)
    assert keys.key_at(t.gz.key_id, NOW + DAY - 1) is not None  # the item's date alone
    assert keys.key_at(t.gz.key_id, NOW + DAY - 1, now=NOW + DAY) is not None  # inclusive
    with pytest.raises(CertificateExpired, match="before this node's clock") as info:
        keys.key_at(t.gz.key_id, NOW + DAY - 1, now=NOW + 32 * DAY)
    assert info.value.certificate == short


def test_an_expired_province_at_the_nodes_clock_voids_its_city(t: Tree) -> None:
    gd_short = issue_certificate(t.root, t.gd, ["44"], START, NOW + DAY, serial=31)
    chain = [gd_short, t.gz_cert]
    assert verify_chain(chain, t.anchor, [], NOW, now=NOW + DAY).key_id == t.gz.key_id
    with pytest.raises(CertificateExpired) as info:
        verify_chain(chain, t.anchor, [], NOW, now=NOW + DAY + 1)
    assert info.value.certificate == gd_short


# --- building chains in bounded work --------------------------------------------------------


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts Ed25519 signature checks (work, not wall-clock)."""
    count = [0]
    real = Ed25519Suite.verify

    def counting(
        self: Ed25519Suite,
        public: bytes,
        message: bytes,
        signature: bytes,
        distid: bytes | None = None,
    ) -> bool:
        count[0] += 1
        return real(self, public, message, signature, distid)

    monkeypatch.setattr(Ed25519Suite, "verify", counting)
    yield count


def _flood(t: Tree, n: int) -> tuple[list[bytes], list[SigningKey]]:
    """``n`` self-issued certificates of Guangzhou's key, ``n // 20`` sub-keys it certifies,
    each of which cross-certifies all the others, and ``n`` renewals of one sub-key."""
    records = [
        issue_certificate(t.gz, t.gz, ["4401"], START, END, serial=100 + i).to_bytes()
        for i in range(n)
    ]
    subs = [SigningKey.generate("440100", ["440105"]) for _ in range(max(2, n // 20))]
    for i, sub in enumerate(subs):
        records.append(
            issue_certificate(t.gz, sub, ["440105"], START, END, serial=i + 1).to_bytes()
        )
        for j, other in enumerate(subs):
            if i != j:
                records.append(
                    issue_certificate(sub, other, ["440105"], START, END, serial=j + 1).to_bytes()
                )
    records += [
        issue_certificate(t.gz, subs[0], ["440105"], START, END - i, serial=10_000 + i).to_bytes()
        for i in range(n)
    ]
    return records, subs


@pytest.mark.parametrize("n", [60, 500])
def test_a_certificate_flood_builds_in_bounded_work(
    t: Tree, n: int, verifications: list[int]
) -> None:
    records, subs = _flood(t, n)
    verifications[0] = 0
    keys = certified_keys_from_records(t.anchor, [[t.gd_cert, t.gz_cert]], records, [], NOW)
    # Each key's chains are bounded, and each certificate is checked once.
    assert len(keys.chains) <= MAX_CHAINS_PER_KEY * (2 + len(subs))
    assert verifications[0] <= len(keys.chains) * 4
    assert {t.gz.key_id, *(s.key_id for s in subs)} <= set(keys)
    before = verifications[0]
    for sub in subs:
        assert keys.key_at(sub.key_id, NOW, now=NOW) is not None
    assert verifications[0] == before  # key_at checks no signature twice


def test_cross_issued_keys_get_one_chain_each(t: Tree) -> None:
    """Today every path: each of k sub-keys got k chains (one through each sibling). A key
    is placed once, at its distance from the root; siblings cannot re-parent it."""
    records, subs = _flood(t, 100)  # 5 sub-keys, all cross-certified
    certs = [decode_trust_record(r) for r in records]
    chains = chains_from_records(t.anchor, [t.gd_cert, t.gz_cert, *certs])  # type: ignore[list-item]
    by_leaf: dict[bytes, int] = {}
    for chain in chains:
        by_leaf[chain[-1].key_id] = by_leaf.get(chain[-1].key_id, 0) + 1
        assert chain[-1].issuer_key_id != chain[-1].key_id  # no self-issued certificate
    assert by_leaf[t.gz.key_id] == 1
    assert by_leaf[subs[0].key_id] == MAX_CHAINS_PER_KEY  # the renewal flood, capped
    assert all(by_leaf[s.key_id] == 1 for s in subs[1:])
    assert max(len(c) for c in chains) == 3


def test_chain_depth_is_bounded(t: Tree) -> None:
    """Root → 44 → 4401 → 44010 → 440105 → 4401051? The fifth level is never reached."""
    keys, certs = [t.gd, t.gz], [t.gd_cert, t.gz_cert]
    for depth, prefix in enumerate(["44010", "440105"]):
        sub = SigningKey.generate("440100", [prefix])
        certs.append(issue_certificate(keys[-1], sub, [prefix], START, END, serial=50 + depth))
        keys.append(sub)
    fifth = SigningKey.generate("440100", ["440105"])
    certs.append(issue_certificate(keys[-1], fifth, ["440105"], START, END, serial=60))
    chains = chains_from_records(t.anchor, certs)
    assert max(len(c) for c in chains) == 4
    assert fifth.key_id not in {c[-1].key_id for c in chains}


def test_the_bound_carries_the_digest_its_revocation_names(t: Tree) -> None:
    """A rotation names the head (version and digest): a thief's different version L is then
    a fork; two revocations naming two digests for L leave the key at L - 1."""
    head = bytes(range(32))
    named = issue_revocation(
        t.gd, t.gz.key_id, T, RevocationReason.SUPERSEDED, 9, last_version=L, last_digest=head
    )
    key = t.keys(named, t.bounded).key_at(t.gz.key_id, T - 1, now=T)
    assert key is not None and (key.max_version, key.max_digest) == (L, head)
    assert t.keys(t.bounded).key_at(t.gz.key_id, T - 1, now=T).max_digest is None  # type: ignore[union-attr]
    other = issue_revocation(
        t.gd, t.gz.key_id, T, RevocationReason.SUPERSEDED, 10, last_version=L,
        last_digest=bytes(32),
    )  # fmt: skip
    key = t.keys(named, other).key_at(t.gz.key_id, T - 1, now=T)
    assert key is not None and (key.max_version, key.max_digest) == (L - 1, None)
