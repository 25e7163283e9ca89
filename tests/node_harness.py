"""Run real node processes for integration tests: files on disk, a subprocess, real channels.

A test writes keys and a config with :func:`write_node`, starts ``python -m node run`` with
:class:`NodeProcess`, waits for its ``READY {...}`` line and talks to it over loopback gRPC
and HTTP, exactly as an operator's tools would. Nothing here imports the server code: the
only way in is the process boundary.

    files = write_node(tmp_path / "gz", "440100", trusted=[other.public])
    with NodeProcess(files.config) as node:
        node.card_status.CheckCard(card_status_pb2.CheckCardRequest(card_id=...))
    # leaving the block sends SIGTERM and asserts exit code 0
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from blacklist.signing import SigningKey
from node.gen.blacklist.v1 import admin_pb2_grpc, card_status_pb2_grpc
from node.keyfiles import write_key_pair

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 30.0  # a cold interpreter imports numpy, grpc and cryptography first
STOP_TIMEOUT = 30.0
# The client may send and receive more than gRPC's 4 MiB default, so that the server's own
# 16 MiB limit is the one a test meets.
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 256 << 20),
    ("grpc.max_receive_message_length", 256 << 20),
]

TomlValue = str | int | float | bool | Sequence[str]


def card_id(region: str = "440100", serial: int | None = None) -> str:
    """A valid 32-character card id in ``region`` (random serial unless given)."""
    if serial is None:
        serial = random.getrandbits(64)
    return f"{region}D156000005{serial:016X}"


# ---------------------------------------------------------------------------- files on disk
@dataclass(frozen=True)
class KeyFiles:
    private: Path
    public: Path


def write_keys(directory: Path, publisher: str, prefixes: Sequence[str]) -> KeyFiles:
    """``<publisher>.key`` and ``<publisher>.pub`` in ``directory``: the same files, written by
    the same function, as ``python -m node keys generate`` (in process, to save a start-up)."""
    private, public = write_key_pair(SigningKey.generate(publisher, list(prefixes)), directory)
    return KeyFiles(private, public)


def _toml_value(value: TomlValue) -> str:
    # json.dumps of a str or a list of str is valid TOML (basic strings, arrays).
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(list(value))


def write_config(path: Path, fields: Mapping[str, TomlValue]) -> Path:
    """A flat TOML config with exactly ``fields`` (so tests can also write broken ones)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{name} = {_toml_value(v)}\n" for name, v in fields.items()))
    return path


@dataclass(frozen=True)
class NodeFiles:
    directory: Path
    config: Path
    data_dir: Path
    keys: KeyFiles | None  # this node's own key pair; None for a node that publishes nothing
    fields: Mapping[str, TomlValue]


def write_node(
    directory: Path,
    region: str,
    prefixes: Sequence[str] | None = None,
    *,
    role: str = "city",
    trusted: Iterable[Path] = (),
    signing: bool = True,
    extra: Mapping[str, TomlValue] | None = None,
) -> NodeFiles:
    """Keys (unless ``signing`` is false) and ``node.toml`` for a node of ``region`` on free
    loopback ports. The node trusts its own public key plus ``trusted``; ``extra`` adds or
    overrides config fields (``max_batch``, ...)."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = None
    if signing:
        keys = write_keys(directory / "keys", region, prefixes or [region[:4]])
    trusted_paths = [*([keys.public] if keys else []), *trusted]
    fields: dict[str, TomlValue] = {
        "role": role,
        "region": region,
        "listen": "127.0.0.1:0",
        "metrics_listen": "127.0.0.1:0",
        "data_dir": str(directory / "data"),
        "trusted_keys": [str(p) for p in trusted_paths],
        "map_size_gib": 1,
        "plaintext": True,  # tests/test_tls.py runs nodes with mutual TLS
    }
    if keys:
        fields["signing_key"] = str(keys.private)
    fields.update(extra or {})
    config = write_config(directory / "node.toml", fields)
    return NodeFiles(directory, config, directory / "data", keys, fields)


def node_command(config: Path, command: str = "run") -> list[str]:
    return [sys.executable, "-m", "node", command, "--config", str(config)]


def run_node_expecting_exit(
    config: Path, timeout: float = READY_TIMEOUT, command: str = "run"
) -> tuple[int, str]:
    """Run a node that should refuse to start; its exit code and stderr. A node that does
    start instead is stopped, and the test sees its code (not 2) and stderr."""
    proc = subprocess.Popen(
        node_command(config, command),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err


# ---------------------------------------------------------------------------- the process
class NodeProcess:
    """One ``python -m node run`` child. ``start`` returns once the node printed READY;
    ``grpc`` / ``metrics_url`` and the stubs are valid until the next stop or kill."""

    def __init__(
        self, config: Path, *, ready_timeout: float = READY_TIMEOUT, command: str = "run"
    ) -> None:
        self.config = config
        self.command = command  # "edge": an edge replica daemon (its READY names "grpc" too)
        self.ready_timeout = ready_timeout
        self.log_path = config.with_name(config.stem + ".stderr.log")
        self.proc: subprocess.Popen[str] | None = None
        self.ready: dict[str, str] = {}
        self.channel: Any = None
        self.card_status: Any = None
        self.admin: Any = None
        self.health: Any = None
        self.reflection: Any = None
        self._log: IO[bytes] | None = None
        self.starts = 0

    # ------------------------------------------------------------------ properties
    @property
    def grpc(self) -> str:
        return self.ready["grpc"]

    @property
    def metrics_url(self) -> str:
        return self.ready["metrics"]

    @property
    def pid(self) -> int:
        assert self.proc is not None, "node not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr_text(self) -> str:
        """Everything the node wrote to stderr so far (all runs of this config)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # ------------------------------------------------------------------ life cycle
    def start(self) -> NodeProcess:
        assert not self.alive(), "node already running"
        self.starts += 1
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap
        self._log.write(f"--- start {self.starts} ---\n".encode())
        self._log.flush()
        # stderr goes to a file, not a pipe: nobody has to drain it for the node to run.
        self.proc = subprocess.Popen(
            node_command(self.config, self.command),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.ready = self._await_ready(self.proc)
        self.channel = grpc.insecure_channel(self.grpc, options=CHANNEL_OPTIONS)
        self.card_status = _stub(card_status_pb2_grpc.CardStatusStub, self.channel)
        self.admin = _stub(admin_pb2_grpc.AdminStub, self.channel)
        self.health = _stub(health_pb2_grpc.HealthStub, self.channel)
        self.reflection = _stub(reflection_pb2_grpc.ServerReflectionStub, self.channel)
        return self

    def _await_ready(self, proc: subprocess.Popen[str]) -> dict[str, str]:
        # A reader thread, so that the wait has a deadline even if the child prints nothing.
        lines: queue.Queue[str | None] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            # This thread owns stdout and closes it at EOF (the child's exit): closing it
            # from another thread while a read is blocked on it is not safe.
            with stdout:
                for line in stdout:
                    lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, name=f"node-stdout-{proc.pid}", daemon=True).start()
        deadline = time.monotonic() + self.ready_timeout
        seen: list[str] = []
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise AssertionError(
                    f"node {self.config} printed no READY line in {self.ready_timeout} s; "
                    f"stdout: {''.join(seen)!r}\nstderr:\n{self.stderr_text()}"
                ) from None
            if line is None:
                code = proc.wait()
                self._reap()
                raise AssertionError(
                    f"node {self.config} exited with {code} before READY; "
                    f"stdout: {''.join(seen)!r}\nstderr:\n{self.stderr_text()}"
                )
            if line.startswith("READY "):
                ready: dict[str, str] = json.loads(line[len("READY ") :])
                return ready
            seen.append(line)

    def terminate(self) -> None:
        """Send SIGTERM and return at once (see :meth:`wait`)."""
        assert self.proc is not None, "node not started"
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait for the child to exit; its exit code. Closes the channel."""
        assert self.proc is not None, "node not started"
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"node {self.config} did not exit within {timeout} s; stderr:\n{self.stderr_text()}"
            ) from None
        self._reap()
        return code

    def stop(self, expect: int | None = 0, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait, and (unless ``expect`` is None) assert the exit code."""
        self.terminate()
        code = self.wait(timeout)
        if expect is not None:
            assert code == expect, (
                f"node {self.config} exited with {code} on SIGTERM, expected {expect}; "
                f"stderr:\n{self.stderr_text()}"
            )
        return code

    def kill(self) -> int:
        """SIGKILL (no clean-up in the node at all); the exit code, -9."""
        assert self.proc is not None, "node not started"
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        code = self.proc.wait()
        self._reap()
        return code

    def restart(self) -> NodeProcess:
        """SIGTERM (asserting exit 0), then start again on the same config and data dir."""
        if self.alive():
            self.stop()
        return self.start()

    def _reap(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        """Teardown: stop a running node (asserting exit 0); harmless if already stopped."""
        if self.alive():
            self.stop()
        else:
            self._reap()

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        elif self.alive():
            self.kill()  # the test already failed; do not mask its error with a stop error

    # ------------------------------------------------------------------ metrics
    def scrape(self) -> Metrics:
        return Metrics.of(self.metrics_url)


def _stub(cls: Any, channel: Any) -> Any:
    # The generated *_grpc modules are untyped; the stubs are Any to the tests.
    return cls(channel)


class Metrics:
    """One scrape of ``/metrics``, parsed with prometheus_client's own parser."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples.setdefault(sample.name, []).append((sample.labels, sample.value))

    @classmethod
    def of(cls, url: str, timeout: float = 10.0) -> Metrics:
        """One scrape of the page at ``url``."""
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return cls(response.read().decode())

    def value(self, name: str, /, **labels: str) -> float:
        """The one sample called ``name`` whose labels include ``labels``."""
        found = [v for have, v in self.samples.get(name, []) if labels.items() <= have.items()]
        assert len(found) == 1, f"{len(found)} samples {name}{labels}; have {self.names()}"
        return found[0]

    def get(self, name: str, /, **labels: str) -> float:
        """Like :meth:`value`, but 0 when no such sample exists (yet): a counter whose label
        set has not been used is absent from the exposition, not zero."""
        found = [v for have, v in self.samples.get(name, []) if labels.items() <= have.items()]
        assert len(found) <= 1, f"{len(found)} samples {name}{labels}"
        return found[0] if found else 0.0

    def names(self) -> list[str]:
        return sorted(self.samples)
