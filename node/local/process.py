"""Local nodes as separate processes: keys, a config and ``python -m node run``, as an operator
would set them up, for the demo, integration tests and a federation on one machine.

Keys and nodes are separate steps because in a federation every node's config names the
public keys of the others, so all keys must exist before the first config is written::

    gz = generate_keys("440100", ["4401"], root / "keys")
    bj = generate_keys("110100", ["1101"], root / "keys")
    trusted = (gz.public, bj.public)
    specs = [
        NodeSpec("440100", signing_key=gz.private, trusted_keys=trusted),
        NodeSpec("110100", signing_key=bj.private, trusted_keys=trusted),
    ]
    nodes = [LocalNode.spawn(write_config(s, root / s.region), name=s.region) for s in specs]
    try:
        for n in nodes:
            n.wait_ready()          # started in parallel, waited for one by one
        ...                         # n.grpc, n.metrics_url
    finally:
        for n in nodes:
            n.close()               # kills whatever is still running

Ports default to 0 (the kernel picks free ones); the node reports the ones it bound in its
``READY {json}`` stdout line, which is the only thing this module reads from stdout. The
node's log (stderr) goes to ``node.log`` next to its config, and its tail is quoted in every
error, so a node that fails to start says why.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import tomli_w

from blacklist.signing import SigningKey
from node.keyfiles import write_key_pair

READY_PREFIX = "READY "
DEFAULT_READY_TIMEOUT = 20.0
DEFAULT_STOP_TIMEOUT = 10.0  # the server's grace period is 5 s; LMDB closes after it
_EOF = object()


class LocalNodeError(RuntimeError):
    """A local node could not be set up, started or stopped; the message says which and why."""


@dataclass(frozen=True)
class KeyPair:
    publisher: str
    private: Path
    public: Path


@dataclass(frozen=True)
class NodeSpec:
    """What makes one node different from another (node/config.py describes each field).

    ``signing_key`` makes the node an authority for that key's prefixes; the node's own
    public key is trusted automatically, ``trusted_keys`` adds the others'. With
    ``trust_anchor`` the node trusts instead exactly the keys ``certificate_chains`` certify
    (no ``trusted_keys``), less those ``key_revocations`` revoke.
    """

    region: str
    role: str = "city"
    signing_key: Path | None = None
    trusted_keys: tuple[Path, ...] = ()
    listen: str = "127.0.0.1:0"
    metrics_listen: str = "127.0.0.1:0"
    # Small: a local node holds test data, and many of them may share one machine.
    map_size_gib: int = 1
    max_batch: int | None = None
    retain_deltas: int | None = None
    upstreams: tuple[str, ...] = ()
    sync_interval: float | None = None
    subscribe: bool = True
    head_statement_interval: float | None = None  # an authority's signed freshness
    # Mutual TLS (node/tls.py): the CA and this node's certificate and key. Without them the
    # config says ``plaintext = true`` (tests and demos only).
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # The certified hierarchy (DESIGN.md §6): the pinned root public key, chains root-most
    # first, and key revocations.
    trust_anchor: Path | None = None
    also_trust_anchor: Path | None = None  # a second pinned root (issue #14)
    certificate_chains: tuple[tuple[Path, ...], ...] = ()
    key_revocations: tuple[Path, ...] = ()
    workers: int = 1  # serving processes on the one port (node/workers/pool.py)


@dataclass(frozen=True)
class Ready:
    """The node's ``READY`` line."""

    region: str
    role: str
    grpc: str
    metrics_url: str
    raw: dict[str, Any] = field(compare=False)

    @classmethod
    def parse(cls, line: str) -> Ready:
        try:
            data = json.loads(line.removeprefix(READY_PREFIX))
            return cls(data["region"], data["role"], data["grpc"], data["metrics"], data)
        except (ValueError, KeyError, TypeError) as exc:
            raise LocalNodeError(f"unreadable READY line {line!r}: {exc}") from None


def _cli(python: str) -> list[str]:
    return [python, "-m", "node"]


def generate_keys(
    publisher: str,
    prefixes: Sequence[str],
    out: str | os.PathLike[str],
    suite: str = "ed25519",
) -> KeyPair:
    """A new signing key pair for ``publisher`` in ``out``, of signing suite ``suite``: the
    files ``python -m node keys generate --suite`` writes (node/keyfiles.py), made in this
    process."""
    try:
        key = SigningKey.generate(publisher, list(prefixes), suite)
        private, public = write_key_pair(key, out)
    except FileExistsError as exc:
        raise LocalNodeError(
            f"keys for {publisher}: {exc.filename} exists; refusing to overwrite a key"
        ) from None
    return KeyPair(publisher, private, public)


def ready_in_file(out: Path, gone: Callable[[], bool], timeout: float) -> Ready | None:
    """The last READY line a detached node wrote to ``out`` (its stdout, sent to a file: no
    pipe ties it to the command that started it); None if ``gone()`` (it stopped) or
    ``timeout`` seconds passed first."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            for line in reversed(out.read_text("utf-8", errors="replace").splitlines()):
                if line.startswith(READY_PREFIX):
                    return Ready.parse(line)
        if gone() or time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def _absolute(path: str | os.PathLike[str]) -> str:
    return str(Path(path).resolve())


def config_fields(spec: NodeSpec, data_dir: str | os.PathLike[str] = "data") -> dict[str, Any]:
    """The config of ``spec`` as TOML fields; paths absolute, except ``data_dir``."""
    fields: dict[str, Any] = {
        "role": spec.role,
        "region": spec.region,
        "listen": spec.listen,
        "metrics_listen": spec.metrics_listen,
        "data_dir": str(data_dir),
    }
    if spec.signing_key is not None:
        fields["signing_key"] = _absolute(spec.signing_key)
    if spec.trust_anchor is not None:
        roots = [
            _absolute(spec.trust_anchor),
            *([] if spec.also_trust_anchor is None else [_absolute(spec.also_trust_anchor)]),
        ]
        fields["trust_anchor"] = roots[0] if len(roots) == 1 else roots
        fields["certificate_chains"] = [
            [_absolute(p) for p in chain] for chain in spec.certificate_chains
        ]
        if spec.key_revocations:
            fields["key_revocations"] = [_absolute(p) for p in spec.key_revocations]
    else:
        fields["trusted_keys"] = [_absolute(p) for p in spec.trusted_keys]
    fields["map_size_gib"] = spec.map_size_gib
    optional = {
        "max_batch": spec.max_batch,
        "retain_deltas": spec.retain_deltas,
        "upstreams": list(spec.upstreams) or None,
        "sync_interval": spec.sync_interval,
        "subscribe": None if spec.subscribe else False,
        "head_statement_interval": spec.head_statement_interval,
        "workers": None if spec.workers == 1 else spec.workers,
    }
    fields.update((k, v) for k, v in optional.items() if v is not None)
    tls = {"tls_ca": spec.tls_ca, "tls_cert": spec.tls_cert, "tls_key": spec.tls_key}
    if any(p is not None for p in tls.values()):
        fields.update((name, _absolute(p)) for name, p in tls.items() if p is not None)
    else:
        fields["plaintext"] = True
    return fields


def config_text(spec: NodeSpec, data_dir: str | os.PathLike[str] = "data", **extra: Any) -> str:
    """The TOML config of ``spec`` (``extra``: further fields, e.g. ``ready_max_lag``)."""
    return tomli_w.dumps({**config_fields(spec, data_dir), **extra})


def write_config(spec: NodeSpec, directory: str | os.PathLike[str]) -> Path:
    """Write ``directory/node.toml`` for ``spec``, its data in ``directory/data``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    path = d / "node.toml"
    path.write_text(config_text(spec), encoding="utf-8")
    return path


class LocalNode:
    """One ``python -m node run`` process. Use :meth:`spawn`, then :meth:`wait_ready`;
    :meth:`stop` ends it with SIGTERM as a supervisor would, :meth:`close` makes sure it is
    gone (also as a context manager)."""

    def __init__(self, process: subprocess.Popen[str], name: str, config: Path, log: Path):
        self.process = process
        self.name = name
        self.config = config
        self.log = log
        self.ready: Ready | None = None
        self._lines: queue.Queue[object] = queue.Queue()
        # stdout is read on a thread: readline cannot time out, and the pipe must be drained
        # so that the node never blocks on a full pipe whatever it prints.
        self._reader = threading.Thread(
            target=self._read_stdout, name=f"node-{name}-stdout", daemon=True
        )
        self._reader.start()

    @classmethod
    def spawn(
        cls,
        config: str | os.PathLike[str],
        *,
        name: str | None = None,
        log: str | os.PathLike[str] | None = None,
        python: str = sys.executable,
        env: dict[str, str] | None = None,
    ) -> LocalNode:
        """Start ``python -m node run --config CONFIG``; returns at once (see :meth:`wait_ready`)."""
        config_path = Path(config).resolve()
        log_path = Path(log) if log is not None else config_path.parent / "node.log"
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                [*_cli(python), "run", "--config", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
                env={**os.environ, **(env or {})},
            )
        return cls(process, name or config_path.parent.name, config_path, log_path)

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(_EOF)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @property
    def grpc(self) -> str:
        return self._ready().grpc

    @property
    def metrics_url(self) -> str:
        return self._ready().metrics_url

    def _ready(self) -> Ready:
        if self.ready is None:
            raise LocalNodeError(f"node {self.name} has not reported READY yet")
        return self.ready

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _failure(self, what: str) -> LocalNodeError:
        tail = self.log_tail()
        return LocalNodeError(
            f"node {self.name} (pid {self.pid}) {what}"
            + (f"; last lines of {self.log}:\n{tail}" if tail else f"; {self.log} is empty")
        )

    def wait_ready(self, timeout: float = DEFAULT_READY_TIMEOUT) -> Ready:
        """Wait for the READY line; on timeout or early exit the node is killed and a
        :class:`LocalNodeError` quotes its log."""
        if self.ready is not None:
            return self.ready
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(remaining, 0.0))
            except queue.Empty:
                self.kill()
                raise self._failure(f"did not report READY within {timeout:g} s") from None
            if line is _EOF:
                try:
                    code = self.process.wait(5.0)
                except subprocess.TimeoutExpired:  # closed stdout but lives on
                    self.kill()
                    code = self.process.wait()
                raise self._failure(f"exited with code {code} before reporting READY")
            assert isinstance(line, str)
            if line.startswith(READY_PREFIX):
                self.ready = Ready.parse(line)
                return self.ready

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> int:
        """SIGTERM, then wait for the exit code (0 means a clean stop). A node that does not
        exit in time is killed and reported."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise self._failure(f"did not exit within {timeout:g} s of SIGTERM; killed") from None
        self._reader.join(timeout=1.0)
        return code

    def kill(self) -> None:
        if self.running:
            self.process.kill()
        self.process.wait()

    def close(self) -> None:
        """Make sure the process is gone: kill it if still running (an error path)."""
        self.kill()
        self._reader.join(timeout=1.0)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f" grpc={self.ready.grpc}" if self.ready else ""
        return f"<LocalNode {self.name} pid={self.pid}{where} running={self.running}>"


def start_node(
    spec: NodeSpec,
    directory: str | os.PathLike[str],
    *,
    ready_timeout: float = DEFAULT_READY_TIMEOUT,
    python: str = sys.executable,
) -> LocalNode:
    """Write the config for ``spec`` in ``directory``, start the node and wait until it
    serves. Nothing is left running if it fails."""
    node = LocalNode.spawn(write_config(spec, directory), name=spec.region, python=python)
    try:
        node.wait_ready(ready_timeout)
    except BaseException:
        node.close()
        raise
    return node
