"""`make demo` (first version, issue #2): the revocation core end to end, in one process.

Two city authorities (Guangzhou 440100 and Beijing 110100) publish signed deltas into their
own stores; a third store, standing in for a node elsewhere in the country, verifies and
applies both feeds, then answers checks as a terminal would. Real LMDB files in a
temporary directory, real Ed25519 signatures; gRPC and separate processes arrive with the
node issue.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from blacklist.authority import Authority, Revocation
from blacklist.checker import Checker
from blacklist.entry import Reason
from blacklist.rejections import DeltaRejected
from blacklist.signing import Keyring, SigningKey
from blacklist.store import RevocationStore


def _card(region: str, rng: random.Random) -> str:
    return f"{region}D156000005{rng.getrandbits(64):016X}"


def run(out: object = sys.stdout, count: int = 5000) -> int:
    def say(text: str) -> None:
        print(text, file=out, flush=True)  # type: ignore[call-overload]

    rng = random.Random(2026)
    now = int(time.time())
    with tempfile.TemporaryDirectory(prefix="blacklist-demo-") as tmp:
        root = Path(tmp)
        gz_key = SigningKey.generate("440100", ["4401"])
        bj_key = SigningKey.generate("110100", ["1101"])
        ring = Keyring([gz_key.trusted(), bj_key.trusted()])
        say(f"data directory: {root}")

        gz_store = RevocationStore(root / "440100", map_size=1 << 30)
        bj_store = RevocationStore(root / "110100", map_size=1 << 30)
        elsewhere = RevocationStore(root / "elsewhere", map_size=1 << 30)
        gz = Authority(gz_store, gz_key, ring)
        bj = Authority(bj_store, bj_key, ring)

        reasons = list(Reason)
        gz_cards = [_card("440100", rng) for _ in range(count)]
        t0 = time.perf_counter()
        d1, r1 = gz.publish([Revocation(c, rng.choice(reasons), now) for c in gz_cards])
        d2, r2 = bj.publish([Revocation(_card("110100", rng), Reason.LOSS, now) for _ in range(50)])
        d3, r3 = gz.publish(reinstatements=gz_cards[:3])
        say(
            f"440100 published v1 (+{r1.added}) and v2 (-{r3.removed}); 110100 published v1 "
            f"(+{r2.added}) in {time.perf_counter() - t0:.2f} s"
        )
        size = len(d1.to_bytes())
        say(
            f"delta 440100 v1: {size:,} bytes for {count:,} revocations ({size / count:.1f} B each)"
        )

        for delta in (d1, d2, d3):
            elsewhere.apply(delta.to_bytes(), ring)
        say(
            f"the other node verified and applied 3 deltas; heads: "
            f"{ {p: h.version for p, h in elsewhere.heads().items()} }"
        )
        try:
            elsewhere.apply(d1.to_bytes(), ring)
        except DeltaRejected as exc:
            say(f"replaying 440100 v1 is refused: {exc.cause}: {exc}")

        checker = Checker(elsewhere, ring)
        samples = [
            ("revoked in Guangzhou", gz_cards[10]),
            ("reinstated", gz_cards[0]),
            ("valid Guangzhou card", _card("440100", rng)),
            ("province with no known publisher", _card("120100", rng)),
            ("lower-case input", gz_cards[11].lower()),
        ]
        for label, card in samples:
            r = checker.check(card)
            reason = f" reason={r.reason.name}" if r.reason else ""
            say(
                f"  {label:34} {card}  {r.status.name}{reason} publisher={r.publisher} "
                f"v{r.feed_version}"
            )
        try:
            checker.check("44010OD156000005ABCDEF")
        except ValueError as exc:
            say(f"  malformed id refused: {exc}")

        probes = [_card("440100", rng) for _ in range(20000)]
        lat = []
        for card in probes:
            t = time.perf_counter_ns()
            checker.check(card)
            lat.append(time.perf_counter_ns() - t)
        lat.sort()
        say(
            f"check latency over {len(lat):,} valid cards: p50 {statistics.median(lat) / 1000:.1f} µs"
            f", p99 {lat[int(len(lat) * 0.99)] / 1000:.1f} µs"
        )
        batch = probes[:990] + gz_cards[100:110]
        start = time.perf_counter()
        result = checker.check_many(batch)
        took = time.perf_counter() - start
        counts = {status.name: n for status, n in result.counts().items()}
        say(f"check_many of {len(batch)} ids in {took * 1e6:.0f} µs: {counts}")
        say(f"index: {len(elsewhere.index):,} entries in {elsewhere.index.memory_bytes():,} bytes")
        for s in (gz_store, bj_store, elsewhere):
            s.close()
    say("demo finished")
    return 0
