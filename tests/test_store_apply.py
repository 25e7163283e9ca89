"""The apply path's accounting (blacklist/store.py, issue #15): a delta reads from LMDB only
the cards whose fingerprint the index holds (the others cannot be stored), and still counts
added / changed / removed, feed entries and per-reason counts exactly. Checked against a
model over random revocations, re-revocations with another reason and reinstatements, at
the normal fingerprint width and at 8 bits (every card collides: the index says "maybe" for
each one and LMDB decides), with the index never missing a stored card."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from blacklist.authority import Authority, Revocation
from blacklist.cardid import text_to_key
from blacklist.clock import ManualClock
from blacklist.entry import Reason
from blacklist.fastpath import key_fingerprints
from blacklist.store import RevocationStore
from tests.conftest import Keys, card

POOL = [card("440100", serial) for serial in range(1, 25)]
REASONS = [Reason.LOSS, Reason.DAMAGED, Reason.REPLACED, Reason.CANCELLED]

step = st.lists(
    st.tuples(st.sampled_from(POOL), st.sampled_from([None, *REASONS])),
    min_size=1,
    max_size=12,
    unique_by=lambda t: t[0],
)


def stored(store: RevocationStore) -> dict[bytes, int]:
    """Every entry in LMDB: key -> reason (the value's first byte)."""
    with store.env.begin() as txn:
        return {bytes(k): bytes(v)[0] for k, v in txn.cursor(db=store._entries)}


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(step, min_size=1, max_size=8), narrow=st.booleans())
def test_apply_counts_match_a_model(keys: Keys, steps: list[list], narrow: bool) -> None:
    clock = ManualClock(1_750_000_000.0)
    with tempfile.TemporaryDirectory() as tmp:
        store = RevocationStore(
            Path(tmp) / "s", clock=clock, map_size=1 << 26, fingerprint_width=8 if narrow else None
        )
        gz = Authority(store, keys.gz, keys.ring, clock=clock)
        model: dict[str, int] = {}  # card -> reason held
        for ops in steps:
            clock.advance(1)
            revoke = [(c, r) for c, r in ops if r is not None]
            # Each step's effective time is new, so every revocation of a held card changes
            # it (Authority.pending keeps it), with the same reason or another.
            wanted = revoke
            gone = [c for c, r in ops if r is None and c in model]
            _, result = gz.publish(
                [Revocation(c, r, int(clock()) - 5) for c, r in revoke],
                [c for c, r in ops if r is None],
            )
            assert result.added == sum(1 for c, _ in wanted if c not in model)
            assert result.changed == sum(1 for c, _ in wanted if c in model)
            assert result.removed == len(gone)
            for c, r in wanted:
                model[c] = int(r)
            for c in gone:
                del model[c]
            held = stored(store)
            feed = store.feeds.get("440100")
            assert len(held) == len(model) == (feed.entries if feed else 0)
            assert store.reason_counts.by_reason() == {
                reason: Counter(model.values())[int(reason)] for reason in Reason
            }
            # The index holds every stored card's fingerprint (what the apply path trusts).
            rows = np.frombuffer(b"".join(k[:18] for k in held), dtype=np.uint8).reshape(-1, 18)
            for fp in key_fingerprints(rows, store.index.width).tolist():
                assert fp in store.index
        assert {text_to_key(c) for c in model} == {k[:18] for k in stored(store)}
        store.close()
