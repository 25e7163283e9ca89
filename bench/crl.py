"""The baseline a delta's size is measured against: a DER X.509 delta CRL of the same
revocations (bench/test_core.py, bench/compare.py)."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from blacklist.columns import EntryColumns


def crl_bytes(entries: EntryColumns) -> int:
    """A DER X.509 delta CRL (RFC 5280 §5.2.4) of the same revocations: serial, revocation
    date and reason code per entry, signed with Ed25519."""
    key = Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "440300 card authority")])
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(name)
        .last_update(now)
        .next_update(now + dt.timedelta(hours=1))
        .add_extension(x509.CRLNumber(2), critical=False)
        .add_extension(x509.DeltaCRLIndicator(1), critical=True)
    )
    reasons = [
        x509.ReasonFlags.key_compromise,
        x509.ReasonFlags.superseded,
        x509.ReasonFlags.cessation_of_operation,
        x509.ReasonFlags.affiliation_changed,
    ]
    for serial, reason, t in zip(
        entries.cards.serial.tolist(), entries.reason.tolist(), entries.time.tolist(), strict=True
    ):
        revoked = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial or 1)
            .revocation_date(dt.datetime.fromtimestamp(t, dt.UTC))
            .add_extension(x509.CRLReason(reasons[reason % len(reasons)]), critical=False)
            .build()
        )
        builder = builder.add_revoked_certificate(revoked)
    return len(builder.sign(key, None).public_bytes(Encoding.DER))
