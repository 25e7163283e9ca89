"""The pinned roots (issue #14): the ministry's root key, or two of them while the root moves
(a new root, say SM2, is pinned beside the old one before anything it certifies is used, and
the old one is dropped once nothing chains to it any more). Chains are tried against the root
that issued their first certificate; the empty chain names each root itself. More roots than
:data:`MAX_ROOTS` is refused: a root is the whole national scope, and a long list of them is
a list of ways in.

Also here: the keyring of a set of chains (:func:`keyring_from_chains`), the part of
:mod:`blacklist.trust` that needs no time dimension.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from blacklist.certs import Certificate, KeyRevocation
from blacklist.chainverify import (
    ConflictingCertificates,
    RevocationIndex,
    SignatureCache,
    TrustAnchor,
    TrustError,
    verify_chain,
)
from blacklist.signing import Keyring, TrustedKey

MAX_ROOTS = 2  # the old root and the new one, while the ministry's root moves

Chain = tuple[Certificate, ...]
Roots = TrustAnchor | Sequence[TrustAnchor]


class TooManyRoots(ValueError):
    """A trust anchor naming no root, more than :data:`MAX_ROOTS`, or one root twice."""


def as_anchors(roots: Roots) -> tuple[TrustAnchor, ...]:
    """One root or a sequence of 1..MAX_ROOTS distinct roots, as a tuple."""
    out = (roots,) if isinstance(roots, TrustAnchor) else tuple(roots)
    if not 1 <= len(out) <= MAX_ROOTS:
        raise TooManyRoots(f"a trust anchor names 1..{MAX_ROOTS} root keys, got {len(out)}")
    ids = [a.key_id.hex() for a in out]
    if len(set(ids)) != len(ids):
        raise TooManyRoots(f"a trust anchor names root key {ids[0]} twice")
    return out


def anchor_for(anchors: Sequence[TrustAnchor], chain: Sequence[Certificate]) -> TrustAnchor:
    """The root that issued ``chain``'s first certificate; the first root if none did (whose
    :class:`~blacklist.chainverify.UnknownIssuer` then names the chain)."""
    if chain:
        for anchor in anchors:
            if anchor.key_id == chain[0].issuer_key_id:
                return anchor
    return anchors[0]


def anchored(
    anchors: Sequence[TrustAnchor], chains: Iterable[Chain]
) -> list[tuple[TrustAnchor, Chain]]:
    """Each chain with the root it starts from; the empty chain once per root."""
    out: list[tuple[TrustAnchor, Chain]] = []
    for chain in chains:
        if chain:
            out.append((anchor_for(anchors, chain), chain))
        else:
            out.extend((anchor, chain) for anchor in anchors)
    return out


def keyring_from_chains(
    chains: Iterable[Sequence[Certificate]],
    anchor: Roots,
    revocations: Iterable[KeyRevocation],
    at: int,
) -> tuple[Keyring, list[TrustError]]:
    """The keyring of every leaf whose chain verifies at ``at``, and why the others did not.

    One key certified by several valid chains for the same publisher gets the union of their
    prefixes (any valid certificate suffices); certified for different publishers, it is
    ambiguous and left out, with a :class:`ConflictingCertificates` for each such chain.
    """
    pairs = anchored(as_anchors(anchor), (tuple(c) for c in chains))
    ring, errors, _ = keyring_of(pairs, RevocationIndex(revocations), at, SignatureCache())
    return ring, errors


def keyring_of(
    chains: Iterable[tuple[TrustAnchor, Chain]],
    revs: RevocationIndex,
    at: int,
    signatures: SignatureCache,
) -> tuple[Keyring, list[TrustError], dict[bytes, list[Chain]]]:
    """:func:`keyring_from_chains` of chains paired with their roots, and the chains that
    verified for each key it holds."""
    errors: list[TrustError] = []
    by_id: dict[bytes, list[tuple[TrustedKey, Chain]]] = {}
    for anchor, chain in chains:
        try:
            key = verify_chain(chain, anchor, revs, at, signatures=signatures)
        except TrustError as exc:
            errors.append(exc)
            continue
        by_id.setdefault(key.key_id, []).append((key, tuple(chain)))
    keys: list[TrustedKey] = []
    valid: dict[bytes, list[Chain]] = {}
    for key_id, found in by_id.items():
        publishers = sorted({k.publisher for k, _ in found})
        if len(publishers) > 1:
            for _, chain in found:
                leaf = chain[-1] if chain else None
                name = leaf.label if leaf is not None else "the pinned root key"
                errors.append(
                    ConflictingCertificates(
                        f"{name}: key {key_id.hex()} is certified for publishers {publishers}",
                        leaf,
                    )
                )
            continue
        first = found[0][0]
        prefixes = sorted({p for k, _ in found for p in k.prefixes})
        keys.append(TrustedKey(first.suite_id, first.public, first.publisher, tuple(prefixes)))
        valid[key_id] = [chain for _, chain in found]
    return Keyring(keys), errors, valid
