"""What a follower's trusted keys are built from (DESIGN §6): the pinned root with the
chains and revocations it was configured with, or bare trusted keys (tests and demos).
Combined at every rebuild with the trust records that arrived in feeds. Shared by a node
(node/config.py reads it from files) and an edge replica (blacklist/edge)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from blacklist.certs import Certificate, KeyRevocation
from blacklist.signing import TrustedKey
from blacklist.trust import DEFAULT_MAX_TRUST_RECORDS, TrustAnchor, certified_keys_from_records


@dataclass(frozen=True)
class TrustMaterial:
    """Trust as configured: bare trusted keys, or the pinned anchor with its
    configured chains and revocations."""

    bare: Mapping[bytes, TrustedKey] | None = None
    anchor: TrustAnchor | tuple[TrustAnchor, ...] | None = None  # one root, or two (#14)
    chains: tuple[tuple[Certificate, ...], ...] = ()
    revocations: tuple[KeyRevocation, ...] = ()
    max_trust_records: int = DEFAULT_MAX_TRUST_RECORDS

    def keys(self, records: Sequence[bytes], at: int) -> Mapping[bytes, TrustedKey]:
        """The keys trusted as of ``at``, with the trust records that arrived in feeds
        (certificates and key revocations, blacklist/trustrecords.py); bare keys ignore them."""
        if self.anchor is None:
            assert self.bare is not None
            return self.bare
        return certified_keys_from_records(
            self.anchor,
            self.chains,
            records,
            self.revocations,
            at,
            max_trust_records=self.max_trust_records,
        )
