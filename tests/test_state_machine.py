"""The store, index and feed logic against a plain dict, pyroaring-style.

Fingerprints are 3 bits wide here, so almost every card collides with others: reinstating
one must never hide another (no false negatives), across reopen and index reload.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from blacklist.authority import Revocation, build_delta
from blacklist.checker import Checker, CheckStatus
from blacklist.clock import ManualClock
from blacklist.delta import FeedHead
from blacklist.entry import Reason
from blacklist.rejections import DeltaRejected
from blacklist.signing import Keyring, SigningKey
from blacklist.store import RevocationStore

GZ = SigningKey.generate("440100", ["4401"])
SZ = SigningKey.generate("440300", ["4403"])
KEYS = Keyring([GZ.trusted(), SZ.trusted()])
POOL = [f"4401{i % 3:02d}D156000005{i * 7919:016X}" for i in range(24)] + [
    f"440300D156000005{i:016X}" for i in range(8)
]
cards = st.sampled_from(POOL)
reasons = st.sampled_from(list(Reason))


class StoreVsDict(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="sm-"))
        self.clock = ManualClock()
        self.store = self._open(persist=False)
        self.model: dict[str, tuple[Reason, int]] = {}
        self.versions = {"440100": 0, "440300": 0}

    def _open(self, persist: bool) -> RevocationStore:
        return RevocationStore(
            self.dir, clock=self.clock, map_size=1 << 26, fingerprint_width=3, retain_deltas=3
        )

    def _key(self, card: str) -> SigningKey:
        return GZ if card.startswith("4401") else SZ

    def _publish(self, revoke: dict[str, tuple[Reason, int]], reinstate: set[str]) -> None:
        by_pub: dict[str, tuple[list[Revocation], list[str]]] = {}
        for c, (r, t) in revoke.items():
            by_pub.setdefault(self._key(c).publisher, ([], []))[0].append(Revocation(c, r, t))
        for c in reinstate:
            by_pub.setdefault(self._key(c).publisher, ([], []))[1].append(c)
        for pub, (adds, removes) in by_pub.items():
            key = GZ if pub == "440100" else SZ
            delta = build_delta(key, self.store.head(pub), adds, removes, int(self.clock()))
            self.store.apply(delta.to_bytes(), KEYS)
            self.versions[pub] += 1

    @rule(
        new=st.dictionaries(cards, st.tuples(reasons, st.integers(0, 2**40)), max_size=6),
        gone=st.sets(cards, max_size=4),
    )
    def publish(self, new: dict[str, tuple[Reason, int]], gone: set[str]) -> None:
        gone -= set(new)
        self._publish(new, gone)
        self.model.update(new)
        for c in gone:
            self.model.pop(c, None)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def reinstate_one(self, data: st.DataObject) -> None:
        c = data.draw(st.sampled_from(sorted(self.model)))
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
            self.store.apply(data, KEYS)
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
        checker = Checker(self.store, KEYS, clock=self.clock)
        batch = checker.check_many(POOL)
        for i, c in enumerate(POOL):
            result = checker.check(c)
            expected = self.model.get(c)
            if expected is None:
                assert result.status is not CheckStatus.REVOKED, c
            else:
                assert result.status is CheckStatus.REVOKED, c
                assert result.entry is not None
                assert (result.entry.reason, result.entry.effective_time) == expected
            assert batch[i].status is result.status, c
        stored = {e.card_id: (e.reason, e.effective_time) for e in self.store.iter_entries()}
        assert stored == self.model
        assert len(self.store.index) == len(self.model)
        for pub, v in self.versions.items():
            assert self.store.head(pub).version == v

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)


StoreVsDict.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
TestStoreVsDict = StoreVsDict.TestCase
