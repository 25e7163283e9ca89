"""A real browser for tests: headless Chromium (Debian's ``chromium``, installed by ``make
tools``) driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON
messages ending in a NUL byte, commands on the child's fd 3, answers on its fd 4), so no
WebSocket client is needed.

    with Browser() as browser:
        text = browser.text(url)      # document.body.innerText once the page has loaded
        png = browser.screenshot(url)  # PNG bytes of the viewport
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from types import TracebackType
from typing import Any

LOAD_TIMEOUT = 30.0


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _above_9(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class Browser:
    def __init__(self, width: int = 1100, height: int = 700) -> None:
        binary = chromium()
        assert binary is not None, "chromium is not installed (make tools)"
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-")
        cmd_r, self._cmd_w = os.pipe()
        self._res_r, res_w = os.pipe()
        # The child's ends above 9, so that moving them to 3 and 4 overwrites neither.
        cmd_r, res_w = (_above_9(fd) for fd in (cmd_r, res_w))
        # bash (dash takes no two-digit fds) puts the pipe ends where Chromium expects them.
        script = f'exec "$@" 3<&{cmd_r} 4>&{res_w} {cmd_r}<&- {res_w}>&-'
        self.proc = subprocess.Popen(
            [
                "bash", "-c", script, "bash", binary, "--headless", "--no-sandbox",
                "--disable-gpu", "--no-first-run", "--remote-debugging-pipe",
                f"--user-data-dir={self._profile.name}", f"--window-size={width},{height}",
                "about:blank",
            ],
            pass_fds=(cmd_r, res_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(cmd_r)
        os.close(res_w)
        self._buffer = b""
        self._next_id = 0
        try:
            targets = self._call("Target.getTargets")["targetInfos"]
            page = next(t["targetId"] for t in targets if t["type"] == "page")
            attached = self._call("Target.attachToTarget", targetId=page, flatten=True)
        except BaseException:
            self.close()
            raise
        self._session = attached["sessionId"]

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            assert time.monotonic() < deadline, "chromium did not answer"
            chunk = os.read(self._res_r, 1 << 16)
            assert chunk, f"chromium exited ({self.proc.poll()})"
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        decoded: dict[str, Any] = json.loads(message)
        return decoded

    def _call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        request: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session is not None:
            request["sessionId"] = session
        os.write(self._cmd_w, json.dumps(request).encode() + b"\0")
        deadline = time.monotonic() + LOAD_TIMEOUT
        while True:
            message = self._read_message(deadline)
            if message.get("id") == self._next_id:  # events and other answers are skipped
                assert "error" not in message, f"{method}: {message['error']}"
                result: dict[str, Any] = message.get("result", {})
                return result

    def _evaluate(self, expression: str) -> Any:
        answer = self._call(
            "Runtime.evaluate", self._session, expression=expression, returnByValue=True
        )
        return answer["result"].get("value")

    def load(self, url: str) -> None:
        self._call("Page.navigate", self._session, url=url)
        deadline = time.monotonic() + LOAD_TIMEOUT
        while self._evaluate("document.readyState + ' ' + location.href") != f"complete {url}":
            assert time.monotonic() < deadline, f"{url} did not load"
            time.sleep(0.05)

    def text(self, url: str) -> str:
        """The page's rendered text (``innerText``: what a person reads, tables as rows)."""
        self.load(url)
        value = self._evaluate("document.body.innerText")
        return str(value)

    def screenshot(self, url: str) -> bytes:
        self.load(url)
        shot = self._call("Page.captureScreenshot", self._session, format="png")
        return base64.b64decode(shot["data"])

    def close(self) -> None:
        try:
            os.close(self._cmd_w)  # Chromium exits when its command pipe closes
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self._res_r)
            self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
