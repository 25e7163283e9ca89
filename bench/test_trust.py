"""Issue #5 figure: delta verification with the full certificate chain (`verifications_per_s`)
beside verification against a bare trusted key (`baseline_verifications_per_s`), same run.

A verification is what every hop does before applying a delta: decode the signed container,
resolve the signing key (with certificates: root → province → city, each signature checked,
as of the delta's issue time, revocations honoured) and run every acceptance check.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.conftest import per_call_seconds
from bench.data import city_entries
from bench.figures import record, timed
from blacklist.certs import issue_certificate
from blacklist.delta import Delta, FeedHead, sign_delta
from blacklist.entryblock import CardColumns
from blacklist.signing import Keyring, SigningKey
from blacklist.sync.accept import accept_delta, parse_signed
from blacklist.trust import CertifiedKeys, TrustAnchor

NOW = 1_767_225_600
YEAR = 365 * 86_400


def test_delta_verification_with_chain(benchmark: Any) -> None:
    root = SigningKey.generate("000000", [])
    gd = SigningKey.generate("440000", ["44"])
    gz = SigningKey.generate("440100", ["4401"])
    gd_cert = issue_certificate(root, gd, ["44"], NOW - YEAR, NOW + YEAR, serial=1)
    gz_cert = issue_certificate(gd, gz, ["4401"], NOW - YEAR, NOW + YEAR, serial=2)
    certified = CertifiedKeys(TrustAnchor.of(root), [[gd_cert], [gd_cert, gz_cert]], [], at=NOW)
    bare = Keyring([gz.trusted()])
    # A typical push: a delta of 10 revocations from one city.
    entries = city_entries(np.random.default_rng(3), "440100", 10, start=NOW - 60, span=60)
    data = sign_delta(gz, FeedHead.genesis("440100"), entries, CardColumns.empty(), NOW).to_bytes()
    head = FeedHead.genesis("440100")

    def verify(keys: Any) -> FeedHead:
        delta = parse_signed(data)
        assert isinstance(delta, Delta)
        return accept_delta(head, delta, keys)

    assert verify(certified) == verify(bare)
    baseline = per_call_seconds(lambda: verify(bare), repeat=5, number=200)
    benchmark(verify, certified)
    if timed(benchmark):
        ours = float(benchmark.stats.stats.median)
        record(
            benchmark,
            chain_length=2,
            verifications_per_s=1 / ours,
            baseline_verifications_per_s=1 / baseline,
        )
