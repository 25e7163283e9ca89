"""`make scale-up` / `make scale-down`: read replicas behind HAProxy, on one machine.

``scale-up`` starts, under DIR (default ``./.scale``): one city authority (440100, the
upstream), ``--replicas`` read replicas (the same region, no signing key, following it over
Sync) and HAProxy (deploy/haproxy.cfg.in) in front of them; it waits until HAProxy sees every
replica UP, records the processes in ``DIR/scale.json`` and returns, leaving them running.
Terminals call the balancer's address. ``scale-down`` stops them all (SIGTERM, SIGKILL after
a timeout). Every process runs in its own session with its output in files, so nothing ties
it to the command that started it.

Replicas listen on fixed ports chosen at start, so one killed and started again (the same
command, :func:`replica_command`) comes back where HAProxy expects it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import socket
import string
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from blacklist.signing import SigningKey
from node.keyfiles import write_key_pair
from node.local import supervise
from node.local.process import NodeSpec, config_text, ready_in_file

DEFAULT_DIR = Path(".scale")
STATE_FILE = "scale.json"
TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "haproxy.cfg.in"
UPSTREAM = "440100"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class ScaleError(RuntimeError):
    """The replica set could not be started or stopped; the message says which part and why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def haproxy_path() -> str | None:
    return shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/sbin/haproxy") if os.access(p, os.X_OK)), None
    )


@dataclass(frozen=True)
class Backend:
    name: str
    grpc: str  # host:port of the replica's gRPC server
    metrics: str  # host:port of its metrics server (/ready)


def render_haproxy(
    listen: str, backends: Sequence[Backend], stats_socket: Path, check_interval: str = "500ms"
) -> str:
    """deploy/haproxy.cfg.in with the frontend's address and one server line per replica."""
    servers = "\n".join(
        f"    server {b.name} {b.grpc} proto h2 check check-proto h1 "
        f"port {b.metrics.rpartition(':')[2]}"
        for b in backends
    )
    return string.Template(TEMPLATE.read_text()).substitute(
        listen=listen, servers=servers, stats_socket=stats_socket, check_interval=check_interval
    )


@dataclass
class Process:
    name: str
    pid: int
    directory: str
    command: list[str]


def spawn(name: str, command: list[str], directory: Path) -> Process:
    """Start ``command`` in its own session, output to ``directory/out.log`` and ``err.log``."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "out.log", "ab") as out, open(directory / "err.log", "ab") as err:
        proc = subprocess.Popen(
            command, cwd=directory, stdout=out, stderr=err, start_new_session=True
        )
    return Process(name, proc.pid, str(directory), command)


def wait_ready_line(process: Process, timeout: float = START_TIMEOUT) -> dict[str, str]:
    """The node's ``READY {json}`` line, read from its out.log."""
    out = Path(process.directory) / "out.log"
    ready = ready_in_file(out, lambda: not supervise.running(process.pid), timeout)
    if ready is not None:
        return {k: str(v) for k, v in ready.raw.items()}
    tail = (Path(process.directory) / "err.log").read_text(errors="replace")[-2000:]
    raise ScaleError(f"{process.name} did not start within {timeout:g} s:\n{tail}")


def stop(process: Process, timeout: float = STOP_TIMEOUT) -> None:
    supervise.stop(process.pid, timeout)


def node_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "node", "run", "--config", str(config)]


def write_replica_set(directory: Path, replicas: int, ready_max_lag: int = 0) -> list[Path]:
    """Keys and configs: the upstream's first, then each replica's (fixed ports)."""
    keys = directory / "keys"
    private, public = write_key_pair(SigningKey.generate(UPSTREAM, ["4401"]), keys)
    upstream_port = free_port()
    configs = []
    upstream = NodeSpec(
        UPSTREAM,
        signing_key=private,
        listen=f"127.0.0.1:{upstream_port}",
        head_statement_interval=1.0,
    )
    configs.append(_write(directory / "upstream", config_text(upstream)))
    for i in range(1, replicas + 1):
        spec = NodeSpec(
            UPSTREAM,
            trusted_keys=(public,),
            listen=f"127.0.0.1:{free_port()}",
            metrics_listen=f"127.0.0.1:{free_port()}",
            upstreams=(f"127.0.0.1:{upstream_port}",),
            sync_interval=1.0,
        )
        text = config_text(spec, ready_max_lag=ready_max_lag)
        configs.append(_write(directory / f"replica{i}", text))
    return configs


def _write(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "node.toml").write_text(text)
    return directory / "node.toml"


def scale_up(directory: Path = DEFAULT_DIR, replicas: int = 2, out: TextIO = sys.stdout) -> int:
    haproxy = haproxy_path()
    if haproxy is None:
        raise ScaleError("haproxy not found (Debian package haproxy; `make scale-up` installs it)")
    directory = directory.resolve()
    if (directory / STATE_FILE).exists():
        raise ScaleError(f"{directory / STATE_FILE} exists: run `make scale-down` first")
    configs = write_replica_set(directory, replicas)
    processes: list[Process] = []
    try:
        backends = []
        for config in configs:
            process = spawn(config.parent.name, node_command(config), config.parent)
            processes.append(process)
            ready = wait_ready_line(process)
            if process.name != "upstream":
                metrics = ready["metrics"].removeprefix("http://").partition("/")[0]
                backends.append(Backend(process.name, ready["grpc"], metrics))
        listen = f"127.0.0.1:{free_port()}"
        cfg = directory / "haproxy.cfg"
        cfg.write_text(render_haproxy(listen, backends, directory / "haproxy.sock"))
        processes.append(spawn("haproxy", [haproxy, "-f", str(cfg), "-db"], directory / "lb"))
        wait_all_up(directory / "haproxy.sock", [b.name for b in backends])
    except BaseException:
        for process in reversed(processes):
            stop(process)
        raise
    state = {"balancer": listen, "processes": [asdict(p) for p in processes]}
    (directory / STATE_FILE).write_text(json.dumps(state, indent=2))
    print(f"balancer  {listen}  (HAProxy, {replicas} replicas of {UPSTREAM} behind it)", file=out)
    for p in processes:
        print(f"{p.name:<10} pid {p.pid:<8} {p.directory}", file=out)
    print(f"state in {directory / STATE_FILE}; stop with `make scale-down`", file=out)
    return 0


@contextlib.contextmanager
def replica_set(directory: Path, replicas: int = 2) -> Iterator[Path]:
    """:func:`scale_up` in ``directory``, quietly, and :func:`scale_down` however the body
    ends (tests and benchmarks)."""
    scale_up(directory, replicas=replicas, out=io.StringIO())
    try:
        yield directory
    finally:
        scale_down(directory, out=io.StringIO())


def haproxy_command(sock: Path, command: str) -> str:
    """One command on HAProxy's admin socket (``show stat``, ``disable server b/s``, ...)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(sock))
        s.sendall(command.encode() + b"\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode()


def haproxy_states(sock: Path) -> dict[str, str]:
    """Each replica server's status (UP, DOWN, MAINT, ...) from ``show stat``."""
    states = {}
    for line in haproxy_command(sock, "show stat").splitlines():
        cols = line.split(",")
        if len(cols) > 17 and cols[0] == "replicas" and cols[1] not in ("FRONTEND", "BACKEND"):
            states[cols[1]] = cols[17]
    return states


def wait_all_up(sock: Path, names: Sequence[str], timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        try:
            states = haproxy_states(sock)
        except OSError:
            states = {}
        if all(states.get(n, "").startswith("UP") for n in names):
            return
        time.sleep(0.1)
    raise ScaleError(f"HAProxy did not see every replica UP within {timeout:g} s: {states}")


def scale_down(directory: Path = DEFAULT_DIR, out: TextIO = sys.stdout) -> int:
    path = directory.resolve() / STATE_FILE
    if not path.exists():
        print(f"no {path}: nothing was started by `make scale-up`", file=out)
        return 0
    state = json.loads(path.read_text())
    for record in reversed(state["processes"]):
        process = Process(**record)
        stop(process)
        print(f"stopped {process.name} (pid {process.pid})", file=out)
    path.unlink()
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    state = "keys, configs, data, logs and scale.json (default: ./.scale)"
    up = sub.add_parser("scale-up", help="start an upstream, read replicas and HAProxy")
    up.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=state)
    up.add_argument("--replicas", type=int, default=2, choices=range(1, 17), metavar="1..16")
    up.set_defaults(fn=lambda a: _reporting(lambda: scale_up(a.dir, a.replicas)))
    down = sub.add_parser("scale-down", help="stop what `scale-up` started")
    down.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=state)
    down.set_defaults(fn=lambda a: _reporting(lambda: scale_down(a.dir)))


def _reporting(command: Callable[[], int]) -> int:
    try:
        return command()
    except ScaleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
