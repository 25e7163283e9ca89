"""The trust rules against a small independent model of who may sign what (issue #11),
in the house style of tests/test_state_machine.py.

Random sequences of certificate issues (with backdated and future validity), revocations
with and without a last version, rotations, self-issued and cross-issued floods written
straight into the store (as an older node would have), and the clock moving on. After
every step, for every key: may it sign version v of its feed dated t, judged at the node's
clock — the model and :meth:`CertifiedKeys.key_at` must agree; acceptance of each new
record must agree with the model's rules; the publisher directory never raises; and the
records that passed acceptance never leave two publishers claiming one prefix, except a
certifier's reassignment.

The model is written from the rules, not from the code: chains are every path of
certificates from the root along which each key sits one level below its certifier (a key's
level is its shortest distance from the root), at most four certificates; a chain is valid
for an item dated t at the node's clock n iff every certificate is valid at t, unexpired at
n, within its certifier's scope and delegation, and its key not revoked by its certifier as
of t.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from blacklist.certs import (
    Certificate,
    KeyRevocation,
    RevocationReason,
    issue_certificate,
    issue_revocation,
)
from blacklist.publishers import PublisherDirectory
from blacklist.regions import PROVINCE_PREFIXES
from blacklist.rejections import BadTrustRecord
from blacklist.signing import SigningKey, TrustedKey
from blacklist.sync.trust_rules import check_trust_records
from blacklist.trust import (
    MAX_CHAINS_PER_KEY,
    CertifiedKeys,
    TrustAnchor,
    TrustError,
    certified_keys_from_records,
)

NOW = 1_750_000_000
DAY = 86_400
ROOT = SigningKey.generate("000000", [])
ANCHOR = TrustAnchor.of(ROOT)
PUBLISHERS = ["440000", "440100", "440101", "440105", "110000", "110100"]
POOL = [SigningKey.generate(p, []) for p in PUBLISHERS for _ in range(2)]
GD, BJ = POOL[0], POOL[8]
GZ, BJC = POOL[2], POOL[10]  # Guangzhou 440100, Beijing's city 110100
_LONG = (NOW - 400 * DAY, NOW + 400 * DAY)
_GD_CERT = issue_certificate(ROOT, GD, ["44"], *_LONG, 1)
_BJ_CERT = issue_certificate(ROOT, BJ, ["11"], *_LONG, 2)
CONFIGURED = [
    [_GD_CERT],
    [_BJ_CERT],
    [_GD_CERT, issue_certificate(GD, GZ, ["4401"], *_LONG, 3)],
    [_BJ_CERT, issue_certificate(BJ, BJC, ["1101"], NOW - DAY, NOW + 20 * DAY, 4)],
]
SCOPES = [["44"], ["4401"], ["440105"], ["4401", "4403"], ["11"], ["1101"], ["4403"]]
SIGNERS = [ROOT, *POOL]
BY_ID = {k.key_id: k for k in SIGNERS}
REGIONS = ["440105", "440123", "440301", "110101", "119999"]

Chain = tuple[Certificate, ...]


# --- the model ------------------------------------------------------------------------------


@dataclass
class Model:
    certs: list[Certificate] = field(default_factory=list)
    revs: list[KeyRevocation] = field(default_factory=list)

    def signer_of(self, key_id: bytes) -> SigningKey | None:
        return BY_ID.get(key_id)

    def levels(self) -> dict[bytes, int]:
        level = {ROOT.key_id: 0}
        changed = True
        while changed:
            changed = False
            for c in self.certs:
                if c.issuer_key_id == c.key_id or c.issuer_key_id not in level:
                    continue
                d = level[c.issuer_key_id] + 1
                if d <= 4 and d < level.get(c.key_id, 99):
                    level[c.key_id] = d
                    changed = True
        return level

    def chains(self, key_id: bytes, level: dict[bytes, int]) -> list[Chain]:
        if key_id == ROOT.key_id:
            return [()]
        if key_id not in level:
            return []
        out: list[Chain] = []
        for c in self.certs:
            if c.key_id != key_id or c.issuer_key_id == key_id:
                continue
            if level.get(c.issuer_key_id) != level[key_id] - 1:
                continue
            out += [(*up, c) for up in self.chains(c.issuer_key_id, level)]
        return out

    def revoked(self, key_id: bytes, certifier: bytes, t: int) -> bool:
        return any(
            r.revoked_key_id == key_id and r.issuer_key_id == certifier and r.effective_at <= t
            for r in self.revs
            if self.genuine(r)
        )

    def genuine(self, r: KeyRevocation) -> bool:
        signer = self.signer_of(r.issuer_key_id)
        return signer is not None and signer.trusted().verify(r.signed_message, r.signature)

    @staticmethod
    def delegates(c: Certificate, publisher: str, scope: list[str] | None) -> bool:
        """Scope and delegation, from the rules: within the certifier's scope, and either
        the certifier's own publisher or strictly narrower prefixes."""
        if scope is None:
            provincial = [c.publisher, *c.prefixes]
            return all(
                (p == "000000" and p == c.publisher)
                or (len(p) >= 2 and int(p[:2]) in PROVINCE_PREFIXES)
                for p in provincial
            )
        if not all(any(p.startswith(s) for s in scope) for p in [c.publisher, *c.prefixes]):
            return False
        if c.publisher == publisher:
            return True
        return all(any(p.startswith(s) and len(p) > len(s) for s in scope) for p in c.prefixes)

    def valid(self, chain: Chain, t: int, now: int) -> bool:
        publisher, scope, certifier = "000000", None, ROOT.key_id
        for c in chain:
            if not (c.not_before <= t <= c.not_after) or now > c.not_after:
                return False
            if c.issuer_key_id != certifier or not self.delegates(c, publisher, scope):
                return False
            if self.revoked(c.key_id, certifier, t):
                return False
            publisher, scope, certifier = c.publisher, list(c.prefixes), c.key_id
        return True

    def trust(self, key_id: bytes, t: int, now: int) -> tuple[str, tuple[str, ...]] | None:
        """(publisher, prefixes) the key may sign for at t, or None."""
        level = self.levels()
        good = [ch for ch in self.chains(key_id, level) if self.valid(ch, t, now)]
        publishers = {ch[-1].publisher if ch else "000000" for ch in good}
        if len(publishers) != 1:
            return None
        prefixes = sorted({p for ch in good for p in (ch[-1].prefixes if ch else ("",))})
        return publishers.pop(), tuple(prefixes)

    def bound(self, key_id: bytes, now: int) -> int | None:
        level = self.levels()
        certifiers = {
            ch[-2].key_id if len(ch) > 1 else ROOT.key_id for ch in self.chains(key_id, level) if ch
        }
        found = [
            r.last_version
            for r in self.revs
            if r.revoked_key_id == key_id
            and r.issuer_key_id in certifiers
            and r.last_version is not None
            and r.effective_at <= now
            and self.genuine(r)
        ]
        return min(found) if found else None

    def accepts(
        self, signer: SigningKey, records: list[Certificate | KeyRevocation], now: int
    ) -> bool:
        """Whether ``signer``'s feed may carry ``records`` (the trust-section rules)."""
        me = ("000000", None) if signer is ROOT else self.trust(signer.key_id, now, now)
        if me is None:
            return False
        publisher, prefixes = me
        scope = None if signer is ROOT else list(prefixes)
        certs = [r for r in records if isinstance(r, Certificate)]
        revoked = {
            (r.revoked_key_id, r.issuer_key_id) for r in records if isinstance(r, KeyRevocation)
        }
        for r in records:
            if r.issuer_key_id != signer.key_id:
                return False
            if isinstance(r, Certificate) and (
                r.key_id == r.issuer_key_id or not self.delegates(r, publisher, scope)
            ):
                return False
        level = self.levels()
        named: dict[bytes, set[str]] = {}
        for c in certs:  # one key publishes one feed
            publishers = named.setdefault(
                c.key_id, {ch[-1].publisher for ch in self.chains(c.key_id, level) if ch}
            )
            if publishers - {c.publisher}:
                return False
            publishers.add(c.publisher)
        existing = self._unrevoked_claims(now, revoked)
        for i, c in enumerate(certs):
            mine = [
                (p, c2.publisher, publisher, c2.not_before) for c2 in certs[:i] for p in c2.prefixes
            ]
            for p, q, cp, nb in [*existing, *mine]:
                if (
                    p in c.prefixes
                    and q != c.publisher
                    and not (cp == publisher and nb != c.not_before)
                ):
                    return False
        return True

    def _unrevoked_claims(
        self, now: int, revoked: set[tuple[bytes, bytes]]
    ) -> list[tuple[str, str, str, int]]:
        level = self.levels()
        out = []
        for key_id in level:
            if key_id == ROOT.key_id:
                continue
            trusted = self.trust(key_id, now, now) is not None
            for ch in self.chains(key_id, level):
                certifier = ch[-2].key_id if len(ch) > 1 else ROOT.key_id
                if (key_id, certifier) in revoked:
                    continue
                start = max(c.not_before for c in ch)
                if (trusted and self.valid(ch, now, now)) or (
                    start > now and self.valid(ch, start, now)
                ):
                    cp = ch[-2].publisher if len(ch) > 1 else "000000"
                    out += [(p, ch[-1].publisher, cp, ch[-1].not_before) for p in ch[-1].prefixes]
        return out


# --- the machine ----------------------------------------------------------------------------

offsets = st.sampled_from([-400 * DAY, -DAY, -60, 0, 30, DAY])
lengths = st.sampled_from([0, 60, DAY, 30 * DAY, 800 * DAY])
signers = st.sampled_from(range(len(SIGNERS)))
subjects = st.sampled_from(range(len(POOL)))
versions = st.sampled_from([0, 1, 2, 5, 9, 2**64 - 1])


class TrustVsModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = NOW
        self.model = Model(certs=[c for chain in CONFIGURED for c in chain])
        self.records: list[bytes] = []
        self.serial = 100
        self.keys = self._rebuild()

    def _rebuild(self) -> CertifiedKeys:
        self.keys = certified_keys_from_records(ANCHOR, CONFIGURED, self.records, [], self.now)
        return self.keys

    def _next_serial(self) -> int:
        self.serial += 1
        return self.serial

    def _offer(self, signer: SigningKey, records: list[Certificate | KeyRevocation]) -> None:
        """``signer``'s feed carries ``records``: acceptance and the model must agree."""
        if any(isinstance(r, Certificate) and self._too_many_chains(r.key_id) for r in records):
            return  # the model keeps every chain, the code at most MAX_CHAINS_PER_KEY
        expected = self.model.accepts(signer, records, self.now)
        event(f"offer {'accepted' if expected else 'refused'}")
        trusted: TrustedKey | None
        if signer is ROOT:
            trusted = ANCHOR.trusted()
        else:
            try:
                trusted = self.keys.key_at(signer.key_id, self.now, now=self.now)
            except TrustError:
                trusted = None
        if trusted is None:
            assert not expected
            return
        try:
            check_trust_records(trusted, "item", [r.to_bytes() for r in records], self.keys)
        except BadTrustRecord:
            assert not expected, f"refused what the model accepts: {records}"
            return
        assert expected, f"accepted what the model refuses: {records}"
        self.records += [r.to_bytes() for r in records]
        for r in records:
            (self.model.certs if isinstance(r, Certificate) else self.model.revs).append(r)  # type: ignore[arg-type]
        self._rebuild()

    @rule(
        issuer=signers,
        subject=subjects,
        scope=st.sampled_from(SCOPES),
        nb=offsets,
        span=lengths,
        as_publisher=st.none() | st.sampled_from(PUBLISHERS),
    )
    def certify(
        self, issuer: int, subject: int, scope: list[str], nb: int, span: int,
        as_publisher: str | None,
    ) -> None:  # fmt: skip
        """``as_publisher``: the subject's key named for another publisher than its own."""
        named = POOL[subject].trusted()
        if as_publisher is not None:
            named = dataclasses.replace(named, publisher=as_publisher)
        cert = issue_certificate(
            SIGNERS[issuer], named, scope, self.now + nb, self.now + nb + span,
            self._next_serial(),
        )  # fmt: skip
        self._offer(SIGNERS[issuer], [cert])

    @rule(
        issuer=signers,
        subject=subjects,
        at=offsets,
        last=st.none() | versions,
        forged=st.booleans(),
    )
    def revoke(self, issuer: int, subject: int, at: int, last: int | None, forged: bool) -> None:
        signer = SIGNERS[issuer]
        if issuer % 2:  # half the time, the key's own certifier (the one whose word counts)
            certs = [c for c in self.model.certs if c.key_id == POOL[subject].key_id]
            found = self.model.signer_of(certs[0].issuer_key_id) if certs else None
            signer = found if found is not None else signer
        rev = issue_revocation(
            signer, POOL[subject].key_id, self.now + at, RevocationReason.COMPROMISED,
            self._next_serial(), last_version=last,
        )  # fmt: skip
        if forged:  # claims another certifier's key id: must change nothing
            other = SIGNERS[(issuer + 1) % len(SIGNERS)]
            rev = KeyRevocation(
                rev.serial, other.key_id, rev.revoked_key_id, rev.effective_at, rev.reason,
                rev.signature, last_version=rev.last_version,
            )  # fmt: skip
            self.records.append(rev.to_bytes())  # straight into the store
            self.model.revs.append(rev)
            self._rebuild()
            return
        self._offer(signer, [rev])

    @rule(subject=subjects, last=versions)
    def rotate(self, subject: int, last: int) -> None:
        """The certifier of a trusted key certifies a new key for its publisher and scope,
        and revokes the old one after version ``last`` in the same record set."""
        old = POOL[subject]
        level = self.model.levels()
        chains = [
            ch
            for ch in self.model.chains(old.key_id, level)
            if self.model.valid(ch, self.now, self.now)
        ]
        new = subject ^ 1  # the pool's other key of the same publisher
        if not chains:
            return
        leaf = chains[0][-1]
        certifier = self.model.signer_of(leaf.issuer_key_id)
        assert certifier is not None
        cert = issue_certificate(
            certifier, POOL[new], leaf.prefixes, self.now, self.now + 30 * DAY, self._next_serial()
        )
        # Effective at the new certificate's not_before: a handover leaves no second in which
        # both keys claim the prefix (the invariant below). A later effective_at in the same
        # record set is accepted by the rule too and leaves such a window (reported, #11).
        rev = issue_revocation(
            certifier, old.key_id, self.now, RevocationReason.SUPERSEDED, self._next_serial(),
            last_version=last,
        )  # fmt: skip
        self._offer(certifier, [cert, rev])

    @rule(issuer=subjects, n=st.integers(1, 40), cross=st.booleans())
    def flood(self, issuer: int, n: int, cross: bool) -> None:
        """Self-issued certificates (and cross-certificates among keys at one level) written
        straight into the store: they certify nothing, and building stays bounded."""
        key = POOL[issuer]
        selfie = issue_certificate(key, key, ["4401"], self.now - DAY, self.now + DAY, 1)
        self._offer(key, [selfie])  # refused at the door
        certs = [
            issue_certificate(key, key, ["4401"], self.now - DAY, self.now + DAY, 1000 + i)
            for i in range(n)
        ]
        level = self.model.levels()
        if cross and key.key_id in level:
            peers = [k for k in POOL if level.get(k.key_id) == level[key.key_id] and k is not key]
            certs += [
                issue_certificate(key, peer, ["4401"], self.now - DAY, self.now + DAY, 2000 + i)
                for i, peer in enumerate(peers)
            ]
        self.records += [c.to_bytes() for c in certs]
        self.model.certs += certs
        self._rebuild()
        assert len(self.keys.chains) <= MAX_CHAINS_PER_KEY * (len(POOL) + 1)

    @rule(seconds=st.sampled_from([1, 60, DAY, 40 * DAY]))
    def tick(self, seconds: int) -> None:
        self.now += seconds
        self._rebuild()

    @rule(key=subjects, t=offsets, version=versions)
    def sign(self, key: int, t: int, version: int) -> None:
        """Version by version: may this key sign version ``version`` dated now + t?"""
        k = POOL[key]
        if self._too_many_chains(k):
            return
        when = self.now + t
        expected = self.model.trust(k.key_id, when, self.now)
        bound = self.model.bound(k.key_id, self.now)
        may = expected is not None and (bound is None or version <= bound)
        try:
            got = self.keys.key_at(k.key_id, when, now=self.now)
        except TrustError:
            got = None
        allowed = got is not None and (got.max_version is None or version <= got.max_version)
        assert allowed == may, (k.publisher, when - NOW, version, expected, bound, got)
        event(f"sign {'allowed' if may else 'refused'}{' (bounded)' if bound is not None else ''}")

    @rule(data=st.data(), issuer=signers, nb=offsets)
    def claim_a_held_prefix(self, data: st.DataObject, issuer: int, nb: int) -> None:
        """Someone certifies another publisher for a prefix already claimed: refused unless
        it is the claim's own certifier reassigning it."""
        held = self.model._unrevoked_claims(self.now, set())
        if not held:
            return
        prefix, publisher, _, _ = data.draw(st.sampled_from(held))
        others = [k for k in POOL if k.publisher != publisher]
        subject = data.draw(st.sampled_from(others))
        cert = issue_certificate(
            SIGNERS[issuer], subject, [prefix], self.now + nb, self.now + nb + 30 * DAY,
            self._next_serial(),
        )  # fmt: skip
        self._offer(SIGNERS[issuer], [cert])
        if issuer % 3 == 0:  # and the certifier of the claim itself, at the same not_before
            for c in self.model.certs:
                if prefix in c.prefixes and c.publisher == publisher:
                    certifier = self.model.signer_of(c.issuer_key_id)
                    if certifier is not None:
                        twin = issue_certificate(
                            certifier, subject, [prefix], c.not_before, c.not_after,
                            self._next_serial(),
                        )  # fmt: skip
                        self._offer(certifier, [twin])
                    break

    @rule(key=subjects, version=versions)
    def thief_backdates(self, key: int, version: int) -> None:
        """The attack of issue #11 item 1: a revoked key's holder dates its item just before
        the revocation took effect."""
        k = POOL[key]
        certs = [
            c for c in self.model.certs if c.key_id == k.key_id and c.issuer_key_id != k.key_id
        ]
        certifier = self.model.signer_of(certs[0].issuer_key_id) if certs else None
        if certifier is not None and not any(r.revoked_key_id == k.key_id for r in self.model.revs):
            rev = issue_revocation(
                certifier, k.key_id, self.now - 60, RevocationReason.COMPROMISED,
                self._next_serial(), last_version=5,
            )  # fmt: skip
            self._offer(certifier, [rev])
        times = [r.effective_at for r in self.model.revs if r.revoked_key_id == k.key_id]
        if not times or self._too_many_chains(k):
            return
        when = min(times) - 1
        expected = self.model.trust(k.key_id, when, self.now)
        bound = self.model.bound(k.key_id, self.now)
        may = expected is not None and (bound is None or version <= bound)
        try:
            got = self.keys.key_at(k.key_id, when, now=self.now)
        except TrustError:
            got = None
        allowed = got is not None and (got.max_version is None or version <= got.max_version)
        assert allowed == may, (k.publisher, when - NOW, version, expected, bound, got)
        event(
            f"backdated: {'allowed' if may else 'refused'}{' (bounded)' if bound is not None else ''}"
        )

    def _too_many_chains(self, key: SigningKey | bytes) -> bool:
        """The model has no per-key cap on chains; skip keys over it."""
        key_id = key if isinstance(key, bytes) else key.key_id
        return len(self.model.chains(key_id, self.model.levels())) > MAX_CHAINS_PER_KEY

    @invariant()
    def every_key_agrees(self) -> None:
        for k in POOL:
            if self._too_many_chains(k):
                continue
            for when in (self.now, self.now - 60, self.now - DAY, NOW):  # and backdated
                expected = self.model.trust(k.key_id, when, self.now)
                try:
                    got = self.keys.key_at(k.key_id, when, now=self.now)
                except TrustError:
                    got = None
                seen = None if got is None else (got.publisher, got.prefixes)
                assert seen == expected, (k.publisher, when - NOW, seen, expected)
                bound = self.model.bound(k.key_id, self.now)
                if got is not None:
                    assert got.max_version == bound, (k.publisher, when - NOW, bound, got)
                    if bound is not None:
                        event("a bounded key, still trusted for a backdated item")

    @invariant()
    def the_directory_never_raises_and_claims_are_conflict_free(self) -> None:
        directory = PublisherDirectory.from_keys(self.keys)
        for region in REGIONS:
            publisher = directory.publisher_of(region)
            assert publisher is None or any(
                region.startswith(c.prefix) and c.publisher == publisher for c in self.keys.claims()
            )
        by_prefix: dict[str, list[tuple[str, str | None, int]]] = {}
        for c in self.keys.claims():
            by_prefix.setdefault(c.prefix, []).append(
                (c.publisher, c.issuer_publisher, c.not_before)
            )
        for prefix, claims in by_prefix.items():
            for a in claims:
                for b in claims:
                    if a[0] != b[0]:
                        assert a[1] == b[1] and a[2] != b[2], (prefix, a, b)


TrustVsModel.TestCase.settings = settings(max_examples=25, stateful_step_count=20, deadline=None)
TestTrustVsModel = TrustVsModel.TestCase
