"""Where a publisher's feed stands (its head), and the publisher code that names it.

Apart from :mod:`blacklist.delta` so that readers of the store (the check path) can name a
feed's head without importing the delta codec; ``delta.py`` re-exports both names.
"""

from __future__ import annotations

from dataclasses import dataclass

DIGEST_LENGTH = 32
ZERO_DIGEST = bytes(DIGEST_LENGTH)


def publisher_code(publisher: str) -> int:
    if len(publisher) != 6 or not publisher.isdigit() or not publisher.isascii():
        raise ValueError(f"publisher {publisher!r} is not a 6-digit code")
    return int(publisher)


@dataclass(frozen=True, slots=True)
class FeedHead:
    """Where one publisher's feed stands: its latest version and that delta's digest."""

    publisher: str
    version: int
    digest: bytes

    @classmethod
    def genesis(cls, publisher: str) -> FeedHead:
        """The head of a feed that has no deltas yet."""
        return cls(publisher, 0, ZERO_DIGEST)
