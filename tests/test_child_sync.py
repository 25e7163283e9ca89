"""A child pulls at once when its upstream pushes a head statement ahead of its own head
(blacklist/edge/child.py): the delta it missed between its first pull and its Subscribe, or
a feed the upstream took by snapshot (never pushed), no later push would bring. Found by the
national simulator (blacklist/sim): without this, such a child waited a whole sync_interval.
A statement at or behind the head, or malformed bytes, start no pull."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from blacklist.delta import FeedHead
from blacklist.edge.child import ChildSync
from blacklist.signing import SigningKey
from blacklist.sync.budget import TransferLimits
from blacklist.sync.head_statement import sign_statement
from node.gen.blacklist.v1 import sync_pb2

GZ = "440100"
KEY = SigningKey.generate(GZ, ["4401"])


class Follower:
    def __init__(self, version: int) -> None:
        self.version = version
        self.statements: list[bytes] = []

    def heads(self) -> dict[str, FeedHead]:
        return {GZ: self.head(GZ)}

    def head(self, publisher: str) -> FeedHead:
        if publisher != GZ:
            return FeedHead.genesis(publisher)
        return FeedHead(GZ, self.version, bytes(32))

    async def accept_statements(self, statements: list[bytes]) -> None:
        self.statements += statements

    async def apply(self, data: bytes) -> None:
        raise AssertionError("no delta in these streams")


class Stub:
    def __init__(self, events: list[sync_pb2.SubscribeEvent]) -> None:
        self._events = events

    def Subscribe(self, request: Any) -> AsyncIterator[sync_pb2.SubscribeEvent]:
        async def stream() -> AsyncIterator[sync_pb2.SubscribeEvent]:
            for event in self._events:
                yield event

        return stream()


def statement(version: int, publisher: str = GZ) -> sync_pb2.SubscribeEvent:
    key = KEY if publisher == GZ else SigningKey.generate(publisher, [publisher[:4]])
    head = FeedHead(publisher, version, bytes([version % 256]) * 32)
    return sync_pb2.SubscribeEvent(
        head_statement=sign_statement(key, head, 1_750_000_000).to_bytes()
    )


def pulled(head: int, events: list[sync_pb2.SubscribeEvent]) -> bool:
    async def run() -> bool:
        gap = asyncio.Event()
        follower = Follower(head)
        child = ChildSync(
            follower,  # type: ignore[arg-type]
            node="440100",
            limits=TransferLimits(),
            interval=5.0,
            gap=gap,
        )
        await child.subscribe(Stub(events))
        assert len(follower.statements) == len(events)  # every statement still goes in
        return gap.is_set()

    return asyncio.run(run())


@pytest.mark.parametrize(("stated", "pull"), [(6, False), (7, False), (8, True), (9, True)])
def test_a_statement_ahead_of_the_head_pulls_now(stated: int, pull: bool) -> None:
    assert pulled(7, [statement(stated)]) is pull


def test_a_statement_of_a_feed_this_child_lacks_pulls() -> None:
    assert pulled(7, [statement(1, "440300")])


def test_malformed_statement_bytes_pull_nothing() -> None:
    junk = sync_pb2.SubscribeEvent(head_statement=b"\x00" * 40)
    assert not pulled(7, [junk, statement(7)])
