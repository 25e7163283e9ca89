"""Writes during a latency benchmark: signed deltas of one publisher, pushed to a node through
``Sync.PushDeltas`` at a constant rate, from a process of its own (as a child city would).

    python -m bench.delta_pusher --target 127.0.0.1:PORT --key keys/110100.key \\
        --version 1 --digest HEX --cards 1000 --rate 5 --count 100

The chain of ``count`` deltas after the given head is signed first (so that the pushing
costs the machine only the calls); then the pusher prints ``READY {json}`` and sends delta
``i`` at ``start + i / rate`` (a fixed schedule: a slow push is followed by the next one at
once, not by a full interval), one per call, until all are sent or SIGTERM. It then prints
``DONE {json}``: how many were sent and applied, the head after the last one applied (to
chain the next pusher on), and a card of the last applied delta (to check it is revoked).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import dataclass
from types import FrameType

import grpc
import numpy as np

from bench.data import card_strings, city_entries
from blacklist.delta import Delta, FeedHead, sign_delta
from blacklist.entryblock import CardColumns
from blacklist.signing import SigningKey
from node.gen.blacklist.v1 import sync_pb2, sync_pb2_grpc
from node.keyfiles import load_signing_key


@dataclass(frozen=True)
class Signed:
    delta: Delta
    data: bytes
    card: str  # one card the delta revokes


def chain(key: SigningKey, head: FeedHead, cards: int, count: int, seed: int) -> list[Signed]:
    """``count`` consecutive deltas after ``head``, each revoking ``cards`` new cards of the
    key's city (random serials: new to the list, almost surely)."""
    rng = np.random.default_rng(seed)
    out: list[Signed] = []
    for _ in range(count):
        entries = city_entries(rng, key.publisher, cards)
        delta = sign_delta(key, head, entries, CardColumns.empty(), int(time.time()))
        head = FeedHead(key.publisher, delta.version, delta.digest)
        card = card_strings(entries.cards.take(np.arange(1)))[0]
        out.append(Signed(delta, delta.to_bytes(), card))
    return out


def push(target: str, deltas: list[Signed], rate: float) -> dict[str, object]:
    stop = False

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    sent = applied = 0
    rejected: list[str] = []
    last: Signed | None = None
    with grpc.insecure_channel(target) as channel:
        stub = sync_pb2_grpc.SyncStub(channel)  # type: ignore[no-untyped-call]
        grpc.channel_ready_future(channel).result(timeout=10)
        print("READY " + json.dumps({"deltas": len(deltas)}), flush=True)
        start = time.monotonic()
        for i, signed in enumerate(deltas):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if stop:
                break
            answer = stub.PushDeltas(
                sync_pb2.PushDeltasRequest(deltas=[signed.data], node="bench-pusher")
            )
            sent += 1
            applied += answer.applied
            rejected += list(answer.rejected)
            if answer.applied:
                last = signed
    done: dict[str, object] = {
        "sent": sent,
        "applied": applied,
        "rejected": rejected,
        "seconds": time.monotonic() - start,
    }
    if last is not None:
        done.update(
            version=last.delta.version, digest=last.delta.digest.hex(), revoked_card=last.card
        )
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.delta_pusher")
    parser.add_argument("--target", required=True, help="the node's gRPC host:port")
    parser.add_argument("--key", required=True, help="the publisher's signing key file")
    parser.add_argument("--version", type=int, required=True, help="the node's head version")
    parser.add_argument("--digest", required=True, help="the node's head digest (hex)")
    parser.add_argument("--cards", type=int, default=1000, help="cards per delta")
    parser.add_argument("--rate", type=float, default=5.0, help="deltas per second")
    parser.add_argument("--count", type=int, required=True, help="deltas at most")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    key = load_signing_key(args.key)
    head = FeedHead(key.publisher, args.version, bytes.fromhex(args.digest))
    deltas = chain(key, head, args.cards, args.count, args.seed)
    print("DONE " + json.dumps(push(args.target, deltas, args.rate)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
