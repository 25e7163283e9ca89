"""``python -m tests.delta_writer STORE N``: a writer process for tests/test_check_concurrency.py.

It creates the store at STORE with one delta revoking the cards ``reinstated(j)``, prints
``ready``, then applies N deltas one at a time — delta i revokes ``revoked(i)`` and, every
third one, reinstates ``reinstated(i // 3)`` — printing ``applied i`` once each ``apply`` has
returned (committed: a check that starts after the line is read must see it), and ``done``
at the end. The cards are a pure function of their number, so the test knows them too.
"""

from __future__ import annotations

import sys

from blacklist.authority import Revocation, build_delta
from blacklist.entry import Reason
from blacklist.signing import Keyring, SigningKey
from blacklist.store import RevocationStore

PUBLISHER = "440100"
T = 1_700_000_000


def revoked(i: int) -> str:
    return f"440100D156000005{0x1000 + i * 7919:016X}"


def reinstated(j: int) -> str:
    return f"440100D156000006{0x2000 + j * 104729:016X}"


def main(path: str, count: int) -> None:
    key = SigningKey.generate(PUBLISHER, [PUBLISHER[:4]])
    keys = Keyring([key.trusted()])
    store = RevocationStore(path, map_size=1 << 27)
    first = [Revocation(reinstated(j), Reason.LOSS, T) for j in range(count // 3 + 1)]
    store.apply(build_delta(key, store.head(PUBLISHER), first, (), T).to_bytes(), keys)
    store.save_index()
    print("ready", flush=True)
    for i in range(count):
        back = [reinstated(i // 3)] if i % 3 == 0 else []
        revoke = [Revocation(revoked(i), Reason.LOSS, T)]
        store.apply(build_delta(key, store.head(PUBLISHER), revoke, back, T).to_bytes(), keys)
        print(f"applied {i}", flush=True)
    print("done", flush=True)
    sys.stdin.read()  # hold the store open until the test has finished reading
    store.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
