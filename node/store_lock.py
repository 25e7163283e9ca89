"""One writer per store: an exclusive advisory lock on ``<data_dir>/writer.lock``.

LMDB serialises write transactions across processes but does not stop two processes from
each believing it owns the feed: two ``node run`` on one ``data_dir`` (same config, other
ports) both signed version 6 of a feed with different digests, and one answered from an
index that no longer matched the store (issue #13). The writer therefore takes
``flock(LOCK_EX | LOCK_NB)`` (flock(2)) on a file inside the data directory before it opens
the store, and holds it for the life of the process:

* the kernel drops the lock when the last descriptor closes, so a writer killed with
  SIGKILL leaves no stale lock behind; nothing has to decide whether a PID is still alive;
* flock locks belong to the open file description, not the process (unlike fcntl/lockf
  record locks), so a second open in the same process is refused too;
* the descriptor is not inherited (PEP 446), so worker processes the writer starts hold
  nothing and cannot keep the lock past the writer's death;
* readers do not take it: worker processes and :class:`~blacklist.follower.StoreFollower`
  open LMDB read-only beside the writer, as before.

The file holds the holder's PID (decimal, one line), written after the lock is taken, so
that a refused process can say who holds it. The file is never unlinked: removing a lock
file while another process waits to lock it would let two processes lock two inodes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_NAME = "writer.lock"


class StoreInUse(RuntimeError):
    """Another process holds ``data_dir``'s writer lock."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        self.data_dir = data_dir
        self.pid = pid
        holder = f"pid {pid}" if pid is not None else "another process (pid not yet written)"
        super().__init__(
            f"data_dir {data_dir} is in use: {holder} holds {data_dir / LOCK_NAME} "
            "(one writer per store); stop that node, or give this one its own data_dir"
        )


def holder_pid(text: str) -> int | None:
    """The PID a lock file names, or None when it names none (empty while the holder is
    between taking the lock and writing its PID, or not a positive decimal number)."""
    text = text.strip()
    if not text.isascii() or not text.isdecimal() or len(text) > 10:
        return None
    pid = int(text)
    return pid if pid > 0 else None


class WriterLock:
    """The writer lock of one data directory, held until :meth:`release` or process exit."""

    def __init__(self, data_dir: Path, fd: int) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: Path) -> WriterLock:
        """Take the lock or raise :class:`StoreInUse` at once (never waits)."""
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = holder_pid(os.pread(fd, 32, 0).decode("ascii", "replace"))
            finally:
                os.close(fd)
            raise StoreInUse(data_dir, pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(data_dir, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Unlock (idempotent). The PID is cleared first, so the file never names a process
        that no longer holds it after a clean stop."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the last descriptor releases the flock
