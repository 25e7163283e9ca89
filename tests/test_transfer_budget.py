"""The size decisions of sync (blacklist/sync/budget.py, blacklist/sync/chunks.py), without
sockets: every limit at, below and above it, each checked against the real protobuf
encoding (``ByteSize()`` of the messages node/ builds from these decisions)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import xxhash

from blacklist.sync.budget import (
    GRPC_DEFAULT_LIMIT,
    MIN_MESSAGE_BYTES,
    FeedFill,
    TransferTooLarge,
    chunk_count,
    chunk_payload_limit,
    chunk_size,
    effective_limit,
    field_size,
    fill_updates,
    manifest_size,
    oversize,
    oversize_first,
    plan_push_batches,
    split_push,
    varint_size,
)
from blacklist.sync.chunks import (
    Manifest,
    SnapshotAssembly,
    SnapshotCorrupt,
    SnapshotTooLarge,
    split_snapshot,
)
from node.config import ConfigError, parse_config
from node.gen.blacklist.v1 import sync_pb2

PUBS = ["440100", "440300", "110100"]


def test_varint_and_field_sizes_match_protobuf() -> None:
    for n in (0, 1, 127, 128, 16383, 16384, (1 << 21) - 1, 1 << 21, (1 << 28), 1 << 35):
        assert varint_size(n) == len(_varint(n)), n
    for payload in (0, 1, 126, 127, 128, 16383, 16384, 70_000):
        message = sync_pb2.SubscribeEvent(delta=b"x" * payload)
        assert field_size(payload) == (message.ByteSize() if payload else 2), payload
    with pytest.raises(ValueError):
        varint_size(-1)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def test_effective_limit_is_the_smaller_and_unstated_means_grpc_default() -> None:
    assert effective_limit(0, 16 << 20) == GRPC_DEFAULT_LIMIT
    assert effective_limit(0, 1 << 20) == 1 << 20
    assert effective_limit(100_000, 16 << 20) == 100_000
    assert effective_limit(32 << 20, 16 << 20) == 16 << 20


# ------------------------------------------------------------------ GetUpdates
def _answer(
    sizes: dict[str, list[int]], counts: list[int] | None = None
) -> sync_pb2.GetUpdatesResponse:
    """A GetUpdates answer as node/grpc/sync.py builds one: every head, one update per
    feed, the first ``counts[i]`` deltas of feed i (random bytes of the given sizes)."""
    rng = random.Random(1)
    response = sync_pb2.GetUpdatesResponse(
        heads=[sync_pb2.Head(publisher=p, version=2**40, digest=bytes(32)) for p in PUBS],
        max_push_bytes=16 << 20,
    )
    for i, (publisher, feed) in enumerate(sizes.items()):
        update = response.updates.add(publisher=publisher, upstream_version=2**33 + i)
        n = len(feed) if counts is None else counts[i]
        update.deltas.extend(rng.randbytes(s) for s in feed[:n])
    return response


def _fills(sizes: dict[str, list[int]]) -> tuple[int, list[FeedFill]]:
    empty = _answer(sizes, [0] * len(sizes))
    return empty.ByteSize(), [FeedFill(u.ByteSize(), sizes[u.publisher]) for u in empty.updates]


@pytest.mark.parametrize("seed", range(6))
def test_fill_updates_never_exceeds_the_limit_and_leaves_no_room_for_the_next(seed: int) -> None:
    rng = random.Random(seed)
    sizes = {p: [rng.choice([10, 127, 128, 5000, 16_400, 40_000]) for _ in range(12)] for p in PUBS}
    base, fills = _fills(sizes)
    for limit in (MIN_MESSAGE_BYTES, 100_000, 150_001):
        counts = fill_updates(limit, base, fills)
        answer = _answer(sizes, counts)
        assert answer.ByteSize() <= limit, (limit, counts)
        # Maximal: one more delta of any feed that stopped short would break the limit.
        for i, publisher in enumerate(sizes):
            if counts[i] < len(sizes[publisher]):
                more = list(counts)
                more[i] += 1
                assert _answer(sizes, more).ByteSize() > limit, (limit, i, counts)


def test_fill_updates_at_below_and_above_the_exact_size() -> None:
    sizes = {"440100": [30_000, 30_000, 30_000]}
    base, fills = _fills(sizes)
    exact = _answer(sizes, [2]).ByteSize()
    assert fill_updates(exact, base, fills) == [2]  # at: both fit, to the byte
    assert fill_updates(exact - 1, base, fills) == [1]  # one byte below: the second waits
    assert fill_updates(exact + 1, base, fills) == [2]  # above, short of a third
    with pytest.raises(TransferTooLarge, match="over the 10-byte limit"):
        fill_updates(10, base, fills)


def test_a_feed_stops_at_its_first_misfit_but_later_feeds_use_the_room() -> None:
    sizes = {"440100": [1000, 64_800, 10], "440300": [500, 500]}
    base, fills = _fills(sizes)
    assert fill_updates(MIN_MESSAGE_BYTES, base, fills) == [1, 2]


def test_oversize_first_names_a_delta_no_answer_can_carry() -> None:
    sizes = {"440100": [MIN_MESSAGE_BYTES], "440300": [1000], "110100": []}
    base, fills = _fills(sizes)
    assert oversize_first(MIN_MESSAGE_BYTES, base, fills) == [True, False, False]
    # Just under the limit with room for the flags is not oversize.
    reserve = 12 * len(fills)
    fits = MIN_MESSAGE_BYTES - base - reserve - 10
    sizes = {"440100": [fits], "440300": [], "110100": []}
    base, fills = _fills(sizes)
    assert oversize_first(MIN_MESSAGE_BYTES, base, fills) == [False, False, False]
    assert fill_updates(MIN_MESSAGE_BYTES, base, fills) == [1, 0, 0]


def test_flags_on_every_feed_never_push_a_fitting_delta_out() -> None:
    """After oversize_first the servicer sets take_snapshot / too_large_version on the
    flagged feeds; the delta it found to fit must still fit the flagged answer."""
    sizes = {"440100": [MIN_MESSAGE_BYTES * 2], "440300": [MIN_MESSAGE_BYTES * 2], "110100": []}
    base, fills = _fills(sizes)
    assert oversize_first(MIN_MESSAGE_BYTES, base, fills) == [True, True, False]
    flagged = _answer(sizes, [0, 0, 0])
    flagged.updates[0].too_large_version = 2**63
    flagged.updates[1].take_snapshot = True
    room = MIN_MESSAGE_BYTES - base - 12 * 3 - 10
    update = flagged.updates.add(publisher="110100", upstream_version=2**40)
    update.deltas.append(b"x" * room)
    assert flagged.ByteSize() <= MIN_MESSAGE_BYTES


# ------------------------------------------------------------------ PushDeltas
def _push_request(sizes: list[int]) -> sync_pb2.PushDeltasRequest:
    return sync_pb2.PushDeltasRequest(deltas=[b"d" * s for s in sizes], node="440100")


@pytest.mark.parametrize("seed", range(6))
def test_split_push_batches_each_fit_and_are_maximal(seed: int) -> None:
    rng = random.Random(seed)
    sizes = [rng.choice([1, 200, 8000, 20_000, 65_000, 70_000]) for _ in range(40)]
    limit = MIN_MESSAGE_BYTES
    batches = split_push(sizes, limit)
    sent = [i for b in batches for i in b]
    assert sent == sorted(sent)  # order kept
    assert set(sent) | set(oversize(sizes, limit)) == set(range(len(sizes)))
    for b in batches:
        assert _push_request([sizes[i] for i in b]).ByteSize() <= limit
        if b.stop < len(sizes) and b.stop not in oversize(sizes, limit):
            grown = [sizes[i] for i in range(b.start, b.stop + 1)]
            assert _push_request(grown).ByteSize() > limit


def test_split_push_at_below_and_above_the_limit() -> None:
    sizes = [30_000, 30_000]
    exact = _push_request(sizes).ByteSize()
    assert split_push(sizes, exact) == [range(0, 2)]
    assert split_push(sizes, exact - 1) == [range(0, 1), range(1, 2)]
    assert split_push(sizes, exact + 1) == [range(0, 2)]
    alone = _push_request([70_000]).ByteSize()
    assert oversize([70_000], alone) == [] and oversize([70_000], alone - 1) == [0]
    assert split_push([10, 70_000, 10], alone - 1) == [range(0, 1), range(2, 3)]


def test_plan_push_batches_falls_back_to_the_snapshot_only_when_it_covers() -> None:
    sizes = [1000, 1000, 100_000, 1000]
    limit = MIN_MESSAGE_BYTES
    plan = plan_push_batches(5, sizes, limit, snapshot_version=7)
    assert plan.snapshot and plan.batches == ()
    plan = plan_push_batches(5, sizes, limit, snapshot_version=6)
    assert (plan.snapshot, plan.batches, plan.too_large) == (False, ((5, 6),), 7)
    plan = plan_push_batches(5, sizes, limit, snapshot_version=None)
    assert plan.too_large == 7
    plan = plan_push_batches(5, [30_000] * 5, limit, snapshot_version=None)
    assert plan.batches == ((5, 6), (7, 8), (9, 9)) and plan.too_large is None


# ------------------------------------------------------------------ snapshot chunks
def test_chunk_payload_limit_fits_a_part_exactly() -> None:
    for limit in (MIN_MESSAGE_BYTES, 100_000, 16 << 20):
        payload = chunk_payload_limit(limit)
        assert sync_pb2.SnapshotPart(chunk=b"c" * payload).ByteSize() <= limit
        assert sync_pb2.SnapshotPart(chunk=b"c" * (payload + 1)).ByteSize() > limit


def test_manifest_size_bounds_the_real_manifest() -> None:
    for chunks in (0, 1, 127, 128, 5000):
        worst = sync_pb2.SnapshotPart(
            manifest=sync_pb2.SnapshotManifest(
                publisher="440100",
                version=2**64 - 1,
                total_bytes=2**64 - 1,
                chunk_bytes=2**32 - 1,
                chunk_xxh64=[2**64 - 1] * chunks,
            )
        )
        assert worst.ByteSize() <= manifest_size(chunks), chunks


def test_chunk_size_at_below_and_above_what_the_manifest_allows() -> None:
    limit = MIN_MESSAGE_BYTES
    assert chunk_size(1000, 4096, limit) == 4096
    assert chunk_size(10_000_000, 1 << 20, limit) == chunk_payload_limit(limit)
    # The largest total whose manifest still fits at the smallest chunk, and one chunk more.
    chunks = 1
    while manifest_size(chunks + 1) <= limit:
        chunks += 1
    assert chunk_size(chunks * 1024, 1024, limit) == 1024
    with pytest.raises(TransferTooLarge, match="manifest"):
        chunk_size(chunks * 1024 + 1, 1024, limit)


def _transfer(n: int = 10_000, chunk: int = 1024) -> tuple[bytes, Manifest, list[bytes]]:
    data = random.Random(n).randbytes(n)
    manifest, parts = split_snapshot("440100", 7, data, chunk)
    return data, manifest, parts


def test_assembly_takes_a_complete_intact_transfer() -> None:
    data, manifest, parts = _transfer()
    assert manifest.total_bytes == len(data) and len(parts) == chunk_count(len(data), 1024)
    assembly = SnapshotAssembly(manifest, max_total=len(data), max_chunk=1024)
    for part in parts:
        assembly.add(part)
    assert assembly.finish() == data


def test_assembly_refuses_a_manifest_over_the_max_before_any_chunk() -> None:
    _, manifest, _ = _transfer()
    SnapshotAssembly(manifest, max_total=manifest.total_bytes, max_chunk=1024)  # at
    with pytest.raises(SnapshotTooLarge, match="over this node's max_snapshot_bytes of 9999"):
        SnapshotAssembly(manifest, max_total=manifest.total_bytes - 1, max_chunk=1024)


@pytest.mark.parametrize("which", [1, 5, -1])
def test_assembly_catches_a_damaged_chunk_anywhere(which: int) -> None:
    _, manifest, parts = _transfer()
    assembly = SnapshotAssembly(manifest, max_total=1 << 20, max_chunk=1024)
    index = which % len(parts)
    for i, part in enumerate(parts):
        if i == index:
            damaged = bytearray(part)
            damaged[len(damaged) // 2] ^= 0x10
            with pytest.raises(SnapshotCorrupt, match=f"chunk {index} fails its checksum"):
                assembly.add(bytes(damaged))
            return
        assembly.add(part)


def test_assembly_refuses_wrong_lengths_counts_and_manifests() -> None:
    _, manifest, parts = _transfer()
    assembly = SnapshotAssembly(manifest, max_total=1 << 20, max_chunk=1024)
    with pytest.raises(SnapshotCorrupt, match="has 1025 bytes, not 1024"):
        assembly.add(parts[0] + b"x")
    assembly = SnapshotAssembly(manifest, max_total=1 << 20, max_chunk=1024)
    for part in parts[:-1]:
        assembly.add(part)
    with pytest.raises(SnapshotCorrupt, match="truncated transfer"):
        assembly.finish()
    assembly.add(parts[-1])
    with pytest.raises(SnapshotCorrupt, match="beyond the manifest"):
        assembly.add(parts[-1])
    with pytest.raises(SnapshotCorrupt, match=r"outside 1\.\.512"):
        SnapshotAssembly(manifest, max_total=1 << 20, max_chunk=512)
    short = Manifest("440100", 7, manifest.total_bytes, 1024, manifest.checksums[:-1])
    with pytest.raises(SnapshotCorrupt, match="checksums for"):
        SnapshotAssembly(short, max_total=1 << 20, max_chunk=1024)
    with pytest.raises(SnapshotCorrupt, match="empty"):
        SnapshotAssembly(Manifest("440100", 7, 0, 1024, []), max_total=1, max_chunk=1024)
    assert manifest.checksums[0] == xxhash.xxh64_intdigest(parts[0])


# ------------------------------------------------------------------ configuration
def _config(**fields: object) -> dict[str, object]:
    return {
        "role": "city",
        "region": "440100",
        "listen": "127.0.0.1:0",
        "metrics_listen": "127.0.0.1:0",
        "data_dir": "data",
        "plaintext": True,
        **fields,
    }


def test_config_limits_default_and_small(tmp_path: Path) -> None:
    config = parse_config(_config(), tmp_path)
    assert (config.max_message_bytes, config.snapshot_chunk_bytes, config.max_snapshot_bytes) == (
        16 << 20,
        1 << 20,
        1 << 30,
    )
    small = parse_config(_config(max_message_bytes=MIN_MESSAGE_BYTES), tmp_path)
    assert small.snapshot_chunk_bytes == chunk_payload_limit(MIN_MESSAGE_BYTES)
    # The default largest snapshot shrinks to what a manifest at this limit can describe.
    chunks = chunk_count(small.max_snapshot_bytes, small.snapshot_chunk_bytes)
    assert manifest_size(chunks) <= MIN_MESSAGE_BYTES < manifest_size(chunks + 1)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"max_message_bytes": MIN_MESSAGE_BYTES - 1},
            "'max_message_bytes' must be an integer in 65536..",
        ),
        ({"max_message_bytes": "16MiB"}, "'max_message_bytes' must be an integer"),
        ({"max_message_bytes": (1 << 30) + 1}, "'max_message_bytes' must be an integer"),
        (
            {"max_message_bytes": MIN_MESSAGE_BYTES, "snapshot_chunk_bytes": MIN_MESSAGE_BYTES},
            "'snapshot_chunk_bytes' must be an integer in 1024..",
        ),
        ({"snapshot_chunk_bytes": 1023}, "'snapshot_chunk_bytes' must be an integer in 1024.."),
        ({"max_snapshot_bytes": 0}, "'max_snapshot_bytes' must be an integer in 1024.."),
        (
            {
                "max_message_bytes": MIN_MESSAGE_BYTES,
                "snapshot_chunk_bytes": 1024,
                "max_snapshot_bytes": 1 << 30,
            },
            "config field 'max_snapshot_bytes': 1073741824 bytes in 1024-byte chunks need a manifest",
        ),
    ],
)
def test_config_limits_refuse_bad_values(
    tmp_path: Path, fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_config(_config(**fields), tmp_path)


def test_config_chunk_at_the_message_limit(tmp_path: Path) -> None:
    most = chunk_payload_limit(MIN_MESSAGE_BYTES)
    config = parse_config(
        _config(max_message_bytes=MIN_MESSAGE_BYTES, snapshot_chunk_bytes=most), tmp_path
    )
    assert config.snapshot_chunk_bytes == most
    with pytest.raises(ConfigError, match="snapshot_chunk_bytes"):
        parse_config(
            _config(max_message_bytes=MIN_MESSAGE_BYTES, snapshot_chunk_bytes=most + 1), tmp_path
        )
