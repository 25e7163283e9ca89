"""PSAM ids: the secure access modules in POS terminals, and the deny list they go on.

A PSAM (the terminal's own secure module) can be lost, stolen or withdrawn; a terminal
presenting one that its authority has denied must be refused (DESIGN §6). PSAMs travel in
the same feeds as cards, as a second list kind (see :mod:`blacklist.delta`), under the same
signatures and the same region scopes.

Text form (what a terminal sends as ``psam_id``; 22 ASCII characters)::

    RRRRRR SSSSSSSSSSSSSSSS
    region serial
    6 digits, the division code of the authority that issued the PSAM (province-level first
      two digits, as for cards), so its deny entry falls in that authority's scope
    16 hex digits, the PSAM's 64-bit serial number

The canonical form is upper-case. In a delta a PSAM is a row of a card block with middle 0
(entryblock.py), so the same sorted, gap-encoded block carries it; the store keys it by
region (u24) and serial (u64), 11 bytes (``psam_key``).
"""

from __future__ import annotations

import re

import numpy as np

from blacklist.columns import CardColumns
from blacklist.errors import BlacklistError, shown
from blacklist.regions import PROVINCE_PREFIXES

PSAM_ID_LENGTH = 22
PSAM_KEY_LENGTH = 11
_PSAM_RE = re.compile(r"[0-9]{6}[0-9A-Fa-f]{16}")


class PsamIdError(BlacklistError, ValueError):
    """A PSAM id that is not 6 region digits and 16 hex digits; names the value."""

    def __init__(self, problem: str, value: object) -> None:
        super().__init__(f"invalid PSAM id {shown(value)}: {problem}")
        self.problem = problem
        self.value = value


def canonical_psam(value: object) -> str:
    """Validate a PSAM id and return its canonical upper-case text."""
    if not isinstance(value, str):
        raise PsamIdError(f"expected text, got {type(value).__name__}", value)
    if len(value) != PSAM_ID_LENGTH:
        raise PsamIdError(f"length {len(value)}, expected {PSAM_ID_LENGTH}", value)
    if not value.isascii() or _PSAM_RE.fullmatch(value) is None:
        if not value[:6].isdigit() or not value[:6].isascii():
            raise PsamIdError("characters 1-6 must be the issuing region's digits", value)
        raise PsamIdError("characters 7-22 must be hex digits (the PSAM serial)", value)
    if int(value[:2]) not in PROVINCE_PREFIXES:
        raise PsamIdError(f"region {value[:6]} is in no province ({value[:2]})", value)
    return value.upper()


def psam_key(canonical: str) -> bytes:
    """The 11-byte binary key of a canonical PSAM id."""
    return int(canonical[:6]).to_bytes(3, "big") + int(canonical[6:], 16).to_bytes(8, "big")


def psam_text(key: bytes) -> str:
    """The canonical text of an 11-byte PSAM key."""
    return f"{int.from_bytes(key[:3], 'big'):06d}{int.from_bytes(key[3:11], 'big'):016X}"


def psam_columns(psam_ids: list[str]) -> CardColumns:
    """PSAM ids (validated here) as card-block rows: region, middle 0, serial."""
    canon = [canonical_psam(p) for p in psam_ids]
    return CardColumns(
        np.array([int(p[:6]) for p in canon], dtype=np.uint32),
        np.zeros(len(canon), dtype=np.uint64),
        np.array([int(p[6:], 16) for p in canon], dtype=np.uint64),
    )


def column_text(cards: CardColumns, i: int) -> str:
    """The PSAM id of row ``i`` of a PSAM block."""
    return f"{int(cards.region[i]):06d}{int(cards.serial[i]):016X}"


def column_key(cards: CardColumns, i: int) -> bytes:
    return int(cards.region[i]).to_bytes(3, "big") + int(cards.serial[i]).to_bytes(8, "big")


class PsamDenied(BlacklistError):
    """A terminal presented a PSAM on the deny list: the call is refused, not answered."""

    def __init__(self, psam_id: str, reason: str, since: int, publisher: str) -> None:
        super().__init__(
            f"PSAM {psam_id} is denied by {publisher} ({reason.lower()}, since {since}): "
            "this terminal may not check cards until its PSAM is replaced"
        )
        self.psam_id = psam_id
