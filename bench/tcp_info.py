"""Bytes on the wire, from the kernel: each TCP connection's ``tcpi_bytes_received`` (Linux
``tcp_info``, RFC 4898 ``tcpEStatsAppHCThruOctetsReceived``), read with ``ss -ti`` (iproute2).

This counts TCP payload, i.e. everything the application protocol put on the wire: HTTP/2
frames and their headers, gRPC message framing, protobuf, and the signed containers inside,
plus pings and periodic pulls; not IP and TCP headers. No proxy sits in the path, so the
connection measured is the real one between two node processes.

``ss -tinH state established '( dport = :PORT )'`` prints, per socket, an address line and
an indented line of ``name:value`` fields::

    0      0      [::ffff:127.0.0.1]:43946 [::ffff:127.0.0.1]:46727
            bbr wscale:10,10 ... bytes_sent:1093 bytes_acked:1094 bytes_received:18652 ...

(``bytes_received`` is left out while it is zero.)
"""

from __future__ import annotations

import re
import shutil
import subprocess

_BYTES_RECEIVED = re.compile(r"\bbytes_received:(\d+)")


def available() -> bool:
    return shutil.which("ss") is not None


def parse_ss(output: str) -> dict[tuple[str, str], int]:
    """(local, peer) address → bytes received, from ``ss -tinH`` output."""
    counts: dict[tuple[str, str], int] = {}
    current: tuple[str, str] | None = None
    for line in output.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            fields = line.split()
            if len(fields) < 4:
                raise ValueError(f"unexpected ss address line {line!r}")
            current = (fields[-2], fields[-1])
            counts[current] = 0
        elif current is not None:
            match = _BYTES_RECEIVED.search(line)
            counts[current] = int(match.group(1)) if match else 0
    return counts


def received_from_port(port: int) -> dict[tuple[str, str], int]:
    """Bytes received so far on every established connection *to* a server on ``port``
    (the client ends: their peer port is ``port``), keyed by (local, peer) address."""
    done = subprocess.run(
        ["ss", "-tinH", "state", "established", f"( dport = :{port} )"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return parse_ss(done.stdout)
