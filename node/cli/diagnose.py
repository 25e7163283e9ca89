"""What a failed call to a node means, said so that a person knows what to do next.

gRPC reports every failure to connect as ``UNAVAILABLE`` with transport text (``Socket
closed`` for a plain-text client at a TLS node, ``WRONG_VERSION_NUMBER`` the other way
round). The operator tools (``card``, ``status``, ``import-csv``, ``export-csv``) hand such
an error to :func:`explain`, which first looks at the listener itself (:func:`probe`: one
TCP connection and a TLS ClientHello, no certificate) and then says which of these it is:

* nothing listens there (connection refused), or the host cannot be reached;
* the node requires mutual TLS and no ``--ca/--cert/--key`` were given (which to give);
* the node serves plain text and TLS options were given (drop them);
* the TLS handshake failed although both sides speak TLS (the wrong CA or certificate);
* the node answered and refused: ``PERMISSION_DENIED`` (which role or region it takes),
  ``UNAUTHENTICATED`` (a certificate without a role), or its own error.

:func:`explain` is a pure function of the status, its details and the probe's finding, tested
without sockets; only :func:`probe` and :func:`explain_error` touch the network.
"""

from __future__ import annotations

import enum
import socket
import ssl
from dataclasses import dataclass
from typing import Any

import grpc

# Where `make up` leaves the client certificates (node/local/pki.py, node/local/up.py).
UP_TLS = (
    "`make up` wrote them to .federation/tls/: --ca .federation/tls/ca/ca.crt and "
    "--cert/--key .federation/tls/{role}-<region>.crt/.key"
)
PROBE_TIMEOUT = 3.0


class Listener(enum.StrEnum):
    """What answers at an address, as far as a TLS ClientHello can tell."""

    TLS = "tls"
    PLAINTEXT = "plaintext"
    REFUSED = "refused"  # the host answered: nothing listens on that port
    UNREACHABLE = "unreachable"  # no TCP connection at all (timeout, no route, bad name)


@dataclass(frozen=True)
class Explained:
    text: str
    reached: bool  # False: the node was never reached (tools exit 3); True: it said no


def _transport(code: str, details: str) -> bool:
    """A failure to connect (gRPC's own text), not an UNAVAILABLE the node itself sent
    (a check it could not confirm fails closed with UNAVAILABLE, node/grpc/calls.py)."""
    return code == "UNAVAILABLE" and (
        "failed to connect to all addresses" in details
        or "Socket closed" in details
        or "Connection refused" in details
        or "handshake" in details.lower()
    )


def _permission_hint(details: str, role: str) -> str:
    if "outside the certificate's region" in details:
        return "use an operator certificate of the card's region (tls issue --role operator)"
    if "may not call Admin/" in details:
        return "Admin calls take an operator certificate (tls issue --role operator --region R)"
    if "may not call CardStatus/" in details:
        return "CardStatus calls take a terminal certificate (tls issue --role terminal)"
    if "may not call Sync/" in details:
        return "Sync calls are for nodes (a node certificate)"
    if "scope" in details or "prefix" in details:
        return "revoke or reinstate a card at its own authority: the node of its region"
    return f"this call takes a {role} certificate of the right region"


def explain(
    address: str,
    code: str,
    details: str,
    *,
    tls_given: bool,
    listener: Listener | None,
    role: str = "operator",
    timeout: float | None = None,
) -> Explained:
    """One line for a failed call to ``address``. ``code`` is the status name, ``details``
    its text, ``listener`` what :func:`probe` found (None: not probed), ``role`` the
    certificate role the command needs (for the hints)."""
    details = " ".join(details.split())
    if _transport(code, details):
        if listener is Listener.REFUSED or (listener is None and "refused" in details):
            return Explained(
                f"nothing listens at {address} (connection refused): is the node running? "
                "(`make up` prints every node's address)",
                reached=False,
            )
        if listener is Listener.TLS and not tls_given:
            return Explained(
                f"the node at {address} requires mutual TLS: pass --ca (the CA certificate), "
                f"--cert and --key (a {role} certificate and its key, from `tls issue --role "
                f"{role}`); {UP_TLS.format(role=role)}",
                reached=False,
            )
        if listener is Listener.PLAINTEXT and tls_given:
            return Explained(
                f"the node at {address} serves plain text (plaintext = true in its config): "
                "drop --ca, --cert and --key",
                reached=False,
            )
        if listener is Listener.TLS:
            return Explained(
                f"the TLS handshake with {address} failed: --ca must be the CA that issued "
                "the node's certificate, and --cert/--key a certificate and key that CA "
                f"issued, not expired ({code}: {details[:300]})",
                reached=False,
            )
        return Explained(f"cannot reach {address}: {code}: {details[:300]}", reached=False)
    if code == "DEADLINE_EXCEEDED":
        within = f" within {timeout:g} s (--timeout)" if timeout is not None else ""
        return Explained(f"no answer from {address}{within}", reached=False)
    if code == "PERMISSION_DENIED":
        return Explained(
            f"refused by {address} (PERMISSION_DENIED): {details}; "
            + _permission_hint(details, role),
            reached=True,
        )
    if code == "UNAUTHENTICATED":
        return Explained(
            f"refused by {address} (UNAUTHENTICATED): {details}; present a certificate "
            f"issued with `tls issue --role {role}`",
            reached=True,
        )
    return Explained(f"{address}: {code}: {details}", reached=True)


def probe(address: str, timeout: float = PROBE_TIMEOUT) -> Listener:
    """Connect to ``address`` and offer TLS (no certificate, no verification: this only
    asks whether the listener speaks TLS, it trusts nothing it hears). A TLS 1.3 server
    that requires a client certificate still completes the client's side of the handshake;
    a TLS 1.2 one answers with an alert; a plain-text HTTP/2 server answers with bytes that
    are no TLS record (``WRONG_VERSION_NUMBER``) or closes."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        raw = socket.create_connection((host, int(port)), timeout=timeout)
    except ConnectionRefusedError:
        return Listener.REFUSED
    except (OSError, ValueError):
        return Listener.UNREACHABLE
    try:
        with context.wrap_socket(raw, server_hostname=None):
            return Listener.TLS
    except ssl.SSLError as exc:
        return Listener.TLS if "ALERT" in str(exc.reason or "").upper() else Listener.PLAINTEXT
    except OSError:  # closed or reset mid-handshake: not a TLS server
        return Listener.PLAINTEXT
    finally:
        raw.close()


def explain_error(
    address: str,
    error: grpc.RpcError,
    *,
    tls_given: bool,
    role: str = "operator",
    timeout: float | None = None,
) -> Explained:
    """:func:`explain` for a failed call, probing the listener when it was never reached."""
    call: Any = error
    code_obj = call.code() if hasattr(call, "code") else None
    code = code_obj.name if code_obj is not None else "UNKNOWN"
    details = str(call.details() if hasattr(call, "details") else error) or ""
    listener = probe(address) if _transport(code, " ".join(details.split())) else None
    return explain(
        address, code, details, tls_given=tls_given, listener=listener, role=role, timeout=timeout
    )
