"""Refusing a busy port at start-up: one line naming the config field and the address.

A node whose ``listen`` or ``metrics_listen`` address another process holds stops before it
binds anything, with exit code 2 and ``listen = "127.0.0.1:50051": cannot listen on ...``
(issue #13), not gRPC's "Failed to bind" traceback or wsgiref's ``Errno 98``.

The check is a plain bind of each address (port 0 needs none): SO_REUSEPORT, which the node
sets when it has worker processes (node/workers/pool.py), would otherwise let any process of the
same user share a port another node holds, silently splitting its connections. SO_REUSEADDR
is set as gRPC sets it, so connections in TIME_WAIT do not count. A bind that still fails
afterwards (a race) is reported the same way by :func:`bound`.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class PortInUse(OSError):
    """A config field's address cannot be listened on."""

    def __init__(self, field: str, address: str, reason: str) -> None:
        super().__init__(
            f'{field} = "{address}": cannot listen on {address}: {reason}; stop what holds '
            "it, or give this node another port (0: any free one)"
        )
        self.field = field
        self.address = address


def refuse_a_taken_port(address: str, field: str = "listen") -> None:
    """:class:`PortInUse` if something already listens on ``address`` (see the module)."""
    host, _, port = address.rpartition(":")
    if not port.isdigit() or int(port) == 0:
        return  # port 0 is any free port; a malformed one was refused by node/config.py
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError as exc:
            raise PortInUse(field, address, exc.strerror or str(exc)) from None


def bound(field: str, address: str, bind: Callable[[], T]) -> T:
    """``bind()``, with its failure (gRPC's RuntimeError, a socket's OSError) as
    :class:`PortInUse`."""
    try:
        return bind()
    except (RuntimeError, OSError) as exc:
        raise PortInUse(field, address, getattr(exc, "strerror", None) or str(exc)) from None


def reserve_port(address: str) -> socket.socket:
    """A bound socket on ``address`` with SO_REUSEPORT that never listens: it holds the
    port (and picks one for port 0) for the worker processes that serve on it. They bind
    it too, with SO_REUSEPORT, and the kernel hands connections only to sockets that
    listen, so none reaches the process that holds this one (node/server.py, workers >= 2).
    """
    host, _, port = address.rpartition(":")
    family, kind, proto, _, where = socket.getaddrinfo(
        host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    held = socket.socket(family, kind, proto)
    try:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind(where)
    except BaseException:
        held.close()
        raise
    return held
