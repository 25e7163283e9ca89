"""Building the signed offline filter (:mod:`blacklist.filters.offline`) from a store.

One partition per publisher that holds entries under the scope, or whose own code lies
under it (so a city with nothing revoked still states its head and freshness). A partition
holds every live entry of that publisher whose region starts with the scope, whoever the
card's authority is: a check at a node answers REVOKED for any publisher's entry, so the
filter must too (zero false negatives).

Updates (CRLite's lesson, mozilla/crlite#316: list-style updates grow; Clubcard splits by
issuer): a partition whose feed head (version, digest) is the one the previous file covers
is not rebuilt, its filters are taken over as they are, and an update file
(:func:`update_bytes`) leaves out every body the previous file already has. A terminal
applies it with ``offline_read.parse(update, previous=old)``; what it gets is byte for byte the
full file. Only its freshness (``fresh_at``, the statement) moves without a rebuild.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import xxhash
from numpy.typing import NDArray

from blacklist.cardbatch import matrix_from_columns
from blacklist.certs import Certificate
from blacklist.delta import FeedHead
from blacklist.entryblock import CardColumns, EntryColumns
from blacklist.filters import fuse
from blacklist.filters.fingerprint import xxh64_rows
from blacklist.filters.offline import (
    MAX_PARTITIONS,
    OfflineFilter,
    Partition,
    check_expiry,
    check_scope_text,
)
from blacklist.psam import column_text
from blacklist.records import FeedState
from blacklist.signing import SigningKey
from blacklist.sync.head_statement import HeadStatement

_HASH_CHUNK = 1 << 20  # rows hashed at once: a 32 MiB canonical matrix


@dataclass(frozen=True)
class PartitionSource:
    """What one publisher contributes: its head and freshness, and the hashed ids."""

    head: FeedHead
    fresh_at: int
    statement: bytes
    regions: tuple[int, ...]
    card_keys: NDArray[np.uint64]
    psam_keys: NDArray[np.uint64]


class _Psams(Protocol):
    def feed_psams(self, publisher: str) -> tuple[EntryColumns, NDArray[np.uint64]]: ...


class FilterSourceStore(Protocol):
    """What the exporter reads of a store (a writer's or a read-only follower's)."""

    @property
    def feeds(self) -> Mapping[str, FeedState]: ...

    @property
    def psams(self) -> _Psams: ...

    def feed_entries(self, publisher: str) -> tuple[EntryColumns, NDArray[np.uint64]]: ...


def _under(region: NDArray[np.uint32], scope: str) -> NDArray[np.bool_]:
    keep: NDArray[np.bool_] = (region // (10 ** (6 - len(scope)))) == int(scope)
    return keep


def card_keys(cards: CardColumns) -> NDArray[np.uint64]:
    """The project's card hash (XXH64 of the canonical id) of every row."""
    out = np.empty(len(cards.region), dtype=np.uint64)
    for start in range(0, len(out), _HASH_CHUNK):
        stop = start + _HASH_CHUNK
        matrix = matrix_from_columns(
            cards.region[start:stop], cards.middle[start:stop], cards.serial[start:stop]
        )
        out[start:stop] = xxh64_rows(matrix)
    return out


def psam_keys(psam_ids: Iterable[str]) -> NDArray[np.uint64]:
    """XXH64 of each canonical PSAM id's 22 ASCII bytes."""
    digest = xxhash.xxh64_intdigest
    return np.array([digest(p.encode("ascii")) for p in psam_ids], dtype=np.uint64)


def sources_from_store(
    store: FilterSourceStore, scope: str, statements: Mapping[str, HeadStatement]
) -> list[PartitionSource]:
    """Every partition's source for ``scope``, from the store's live entries."""
    check_scope_text(scope)
    out = []
    for publisher in sorted(store.feeds):
        feed = store.feeds[publisher]
        entries, _ = store.feed_entries(publisher)
        cards = entries.cards
        keep = _under(cards.region, scope)
        kept = CardColumns(cards.region[keep], cards.middle[keep], cards.serial[keep])
        psam_rows, _ = store.psams.feed_psams(publisher)
        pkeep = _under(psam_rows.cards.region, scope)
        psams = [column_text(psam_rows.cards, int(i)) for i in np.flatnonzero(pkeep)]
        if not len(kept.region) and not psams and not publisher.startswith(scope):
            continue
        regions = np.union1d(kept.region, psam_rows.cards.region[pkeep]).astype(np.int64)
        statement = statements.get(publisher)
        out.append(
            PartitionSource(
                feed.head,
                feed.checked_at,
                statement.to_bytes() if statement is not None else b"",
                tuple(int(r) for r in regions),
                card_keys(kept),
                psam_keys(psams),
            )
        )
    return out


def build_partition(source: PartitionSource) -> Partition:
    head = source.head
    return Partition(
        head.publisher,
        head.version,
        head.digest,
        source.fresh_at,
        source.statement,
        source.regions,
        fuse.build(source.card_keys),
        fuse.build(source.psam_keys),
    )


@dataclass(frozen=True)
class Built:
    """Partitions for a new file, and which of them were rebuilt."""

    partitions: tuple[Partition, ...]
    rebuilt: tuple[str, ...]
    reused: tuple[str, ...]


def build_partitions(
    sources: Sequence[PartitionSource], previous: OfflineFilter | None = None
) -> Built:
    """Build each partition, or take it over from ``previous`` when it covers the same
    feed head (then only its freshness is updated)."""
    if len(sources) > MAX_PARTITIONS:
        raise ValueError(f"{len(sources)} partitions; a filter holds at most {MAX_PARTITIONS}")
    old = {p.publisher: p for p in previous.partitions} if previous else {}
    parts, rebuilt, reused = [], [], []
    for source in sources:
        head = source.head
        held = old.get(head.publisher)
        if held is not None and (held.version, held.head_digest) == (head.version, head.digest):
            parts.append(
                dataclasses.replace(held, fresh_at=source.fresh_at, statement=source.statement)
            )
            reused.append(head.publisher)
        else:
            parts.append(build_partition(source))
            rebuilt.append(head.publisher)
    return Built(tuple(parts), tuple(rebuilt), tuple(reused))


def sign_filter(
    key: SigningKey,
    chain: Sequence[Certificate],
    scope: str,
    issued_at: int,
    expires_at: int,
    partitions: Sequence[Partition],
) -> OfflineFilter:
    """The signed filter. The chain's leaf must be ``key`` (a reader checks the rest)."""
    check_scope_text(scope)
    check_expiry(issued_at, expires_at)
    if chain and chain[-1].key_id != key.key_id:
        raise ValueError(
            f"the chain's leaf certifies key {chain[-1].key_id.hex()}, not the signing key "
            f"{key.key_id.hex()}"
        )
    unsigned = OfflineFilter(
        scope,
        issued_at,
        expires_at,
        key.publisher,
        key.suite_id,
        key.key_id,
        tuple(partitions),
        tuple(c.to_bytes() for c in chain),
    )
    return dataclasses.replace(unsigned, signature=key.sign_body(unsigned.header))


def update_bytes(new: OfflineFilter, previous: OfflineFilter) -> bytes:
    """``new`` without the bodies ``previous`` already holds: what ships to terminals."""
    return new.to_bytes(omit=frozenset(p.body_digest for p in previous.partitions))
