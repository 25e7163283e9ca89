"""Error types raised by the library. Each carries the failing value in its message."""

from __future__ import annotations

# An error message names the failing value, but never echoes more of it than this: a 15 MiB
# card id echoed whole makes the status itself too large for the client (gRPC's 8 KiB
# metadata limit), which then sees RESOURCE_EXHAUSTED instead of INVALID_ARGUMENT.
SHOWN_CHARS = 64


def shown(value: object) -> str:
    """``repr(value)``, cut to :data:`SHOWN_CHARS` with a note of the full length."""
    text = repr(value)
    if len(text) <= SHOWN_CHARS:
        return text
    size = f"{len(value)} characters" if isinstance(value, str | bytes) else f"{len(text)} in repr"
    return f"{text[:SHOWN_CHARS]}... ({size})"


def clipped(text: str) -> str:
    """``text`` as it is (no quotes), cut to :data:`SHOWN_CHARS` with a note of its length."""
    if len(text) <= SHOWN_CHARS:
        return text
    return f"{text[:SHOWN_CHARS]}... ({len(text)} characters)"


class BlacklistError(Exception):
    """Base class of every error this library raises on purpose."""


class CardIdError(BlacklistError, ValueError):
    """A card identification code is malformed. The message names the problem and the value."""

    def __init__(self, problem: str, value: object, index: int | None = None) -> None:
        self.problem = problem
        self.value = value
        self.index = index
        where = f" (item {index})" if index is not None else ""
        super().__init__(f"invalid card id {shown(value)}{where}: {problem}")


class CodecError(BlacklistError, ValueError):
    """Bytes that do not decode as a delta, snapshot or entry block."""


class StoreError(BlacklistError):
    """The LMDB store is unusable (wrong schema, corrupt record)."""


class CheckUnavailable(BlacklistError):
    """A check could not be answered from a consistent, confirmed state (the LMDB read of a
    fingerprint hit failed, or the store kept changing under the call). A check never falls
    back to NOT_REVOKED: the terminal gets an error status and retries (fail closed)."""
