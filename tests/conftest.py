from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from blacklist.clock import ManualClock
from blacklist.signing import Keyring, SigningKey
from blacklist.store import RevocationStore


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run full-size scale tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="full-size scale test: pass --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def card(region: str = "440100", serial: int | None = None, middle: str = "D156000005") -> str:
    if serial is None:
        serial = random.getrandbits(64)
    return f"{region}{middle}{serial:016X}"


class Keys:
    """A small federation's signing keys: two cities, one province, one city of another
    province that is known (trusted) but publishes nothing in most tests."""

    def __init__(self) -> None:
        self.gz = SigningKey.generate("440100", ["4401"])
        self.sz = SigningKey.generate("440300", ["4403"])
        self.gd = SigningKey.generate("440000", ["4499"])
        self.bj = SigningKey.generate("110100", ["1101"])
        self.ring = Keyring(k.trusted() for k in (self.gz, self.sz, self.gd, self.bj))


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_750_000_000.0)


@pytest.fixture
def store(tmp_path: Path, clock: ManualClock) -> Iterator[RevocationStore]:
    s = RevocationStore(tmp_path / "store", clock=clock, map_size=1 << 30)
    yield s
    s.close()
