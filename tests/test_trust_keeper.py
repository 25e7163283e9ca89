"""The node's trusted keys change without a restart: a certificate that expires is dropped on
the periodic refresh, and certificates or revocations arriving in a feed are taken up right
after the write that brought them (node/trust_keeper.py)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from blacklist.authority import build_delta
from blacklist.certs import issue_certificate
from blacklist.clock import ManualClock
from blacklist.delta import FeedHead
from blacklist.signing import SigningKey, TrustedKey
from blacklist.store import RevocationStore
from blacklist.trust import DEFAULT_MAX_TRUST_RECORDS, CertifiedKeys
from node.config import ConfigError, NodeConfig, parse_config
from node.keyfiles import write_key_pair
from node.metrics import NodeMetrics
from node.trust_keeper import TrustKeeper


def test_expiry_and_feed_records_take_effect_without_a_restart(tmp_path: Path) -> None:
    # parse_config checks the chains at the real time: take it now, not at import (a full
    # suite on a loaded machine reaches this test more than the certificate's 1000 s later).
    T0 = int(time.time())
    root = SigningKey.generate("000000", [])
    gd = SigningKey.generate("440000", ["44"])
    gz = SigningKey.generate("440100", ["4401"])
    write_key_pair(root, tmp_path, "root")
    write_key_pair(gd, tmp_path)
    gd_cert = issue_certificate(root, gd, ["44"], T0 - 10, T0 + 1000, serial=1)
    (tmp_path / "440000.crt").write_bytes(gd_cert.to_bytes())
    config = parse_config(
        {
            "role": "province",
            "region": "440000",
            "listen": "127.0.0.1:0",
            "metrics_listen": "127.0.0.1:0",
            "data_dir": "data",
            "signing_key": "440000.key",
            "trust_anchor": "root.pub",
            "certificate_chains": [["440000.crt"]],
            "plaintext": True,
        },
        tmp_path,
    )
    clock = ManualClock(T0)
    store = RevocationStore(tmp_path / "data", clock=clock, map_size=1 << 30)
    metrics = NodeMetrics(CollectorRegistry())
    keeper = TrustKeeper(config, store, metrics, clock)
    given: list[Mapping[bytes, TrustedKey]] = []
    keeper.attach(_NoLoop(), writer_side=[given.append], loop_side=[given.append])  # type: ignore[arg-type]
    try:
        assert gd.key_id in keeper.keys and gz.key_id not in keeper.keys
        # A certificate for Guangzhou arrives in the province's feed (its own delta here).
        gz_cert = issue_certificate(gd, gz, ["4401"], T0 - 10, T0 + 100, serial=2)
        delta = build_delta(
            gd, FeedHead.genesis("440000"), issued_at=T0, trust=[gz_cert.to_bytes()]
        )
        store.apply_delta(delta, keeper.keys)
        keeper.after_write()
        assert gz.key_id in keeper.keys and len(given) == 2  # writer side and loop side
        keeper.after_write()  # nothing new: no rebuild
        assert len(given) == 2
        # Time passes beyond Guangzhou's certificate: the timer drops the key.
        clock.advance(200)
        keeper.refresh("timer")
        assert gz.key_id not in keeper.keys and gd.key_id in keeper.keys
        assert metrics.trusted_keys._value.get() == len(keeper.keys)  # type: ignore[attr-defined]
    finally:
        store.close()


class _NoLoop:
    def is_running(self) -> bool:
        return False


def _certified_config(tmp_path: Path, **extra: object) -> object:
    root = SigningKey.generate("000000", [])
    write_key_pair(root, tmp_path, "root")
    return parse_config(
        {
            "role": "province",
            "region": "440000",
            "listen": "127.0.0.1:0",
            "metrics_listen": "127.0.0.1:0",
            "data_dir": "data",
            "trust_anchor": "root.pub",
            "plaintext": True,
            **extra,
        },
        tmp_path,
    )


@pytest.mark.parametrize(
    ("value", "ok"), [(0, False), (1, True), (1000, True), (10_000, True), (10_001, False)]
)
def test_max_trust_records_is_checked_and_reaches_the_keys(
    tmp_path: Path, value: int, ok: bool
) -> None:
    """The per-feed bound on trust records (issue #11) is a config field, 1..the codec's
    10 000, carried by the certified keys that acceptance judges with."""
    if not ok:
        with pytest.raises(ConfigError, match="max_trust_records"):
            _certified_config(tmp_path, max_trust_records=value)
        return
    config = _certified_config(tmp_path, max_trust_records=value)
    assert isinstance(config, NodeConfig) and config.max_trust_records == value
    T0 = int(time.time())
    keys = config.trust_material().keys([], T0)
    assert isinstance(keys, CertifiedKeys) and keys.max_trust_records == value
    assert config.certified_keys(T0).max_trust_records == value


def test_max_trust_records_defaults(tmp_path: Path) -> None:
    config = _certified_config(tmp_path)
    assert isinstance(config, NodeConfig)
    assert config.max_trust_records == DEFAULT_MAX_TRUST_RECORDS == 1000
