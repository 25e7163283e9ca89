"""`make up` / `make down`: the six-node federation of node/local/federation.py, left running in
the background for a person (or a test) to use, and stopped again cleanly.

``up`` writes keys, certificates, TLS files (node/local/pki.py: certified keys under
the ministry root, mutual TLS on every link) and configs under DIR (default
``./.federation``, the project root when make runs it), starts every node in its own session so it outlives the command, waits until
every node serves and every child holds its upstream's push stream, records the processes in
``DIR/federation.json`` and returns. ``down`` reads that file, stops the nodes children
first (SIGTERM, wait, SIGKILL after a timeout) and reports each exit code.

A detached node is not a child of ``down``, and an exit code can only be collected by the
parent, so each node runs under a small ``sh`` keeper (``KEEPER``) that waits for it and
writes its exit code to ``node.exit`` next to its config. The keeper also sends the node's
stdout (the READY line) to ``node.out``: no pipe ties a node to the ``up`` process, which
has exited by the time a node next writes anything.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import suppress
from pathlib import Path
from typing import TextIO

from node.local.federation import Federation
from node.local.pki import TRUST_DIRS, TrustSetupError
from node.local.process import LocalNodeError, Ready, ready_in_file
from node.local.scrape import sample, scrape
from node.local.state import STATE_FILE, NodeRecord, read_state, state_path, write_state
from node.local.supervise import running, runs, send, wait_until

DEFAULT_DIR = Path(".federation")
READY_TIMEOUT = 30.0  # six cold interpreters importing numpy, grpc and cryptography at once
LINK_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0  # the server's grace period is 5 s; LMDB closes after it
KILL_TIMEOUT = 5.0
# $@ is the node's command line; run from the node's directory (cwd).
NODE_COMMAND = (sys.executable, "-m", "node", "run")
KEEPER = '"$@" >node.out & echo $! >node.pid; wait $!; echo $? >node.exit'
NAMES = {
    "000000": "ministry",
    "440000": "Guangdong",
    "110000": "Beijing (province)",
    "440100": "Guangzhou",
    "440300": "Shenzhen",
    "110100": "Beijing (city)",
}


class FederationError(RuntimeError):
    """The federation could not be started, linked up or stopped; the message says why."""


# -- a running federation, whoever started it ------------------------------------------------


def missing_links(federation: Federation) -> list[str]:
    """The parent → child push links not yet up: a child is linked when it reports a session
    with its upstream and the upstream counts all its children as subscribers."""
    children: dict[str, list[str]] = {}
    for region, _, parent, _ in federation.topology:
        if parent is not None:
            children.setdefault(parent, []).append(region)
    missing = []
    for parent, kids in children.items():
        try:
            subscribers = sample(
                scrape(federation.metrics_url(parent)), "blacklist_sync_subscribers"
            )
            if subscribers < len(kids):
                missing += [f"{parent} → {kid}" for kid in kids]
                continue
            for kid in kids:
                upstream = federation.address(parent)
                connected = sample(
                    scrape(federation.metrics_url(kid)),
                    "blacklist_upstream_connected",
                    upstream=upstream,
                )
                if connected != 1.0:
                    missing.append(f"{parent} → {kid}")
        except OSError:
            missing += [f"{parent} → {kid}" for kid in kids]
    return missing


def wait_linked(federation: Federation, timeout: float = LINK_TIMEOUT) -> int:
    """Wait until every child holds its upstream's push stream; returns the number of links."""
    deadline = time.monotonic() + timeout
    while missing := missing_links(federation):
        if time.monotonic() > deadline:
            raise FederationError(
                f"sync links not up within {timeout:g} s: {', '.join(missing)} "
                "(see the nodes' logs)"
            )
        time.sleep(0.05)
    return sum(1 for *_, parent, _ in federation.topology if parent is not None)


# -- process bookkeeping ---------------------------------------------------------------------


def _exit_code(record: NodeRecord) -> int | None:
    try:
        return int(Path(record.exit_file).read_text().strip())
    except (OSError, ValueError):
        return None


def stop_node(record: NodeRecord, timeout: float = STOP_TIMEOUT) -> tuple[int | None, str]:
    """SIGTERM the node, wait for its keeper to record the exit code; SIGKILL after
    ``timeout``. Returns the exit code (None if unknown) and what happened."""
    t0 = time.monotonic()
    if not runs(record.pid, record.config):
        code = _exit_code(record)
        how = "was not running" + (f" (it had exited with code {code})" if code is not None else "")
        _reap_keeper(record)
        return code, how
    send(record.pid, signal.SIGTERM)
    how = "SIGTERM"
    done = wait_until(lambda: _exit_code(record) is not None or not running(record.keeper), timeout)
    if not done:
        send(record.pid, signal.SIGKILL)
        how = f"no exit {timeout:g} s after SIGTERM; SIGKILL"
        wait_until(lambda: _exit_code(record) is not None, KILL_TIMEOUT)
    _reap_keeper(record)
    return _exit_code(record), f"{how}, {time.monotonic() - t0:.2f} s"


def _reap_keeper(record: NodeRecord) -> None:
    # The keeper exits right after writing the code; make sure, and never leave it behind.
    if not wait_until(lambda: not runs(record.keeper, record.config), 2.0):
        send(record.keeper, signal.SIGKILL)
    if runs(record.pid, record.config):  # a node whose keeper died first
        send(record.pid, signal.SIGKILL)


def _spawn(region: str, config: Path) -> subprocess.Popen[bytes]:
    directory = config.parent
    for name in ("node.pid", "node.out", "node.exit"):
        (directory / name).unlink(missing_ok=True)
    with open(directory / "node.log", "ab") as log_file:
        keeper = subprocess.Popen(
            ["sh", "-c", KEEPER, f"keeper-{region}", *NODE_COMMAND, "--config", str(config)],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            start_new_session=True,  # out of make's process group: survives the command
        )
    return keeper


def _abandon(records: list[NodeRecord], keepers: Mapping[str, subprocess.Popen[bytes]]) -> None:
    """Stop what a failed ``up`` started: recorded nodes as ``down`` would, and any keeper
    whose node was never recorded with its whole process group (keeper and node)."""
    for record in _children_first(records):
        stop_node(record, timeout=2.0)
    recorded = {r.keeper for r in records}
    for keeper in keepers.values():
        if keeper.pid not in recorded and keeper.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(keeper.pid, signal.SIGKILL)
            keeper.wait()


def _read_pid(path: Path, keeper: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        with suppress(OSError, ValueError):
            return int(path.read_text().strip())
        if keeper.poll() is not None or time.monotonic() > deadline:
            raise FederationError(f"the keeper of {path.parent} did not start its node")
        time.sleep(0.01)


def _wait_ready(record: NodeRecord, timeout: float) -> Ready:
    out = Path(record.config).parent / "node.out"
    ready = ready_in_file(out, lambda: _exit_code(record) is not None, timeout)
    if ready is not None:
        return ready
    code = _exit_code(record)
    what = (
        f"exited with code {code} before reporting READY"
        if code is not None
        else f"did not report READY within {timeout:g} s"
    )
    raise FederationError(
        f"node {record.region} (pid {record.pid}) {what}; last lines of {record.log}:\n"
        + _tail(Path(record.log))
    )


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text("utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _children_first(records: list[NodeRecord]) -> Iterator[NodeRecord]:
    # Topology order is parents before children (node/local/federation.py); stop in reverse, so
    # that no upstream waits out its grace period for a child's open stream.
    return reversed(records)


# -- the commands ----------------------------------------------------------------------------


def up(directory: Path = DEFAULT_DIR, out: TextIO = sys.stdout) -> int:
    directory = directory.resolve()
    t0 = time.monotonic()
    if state_path(directory).exists():
        try:
            running = [r for r in read_state(directory) if runs(r.pid, r.config)]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"error: unreadable {state_path(directory)}: {exc}", file=sys.stderr)
            return 1
        if running:
            print(
                f"the federation in {directory} is already up ({len(running)} nodes running, "
                f"pids {', '.join(str(r.pid) for r in running)}); stop it first with "
                f"`python -m node down --dir {directory}` (or `make down`)",
                file=out,
            )
            return 1
        print(f"{state_path(directory)} names no running node: a stale state file", file=out)
        state_path(directory).unlink()
    federation = Federation(directory)
    previous = [
        *(directory / d for d in TRUST_DIRS),
        *(directory / r for r, *_ in federation.topology),
    ]
    # Only a directory an earlier `up` made is cleared (its ministry config is the mark);
    # elsewhere an existing key stops `keys init-root`, which refuses to overwrite one.
    if (directory / "000000" / "node.toml").exists():
        print(f"removing the previous run's keys, data and logs in {directory}", file=out)
        for p in previous:
            shutil.rmtree(p, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    keepers: dict[str, subprocess.Popen[bytes]] = {}
    records: list[NodeRecord] = []
    try:
        federation.prepare()  # keys, certificates, TLS through the CLI; fixed ports; configs
        configs = {r: federation.configs[r].resolve() for r, *_ in federation.topology}
        for region, *_ in federation.topology:
            keepers[region] = _spawn(region, configs[region])
        for region, role, *_ in federation.topology:
            config = configs[region]
            records.append(
                NodeRecord(
                    region=region,
                    role=role,
                    pid=_read_pid(config.parent / "node.pid", keepers[region]),
                    keeper=keepers[region].pid,
                    grpc=federation.address(region),
                    metrics=federation.metrics_url(region),
                    config=str(config),
                    log=str(config.parent / "node.log"),
                    exit_file=str(config.parent / "node.exit"),
                )
            )
        write_state(directory, records)  # from here on, `down` can clean up whatever happens
        for record in records:
            ready = _wait_ready(record, READY_TIMEOUT)
            if ready.grpc != record.grpc:
                raise FederationError(
                    f"node {record.region} serves on {ready.grpc}, not {record.grpc}"
                )
        links = wait_linked(federation)
    except BaseException as exc:  # also Ctrl-C while starting: leave nothing behind
        failed = FederationError | LocalNodeError | TrustSetupError | OSError
        if isinstance(exc, failed):
            print(f"error: the federation did not come up: {exc}", file=sys.stderr)
        _abandon(records, keepers)
        state_path(directory).unlink(missing_ok=True)
        if isinstance(exc, failed):
            return 1
        raise
    print(
        f"federation up: {len(records)} nodes, {links} sync links, in "
        f"{time.monotonic() - t0:.1f} s ({directory})",
        file=out,
    )
    head = f"  {'region':6}  {'role':8}  {'name':18}  {'pid':>7}  {'gRPC':21}  {'metrics':38}  log"
    print(head, file=out)
    for r in records:
        print(
            f"  {r.region:6}  {r.role:8}  {NAMES.get(r.region, ''):18}  {r.pid:7}  {r.grpc:21}  "
            f"{r.metrics:38}  {_relative(Path(r.log))}",
            file=out,
        )
    _print_trust(federation, records, out)
    print(
        f"state in {_relative(state_path(directory))}; stop with `make down` "
        f"(python -m node down --dir {_relative(directory)})",
        file=out,
    )
    return 0


def _print_trust(federation: Federation, records: list[NodeRecord], out: TextIO) -> None:
    trust = federation.trust
    if trust is None:
        return
    d = _relative(federation.root)
    terminals = sorted(n for n in trust.tls if n.startswith("terminal-"))
    print(
        f"trust: every config pins {d}/keys/root.pub and lists the chains in {d}/certs/; "
        f"mutual TLS everywhere (CA {d}/tls/ca/ca.crt): clients present "
        f"{d}/tls/operator-<region>.crt (Admin) or {d}/tls/terminal-<city>.crt (CardStatus; "
        f"{', '.join(t.removeprefix('terminal-') for t in terminals)}), e.g.",
        file=out,
    )
    city = terminals[0].removeprefix("terminal-") if terminals else records[-1].region
    grpc_address = next(r.grpc for r in records if r.region == city)
    print(
        f"  grpcurl -cacert {d}/tls/ca/ca.crt -cert {d}/tls/terminal-{city}.crt "
        f"-key {d}/tls/terminal-{city}.key \\\n"
        f'    -d \'{{"card_id": "440100D156000005ABCDEF0123456789"}}\' {grpc_address} '
        "blacklist.v1.CardStatus/CheckCard",
        file=out,
    )


def down(directory: Path = DEFAULT_DIR, out: TextIO = sys.stdout) -> int:
    directory = directory.resolve()
    path = state_path(directory)
    if not path.exists():
        print(f"no federation is up in {directory} (no {STATE_FILE})", file=out)
        return 0
    try:
        records = read_state(directory)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: unreadable {path}: {exc}", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    codes: dict[str, int | None] = {}
    for record in _children_first(records):
        code, how = stop_node(record)
        codes[record.region] = code
        shown = "exit code unknown" if code is None else f"exit {code}"
        name = NAMES.get(record.region, "")
        print(f"  {record.region} {name:18} pid {record.pid}: {shown} ({how})", file=out)
    path.unlink()
    clean = all(code == 0 for code in codes.values())
    print(
        f"federation down in {time.monotonic() - t0:.1f} s: "
        + ("all nodes exited 0" if clean else "NOT all nodes exited 0")
        + f"; logs stay in {_relative(directory)}/<region>/node.log",
        file=out,
    )
    return 0 if clean else 1


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
