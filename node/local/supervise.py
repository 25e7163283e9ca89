"""Processes a command started in the background and a later command finds again (`make up`
/ `make down`, `make scale-up` / `scale-down`): is it still running, is it still ours, stop
it. On psutil, so that no caller reads /proc itself (and it works where there is none)."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import suppress

import psutil


def running(pid: int) -> bool:
    """True while ``pid`` runs. A zombie counts as gone (it only waits to be reaped): it is
    reaped here if it is this process's child."""
    try:
        process = psutil.Process(pid)
        if process.status() != psutil.STATUS_ZOMBIE:
            return True
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
    with suppress(psutil.Error, ChildProcessError):
        process.wait(0)
    return False


def runs(pid: int, config: str) -> bool:
    """Whether ``pid`` still runs with ``config`` on its command line (the node, or its keeper,
    that was recorded; not a stranger that reused the pid)."""
    try:
        return running(pid) and config in psutil.Process(pid).cmdline()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return running(pid)


def send(pid: int, signal: int) -> None:
    """Signal ``pid``, if it still exists."""
    with suppress(psutil.NoSuchProcess):
        psutil.Process(pid).send_signal(signal)


def wait_until(condition: Callable[[], bool], timeout: float, poll: float = 0.02) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def stop(pid: int, timeout: float, kill_timeout: float = 5.0) -> bool:
    """SIGTERM, wait up to ``timeout`` s, then SIGKILL. True if it ended on the SIGTERM."""
    try:
        process = psutil.Process(pid)
        if not running(pid):
            return True
        process.terminate()
        process.wait(timeout)
        return True
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        send(pid, 9)
        with suppress(psutil.Error):
            process.wait(kill_timeout)
        return False
