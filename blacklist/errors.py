"""Error types raised by the library. Each carries the failing value in its message."""

from __future__ import annotations


class BlacklistError(Exception):
    """Base class of every error this library raises on purpose."""


class CardIdError(BlacklistError, ValueError):
    """A card identification code is malformed. The message names the problem and the value."""

    def __init__(self, problem: str, value: object, index: int | None = None) -> None:
        self.problem = problem
        self.value = value
        self.index = index
        where = f" (item {index})" if index is not None else ""
        super().__init__(f"invalid card id {value!r}{where}: {problem}")


class CodecError(BlacklistError, ValueError):
    """Bytes that do not decode as a delta, snapshot or entry block."""


class StoreError(BlacklistError):
    """The LMDB store is unusable (wrong schema, corrupt record)."""
