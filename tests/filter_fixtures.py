"""A certified hierarchy and a store with feeds, for the offline filter's tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from blacklist.authority import PsamChanges, Revocation, build_delta
from blacklist.certs import Certificate, issue_certificate
from blacklist.chainverify import TrustAnchor
from blacklist.clock import ManualClock
from blacklist.entry import Reason
from blacklist.filters import export, offline
from blacklist.signing import Keyring, SigningKey
from blacklist.store import RevocationStore
from blacklist.sync.freshness import sign_statement

T = 1_700_000_000
DAY = 86_400
ROOT = SigningKey.generate("000000", [""])
GD = SigningKey.generate("440000", ["4499"])
GZ = SigningKey.generate("440100", ["4401"])
SZ = SigningKey.generate("440300", ["4403"])
BJ = SigningKey.generate("110100", ["1101"])
ANCHOR = TrustAnchor.of(ROOT)
GD_CERT = issue_certificate(ROOT, GD, ["44"], T - DAY, T + 365 * DAY, serial=1)
GZ_CERT = issue_certificate(GD, GZ, ["4401"], T - DAY, T + 365 * DAY, serial=2)
SZ_CERT = issue_certificate(GD, SZ, ["4403"], T - DAY, T + 365 * DAY, serial=3)
BJ_CERT = issue_certificate(ROOT, BJ, ["1101"], T - DAY, T + 365 * DAY, serial=4)
CHAINS: dict[str, list[Certificate]] = {
    "440000": [GD_CERT],
    "440100": [GD_CERT, GZ_CERT],
    "440300": [GD_CERT, SZ_CERT],
    "110100": [BJ_CERT],
}
KEYS = Keyring([k.trusted() for k in (GD, GZ, SZ, BJ)])
SIGNERS = {k.publisher: k for k in (GD, GZ, SZ, BJ)}


def card(i: int, region: str = "440100") -> str:
    return f"{region}D156000005{i * 7919 + 1:016X}"


def psam(i: int, region: str = "440100") -> str:
    return f"{region}{i * 104729 + 3:016X}"


@dataclass
class World:
    """A store holding feeds of several publishers, published through signed deltas."""

    path: Path
    clock: ManualClock = field(default_factory=lambda: ManualClock(T))
    store: RevocationStore = field(init=False)

    def __post_init__(self) -> None:
        self.store = RevocationStore(self.path, clock=self.clock, map_size=1 << 27)

    def publish(
        self,
        publisher: str,
        revoke: list[str] = [],  # noqa: B006 - never mutated
        reinstate: list[str] = [],  # noqa: B006
        *,
        deny: list[str] = [],  # noqa: B006
        lift: list[str] = [],  # noqa: B006
        expires_at: int | None = None,
    ) -> None:
        key = SIGNERS[publisher]
        reason = Reason.LOSS if expires_at is None else Reason.TEMPORARY_LOSS
        changes = PsamChanges([Revocation(p, Reason.LOSS, T) for p in deny], lift)
        delta = build_delta(
            key,
            self.store.head(publisher),
            [Revocation(c, reason, T, expires_at) for c in revoke],
            reinstate,
            int(self.clock()),
            psams=changes,
        )
        self.store.apply(delta.to_bytes(), KEYS)

    def state(self, publisher: str) -> None:
        """A signed head statement for ``publisher`` as of the clock."""
        statement = sign_statement(
            SIGNERS[publisher], self.store.head(publisher), int(self.clock())
        )
        results = self.store.accept_statements([statement], KEYS, self.clock(), 300)
        assert results[0].accepted, results

    def export(
        self,
        scope: str = "44",
        signer: str = "440000",
        previous: offline.OfflineFilter | None = None,
        valid: int = DAY,
    ) -> tuple[offline.OfflineFilter, export.Built]:
        sources = export.sources_from_store(self.store, scope, self.store.statements.all())
        built = export.build_partitions(sources, previous)
        now = int(self.clock())
        f = export.sign_filter(
            SIGNERS[signer], CHAINS[signer], scope, now, now + valid, built.partitions
        )
        return f, built
