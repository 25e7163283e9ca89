"""Which publisher answers for a region: the longest matching prefix among the trusted keys'
scopes (a city's "4401" beats its province's "44").

A node always starts from whatever its store holds (issue #11 item 3), so two publishers
claiming one prefix is never an exception here: acceptance refuses the record that would
cause it (:mod:`blacklist.sync.trust_rules`), but a store written before that rule, a
configuration, or an honest reassignment in progress can still hold two claims. The
directory keeps one per prefix, by this rule (first difference wins):

1. the claim nearer the root (a shorter chain: the root's word over a province's, a
   province's over a city's sub-key);
2. the newer certificate (later ``not_before``, then higher serial): from the same
   certifier this is a reassignment — the province certified a new publisher for the prefix
   and will revoke the old one — and the new holder answers from the moment it is certified;
3. the lower publisher code (uncertified, configured keys carry no certificate: this is
   their whole rule).

Every claim that loses is reported as a :class:`PrefixConflict`
(:attr:`PublisherDirectory.dropped`), which the node logs and counts.

The check path builds a directory, so this module imports nothing of the certificate chain
rules or of signing (tests/test_check_wing.py): certified keys bring their claims with them
(:meth:`blacklist.trust.CertifiedKeys.claims`, found through :class:`ClaimingKeys`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from blacklist.trusterror import TrustError

if TYPE_CHECKING:
    from blacklist.signing import TrustedKey


class PrefixConflict(TrustError):
    """Two publishers' keys claim one region prefix. Which claim wins is
    :class:`PublisherDirectory`'s rule; this names the one dropped."""

    cause = "prefix_conflict"


@dataclass(frozen=True, slots=True)
class PrefixClaim:
    """One valid certificate chain's word that ``publisher`` answers for ``prefix``: what a
    publisher directory resolves when two publishers claim one prefix. ``depth`` is the
    chain's length (0: the anchor itself, 1: certified by the root); ``issuer_publisher`` /
    ``issuer_key_id`` name the leaf certificate's certifier (None: not certified, e.g. a
    configured bare key); ``not_before`` and ``serial`` are the leaf certificate's."""

    prefix: str
    publisher: str
    key_id: bytes
    depth: int = 0
    issuer_publisher: str | None = None
    issuer_key_id: bytes | None = None
    not_before: int = 0
    serial: int = 0

    @property
    def label(self) -> str:
        via = "" if self.issuer_publisher is None else f", certified by {self.issuer_publisher}"
        return (
            f"publisher {self.publisher}'s claim to {self.prefix!r} (key {self.key_id.hex()}{via})"
        )


@runtime_checkable
class ClaimingKeys(Protocol):
    """Keys that know the certificate chains behind them (blacklist.trust.CertifiedKeys)."""

    def claims(self, *, pending: bool = False) -> tuple[PrefixClaim, ...]: ...


def claims_of(
    keys: Mapping[bytes, TrustedKey], *, pending: bool = False
) -> tuple[PrefixClaim, ...]:
    """Every prefix claim of ``keys``: :meth:`CertifiedKeys.claims` with the certificates
    behind them; for plain keys, uncertified claims."""
    if isinstance(keys, ClaimingKeys):
        return keys.claims(pending=pending)
    return tuple(PrefixClaim(p, k.publisher, k.key_id) for k in keys.values() for p in k.prefixes)


def _rank(claim: PrefixClaim) -> tuple[int, int, int, int]:
    """Sort key: the winning claim sorts first (the module docstring's rule)."""
    return (claim.depth, -claim.not_before, -claim.serial, int(claim.publisher))


class PublisherDirectory:
    def __init__(self, scopes: Mapping[str, Sequence[str]]) -> None:
        """From publisher → prefixes (uncertified claims)."""
        self._build(
            PrefixClaim(prefix, publisher, b"")
            for publisher, prefixes in scopes.items()
            for prefix in prefixes
        )

    @classmethod
    def from_claims(cls, claims: Iterable[PrefixClaim]) -> PublisherDirectory:
        directory = cls.__new__(cls)
        directory._build(claims)
        return directory

    @classmethod
    def from_keys(cls, keys: Mapping[bytes, TrustedKey]) -> PublisherDirectory:
        """From trusted keys: with the certificates behind them when ``keys`` are certified
        (:meth:`blacklist.trust.CertifiedKeys.claims`)."""
        return cls.from_claims(claims_of(keys))

    def _build(self, claims: Iterable[PrefixClaim]) -> None:
        best: dict[str, PrefixClaim] = {}
        losers: dict[str, list[PrefixClaim]] = {}
        for claim in claims:
            held = best.get(claim.prefix)
            if held is None:
                best[claim.prefix] = claim
            elif held.publisher == claim.publisher:
                if _rank(claim) < _rank(held):
                    best[claim.prefix] = claim
            elif _rank(claim) < _rank(held):
                best[claim.prefix] = claim
                losers.setdefault(claim.prefix, []).append(held)
            else:
                losers.setdefault(claim.prefix, []).append(claim)
        self._by_prefix = {prefix: claim.publisher for prefix, claim in best.items()}
        self._lengths = sorted({len(p) for p in self._by_prefix}, reverse=True)
        dropped: list[PrefixConflict] = []
        seen: set[tuple[str, str]] = set()
        for prefix, lost in sorted(losers.items()):
            winner = best[prefix]
            for claim in sorted(lost, key=_rank):
                if claim.publisher == winner.publisher or (prefix, claim.publisher) in seen:
                    continue  # the winner's own weaker claim, or a second chain of one loser
                seen.add((prefix, claim.publisher))
                dropped.append(
                    PrefixConflict(
                        f"region prefix {prefix!r} is claimed by publishers {winner.publisher} "
                        f"and {claim.publisher}: {claim.label} is dropped, "
                        f"{winner.label} answers"
                    )
                )
        self.dropped: tuple[PrefixConflict, ...] = tuple(dropped)

    def publisher_of(self, region: str) -> str | None:
        for length in self._lengths:
            publisher = self._by_prefix.get(region[:length])
            if publisher is not None:
                return publisher
        return None
