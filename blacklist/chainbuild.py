"""Building certificate chains from the loose certificates that travel in feeds, in work
linear in the records (issue #11 item 2). Pure; nothing is verified here.

A feed may carry certificates its own keys issued (DESIGN §6), so the records a node holds
are partly written by the publishers it is judging. Following every path between them
costs a product of the branching at every level: with many self-issued and cross-issued
certificates of one key that was ~N⁴ (54 s at 60 certificates, on the writer thread). So:

* certificates are indexed by issuer key id, and chains grow breadth-first from the anchor,
  one level per step, at most :data:`MAX_CHAIN_DEPTH` levels;
* a key's chains are found shortest first: those at the first level that reaches it, then,
  while it has room, deeper ones (so that a failing shallow certificate, an expired direct
  certificate from the root say, does not hide a valid chain through the province); a chain
  never holds one key twice, so a cycle ends where it starts; only chains new at one level
  grow at the next, so no chain is built twice;
* a self-issued certificate (issuer key = subject key) certifies nothing and is dropped;
* one key gets at most :data:`MAX_CHAINS_PER_KEY` chains: its newest certificates first
  (latest ``not_after``), each over its issuer's chains in order. A renewal or a rotated
  certifier gives a key a second chain; a flood of certificates of one key gives it no more
  than the bound.

Each key gets at most :data:`MAX_CHAINS_PER_KEY` chains of at most :data:`MAX_CHAIN_DEPTH`
certificates, and each certificate is looked at once per new chain of its issuer (at most
:data:`MAX_CHAINS_PER_KEY` over all levels), so the work and the number of chains are at most
linear in the certificates.
"""

from __future__ import annotations

from collections.abc import Iterable
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
    anchor: _HasKeyId, certificates: Iterable[Certificate]
) -> list[tuple[Certificate, ...]]:
    """The chains (root-most certificate first) from ``anchor`` to every key the
    certificates reach, by issuer key ids, as the module docstring bounds them.
    Certificates with no path to the anchor give no chain."""
    by_issuer: dict[bytes, list[Certificate]] = {}
    for cert in {c.digest: c for c in certificates}.values():
        if cert.issuer_key_id != cert.key_id:  # self-issued: certifies nothing
            by_issuer.setdefault(cert.issuer_key_id, []).append(cert)
    Chain = tuple[Certificate, ...]
    placed: dict[bytes, list[Chain]] = {anchor.key_id: [()]}
    fresh: dict[bytes, list[Chain]] = {anchor.key_id: [()]}  # chains new at the last level
    out: list[Chain] = []
    for _ in range(MAX_CHAIN_DEPTH):
        options: dict[bytes, list[tuple[Certificate, Chain]]] = {}
        for issuer, parents in fresh.items():
            for cert in by_issuer.get(issuer, ()):
                if cert.key_id == anchor.key_id or len(placed.get(cert.key_id, ())) >= (
                    MAX_CHAINS_PER_KEY
                ):
                    continue
                for parent in parents:
                    if all(c.key_id != cert.key_id for c in parent):  # no key twice: no loop
                        options.setdefault(cert.key_id, []).append((cert, parent))
        fresh = {}
        for key_id, found in options.items():
            chains = placed.setdefault(key_id, [])
            room = MAX_CHAINS_PER_KEY - len(chains)
            picked = [(*parent, cert) for cert, parent in sorted(found, key=_by_cert)][:room]
            chains.extend(picked)
            out.extend(picked)
            fresh[key_id] = picked
        if not fresh:
            break
    return out


def _by_cert(option: tuple[Certificate, tuple[Certificate, ...]]) -> tuple[int, int, int, bytes]:
    return _newest_first(option[0])
