"""Node configuration: one TOML file, checked completely at start-up.

    role = "city"                       # ministry | province | city
    region = "440100"                   # this node's division code (its publisher id)
    listen = "127.0.0.1:50051"          # gRPC
    metrics_listen = "127.0.0.1:9101"   # Prometheus /metrics
    data_dir = "/var/lib/blacklist/440100"
    signing_key = "keys/440100.key"     # optional: only an authority publishes
    trusted_keys = ["keys/440100.pub", "keys/110100.pub"]
    upstreams = ["127.0.0.1:50041"]     # where to sync from, in failover order (none: a root)
    sync_interval = 5.0                 # seconds between scheduled pulls (push is immediate)
    subscribe = true                    # hold the upstream's push stream (false: pull only)
    max_batch = 10000                   # BatchCheck ids per call
    map_size_gib = 64                   # LMDB address space
    tls_ca = "tls/ca.crt"               # mutual TLS (node/tls.py): the CA every peer's
    tls_cert = "tls/440100.crt"         #   certificate must be signed by, and this node's
    tls_key = "tls/440100.key"          #   own certificate (role node) and key
    plaintext = true                    # instead of the tls_* fields: no TLS and no role
                                        #   checks, for tests and demos only

Relative paths are relative to the config file. Any problem is a :class:`ConfigError` whose
message names the field, so a node refuses to start rather than run misconfigured.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blacklist.regions import MINISTRY_CODE, PROVINCE_PREFIXES
from blacklist.signing import Keyring, SigningKey, TrustedKey
from node.keyfiles import KeyFileError, load_signing_key, load_trusted_keys
from node.tls import TlsError, identity_from_pem, load_private_key

ROLES = ("ministry", "province", "city")
TLS_FIELDS = ("tls_ca", "tls_cert", "tls_key")
KNOWN_FIELDS = {
    "role", "region", "listen", "metrics_listen", "data_dir", "signing_key", "trusted_keys",
    "max_batch", "map_size_gib", "retain_deltas", "upstreams", "sync_interval", "subscribe",
    "tls_ca", "tls_cert", "tls_key", "plaintext",
}  # fmt: skip


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class NodeConfig:
    role: str
    region: str
    listen: str
    metrics_listen: str
    data_dir: Path
    signing_key_path: Path | None
    trusted_key_paths: tuple[Path, ...]
    max_batch: int = 10_000
    map_size_gib: int = 64
    retain_deltas: int = 1000
    upstreams: tuple[str, ...] = ()
    sync_interval: float = 5.0
    subscribe: bool = True
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    plaintext: bool = False
    source: Path | None = field(default=None, compare=False)

    @property
    def tls(self) -> bool:
        return self.tls_ca is not None

    def signing_key(self) -> SigningKey | None:
        if self.signing_key_path is None:
            return None
        return load_signing_key(self.signing_key_path)

    def keyring(self) -> Keyring:
        keys: list[TrustedKey] = load_trusted_keys(self.trusted_key_paths)
        own = self.signing_key()
        if own is not None and own.key_id not in {k.key_id for k in keys}:
            keys.append(own.trusted())
        return Keyring(keys)


def _address(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"config field {name!r} must be 'host:port', got {value!r}")
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"config field {name!r}: bad host:port {value!r}")
    return value


def _int(data: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = data.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(
            f"config field {name!r} must be an integer in {low}..{high}, got {value!r}"
        )
    return value


def _bool(data: dict[str, Any], name: str, default: bool) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(f"config field {name!r} must be true or false, got {value!r}")
    return value


def parse_config(data: dict[str, Any], base: Path) -> NodeConfig:
    unknown = set(data) - KNOWN_FIELDS
    if unknown:
        raise ConfigError(f"unknown config field(s): {', '.join(sorted(unknown))}")
    role = data.get("role")
    if role not in ROLES:
        raise ConfigError(f"config field 'role' must be one of {', '.join(ROLES)}, got {role!r}")
    region = data.get("region")
    if not isinstance(region, str) or len(region) != 6 or not region.isdigit():
        raise ConfigError(f"config field 'region' must be a 6-digit code, got {region!r}")
    if role == "ministry" and region != MINISTRY_CODE:
        raise ConfigError(f"config field 'region': the ministry's code is {MINISTRY_CODE}")
    if role != "ministry" and int(region[:2]) not in PROVINCE_PREFIXES:
        raise ConfigError(f"config field 'region': {region} is not in a province-level division")
    data_dir = data.get("data_dir")
    if not isinstance(data_dir, str) or not data_dir:
        raise ConfigError("config field 'data_dir' is required (a directory path)")
    signing = data.get("signing_key")
    if signing is not None and not isinstance(signing, str):
        raise ConfigError(f"config field 'signing_key' must be a path, got {signing!r}")
    trusted = data.get("trusted_keys", [])
    if not isinstance(trusted, list) or not all(isinstance(t, str) for t in trusted):
        raise ConfigError(f"config field 'trusted_keys' must be a list of paths, got {trusted!r}")
    upstreams = data.get("upstreams", [])
    if not isinstance(upstreams, list):
        raise ConfigError(
            f"config field 'upstreams' must be a list of host:port, got {upstreams!r}"
        )
    upstreams = [_address({"upstreams": u}, "upstreams") for u in upstreams]
    interval = data.get("sync_interval", 5.0)
    if (
        not isinstance(interval, int | float)
        or isinstance(interval, bool)
        or not 0.05 <= interval <= 86400
    ):
        raise ConfigError(
            f"config field 'sync_interval' must be seconds in 0.05..86400, got {interval!r}"
        )
    config = NodeConfig(
        role=role,
        region=region,
        listen=_address(data, "listen"),
        metrics_listen=_address(data, "metrics_listen"),
        data_dir=(base / data_dir).resolve(),
        signing_key_path=(base / signing).resolve() if signing else None,
        trusted_key_paths=tuple((base / t).resolve() for t in trusted),
        max_batch=_int(data, "max_batch", 10_000, 1, 1_000_000),
        map_size_gib=_int(data, "map_size_gib", 64, 1, 1 << 14),
        retain_deltas=_int(data, "retain_deltas", 1000, 0, 10_000_000),
        upstreams=tuple(upstreams),
        sync_interval=float(interval),
        subscribe=_bool(data, "subscribe", True),
    )
    # Load the keys now so that a bad key file stops the node at start-up, named.
    try:
        own = config.signing_key()
        config.keyring()
    except KeyFileError as exc:
        field_name = (
            "signing_key"
            if signing and str(exc).startswith(str(config.signing_key_path))
            else "trusted_keys"
        )
        raise ConfigError(f"config field {field_name!r}: {exc}") from None
    if own is not None and own.publisher != region:
        raise ConfigError(
            f"config field 'signing_key': the key publishes for {own.publisher}, "
            f"but this node's region is {region}"
        )
    return _with_transport(config, data, base)


def _with_transport(config: NodeConfig, data: dict[str, Any], base: Path) -> NodeConfig:
    """Mutual TLS (all three tls_* fields) or ``plaintext = true``: one, explicitly."""
    plaintext = _bool(data, "plaintext", False)
    given = [name for name in TLS_FIELDS if name in data]
    for name in given:
        if not isinstance(data[name], str) or not data[name]:
            raise ConfigError(f"config field {name!r} must be a path, got {data[name]!r}")
    if plaintext and given:
        raise ConfigError(
            f"config field 'plaintext' = true contradicts {', '.join(map(repr, given))}"
        )
    if plaintext:
        return NodeConfig(**{**config.__dict__, "plaintext": True})
    if len(given) != len(TLS_FIELDS):
        missing = ", ".join(repr(n) for n in TLS_FIELDS if n not in given)
        raise ConfigError(
            f"config fields {missing} are required for mutual TLS "
            "(or 'plaintext = true' to run without TLS, for tests and demos only)"
        )
    paths = {name: (base / data[name]).resolve() for name in TLS_FIELDS}
    # Read them now, so that a missing or wrong file stops the node at start-up, named.
    for name, path in paths.items():
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"config field {name!r}: cannot read {path}: {exc.strerror}"
            ) from None
        if name == "tls_key":
            try:
                load_private_key(pem)
            except TlsError as exc:
                raise ConfigError(f"config field {name!r}: {path}: {exc}") from None
        elif b"-----BEGIN CERTIFICATE-----" not in pem:
            raise ConfigError(f"config field {name!r}: {path} is not a PEM certificate")
    identity = identity_from_pem(paths["tls_cert"].read_bytes())
    if identity is None or identity.role != "node":
        raise ConfigError(
            f"config field 'tls_cert': {paths['tls_cert']} is not a node certificate "
            f"(found {identity})"
        )
    return NodeConfig(
        **{
            **config.__dict__,
            "tls_ca": paths["tls_ca"],
            "tls_cert": paths["tls_cert"],
            "tls_key": paths["tls_key"],
        }
    )


def load_config(path: str | Path) -> NodeConfig:
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
    config = parse_config(data, p.resolve().parent)
    return NodeConfig(**{**config.__dict__, "source": p.resolve()})
