"""`make demo`, `make up` and `make down` end to end: the real CLI, six real node processes,
real gRPC. The demo checks every answer itself and exits non-zero on any mismatch, so one
test runs it and looks for the lines that tell the story; a second starts the federation in
the background, uses it, and stops it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from node.gen.blacklist.v1 import card_status_pb2, card_status_pb2_grpc, types_pb2
from node.local.state import STATE_FILE
from node.local.supervise import running, runs

ROOT = Path(__file__).resolve().parent.parent
DEMO_TIMEOUT = 120.0
UP_TIMEOUT = 90.0
REGIONS = ("000000", "440000", "110000", "440100", "440300", "110100")
CARD = r"440100D156000005[0-9A-F]{16}"

EXPECTED_LINES = {
    "the root made with the CLI": r"python -m node keys init-root --suite sm2-sm3 --out keys",
    # Issue #14: the national scenario runs SM2 by default and says so for every key.
    "the suite": r"signing suite: sm2-sm3 for every key",
    "the root's suite": r"root 000000 ministry, sm2-sm3 key [0-9a-f]{8}",
    "a city key's suite": r"440100 Guangzhou\s+scope 4401 .* sm2-sm3 key [0-9a-f]{8}",
    "a province certified for its province": r"python -m node keys certify --issuer "
    r"keys/root\.key --subject keys/440000\.pub --scope 44 --days \d+ --out certs/440000\.crt",
    "a city certified by its province": r"python -m node keys certify --issuer "
    r"keys/440000\.key --issuer-cert certs/440000\.crt --subject keys/440100\.pub --scope 4401 ",
    "the TLS CA": r"python -m node tls init-ca --out tls/ca",
    "the node certificates": r"python -m node tls issue --ca tls/ca --role node .*--host "
    r"127\.0\.0\.1 --host localhost .*# R = 000000 440000 110000 440100 440300 110100",
    "the hierarchy": r"440100 Guangzhou\s+scope 4401 .*\(certs/440100\.crt, by 440000\)",
    "the TLS roles": r"mutual TLS on every link .*no node in plain text.*node ×6.*operator "
    r"×6.*terminal ×3",
    "the six nodes started": r"started 6 nodes in [\d.]+ s:",
    "the sync links up": r"sync: all 5 children hold their upstream's push stream over mutual TLS",
    "the batch REVOKED at 110100": r"Admin\.Revoke at 440100: 1,000 cards in one call → feed "
    r"440100 v1 .*; REVOKED at 110100 \(Beijing\) \d+ ms after the call returned",
    "the batch checked at 110100": r"BatchCheck at 110100 .*exactly the 1,000 flagged REVOKED",
    "the propagation time": r"propagation 440100 → 110100, \d+ single-card Revokes .*: "
    r"p50 \d+ ms, max \d+ ms",
    "REVOKED at Beijing and Shenzhen": CARD + r"\s+REVOKED\s+REVOKED\s+[A-Z_]+\s+\d{4}-\d\d-\d\d",
    "NOT_REVOKED at Beijing and Shenzhen": CARD + r"\s+NOT_REVOKED\s+NOT_REVOKED\s",
    "Shenzhen's batch": r"BatchCheck at 440300 \(Shenzhen\) of all ([\d,]+) revoked cards: \1 "
    r"REVOKED",
    "NOT_REVOKED after reinstatement": r"Admin\.Reinstate at 440100 of " + CARD + r" .* "
    r"accepted again at 110100: NOT_REVOKED \d+ ms after the call returned",
    "a terminal refused Revoke": r"as terminal-440100 → refused: PERMISSION_DENIED: role "
    r"'terminal' may not call Admin/Revoke",
    "440100's operator refused a 110100 card": r"at 110100, as operator-440100 → refused: "
    r"PERMISSION_DENIED: .*card '?110100\w{26}'?: outside the certificate's region",
    "the node's own scope": r"at 440100, as operator-110100 → refused: PERMISSION_DENIED: card "
    r"110100\w{26} .*outside this authority's prefixes",
    "the refusals counted": r"blacklist_denied_calls_total\S+: \+1 at 440100, \+1 at 110100",
    "no certificate, no handshake": r"without a certificate → refused in the TLS handshake: "
    r"UNAVAILABLE",
    "the other direction": r"Admin\.Revoke at 110100 of Beijing card 110100D156000005\w{16} "
    r".* refused at 440100 \(Guangzhou\): REVOKED \d+ ms",
    "the client latency": r"CheckCard latency at 110100 from the client, 1,000 sequential "
    r"calls.*p50 \d+ µs.*p99 \d+ µs",
    "the server-side mean": r"server side \(http://127\.0\.0\.1:\d+/metrics, "
    r"blacklist_check_seconds\): 1,000 checks, mean [\d.]+ µs",
    "the key revoked with the CLI": r"python -m node keys revoke --issuer keys/440000\.key "
    r"--key keys/440300\.pub --as-of now --reason compromised",
    "the new key certified": r"python -m node keys certify --issuer keys/440000\.key "
    r"--issuer-cert certs/440000\.crt --subject keys/440300-2/440300\.pub --scope 4403 ",
    "the revocation in the feed": r"python -m node keys publish .*revs/440300-1\.rev "
    r"certs/440300-2\.crt",
    "its spread": r"published 2 record\(s\) in feed 440000 .* reached all 6 nodes .* none "
    r"restarted",
    "the restart": r"restarted 440300 alone, signing with its new key",
    "the forgery rejected": r"a thief's delta 440300 v2 signed with the revoked key, pushed to "
    r"440000 .*rejected: key_revoked: .*cause=\"key_revoked\"\} \+1 there; nothing applied",
    "and elsewhere": r"a thief's delta 440300 v2 signed with the revoked key, pushed to "
    r"110100 .*rejected: key_revoked: .*\+1 there; nothing applied",
    "publishing on under the new key": r"Admin\.Revoke at 440300 → feed 440300 v2 under the "
    r"new key .*REVOKED at 110100 .*still REVOKED there",
    "the heads table": r"feed heads on every node \(Admin\.Status\): identical on all 6",
    "all nodes stopped with 0": r"all 6 nodes stopped with SIGTERM.*exit codes: 110100 0, "
    r"440300 0, 440100 0, 110000 0, 440000 0, 000000 0",
    "the end": r"demo finished",
}


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``python -m node ARGS`` in its own session; on timeout kill the whole session,
    so that a hung run cannot leave nodes behind."""
    process = subprocess.Popen(
        [sys.executable, "-m", "node", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"`python -m node {' '.join(args)}` took over {timeout:g} s:\n{stdout}{stderr}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args and running(int(cmdline.parent.name)):
            found.append(f"{cmdline.parent.name}: {args}")
    return found


def test_demo_runs_the_national_scenario_and_exits_zero() -> None:
    done = _run(["demo"], DEMO_TIMEOUT)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    for what, pattern in EXPECTED_LINES.items():
        assert re.search(pattern, done.stdout), f"no line with {what} ({pattern}):\n{output}"
    assert "FAILED" not in output
    # The heads table: one row per node, every row the same heads and entry count.
    rows = {
        m[1]: m[2].split()
        for m in re.finditer(
            r"^\s+(\d{6}) \D+?\s+(?:ministry|province|city)\s+(v.*)$", done.stdout, re.MULTILINE
        )
    }
    assert sorted(rows) == sorted(REGIONS), output
    assert len({tuple(r) for r in rows.values()}) == 1, f"heads differ:\n{output}"
    # Nothing left running from the demo's directory.
    root = re.search(r"configs in (\S+)/<region>/node\.toml", done.stdout)
    assert root is not None, output
    if Path("/proc/self").exists():
        assert _processes_mentioning(root[1]) == []


@pytest.fixture
def federation_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "fed"
    yield directory
    # Whatever the test did, leave nothing running: `down`, then SIGKILL for any survivor.
    state = directory / STATE_FILE
    if state.exists():
        nodes = json.loads(state.read_text())["nodes"]
        subprocess.run(
            [sys.executable, "-m", "node", "down", "--dir", str(directory)],
            cwd=ROOT,
            capture_output=True,
            timeout=60,
            check=False,
        )
        for node in nodes:
            for pid in (node["pid"], node["keeper"]):
                if runs(pid, node["config"]):
                    os.kill(pid, signal.SIGKILL)


def test_up_leaves_the_federation_running_until_down(federation_dir: Path) -> None:
    started = _run(["up", "--dir", str(federation_dir)], UP_TIMEOUT)
    assert started.returncode == 0, started.stdout + started.stderr
    assert re.search(r"federation up: 6 nodes, 5 sync links", started.stdout), started.stdout
    printed = {
        m[1]: m
        for m in re.finditer(
            r"^\s+(\d{6})\s+(ministry|province|city)\s+.*?\s(\d+)\s+(127\.0\.0\.1:\d+)\s+"
            r"(http://127\.0\.0\.1:\d+/metrics)\s+(\S+node\.log)$",
            started.stdout,
            re.MULTILINE,
        )
    }
    assert sorted(printed) == sorted(REGIONS), started.stdout
    state = json.loads((federation_dir / STATE_FILE).read_text())
    pids = [pid for node in state["nodes"] for pid in (node["pid"], node["keeper"])]
    assert all(running(pid) for pid in pids)

    # `up` has returned; the nodes serve on. A terminal at Beijing asks about a Guangzhou card,
    # over mutual TLS with the certificate `up` made for it (nothing listens in plain text).
    assert "mutual TLS everywhere" in started.stdout, started.stdout
    tls = federation_dir / "tls"
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(tls / "ca" / "ca.crt").read_bytes(),
        private_key=(tls / "terminal-110100.key").read_bytes(),
        certificate_chain=(tls / "terminal-110100.crt").read_bytes(),
    )
    with grpc.secure_channel(printed["110100"][4], credentials) as channel:
        stub = card_status_pb2_grpc.CardStatusStub(channel)  # type: ignore[no-untyped-call]
        card = "440100d156000005abcdef0123456789"
        answer = stub.CheckCard(card_status_pb2.CheckCardRequest(card_id=card), timeout=10)
    assert answer.card_id == card.upper()
    assert answer.status == types_pb2.NO_DATA  # a known publisher that has published nothing
    with grpc.insecure_channel(printed["110100"][4]) as channel:
        stub = card_status_pb2_grpc.CardStatusStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as refused:
            stub.CheckCard(card_status_pb2.CheckCardRequest(card_id=card), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    for region in REGIONS:
        config = (federation_dir / region / "node.toml").read_text()
        assert "trust_anchor" in config and "tls_cert" in config, config
        assert "plaintext" not in config and "trusted_keys" not in config, config

    again = _run(["up", "--dir", str(federation_dir)], UP_TIMEOUT)
    assert again.returncode == 1
    assert "already up" in again.stdout

    stopped = _run(["down", "--dir", str(federation_dir)], UP_TIMEOUT)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    for region in REGIONS:
        assert re.search(rf"^\s+{region} .* exit 0 \(SIGTERM, ", stopped.stdout, re.MULTILINE)
    assert "all nodes exited 0" in stopped.stdout
    assert [pid for pid in pids if running(pid)] == []
    assert not (federation_dir / STATE_FILE).exists()

    twice = _run(["down", "--dir", str(federation_dir)], UP_TIMEOUT)
    assert twice.returncode == 0
    assert "no federation is up" in twice.stdout
