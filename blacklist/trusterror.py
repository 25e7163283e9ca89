"""The base of the certificate-chain errors (chainverify.py). Apart from the chain rules so
that the publisher directory, which the check path uses, can name
:class:`~blacklist.publishers.PrefixConflict` without importing them."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from blacklist.errors import BlacklistError

if TYPE_CHECKING:
    from blacklist.certs import Certificate


class TrustError(BlacklistError):
    """A certificate chain does not make a key trusted. ``cause`` is a stable metrics label;
    ``certificate`` is the failing certificate, when there is one."""

    cause: ClassVar[str] = "untrusted"

    def __init__(self, message: str, certificate: Certificate | None = None) -> None:
        super().__init__(message)
        self.certificate = certificate
