"""Every config field of a node, declared once: its name, default, bounds and what it means.
node/config.py reads a TOML file with this table (unknown fields, defaults, the bounds of
the plain numbers and switches) and its own rules for the rest (addresses, paths, the trust
and TLS sets, the transfer limits); the README's "Configuration reference" is made from it
(``python -m node.configfields`` prints it; tests/test_config_reference.py holds the two
equal).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from blacklist.delta import MAX_TRUST_RECORDS
from blacklist.deltadecode import DEFAULT_LIMITS
from blacklist.entryblock import MAX_ENTRIES
from blacklist.lapse import DAY
from blacklist.sync.accept import DEFAULT_MAX_LAPSE, DEFAULT_MAX_SKEW
from blacklist.sync.freshness import DEFAULT_INTERVAL
from blacklist.sync.readiness import MAX_AGE_LIMIT, MAX_LAG_LIMIT
from blacklist.trust import DEFAULT_MAX_TRUST_RECORDS

DEFAULT_MAX_MESSAGE_BYTES = 16 << 20  # a 100,000-card Revoke is ~5 MB
DEFAULT_CHUNK_BYTES = 1 << 20
DEFAULT_MAX_SNAPSHOT_BYTES = 1 << 30


class ConfigError(ValueError):
    """A config the node refuses; the message names the field."""


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()  # a field without a default


def integer(data: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = data.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(
            f"config field {name!r} must be an integer in {low}..{high}, got {value!r}"
        )
    return value


def seconds(data: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = data.get(name, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(
            f"config field {name!r} must be seconds in {low:g}..{high:g}, got {value!r}"
        )
    return float(value)


def boolean(data: Mapping[str, Any], name: str, default: bool) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(f"config field {name!r} must be true or false, got {value!r}")
    return value


@dataclass(frozen=True)
class Field:
    name: str
    default: Any  # REQUIRED, None (absent: off), or the value taken when absent
    meaning: str  # the reference's text (Markdown)
    kind: str = ""  # "int", "seconds", "bool": read by the table; "": by config.py's own rule
    low: float = 0
    high: float = 0

    def read(self, data: Mapping[str, Any]) -> Any:
        """This field's value in ``data`` (its default when absent), checked."""
        if self.kind == "int":
            return integer(data, self.name, self.default, int(self.low), int(self.high))
        if self.kind == "seconds":
            return seconds(data, self.name, self.default, self.low, self.high)
        if self.kind == "bool":
            return boolean(data, self.name, self.default)
        raise TypeError(f"config field {self.name!r} is read by its own rule (node/config.py)")

    def shown_default(self) -> str:
        if self.default is REQUIRED:
            return "required"
        if self.default is None:
            return "none"
        if isinstance(self.default, bool):
            return str(self.default).lower()
        if isinstance(self.default, tuple | dict):
            return "`[]`" if isinstance(self.default, tuple) else "`{}`"
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default)


# In the reference's order. Bounds in a meaning are the table's own (low..high).
FIELDS: tuple[Field, ...] = (
    Field("role", REQUIRED, "`ministry`, `province` or `city`"),
    Field("region", REQUIRED, "this node's 6-digit code; its feed's publisher id"),
    Field(
        "listen", REQUIRED, "gRPC `host:port` (port 0: any free port, printed in the READY line)"
    ),
    Field("metrics_listen", REQUIRED, "Prometheus `/metrics` `host:port`"),
    Field("data_dir", REQUIRED, "the LMDB environment and the saved index"),
    Field("signing_key", None, "this authority's key file; without it the node publishes nothing"),
    Field(
        "trust_anchor",
        None,
        "the pinned root public key (or a list of two while the root moves); with it the "
        "node trusts only certified keys",
    ),
    Field(
        "certificate_chains",
        (),
        "lists of `.crt` files, root-most first (the node's own chain at least)",
    ),
    Field(
        "key_revocations",
        (),
        "`.rev` files known at start-up (later ones arrive in the certifiers' feeds)",
    ),
    Field(
        "trust_refresh_interval",
        60.0,
        "seconds between re-checks of certificate validity (1..86400)",
        kind="seconds",
        low=1,
        high=86400,
    ),
    Field("trusted_keys", (), "bare public keys instead of `trust_anchor` (tests; excludes it)"),
    Field("upstreams", (), "sync sources in failover order; empty for the ministry"),
    Field(
        "sync_interval",
        5.0,
        "seconds between scheduled pulls (0.05..86400); pushes are immediate",
        kind="seconds",
        low=0.05,
        high=86400,
    ),
    Field("subscribe", True, "hold the upstream's push stream (false: pull only)", kind="bool"),
    Field(
        "head_statement_interval",
        DEFAULT_INTERVAL,
        "an authority signs its head statement this often, in seconds (0.05..86400), and after each publication; feed ages are measured from these",
        kind="seconds",
        low=0.05,
        high=86400,
    ),
    Field(
        "max_clock_skew",
        DEFAULT_MAX_SKEW,
        "seconds a signed time (a delta's or snapshot's `issued_at`, a head statement's) may be ahead of this node's clock (0..86400)",
        kind="int",
        low=0,
        high=86400,
    ),
    Field(
        "max_delta_entries",
        DEFAULT_LIMITS.max_delta_entries,
        "cards + PSAMs one delta may declare; more is refused before anything is decoded (1..100,000,000)",
        kind="int",
        low=1,
        high=MAX_ENTRIES,
    ),
    Field(
        "max_snapshot_entries",
        DEFAULT_LIMITS.max_snapshot_entries,
        "entries one publisher's snapshot may declare (1..100,000,000)",
        kind="int",
        low=1,
        high=MAX_ENTRIES,
    ),
    Field(
        "max_trust_records",
        DEFAULT_MAX_TRUST_RECORDS,
        "certificates + key revocations one feed may carry (1..10,000); more is `bad_trust_record`",
        kind="int",
        low=1,
        high=MAX_TRUST_RECORDS,
    ),
    Field(
        "lapse_days",
        {},
        "an authority's default end time per reason, in days, e.g. `{ temporary_loss = 10 }` (only `temporary_loss` and `other` lapse); a Revoke or CSV row may override it",
    ),
    Field(
        "max_lapse_days",
        DEFAULT_MAX_LAPSE // DAY,
        "the longest end time (after the effective time) this node accepts in any feed: keep it the same across the federation",
        kind="int",
        low=1,
        high=3660,
    ),
    Field(
        "sweep_interval",
        60.0,
        "seconds between sweeps of lapsed entries (also at start-up); checks never depend on it",
        kind="seconds",
        low=0.05,
        high=86400,
    ),
    Field(
        "ready_max_lag",
        10,
        'a replica (upstreams, no `signing_key`) is NOT_SERVING while a feed is more than this many versions behind its newest signed head statement (0..1,048,576), see "Read replicas behind a balancer"',
        kind="int",
        low=0,
        high=MAX_LAG_LIMIT,
    ),
    Field(
        "ready_max_age",
        0.0,
        "if > 0, a replica is also NOT_SERVING while a feed was last proven current longer ago than this, in seconds (0..2,592,000); 0: not judged",
        kind="seconds",
        low=0.0,
        high=MAX_AGE_LIMIT,
    ),
    Field(
        "retain_deltas",
        1000,
        "deltas kept per feed to serve children (also capped by size; 0..10,000,000)",
        kind="int",
        low=0,
        high=10_000_000,
    ),
    Field(
        "max_batch",
        10_000,
        "`BatchCheck` ids per call (1..1,000,000)",
        kind="int",
        low=1,
        high=1_000_000,
    ),
    Field(
        "map_size_gib",
        64,
        "LMDB address space in GiB (the file grows only as used)",
        kind="int",
        low=1,
        high=1 << 14,
    ),
    Field(
        "workers",
        1,
        "serving processes on the one port (1..64), see below",
        kind="int",
        low=1,
        high=64,
    ),
    Field(
        "max_message_bytes",
        DEFAULT_MAX_MESSAGE_BYTES,
        "the one gRPC message limit (65,536..1 GiB): this node's server, its workers and every channel it opens; stated to peers in sync",
    ),
    Field(
        "snapshot_chunk_bytes",
        DEFAULT_CHUNK_BYTES,
        "chunk size of snapshots this node sends, up or down (1,024..what fits a message; default capped to fit)",
    ),
    Field(
        "max_snapshot_bytes",
        DEFAULT_MAX_SNAPSHOT_BYTES,
        "the largest snapshot this node takes, pulled or pushed (a manifest announcing more is refused before any chunk); its manifest must fit a message",
    ),
    Field(
        "tls_ca", None, "mutual TLS: the CA, this node's node-role certificate and key (all three)"
    ),
    Field(
        "tls_cert",
        None,
        "mutual TLS: the CA, this node's node-role certificate and key (all three)",
    ),
    Field(
        "tls_key", None, "mutual TLS: the CA, this node's node-role certificate and key (all three)"
    ),
    Field(
        "plaintext",
        False,
        "no TLS and no role checks; required when the `tls_*` fields are absent (tests only)",
        kind="bool",
    ),
)
BY_NAME: Mapping[str, Field] = {f.name: f for f in FIELDS}
KNOWN_FIELDS = frozenset(BY_NAME)


def default(name: str) -> Any:
    """The default of field ``name`` (NodeConfig's, and what a config without it gets)."""
    return BY_NAME[name].default


def read(data: Mapping[str, Any], name: str) -> Any:
    return BY_NAME[name].read(data)


def reference() -> str:
    """The README's reference table: a row a field, consecutive fields that mean the same
    thing in one row (the tls_* files)."""
    lines = ["| field | default | meaning |", "|---|---|---|"]
    rows: list[tuple[list[str], str, str]] = []
    for f in FIELDS:
        if rows and rows[-1][1:] == (f.shown_default(), f.meaning):
            rows[-1][0].append(f.name)
        else:
            rows.append(([f.name], f.shown_default(), f.meaning))
    for names, shown, meaning in rows:
        lines.append(f"| {', '.join(f'`{n}`' for n in names)} | {shown} | {meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
