"""The fingerprint index's reference counting against a plain Counter."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from blacklist.filters.roaring_index import FingerprintIndex

ops = st.lists(
    st.tuples(
        st.sampled_from(["add", "add_many", "remove"]), st.lists(st.integers(0, 7), max_size=5)
    ),
    max_size=40,
)


@given(ops)
@settings(max_examples=200, deadline=None)
def test_counts_match_a_counter(script: list[tuple[str, list[int]]]) -> None:
    index = FingerprintIndex(3)
    model: Counter[int] = Counter()
    for op, fps in script:
        if op == "add":
            for fp in fps:
                index.add(fp)
                model[fp] += 1
        elif op == "add_many":
            index.add_many(np.array(fps, dtype=np.uint32))
            model.update(fps)
        else:
            for fp in fps:
                if model[fp] > 0:
                    index.remove(fp)
                    model[fp] -= 1
        for fp in range(8):
            assert (fp in index) == (model[fp] > 0), fp
        assert len(index) == sum(model.values())
        again, generation = FingerprintIndex.from_bytes(index.to_bytes(5))
        assert generation == 5
        assert again.to_bytes(5) == index.to_bytes(5)
