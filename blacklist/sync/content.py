"""What a signed body may contain, for the key that signed it: pure, no I/O.

Step 6 of :mod:`blacklist.sync.accept` (which calls these only after the envelope, the key,
the signature, the time and the numbering checked out and the body decoded within its
limits): every card's and PSAM's region within the key's prefixes, reasons known, end times
only where a reason lapses (issue #17), no card twice, and the trust section by
:mod:`blacklist.sync.trust_rules`. The first failure raises its rejection.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from blacklist.delta import Delta, Snapshot
from blacklist.entry import MAY_LAPSE, Reason
from blacklist.entryblock import CardColumns, EntryColumns
from blacklist.rejections import BadEndTime, DuplicateCard, KeyNotAllowed, MalformedDelta
from blacklist.signing import TrustedKey
from blacklist.sync.trust_rules import check_trust_records

_MAX_REASON = max(Reason)
_LAPSING = np.array(sorted(MAY_LAPSE), dtype=np.uint8)


def _distinct_regions(cards: CardColumns) -> set[int]:
    """Blocks are sorted by region, so the distinct regions are where the column changes
    (O(n), no sort)."""
    r = cards.region
    if len(r) == 0:
        return set()
    return set(r[np.flatnonzero(np.r_[True, r[1:] != r[:-1]])].tolist())


def _check_regions(key: TrustedKey, label: str, *card_sets: CardColumns) -> None:
    regions = set().union(*(_distinct_regions(c) for c in card_sets))
    for region in sorted(regions):
        code = f"{region:06d}"
        if not key.allows_region(code):
            raise KeyNotAllowed(
                f"{label}: region {code} is outside the key's prefixes {list(key.prefixes)}"
            )


def _check_entries(label: str, entries: EntryColumns) -> None:
    reasons = entries.reason
    if len(reasons) and (int(reasons.min()) < 1 or int(reasons.max()) > _MAX_REASON):
        bad = int(reasons[(reasons < 1) | (reasons > _MAX_REASON)][0])
        raise MalformedDelta(f"{label}: unknown reason code {bad}")


def _check_ends(label: str, entries: EntryColumns, max_lapse: int, issued_at: int | None) -> None:
    """End times (issue #17) only on a reason that may lapse (entry.MAY_LAPSE), at most
    ``max_lapse`` after the effective time, and, in a delta, after its
    ``issued_at``: an entry added already over is an authority's mistake, not a change.
    (After the effective time is the codec's rule: expiry.py.)"""
    rows = np.flatnonzero(entries.ends)
    if not rows.size:
        return
    reasons = entries.reason[rows]
    wrong = np.flatnonzero(~np.isin(reasons, _LAPSING))
    if wrong.size:
        i = int(rows[wrong[0]])
        raise BadEndTime(
            f"{label}: {entries.cards.card_id(i)} has an end time, but reason "
            f"{Reason(int(entries.reason[i])).name} does not lapse"
        )
    ends, times = entries.ends[rows], entries.time[rows]
    # ends > times (codec), so the uint64 difference is exact.
    long = np.flatnonzero(ends.view(np.uint64) - times.view(np.uint64) > max_lapse)
    if long.size:
        i = int(rows[long[0]])
        raise BadEndTime(
            f"{label}: {entries.cards.card_id(i)} lapses {int(entries.ends[i]) - int(entries.time[i])}"
            f" s after its effective time, more than this node's {max_lapse}"
        )
    if issued_at is not None:
        over = np.flatnonzero(ends <= issued_at)
        if over.size:
            i = int(rows[over[0]])
            raise BadEndTime(
                f"{label}: {entries.cards.card_id(i)} ends at {int(entries.ends[i])}, "
                f"not after the delta's issued_at {issued_at}"
            )


def _check_unique(label: str, *card_sets: CardColumns) -> None:
    """Blocks are sorted, so a duplicate within one block is two equal neighbours; across
    blocks, the sorted union shows it the same way."""
    cards = CardColumns.concatenate(card_sets).sorted() if len(card_sets) > 1 else card_sets[0]
    dup = cards.first_duplicate()
    if dup is not None:
        raise DuplicateCard(f"{label}: card {dup} appears more than once")


def _check_psams(key: TrustedKey, label: str, adds: EntryColumns, removes: CardColumns) -> None:
    if not len(adds) and not len(removes):
        return
    _check_regions(key, f"{label} PSAMs", adds.cards, removes)
    _check_entries(f"{label} PSAMs", adds)
    _check_unique(f"{label} PSAMs", adds.cards, removes)


def check_delta_content(
    key: TrustedKey, delta: Delta, keys: Mapping[bytes, TrustedKey], max_lapse: int
) -> None:
    """Everything in a decoded delta's body, for the key that signed it."""
    label = f"delta {delta.publisher} v{delta.version}"
    _check_regions(key, label, delta.adds.cards, delta.removes)
    _check_entries(label, delta.adds)
    _check_ends(label, delta.adds, max_lapse, delta.header.issued_at)
    _check_unique(label, delta.adds.cards, delta.removes)
    _check_psams(key, label, delta.psam_adds, delta.psam_removes)
    check_trust_records(key, label, delta.trust, keys)


def check_snapshot_content(
    key: TrustedKey, snapshot: Snapshot, keys: Mapping[bytes, TrustedKey], max_lapse: int
) -> None:
    """Everything in a decoded snapshot's body, for the key that signed it."""
    label = f"snapshot {snapshot.publisher} v{snapshot.version}"
    _check_regions(key, label, snapshot.entries.cards)
    if len(snapshot.versions) and int(snapshot.versions.max()) > snapshot.version:
        raise MalformedDelta(f"{label}: an entry claims a version after the snapshot's")
    _check_entries(label, snapshot.entries)
    _check_ends(label, snapshot.entries, max_lapse, None)
    _check_unique(label, snapshot.entries.cards)
    if len(snapshot.psam_versions) and int(snapshot.psam_versions.max()) > snapshot.version:
        raise MalformedDelta(f"{label}: a PSAM entry claims a version after the snapshot's")
    _check_psams(key, label, snapshot.psams, CardColumns.empty())
    check_trust_records(key, label, snapshot.trust, keys)
