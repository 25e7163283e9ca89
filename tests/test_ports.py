"""A busy gRPC or metrics port stops the node with exit code 2 and one line naming the config
field and the address (issue #13); the check itself (node/ports.py) in process."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.ports import PortInUse, bound, refuse_a_taken_port
from tests.node_harness import NodeProcess, run_node_expecting_exit, write_config, write_node


@pytest.fixture
def held() -> Iterator[str]:
    """An address another process (here: this one) listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield f"127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("field", ["listen", "metrics_listen"])
def test_a_busy_port_is_one_line_and_exit_2(tmp_path: Path, held: str, field: str) -> None:
    files = write_node(tmp_path / "gz", "440100", extra={field: held})
    code, err = run_node_expecting_exit(files.config)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f'error: {field} = "{held}": cannot listen on {held}: ')
    assert "Address already in use" in lines[0]
    # Nothing was left holding the data directory: the same data_dir starts on free ports.
    again = write_config(
        tmp_path / "again.toml",
        {**files.fields, "listen": "127.0.0.1:0", "metrics_listen": "127.0.0.1:0"},
    )
    with NodeProcess(again):
        pass


def test_the_check_refuses_a_held_address_naming_the_field(held: str) -> None:
    with pytest.raises(PortInUse) as refused:
        refuse_a_taken_port(held, "metrics_listen")
    assert refused.value.field == "metrics_listen" and refused.value.address == held


def test_the_check_passes_a_free_port_and_port_0() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = f"127.0.0.1:{s.getsockname()[1]}"
    refuse_a_taken_port(free)  # closed again: free
    refuse_a_taken_port("127.0.0.1:0")  # any free port: nothing to check


def test_bound_turns_bind_failures_into_port_in_use() -> None:
    assert bound("listen", "x:1", lambda: 7) == 7

    def grpc_failure() -> int:
        raise RuntimeError("Failed to bind to address x:1")

    with pytest.raises(PortInUse, match='listen = "x:1": cannot listen on x:1: Failed to bind'):
        bound("listen", "x:1", grpc_failure)

    def socket_failure() -> int:
        raise OSError(98, "Address already in use")

    with pytest.raises(PortInUse, match="x:1: Address already in use"):
        bound("metrics_listen", "x:1", socket_failure)
