"""The config rules that join several fields or read a structured one (node/config.py applies
them after the table of node/configfields.py): an address, the lapse table, the transfer
limits that must fit one another, and the trust fields that go together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from blacklist.csvlist import parse_reason
from blacklist.entry import Reason
from blacklist.lapse import DAY, LapsePolicy
from blacklist.sync.budget import (
    MIN_MESSAGE_BYTES,
    chunk_count,
    chunk_payload_limit,
    manifest_size,
    max_chunks,
)
from blacklist.trust import MAX_ROOTS
from node.configfields import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_SNAPSHOT_BYTES,
    ConfigError,
    integer,
)

MAX_MESSAGE_CEILING = 1 << 30  # gRPC's own limit is 2 GiB; a message this big is a mistake


def address(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"config field {name!r} must be 'host:port', got {value!r}")
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"config field {name!r}: bad host:port {value!r}")
    return value


def lapse_days(data: dict[str, Any], max_lapse: int) -> dict[Reason, int]:
    """``lapse_days``: a table of reason name → days (a number; fractions allowed), each a
    reason that may lapse and within ``max_lapse_days``."""
    table = data.get("lapse_days", {})
    if not isinstance(table, dict):
        raise ConfigError(
            f"config field 'lapse_days' must be a table of reason = days, got {table!r}"
        )
    out: dict[Reason, int] = {}
    for name, days in table.items():
        try:
            reason = parse_reason(name)  # English or Chinese name, or the code
        except ValueError as exc:
            raise ConfigError(f"config field 'lapse_days': {exc}") from None
        if not isinstance(days, int | float) or isinstance(days, bool) or days <= 0:
            raise ConfigError(
                f"config field 'lapse_days': {name} must be a number of days > 0, got {days!r}"
            )
        out[reason] = round(days * DAY)
    try:
        LapsePolicy(out, max_lapse)
    except ValueError as exc:
        raise ConfigError(f"config field 'lapse_days': {exc}") from None
    return out


def transfer_limits(data: dict[str, Any]) -> tuple[int, int, int]:
    """``max_message_bytes``, ``snapshot_chunk_bytes`` and ``max_snapshot_bytes``: a chunk
    must fit a message, and so must the manifest of the largest snapshot this node takes
    (one checksum per chunk), or that snapshot could not be sent on."""
    limit = integer(
        data, "max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES, MIN_MESSAGE_BYTES, MAX_MESSAGE_CEILING
    )
    most = chunk_payload_limit(limit)
    chunk = integer(data, "snapshot_chunk_bytes", min(DEFAULT_CHUNK_BYTES, most), 1024, most)
    default = min(DEFAULT_MAX_SNAPSHOT_BYTES, max_chunks(limit) * chunk)
    biggest = integer(data, "max_snapshot_bytes", default, 1024, 1 << 40)
    manifest = manifest_size(chunk_count(biggest, chunk))
    if manifest > limit:
        raise ConfigError(
            f"config field 'max_snapshot_bytes': {biggest} bytes in {chunk}-byte chunks "
            f"need a manifest of up to {manifest} bytes, over max_message_bytes = {limit} "
            "(raise snapshot_chunk_bytes or lower max_snapshot_bytes)"
        )
    return limit, chunk, biggest


def paths(data: dict[str, Any], base: Path, name: str) -> tuple[Path, ...]:
    value = data.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"config field {name!r} must be a list of paths, got {value!r}")
    return tuple((base / v).resolve() for v in value)


def trust_fields(
    data: dict[str, Any], base: Path, trusted: list[str]
) -> tuple[tuple[Path, ...], tuple[tuple[Path, ...], ...], tuple[Path, ...]]:
    """``trust_anchor``, ``certificate_chains`` and ``key_revocations``: all or nothing of the
    certified hierarchy, and never together with bare ``trusted_keys``."""
    anchor = data.get("trust_anchor")
    if anchor is None:
        given = [n for n in ("certificate_chains", "key_revocations") if n in data]
        if given:
            raise ConfigError(
                f"config field(s) {', '.join(map(repr, given))} need 'trust_anchor' "
                "(the pinned root public key)"
            )
        return (), (), ()
    # One root, or a list of 1..MAX_ROOTS while the ministry's root moves (issue #14).
    names = anchor if isinstance(anchor, list) else [anchor]
    if not all(isinstance(a, str) and a for a in names) or not 1 <= len(names) <= MAX_ROOTS:
        raise ConfigError(
            f"config field 'trust_anchor' must be a path or a list of 1..{MAX_ROOTS} paths "
            f"(the pinned root public keys), got {anchor!r}"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"config field 'trust_anchor' names {names[0]!r} twice")
    if trusted:
        raise ConfigError(
            "config fields 'trust_anchor' and 'trusted_keys' exclude each other: with a "
            "trust anchor the trusted keys are those its 'certificate_chains' certify"
        )
    chains = data.get("certificate_chains", [])
    if not isinstance(chains, list) or not all(isinstance(c, list) for c in chains):
        raise ConfigError(
            "config field 'certificate_chains' must be a list of lists of certificate "
            f"paths (root-most first), got {chains!r}"
        )
    return (
        tuple((base / a).resolve() for a in names),
        tuple(paths({"certificate_chains": c}, base, "certificate_chains") for c in chains),
        paths(data, base, "key_revocations"),
    )
