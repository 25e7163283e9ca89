"""What a failed call means (node/cli/diagnose.py), as a pure function of the status, its
details and what the probe found; the probe itself against a port nothing listens on.
tests/test_card_cli.py runs the same through real TLS and plain-text nodes."""

from __future__ import annotations

import socket

import pytest

from node.cli.diagnose import Listener, explain, probe

ADDR = "127.0.0.1:50051"
FAILED = "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:50051: "


def test_a_plaintext_client_at_a_tls_node_is_told_which_options_to_pass() -> None:
    said = explain(
        ADDR, "UNAVAILABLE", FAILED + "Socket closed", tls_given=False, listener=Listener.TLS,
        role="terminal",
    )  # fmt: skip
    assert not said.reached
    assert said.text.startswith(f"the node at {ADDR} requires mutual TLS: pass --ca")
    assert "--role terminal" in said.text and ".federation/tls/terminal-<region>.crt" in said.text
    assert "Socket closed" not in said.text


def test_tls_options_at_a_plaintext_node() -> None:
    said = explain(
        ADDR, "UNAVAILABLE", FAILED + "Tls handshake failed (TSI_PROTOCOL_FAILURE)",
        tls_given=True, listener=Listener.PLAINTEXT,
    )  # fmt: skip
    assert not said.reached and "drop --ca, --cert and --key" in said.text


def test_a_failed_handshake_between_two_tls_ends_names_the_ca() -> None:
    said = explain(
        ADDR, "UNAVAILABLE", FAILED + "Ssl handshake failed: CERTIFICATE_VERIFY_FAILED",
        tls_given=True, listener=Listener.TLS,
    )  # fmt: skip
    assert not said.reached and "--ca must be the CA that issued" in said.text


@pytest.mark.parametrize("listener", [Listener.REFUSED, None])
def test_connection_refused(listener: Listener | None) -> None:
    details = FAILED + "Failed to connect to remote host: Connection refused"
    said = explain(ADDR, "UNAVAILABLE", details, tls_given=False, listener=listener)
    assert not said.reached and said.text.startswith(f"nothing listens at {ADDR}")


def test_unreachable_keeps_grpcs_text() -> None:
    said = explain(
        ADDR, "UNAVAILABLE", FAILED + "Timeout", tls_given=False, listener=Listener.UNREACHABLE
    )
    assert not said.reached and said.text.startswith(f"cannot reach {ADDR}: UNAVAILABLE:")


def test_an_unavailable_the_node_sent_is_its_own_answer() -> None:
    """Fail closed (node/grpc/calls.py): the node was reached and said it cannot confirm a check."""
    said = explain(
        ADDR, "UNAVAILABLE", "check could not be confirmed", tls_given=False, listener=None
    )
    assert said.reached and said.text == f"{ADDR}: UNAVAILABLE: check could not be confirmed"


def test_deadline() -> None:
    said = explain(
        ADDR, "DEADLINE_EXCEEDED", "Deadline Exceeded", tls_given=True, listener=None, timeout=5
    )
    assert not said.reached and said.text == f"no answer from {ADDR} within 5 s (--timeout)"


@pytest.mark.parametrize(
    ("details", "hint"),
    [
        ("role 'terminal' may not call Admin/Revoke", "Admin calls take an operator certificate"),
        ("role 'operator' may not call Sync/GetUpdates", "Sync calls are for nodes"),
        (
            "role 'operator' of region 110100 may not call Admin/Revoke for card 4401...: "
            "outside the certificate's region",
            "operator certificate of the card's region",
        ),
        (
            "card 4401... (region 440100) is outside this authority's prefixes ['1101']",
            "at its own authority",
        ),
    ],
)
def test_permission_denied_says_which_role_or_region(details: str, hint: str) -> None:
    said = explain(ADDR, "PERMISSION_DENIED", details, tls_given=True, listener=None)
    assert said.reached
    assert said.text.startswith(f"refused by {ADDR} (PERMISSION_DENIED): {details}; ")
    assert hint in said.text


def test_unauthenticated() -> None:
    said = explain(
        ADDR, "UNAUTHENTICATED", "no role", tls_given=True, listener=None, role="operator"
    )
    assert said.reached and "tls issue --role operator" in said.text


def test_probe_of_a_closed_port_is_refused() -> None:
    with socket.socket() as s:  # a port that was just free: nothing listens on it now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert probe(f"127.0.0.1:{port}") is Listener.REFUSED


def test_probe_of_a_name_that_does_not_resolve_is_unreachable() -> None:
    assert probe("no-such-host.invalid:50051", timeout=1) is Listener.UNREACHABLE
