"""The store, index and feed logic against a plain dict, pyroaring-style.

Fingerprints are 3 bits wide here, so almost every card collides with others: reinstating
one must never hide another (no false negatives), across reopen and index reload.

Entries may lapse (issue #17): the clock advances as one of the rules and the sweep runs as
another, and at every step a card is REVOKED exactly while the model holds it and its end
time (if any) is after the clock, whether or not the sweep has run.

The machine runs under each signing suite (issue #14), with half the examples each.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from blacklist.authority import Revocation, build_delta
from blacklist.checker import Checker, CheckStatus
from blacklist.clock import ManualClock
from blacklist.delta import FeedHead
from blacklist.entry import Reason
from blacklist.rejections import DeltaRejected
from blacklist.signing import Keyring, SigningKey
from blacklist.store import RevocationStore
from tests.conftest import SUITE_NAMES

POOL = [f"4401{i % 3:02d}D156000005{i * 7919:016X}" for i in range(24)] + [
    f"440300D156000005{i:016X}" for i in range(8)
]
cards = st.sampled_from(POOL)
reasons = st.sampled_from(list(Reason))
Held = tuple[Reason, int, int | None]  # reason, effective time, end time


class StoreVsDict(RuleBasedStateMachine):
    GZ: SigningKey
    SZ: SigningKey
    KEYS: Keyring

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="sm-"))
        self.clock = ManualClock()
        self.store = self._open(persist=False)
        self.model: dict[str, Held] = {}
        self.versions = {"440100": 0, "440300": 0}

    def _open(self, persist: bool) -> RevocationStore:
        return RevocationStore(
            self.dir, clock=self.clock, map_size=1 << 26, fingerprint_width=3, retain_deltas=3
        )

    def _key(self, card: str) -> SigningKey:
        return self.GZ if card.startswith("4401") else self.SZ

    def _publish(self, revoke: dict[str, Held], reinstate: set[str]) -> None:
        by_pub: dict[str, tuple[list[Revocation], list[str]]] = {}
        for c, (r, t, end) in revoke.items():
            by_pub.setdefault(self._key(c).publisher, ([], []))[0].append(Revocation(c, r, t, end))
        for c in reinstate:
            by_pub.setdefault(self._key(c).publisher, ([], []))[1].append(c)
        for pub, (adds, removes) in by_pub.items():
            key = self.GZ if pub == "440100" else self.SZ
            delta = build_delta(key, self.store.head(pub), adds, removes, int(self.clock()))
            self.store.apply(delta.to_bytes(), self.KEYS)
            self.versions[pub] += 1

    @rule(
        new=st.dictionaries(cards, st.tuples(reasons, st.integers(0, 2**40)), max_size=6),
        gone=st.sets(cards, max_size=4),
    )
    def publish(self, new: dict[str, tuple[Reason, int]], gone: set[str]) -> None:
        gone -= set(new)
        held = {c: (r, t, None) for c, (r, t) in new.items()}
        self._publish(held, gone)
        self.model.update(held)
        for c in gone:
            self.model.pop(c, None)

    @rule(
        new=st.dictionaries(
            cards,
            st.tuples(
                st.sampled_from([Reason.TEMPORARY_LOSS, Reason.OTHER]),
                st.integers(0, 1000),
                st.integers(1, 120),
            ),
            min_size=1,
            max_size=6,
        )
    )
    def publish_lapsing(self, new: dict[str, tuple[Reason, int, int]]) -> None:
        """Temporary losses (or extensions of them) that end a little after the clock."""
        now = int(self.clock())
        held = {c: (r, now - back, now + ahead) for c, (r, back, ahead) in new.items()}
        self._publish(held, set())
        self.model.update(held)

    @rule(seconds=st.sampled_from([1, 59, 60, 61]) | st.integers(0, 150))
    def advance_clock(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule()
    def sweep(self) -> None:
        self.store.sweep()
        now = self.clock()
        for c in [c for c, (_, _, end) in self.model.items() if end is not None and now >= end]:
            del self.model[c]

    def _live(self) -> dict[str, Held]:
        now = self.clock()
        return {c: h for c, h in self.model.items() if h[2] is None or now < h[2]}

    @precondition(lambda self: self._live())
    @rule(data=st.data())
    def reinstate_one(self, data: st.DataObject) -> None:
        c = data.draw(st.sampled_from(sorted(self._live())))
        self._publish({}, {c})
        del self.model[c]

    @rule(c=cards, kind=st.sampled_from(["replay", "gap", "fork", "tamper"]))
    def rejected_delta_changes_nothing(self, c: str, kind: str) -> None:
        key = self._key(c)
        head = self.store.head(key.publisher)
        if kind == "replay":
            data = self.store.retained_delta(key.publisher, head.version)
            if data is None:
                return
        elif kind == "gap":
            data = build_delta(
                key,
                FeedHead(head.publisher, head.version + 1, head.digest),
                [Revocation(c, Reason.LOSS, 1)],
            ).to_bytes()
        elif kind == "fork":
            data = build_delta(
                key,
                FeedHead(head.publisher, head.version, b"\x01" * 32),
                [Revocation(c, Reason.LOSS, 1)],
            ).to_bytes()
        else:
            raw = bytearray(build_delta(key, head, [Revocation(c, Reason.LOSS, 1)]).to_bytes())
            raw[-3] ^= 0x40
            data = bytes(raw)
        try:
            self.store.apply(data, self.KEYS)
        except DeltaRejected:
            pass
        else:
            raise AssertionError(f"{kind} delta was accepted")

    @rule(save=st.booleans())
    def reopen(self, save: bool) -> None:
        # save=False is a crash: the persisted index is stale and must be rebuilt.
        self.store.close(save_index=save)
        self.store = self._open(persist=True)

    @invariant()
    def agrees_with_model(self) -> None:
        checker = Checker(self.store, self.KEYS, clock=self.clock)
        batch = checker.check_many(POOL)
        live = self._live()
        for i, c in enumerate(POOL):
            result = checker.check(c)
            expected = live.get(c)
            if expected is None:
                assert result.status is not CheckStatus.REVOKED, c
            else:
                assert result.status is CheckStatus.REVOKED, c
                assert result.entry is not None
                e = result.entry
                assert (e.reason, e.effective_time, e.expires_at) == expected
            assert batch[i].status is result.status, c
        stored = {
            e.card_id: (e.reason, e.effective_time, e.expires_at) for e in self.store.iter_entries()
        }
        assert stored == live
        # Every stored entry, lapsed or not, keeps its fingerprint until the sweep takes it.
        assert len(self.store.index) == self.store.entry_count() == len(self.model)
        # The per-reason counts the metrics read follow every write, sweep and reopen.
        counts = dict.fromkeys(Reason, 0)
        for reason, _, _ in self.model.values():
            counts[reason] += 1
        assert self.store.reason_counts.by_reason() == counts
        now = int(self.clock())
        soon = sum(1 for _, _, e in self.model.values() if e is not None and now <= e < now + 60)
        assert self.store.lapsing_between(now, now + 60) == soon
        for pub, v in self.versions.items():
            assert self.store.head(pub).version == v

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _in_suite(suite: str) -> type[StoreVsDict]:
    gz = SigningKey.generate("440100", ["4401"], suite)
    sz = SigningKey.generate("440300", ["4403"], suite)
    ring = Keyring([gz.trusted(), sz.trusted()])
    return type(f"StoreVsDict_{suite}", (StoreVsDict,), {"GZ": gz, "SZ": sz, "KEYS": ring})


@pytest.mark.parametrize("suite", SUITE_NAMES)
def test_store_vs_dict(suite: str) -> None:
    run_state_machine_as_test(
        _in_suite(suite),
        settings=settings(max_examples=20, stateful_step_count=25, deadline=None),
    )
