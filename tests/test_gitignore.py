"""What the walk-throughs write stays out of git (issue #13): `git add -A` after the README's
quickstart or "Running a node" must never pick up a private key or a node's data."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def ignored(path: str) -> bool:
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", "-q", path], cwd=ROOT, check=False, timeout=30
    )
    assert done.returncode in (0, 1), f"git check-ignore failed for {path}"
    return done.returncode == 0


@pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout"
)
@pytest.mark.parametrize(
    ("path", "is_ignored"),
    [
        (".walkthrough/keys/root.key", True),  # README "Running a node"
        (".walkthrough/data/440100/data.mdb", True),
        (".walkthrough/node.toml", True),
        (".federation/tls/operator-440100.key", True),  # make up
        (".federation/440100/data/data.mdb", True),
        ("keys/440100.key", True),  # a private key anywhere else too
        ("tls/ca/ca.key", True),
        ("node/cli/main.py", False),  # the project's own files are not
        ("README.md", False),
        ("docs/DESIGN.md", False),
    ],
)
def test_walk_through_files_are_ignored(path: str, is_ignored: bool) -> None:
    assert ignored(path) is is_ignored
