"""Node configuration: one TOML file, checked completely at start-up. Its fields, defaults
and bounds are declared once, in node/configfields.py (the README's "Configuration
reference" is made from it); this module reads them into a :class:`NodeConfig` and applies
the rules that join several fields.

With ``trust_anchor`` the trusted keys are the leaves of ``certificate_chains`` that verify,
together with chains made of the certificates and revocations that arrive in feeds (re-built
whenever one arrives, and every ``trust_refresh_interval`` for expiry) (no bare ``trusted_keys``, and this node's own signing key only if a chain certifies it
for this node's region). Start-up refuses a chain that fails for any reason but expiry or a
key revocation — both of which happen to a sound chain in the normal course of rotation —
since a scope violation, a bad signature or an unknown issuer is a wrong file, not time.

Relative paths are relative to the config file. Any problem is a :class:`ConfigError` whose
message names the field, so a node refuses to start rather than run misconfigured.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blacklist.deltadecode import DecodeLimits
from blacklist.entry import Reason
from blacklist.lapse import DAY, LapsePolicy
from blacklist.regions import MINISTRY_CODE, PROVINCE_PREFIXES
from blacklist.signing import Keyring, SigningKey, TrustedKey
from blacklist.sync.accept import DEFAULT_MAX_LAPSE, AcceptPolicy
from blacklist.sync.readiness import ReadinessLimits
from blacklist.trust import (
    CertificateExpired,
    CertifiedKeys,
    KeyRevoked,
    TrustAnchor,
)
from blacklist.trustmaterial import TrustMaterial
from node.configfields import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_SNAPSHOT_BYTES,
    KNOWN_FIELDS,
    ConfigError,
    default,
    read,
)
from node.configrules import address, lapse_days, transfer_limits, trust_fields
from node.keyfiles import (
    KeyFileError,
    load_certificate_chain,
    load_revocation,
    load_signing_key,
    load_trust_anchor,
    load_trusted_keys,
)
from node.tls import TlsError, identity_from_pem, load_private_key

ROLES = ("ministry", "province", "city")
TLS_FIELDS = ("tls_ca", "tls_cert", "tls_key")


# Chain failures that befall a sound chain with time; any other is a wrong file.
TIMELY_TRUST_ERRORS = (CertificateExpired, KeyRevoked)


@dataclass(frozen=True)
class NodeConfig:
    role: str
    region: str
    listen: str
    metrics_listen: str
    data_dir: Path
    signing_key_path: Path | None
    trusted_key_paths: tuple[Path, ...]
    max_batch: int = default("max_batch")
    map_size_gib: int = default("map_size_gib")
    retain_deltas: int = default("retain_deltas")
    upstreams: tuple[str, ...] = ()
    sync_interval: float = default("sync_interval")
    subscribe: bool = default("subscribe")
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    plaintext: bool = False
    trust_anchor_path: Path | None = None
    # Issue #14: a second pinned root while the ministry's root moves (trust_anchor = [a, b]).
    also_trust_anchor_paths: tuple[Path, ...] = ()
    certificate_chain_paths: tuple[tuple[Path, ...], ...] = ()
    key_revocation_paths: tuple[Path, ...] = ()
    trust_refresh_interval: float = default("trust_refresh_interval")
    workers: int = default("workers")
    # Trust records one feed may carry (issue #11: bounded); over it, bad_trust_record.
    max_trust_records: int = default("max_trust_records")
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    snapshot_chunk_bytes: int = DEFAULT_CHUNK_BYTES
    max_snapshot_bytes: int = DEFAULT_MAX_SNAPSHOT_BYTES
    head_statement_interval: float = default("head_statement_interval")
    max_clock_skew: int = default("max_clock_skew")
    max_delta_entries: int = default("max_delta_entries")
    max_snapshot_entries: int = default("max_snapshot_entries")
    # Issue #17: default lapse periods (seconds) by reason, the longest accepted, and how
    # often lapsed entries are swept.
    lapse_periods: Mapping[Reason, int] = field(default_factory=dict)
    max_lapse: int = DEFAULT_MAX_LAPSE
    sweep_interval: float = default("sweep_interval")
    # Issue #18: when a replica tells its balancer it is caught up.
    readiness: ReadinessLimits = field(default_factory=ReadinessLimits)
    source: Path | None = field(default=None, compare=False)

    def lapse_policy(self) -> LapsePolicy:
        return LapsePolicy(self.lapse_periods, self.max_lapse)

    def acceptance(self) -> AcceptPolicy:
        """The bounds this node puts on every signer's claims (blacklist/sync/accept.py)."""
        return AcceptPolicy(
            max_lapse=self.max_lapse,
            max_skew=self.max_clock_skew,
            limits=DecodeLimits(
                max_delta_entries=self.max_delta_entries,
                max_snapshot_entries=self.max_snapshot_entries,
            ),
        )

    @property
    def tls(self) -> bool:
        return self.tls_ca is not None

    def signing_key(self) -> SigningKey | None:
        if self.signing_key_path is None:
            return None
        return load_signing_key(self.signing_key_path)

    def keyring(self, at: int | None = None) -> Mapping[bytes, TrustedKey]:
        """The keys this node trusts as of ``at`` (unix seconds; default now): the certified
        keys when ``trust_anchor`` is set, else ``trusted_keys`` plus the node's own."""
        if self.trust_anchor_path is not None:
            return self.certified_keys(int(time.time()) if at is None else at)
        keys: list[TrustedKey] = load_trusted_keys(self.trusted_key_paths)
        own = self.signing_key()
        if own is not None and own.key_id not in {k.key_id for k in keys}:
            keys.append(own.trusted())
        return Keyring(keys)

    def trust_material(self) -> TrustMaterial:
        """The trust files of this config, read now and once (KeyFileError if one cannot be
        read): what the node combines, at every rebuild of its keys, with the records that
        arrive in feeds."""
        if self.trust_anchor_path is None:
            return TrustMaterial(bare=self.keyring())
        return TrustMaterial(
            anchor=self.trust_anchors(),
            chains=tuple(tuple(load_certificate_chain(c)) for c in self.certificate_chain_paths),
            revocations=tuple(load_revocation(p) for p in self.key_revocation_paths),
            max_trust_records=self.max_trust_records,
        )

    def trust_anchors(self) -> tuple[TrustAnchor, ...]:
        """The pinned roots (KeyFileError for a file that is not one)."""
        assert self.trust_anchor_path is not None
        paths = (self.trust_anchor_path, *self.also_trust_anchor_paths)
        return tuple(load_trust_anchor(p) for p in paths)

    def certified_keys(self, at: int) -> CertifiedKeys:
        """KeyFileError for a file that cannot be read (its message starts with the path)."""
        return CertifiedKeys(
            self.trust_anchors(),
            [load_certificate_chain(chain) for chain in self.certificate_chain_paths],
            [load_revocation(p) for p in self.key_revocation_paths],
            at,
            max_trust_records=self.max_trust_records,
        )


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
    upstreams = [address({"upstreams": u}, "upstreams") for u in upstreams]
    max_lapse = read(data, "max_lapse_days") * DAY
    lapses = lapse_days(data, max_lapse)
    anchors, chains, revocations = trust_fields(data, base, trusted)
    limits = transfer_limits(data)
    config = NodeConfig(
        role=role,
        region=region,
        listen=address(data, "listen"),
        metrics_listen=address(data, "metrics_listen"),
        data_dir=(base / data_dir).resolve(),
        signing_key_path=(base / signing).resolve() if signing else None,
        trusted_key_paths=tuple((base / t).resolve() for t in trusted),
        max_batch=read(data, "max_batch"),
        map_size_gib=read(data, "map_size_gib"),
        retain_deltas=read(data, "retain_deltas"),
        upstreams=tuple(upstreams),
        sync_interval=read(data, "sync_interval"),
        subscribe=read(data, "subscribe"),
        trust_anchor_path=anchors[0] if anchors else None,
        also_trust_anchor_paths=anchors[1:],
        certificate_chain_paths=chains,
        key_revocation_paths=revocations,
        trust_refresh_interval=read(data, "trust_refresh_interval"),
        workers=read(data, "workers"),
        max_trust_records=read(data, "max_trust_records"),
        max_message_bytes=limits[0],
        snapshot_chunk_bytes=limits[1],
        max_snapshot_bytes=limits[2],
        head_statement_interval=read(data, "head_statement_interval"),
        max_clock_skew=read(data, "max_clock_skew"),
        lapse_periods=lapses,
        max_lapse=max_lapse,
        sweep_interval=read(data, "sweep_interval"),
        max_delta_entries=read(data, "max_delta_entries"),
        max_snapshot_entries=read(data, "max_snapshot_entries"),
        readiness=ReadinessLimits(
            max_lag=read(data, "ready_max_lag"),
            max_age=read(data, "ready_max_age"),
        ),
    )
    # Load the keys now so that a bad key file stops the node at start-up, named.
    try:
        own = config.signing_key()
        keys = config.keyring()
    except KeyFileError as exc:
        raise ConfigError(f"config field {_key_file_field(config, exc)!r}: {exc}") from None
    if own is not None and own.publisher != region:
        raise ConfigError(
            f"config field 'signing_key': the key publishes for {own.publisher}, "
            f"but this node's region is {region}"
        )
    if isinstance(keys, CertifiedKeys):
        _check_certified(keys, own, region)
    return _with_transport(config, data, base)


def _key_file_field(config: NodeConfig, exc: KeyFileError) -> str:
    """Which config field names the file a KeyFileError (message ``<path>: ...``) is about."""
    text = str(exc)
    candidates: list[tuple[str, Path | None]] = [
        ("signing_key", config.signing_key_path),
        ("trust_anchor", config.trust_anchor_path),
        *(("trust_anchor", p) for p in config.also_trust_anchor_paths),
        *(("certificate_chains", p) for chain in config.certificate_chain_paths for p in chain),
        *(("key_revocations", p) for p in config.key_revocation_paths),
    ]
    for name, path in candidates:
        if path is not None and text.startswith(f"{path}:"):
            return name
    return "trusted_keys"


def _check_certified(keys: CertifiedKeys, own: SigningKey | None, region: str) -> None:
    """Refuse a chain that is wrong rather than old, and an own key no chain certifies."""
    wrong = [e for e in keys.errors if not isinstance(e, TIMELY_TRUST_ERRORS)]
    if wrong:
        raise ConfigError(
            f"config field 'certificate_chains': {wrong[0].cause}: {wrong[0]}"
            + (f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else "")
        )
    if own is None:
        return
    certified = keys.get(own.key_id)
    if certified is None or certified.publisher != region:
        raise ConfigError(
            f"config field 'signing_key': key {own.key_id.hex()} is not certified for "
            f"{region} by any valid chain of 'certificate_chains'"
            + (f" (certified for {certified.publisher})" if certified is not None else "")
        )


def _with_transport(config: NodeConfig, data: dict[str, Any], base: Path) -> NodeConfig:
    """Mutual TLS (all three tls_* fields) or ``plaintext = true``: one, explicitly."""
    plaintext = read(data, "plaintext")
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
