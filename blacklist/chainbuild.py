"""Building certificate chains from the loose certificates that travel in feeds, in work
linear in the records (issue #11 item 2). Pure; nothing is verified here.

A feed may carry certificates its own keys issued (DESIGN §6), so the records a node holds
are partly written by the publishers it is judging. Following every path between them
costs a product of the branching at every level: with many self-issued and cross-issued
certificates of one key that was ~N⁴ (54 s at 60 certificates, on the writer thread). So:

* certificates are indexed by issuer key id, and chains grow breadth-first from the anchor,
  one level per step, at most :data:`MAX_CHAIN_DEPTH` levels;
* a key is placed once, at the first level that reaches it (its distance from the root):
  a certificate of an already placed key by a key at the same or a deeper level adds
  nothing, so a sibling or a descendant cannot re-parent a key nearer the root, and a cycle
  ends where it starts;
* a self-issued certificate (issuer key = subject key) certifies nothing and is dropped;
* one key gets at most :data:`MAX_CHAINS_PER_KEY` chains: its newest certificates first
  (latest ``not_after``), each over its issuer's chains in order. A renewal or a rotated
  certifier gives a key a second chain; a flood of certificates of one key gives it no more
  than the bound.

Each certificate is looked at once and each key gets at most :data:`MAX_CHAINS_PER_KEY`
chains of at most :data:`MAX_CHAIN_DEPTH` certificates, so the work and the number of chains
are at most linear in the certificates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from blacklist.certs import Certificate

MAX_CHAIN_DEPTH = 4  # root → province → city is 2; a little room for sub-keys, never a loop
MAX_CHAINS_PER_KEY = 8  # a renewal and a rotated certifier need 4; beyond is a flood


class _HasKeyId(Protocol):
    @property
    def key_id(self) -> bytes: ...


def _newest_first(cert: Certificate) -> tuple[int, int, int, bytes]:
    return (-cert.not_after, -cert.not_before, -cert.serial, cert.digest)


def chains_from_records(
    anchor: _HasKeyId | Sequence[_HasKeyId], certificates: Iterable[Certificate]
) -> list[tuple[Certificate, ...]]:
    """The chains (root-most certificate first) from ``anchor`` (one root, or each of the
    pinned roots) to every key the certificates reach, by issuer key ids, as the module
    docstring bounds them. Certificates with no path to a root give no chain."""
    roots = list(anchor) if isinstance(anchor, Sequence) else [anchor]
    by_issuer: dict[bytes, list[Certificate]] = {}
    for cert in {c.digest: c for c in certificates}.values():
        if cert.issuer_key_id != cert.key_id:  # self-issued: certifies nothing
            by_issuer.setdefault(cert.issuer_key_id, []).append(cert)
    placed: dict[bytes, list[tuple[Certificate, ...]]] = {r.key_id: [()] for r in roots}
    frontier = [r.key_id for r in roots]
    out: list[tuple[Certificate, ...]] = []
    for _ in range(MAX_CHAIN_DEPTH):
        level: dict[bytes, list[Certificate]] = {}
        for issuer in frontier:
            for cert in by_issuer.get(issuer, ()):
                if cert.key_id not in placed:
                    level.setdefault(cert.key_id, []).append(cert)
        for key_id, certs in level.items():
            chains: list[tuple[Certificate, ...]] = []
            for cert in sorted(certs, key=_newest_first):
                for parent in placed[cert.issuer_key_id]:
                    if len(chains) == MAX_CHAINS_PER_KEY:
                        break
                    chains.append((*parent, cert))
            placed[key_id] = chains
            out.extend(chains)
        if not level:
            break
        frontier = list(level)
    return out
