"""Revocation entries and their reasons."""

from __future__ import annotations

import enum
from typing import NamedTuple


class Reason(enum.IntEnum):
    """Why a card is on the invalidity list (失效原因). Values are part of the wire format."""

    TEMPORARY_LOSS = 1  # 临时挂失
    LOSS = 2  # 挂失
    DAMAGED = 3  # 损坏
    EXPIRED = 4  # 到期
    REPLACED = 5  # 换卡
    CANCELLED = 6  # 注销
    OTHER = 7

    @classmethod
    def parse(cls, value: object) -> Reason:
        """Accept a Reason, its number or its name (any case); reject anything else clearly."""
        if isinstance(value, Reason):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                raise ValueError(f"unknown reason code {value}") from None
        if isinstance(value, str):
            try:
                return cls[value.strip().upper().replace("-", "_").replace(" ", "_")]
            except KeyError:
                names = ", ".join(r.name.lower() for r in cls)
                raise ValueError(f"unknown reason {value!r}; expected one of {names}") from None
        raise ValueError(f"unknown reason {value!r}")


# Reasons whose entries may carry an end time (issue #17): a temporary loss lapses unless
# it is made formal; "other" covers an office's own short holds. A formal loss, damage,
# expiry, replacement or cancellation is for good until removed.
MAY_LAPSE = frozenset({Reason.TEMPORARY_LOSS, Reason.OTHER})


class Entry(NamedTuple):
    """One revoked card as a node holds it. (A NamedTuple: built on every revoked answer,
    and a frozen dataclass costs several times more to construct.)"""

    card_id: str  # canonical text
    reason: Reason
    effective_time: int  # unix seconds
    publisher: str  # 6-digit code of the publishing authority
    version: int  # the feed version that added (or last changed) it
    # When it lapses by itself (unix seconds; issue #17): answered REVOKED before, and
    # NOT_REVOKED from this second on. None: it stays until a delta removes it.
    expires_at: int | None = None

    def lapsed(self, now: float) -> bool:
        """Over by ``now`` (at its end time exactly, it is over)."""
        return self.expires_at is not None and now >= self.expires_at
