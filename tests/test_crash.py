"""kill -9 in the middle of applies: every reopen gives exactly some committed version."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from blacklist.authority import Revocation, build_delta
from blacklist.checker import Checker, CheckStatus
from blacklist.delta import FeedHead
from blacklist.entry import Reason
from blacklist.signing import Keyring, SigningKey
from blacklist.store import RevocationStore

PER_DELTA = 20_000
KEY = SigningKey(1, bytes(range(32)), "440100", ("4401",))
KEYS = Keyring([KEY.trusted()])


def delta_cards(version: int) -> list[str]:
    rng = random.Random(version)
    return [f"440100D156000005{rng.getrandbits(64):016X}" for _ in range(PER_DELTA)]


CHILD = """
import sys
from tests.test_crash import KEY, KEYS, delta_cards, make_delta
from blacklist.store import RevocationStore
# 20 slices of 1,000 per delta (blacklist/slices.py): the kill lands between slices of
# one transaction, which must still commit all or nothing.
store = RevocationStore(sys.argv[1], map_size=1 << 30, apply_slice=1_000)
while True:
    head = store.head("440100")
    store.apply(make_delta(head).to_bytes(), KEYS)
    print(head.version + 1, flush=True)
"""


def make_delta(head: FeedHead):  # type: ignore[no-untyped-def]
    revocations = [Revocation(c, Reason.LOSS, 1_700_000_000) for c in delta_cards(head.version + 1)]
    return build_delta(KEY, head, revocations, issued_at=1_700_000_000 + head.version)


def test_kill_minus_nine_during_apply(tmp_path: Path) -> None:
    path = tmp_path / "store"
    root = Path(__file__).resolve().parent.parent
    rng = random.Random(7)
    seen_versions = set()
    for _ in range(4):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path)],
            cwd=root,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        child.stdout.readline()  # at least one commit in this round
        time.sleep(rng.uniform(0.05, 0.6))
        child.send_signal(signal.SIGKILL)
        child.wait()

        store = RevocationStore(path, map_size=1 << 30)
        try:
            version = store.head("440100").version
            seen_versions.add(version)
            assert version >= 1
            assert store.entry_count() == PER_DELTA * version
            assert len(store.index) == PER_DELTA * version
            assert store.feeds["440100"].entries == PER_DELTA * version
            checker = Checker(store, KEYS)
            applied = checker.check_many(delta_cards(version)[:2000])
            assert applied.counts() == {CheckStatus.REVOKED: 2000}
            missing = checker.check_many(delta_cards(version + 1)[:2000])
            assert CheckStatus.REVOKED not in missing.counts()
        finally:
            store.close(save_index=False)
    assert len(seen_versions) >= 2
