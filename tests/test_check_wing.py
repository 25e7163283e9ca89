"""The check path is a wing of its own (issue #12): importing ``blacklist.checker`` loads the
index, the card-id parser, the publisher directory and LMDB reads, and nothing that writes,
decodes deltas or verifies signatures. Each import runs in a fresh interpreter, so what
another test imported cannot hide a dependency."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# What the check path must never load: the store's writer and what only it needs (apply,
# migration, history, audit, sweep), the delta codec, acceptance, certificates, the trust
# chain rules and signing (and the cryptography they bring).
FORBIDDEN = {
    "blacklist.store",
    "blacklist.storemigrate",
    "blacklist.storefeeds",
    "blacklist.storeindex",
    "blacklist.sweep",
    "blacklist.authority",
    "blacklist.archive",
    "blacklist.audit",
    "blacklist.lapses",
    "blacklist.reasoncounts",
    "blacklist.headstatements",
    "blacklist.trustrecords",
    "blacklist.delta",
    "blacklist.entryblock",
    "blacklist.bitpack",
    "blacklist.eliasfano",
    "blacklist.expiry",
    "blacklist.binary",
    "blacklist.rejections",
    "blacklist.certs",
    "blacklist.chainbuild",
    "blacklist.chainverify",
    "blacklist.trust",
    "blacklist.signing",
    "blacklist.sync",
    "blacklist.follower",
    "cryptography",
    "grpc",
}

# Everything of the library it may load. A new module here is a decision: say in the
# module's docstring why the check path needs it.
ALLOWED = {
    "blacklist",
    "blacklist._speedups",  # the one-call probe and the batch scan (fastpath.py)
    "blacklist.cardbatch",  # parsing a batch of ids into a matrix
    "blacklist.cardid",  # the card-id parser and key layout
    "blacklist.checker",
    "blacklist.checkresult",  # what a check answers
    "blacklist.clock",
    "blacklist.columns",  # numpy columns of cards (the PSAM key helpers use them)
    "blacklist.entry",  # Entry and Reason: what a REVOKED answer carries
    "blacklist.errors",
    "blacklist.feedhead",  # FeedState's head
    "blacklist.filters",
    "blacklist.filters.fingerprint",  # the fingerprint rule
    "blacklist.filters.roaring_index",  # the index
    "blacklist.packed",  # the packed BatchCheck form (check_packed)
    "blacklist.fastpath",
    "blacklist.psam",  # a PSAM id's key (psam_denial)
    "blacklist.psamlist",  # the in-memory PSAM deny list a check asks
    "blacklist.publishers",  # which publisher answers for a region
    "blacklist.records",  # the stored entry and feed records
    "blacklist.regions",
    "blacklist.storereader",  # LMDB reads
    "blacklist.storeschema",  # the databases' names
    "blacklist.trusterror",  # the base of PrefixConflict, which the directory reports
}


def _modules_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", os.getcwd())},
        timeout=120,
    ).stdout
    return set(json.loads(out))


@pytest.fixture(scope="module")
def check_path() -> set[str]:
    return _modules_after("import blacklist.checker")


def test_the_check_path_loads_nothing_that_writes_decodes_or_verifies(
    check_path: set[str],
) -> None:
    loaded = {m for m in check_path if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)}
    assert loaded == set(), f"import blacklist.checker loads {sorted(loaded)}"


def test_the_check_path_loads_only_the_allowed_library_modules(check_path: set[str]) -> None:
    library = {m for m in check_path if m == "blacklist" or m.startswith("blacklist.")}
    assert library - ALLOWED == set(), f"new on the check path: {sorted(library - ALLOWED)}"
    assert "blacklist.checker" in library  # the subprocess did import it


def test_the_rule_sees_a_forbidden_import() -> None:
    """The check above can fail: the writer store does load what the wing must not."""
    writer = _modules_after("import blacklist.store")
    assert {"blacklist.delta", "blacklist.signing", "blacklist.sync.accept"} <= writer


def test_a_worker_never_loads_the_writer() -> None:
    """A worker process follows the store (follower.py): it shares the schema check and
    the index file with the writer, not the writer's code (acceptance, apply, migration)."""
    follower = _modules_after("import blacklist.follower")
    assert {"blacklist.store", "blacklist.storemigrate", "blacklist.sync.accept"}.isdisjoint(
        follower
    )
    assert {"blacklist.storeschema", "blacklist.storeindex"} <= follower
