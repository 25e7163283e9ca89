"""What ``import-csv`` shows while it reads a large file (node/cli/bulk.py): the bytes read and
the lines that did not decode, and one progress line on stderr."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import BinaryIO, TextIO


class CountedLines:
    """The text lines of a binary file, counting the bytes read (for progress) and the
    lines that were not valid in ``encoding`` (decoded with U+FFFD, so they are rejected
    by their content, and the summary can suggest another encoding)."""

    def __init__(self, stream: BinaryIO, encoding: str) -> None:
        self._stream = stream
        self._encoding = encoding
        self.bytes_read = 0
        self.undecodable = 0

    def __iter__(self) -> Iterator[str]:
        encoding = self._encoding
        for raw in self._stream:
            self.bytes_read += len(raw)
            try:
                yield raw.decode(encoding)
            except UnicodeDecodeError:
                self.undecodable += 1
                yield raw.decode(encoding, errors="replace")


class Progress:
    """One line on stderr: rows, share of the file read, rate. Redrawn in place on a
    terminal (at most 5 times a second), else printed every 10 s; silent if ``quiet``."""

    def __init__(
        self,
        stream: TextIO,
        total_bytes: int,
        *,
        quiet: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._total = total_bytes
        self._quiet = quiet
        self._clock = clock
        self._tty = stream.isatty()
        self._every = 0.2 if self._tty else 10.0
        self.started = clock()
        self._last = self.started

    def text(self, rows: int, done_bytes: int, rejected: int) -> str:
        elapsed = max(self._clock() - self.started, 1e-9)
        share = 100.0 * done_bytes / self._total if self._total else 100.0
        return (
            f"import: {rows:,} rows  {share:5.1f}% of {self._total / 1e6:,.1f} MB  "
            f"{rows / elapsed:,.0f} rows/s  {rejected:,} rejected"
        )

    def update(self, rows: int, done_bytes: int, rejected: int, *, final: bool = False) -> None:
        if self._quiet:
            return
        now = self._clock()
        if not final and now - self._last < self._every:
            return
        self._last = now
        line = self.text(rows, done_bytes, rejected)
        if self._tty:
            self._stream.write("\r" + line + ("\n" if final else ""))
        else:
            self._stream.write(line + "\n")
        self._stream.flush()
