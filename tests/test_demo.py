"""`make demo` end to end: the real CLI, a real node process, real gRPC (one test, as the
demo itself checks every answer and exits non-zero on any mismatch)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 40.0

EXPECTED_LINES = {
    "a REVOKED answer": r"440100D156000005[0-9A-F]{16}\s+REVOKED\s+[A-Z_]+\s+\d{4}-\d\d-\d\d",
    "a NOT_REVOKED answer": r"440100D156000005[0-9A-F]{16}\s+NOT_REVOKED\s",
    "a reinstated card": r"Admin\.Reinstate .* CheckCard now says NOT_REVOKED",
    "the malformed id refused": r"refused: INVALID_ARGUMENT: invalid card id",
    "the Beijing revoke refused": r"refused: PERMISSION_DENIED: card 110100\S+ .*outside",
    "the latency line": r"CheckCard latency from the client, 2,000 sequential calls.*"
    r"p50 \d+ µs.*p99 \d+ µs",
    "the metrics URL": r"metrics: http://127\.0\.0\.1:\d+/metrics",
    "a scraped metric": r'blacklist_feed_version\{publisher="440100"\} 6\.0',
    "a clean stop": r"node 440100 stopped cleanly on SIGTERM \(exit 0\)",
}


def test_demo_runs_a_node_and_exits_zero() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "node", "demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=TIMEOUT,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    for what, pattern in EXPECTED_LINES.items():
        assert re.search(pattern, done.stdout), f"no line with {what} ({pattern}):\n{output}"
    assert "FAILED" not in output
