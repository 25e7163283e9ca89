"""The operators' view (issue #7): alert rules checked and unit-tested by promtool, the Grafana
dashboard over metric names a real node exposes, and a real Prometheus scraping a three-node
federation on loopback.

promtool and prometheus come from Debian's ``prometheus`` package, which ``make unit``
installs (``make tools``). A missing binary fails these tests rather than skipping them, so
that CI cannot pass without having run them.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from node.gen.blacklist.v1 import admin_pb2, card_status_pb2, types_pb2
from tests.node_harness import NodeProcess, TomlValue, card_id, write_keys, write_node

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "dashboards" / "alerts.yml"
RULE_TESTS = ROOT / "dashboards" / "alerts_test.yml"
DASHBOARD = ROOT / "dashboards" / "blacklist.json"

JOB = "blacklist"  # the job name the alert rules select (README: "Dashboard and alerts")
ALERTS = {
    "BlacklistNodeDown",
    "BlacklistSyncLagHigh",
    "BlacklistDeltaRejected",
    "BlacklistFeedStale",
    "BlacklistFeedBehind",
    "BlacklistDeniedCallsSpike",
    "BlacklistDeniedPsamInUse",
    "BlacklistSweepStalled",
}
# Series that Prometheus itself makes for every target; no node exposes them.
PROMETHEUS_SERIES = {"up"}
# What the dashboard must show (issue #7), by the series it reads.
DASHBOARD_NEEDS = {
    "blacklist_checks_total",  # checks per second by result
    "blacklist_check_seconds_bucket",  # latency quantiles
    "blacklist_sync_lag_versions",  # lag per publisher and node
    "blacklist_feed_lag_versions",  # versions behind the publisher's signed head statement
    "blacklist_feed_age_seconds",  # signed freshness per publisher and node
    "blacklist_feed_version",  # versions side by side, divergence
    "blacklist_deltas_rejected_total",  # rejected deltas by cause
    "blacklist_snapshot_transfers_total",  # snapshot transfers
    "blacklist_denied_calls_total",  # denied callers
    "blacklist_entries",  # entries by reason (issue #17)
    "blacklist_entries_lapsing_next_24h",  # temporary losses that lapse within a day
}
# Grafana's variables, as a real query would see them (every job, node and publisher).
DASHBOARD_VARIABLES = {
    "$__rate_interval": "30s",
    "$__range": "5m",
    "$job": JOB,
    "$instance": ".*",
    "$publisher": ".*",
}

# A small federation: the city revokes, its province and the ministry relay.
TOPOLOGY: tuple[tuple[str, str, str | None, str | None], ...] = (
    ("000000", "ministry", None, None),
    ("440000", "province", "000000", "4499"),
    ("440100", "city", "440000", "4401"),
)
CITY = "440100"
SYNC_INTERVAL = 1  # seconds between pulls (TOML integer: the harness writes no floats)
SCRAPE_INTERVAL = "1s"
POLL_TIMEOUT = 90.0  # a deadline for slow machines, not a performance claim
RPC_TIMEOUT = 10.0

T = TypeVar("T")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not on PATH: `make tools` installs Debian's prometheus package "
            "(prometheus and promtool)"
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


# ---------------------------------------------------------------------------- PromQL names
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_LABEL_VALUES = re.compile(r"label_values\(\s*([^,()]*(?:\{[^}]*\})?)\s*(?:,\s*\w+\s*)?\)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression (or a Grafana ``label_values(...)`` variable
    query) reads: identifiers that are not functions, keywords, labels or durations."""
    text = _LABEL_VALUES.sub(r"\1", expr)
    text = _STRING.sub('""', text)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group().lower() in _KEYWORDS:
            continue  # a function or aggregation, or an operator
        names.add(match.group())
    return names


def test_metric_names_reads_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (instance, le) (rate(blacklist_check_seconds_bucket{job=~"$job"}'
        "[$__rate_interval]))) > 1e-3 and on (instance) count by (instance) (up) or vector(0)"
    )
    assert metric_names(expr) == {"blacklist_check_seconds_bucket", "up"}
    assert metric_names('label_values(blacklist_build_info{job=~"$job"}, instance)') == {
        "blacklist_build_info"
    }
    assert metric_names("label_values(blacklist_build_info, job)") == {"blacklist_build_info"}
    assert metric_names(
        'time() - max by (instance) (blacklist_sync_lag_versions{a="b(c)"} > 0)'
    ) == {"blacklist_sync_lag_versions"}


def exposed_names(exposition: str) -> set[str]:
    """Every series name a /metrics page can produce: the samples it has, and for each family
    (also one with no samples yet, e.g. a labelled counter never incremented) the names its
    type implies."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_count", "_sum"))
        else:
            names.add(family.name)
    return names


# ---------------------------------------------------------------------------- reading the files
def rule_expressions(text: str) -> dict[str, str]:
    """``alert name -> expr`` from alerts.yml, read line by line (PyYAML is not a dependency;
    promtool is the real parser): ``expr:`` is a plain scalar or a block scalar (``>-``)."""
    rules: dict[str, str] = {}
    lines = text.splitlines()
    name = None
    for i, line in enumerate(lines):
        if m := re.match(r"\s*-\s*alert:\s*(\S+)", line):
            name = m.group(1)
        elif (m := re.match(r"(\s*)expr:\s*(.*)$", line)) and name is not None:
            indent, value = len(m.group(1)), m.group(2).strip()
            if value[:1] in (">", "|"):
                block = []
                for follow in lines[i + 1 :]:
                    if follow.strip() and len(follow) - len(follow.lstrip()) <= indent:
                        break
                    block.append(follow.strip())
                value = " ".join(block)
            rules[name] = value
            name = None
    return rules


def rule_test_cases(text: str) -> dict[str, set[bool]]:
    """``alert name -> {True if some case expects it to fire, False if some expects silence}``
    from alerts_test.yml."""
    cases: dict[str, set[bool]] = {}
    name = None
    for line in text.splitlines():
        if m := re.match(r"\s*alertname:\s*(\S+)", line):
            name = m.group(1)
        elif (m := re.match(r"\s*exp_alerts:\s*(.*)$", line)) and name is not None:
            cases.setdefault(name, set()).add(m.group(1).strip() != "[]")
            name = None
    return cases


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def dashboard_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in board["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return panels


def dashboard_expressions(board: dict[str, Any]) -> list[str]:
    """Every PromQL expression in panel targets."""
    exprs = []
    for panel in dashboard_panels(board):
        for target in panel.get("targets", []):
            exprs.append(target["expr"])
    return exprs


def variable_queries(board: dict[str, Any]) -> list[str]:
    queries = []
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def substitute(expr: str) -> str:
    # Longest names first: $__rate_interval before anything shorter that it contains.
    for name in sorted(DASHBOARD_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, DASHBOARD_VARIABLES[name])
    return expr


# ---------------------------------------------------------------------------- promtool
def test_alert_rules_pass_promtool_check() -> None:
    result = run_promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout, result.stdout


def test_alert_rules_pass_their_unit_tests() -> None:
    result = run_promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


def test_every_alert_has_a_firing_and_a_silent_test_case() -> None:
    rules = rule_expressions(RULES.read_text(encoding="utf-8"))
    assert set(rules) == ALERTS
    cases = rule_test_cases(RULE_TESTS.read_text(encoding="utf-8"))
    for alert in ALERTS:
        assert cases.get(alert) == {True, False}, f"{alert}: test cases {cases.get(alert)}"


def test_every_alert_has_for_severity_summary_and_description() -> None:
    text = RULES.read_text(encoding="utf-8")
    blocks = re.split(r"\n\s*-\s*alert:\s*", text)[1:]
    assert len(blocks) == len(ALERTS)
    for block in blocks:
        name = block.split()[0]
        assert re.search(r"\n\s*for:\s*[1-9]\d*[smh]\b", block), f"{name}: no `for`"
        assert re.search(r"\n\s*severity:\s*(critical|warning)\b", block), f"{name}: severity"
        assert re.search(r"\n\s*summary:\s*\S", block), f"{name}: no summary"
        assert re.search(r"\n\s*description:\s*\S", block), f"{name}: no description"


# ---------------------------------------------------------------------------- the dashboard
def test_dashboard_is_importable_grafana_json() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert variables["instance"]["type"] == "query" and variables["instance"]["multi"]
    panels = dashboard_panels(board)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert 'instance=~"$instance"' in target["expr"], (
                f"panel {panel['title']!r} ignores the node variable: {target['expr']}"
            )
    # Every datasource reference in the file is the variable (nothing bound to one install).
    for node in walk(board):
        if node.get("type") == "prometheus" and "uid" in node:
            assert node["uid"] == "${DS_PROMETHEUS}"


def test_dashboard_shows_what_operators_need() -> None:
    board = dashboard()
    exprs = dashboard_expressions(board)
    used = set().union(*(metric_names(e) for e in exprs))
    assert used >= DASHBOARD_NEEDS, f"missing: {DASHBOARD_NEEDS - used}"
    assert any(
        e.startswith("histogram_quantile(") and "blacklist_check_seconds_bucket" in e for e in exprs
    )
    assert any("sum by (result)" in e and "blacklist_checks_total" in e for e in exprs)
    assert any("by (instance, publisher)" in e and "sync_lag" in e for e in exprs)
    # Divergence at a glance: versions side by side, and max - min per publisher.
    spread = [e for e in exprs if re.search(r"max by \(publisher\).*- min by \(publisher\)", e)]
    assert spread, "no max - min feed version panel"
    side_by_side = [
        p
        for p in dashboard_panels(board)
        if p["type"] == "table"
        and any(t.get("id") == "groupingToMatrix" for t in p.get("transformations", []))
    ]
    assert side_by_side and "blacklist_feed_version" in side_by_side[0]["targets"][0]["expr"]


# ---------------------------------------------------------------------------- real nodes
@dataclass
class SmallFederation:
    """Three node processes on loopback, plain text, started parent first (a child's config
    names its upstream's address, known once the upstream is READY)."""

    nodes: dict[str, NodeProcess]  # region -> running node

    def metrics_target(self, region: str) -> str:
        """``host:port`` of the node's /metrics, as Prometheus's static config wants it."""
        return urllib.parse.urlsplit(self.nodes[region].metrics_url).netloc


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmallFederation]:
    root = tmp_path_factory.mktemp("federation")
    keys = {
        region: write_keys(root / "keys", region, [prefix])
        for region, _, _, prefix in TOPOLOGY
        if prefix is not None
    }
    trusted = [k.public for k in keys.values()]
    nodes: dict[str, NodeProcess] = {}
    with contextlib.ExitStack() as stack:  # leaving it stops children before parents
        for region, role, parent, _ in TOPOLOGY:
            extra: dict[str, TomlValue] = {"sync_interval": SYNC_INTERVAL}
            if region in keys:
                extra["signing_key"] = str(keys[region].private)
            if parent is not None:
                extra["upstreams"] = [nodes[parent].grpc]
            files = write_node(
                root / region, region, role=role, trusted=trusted, signing=False, extra=extra
            )
            nodes[region] = stack.enter_context(NodeProcess(files.config))
        yield SmallFederation(nodes)


def scrape_names(url: str) -> set[str]:
    with urllib.request.urlopen(url, timeout=RPC_TIMEOUT) as response:
        return exposed_names(response.read().decode("utf-8"))


def test_dashboard_and_alerts_read_only_series_a_node_exposes(
    federation: SmallFederation,
) -> None:
    exposed = set().union(*(scrape_names(n.metrics_url) for n in federation.nodes.values()))
    board = dashboard()
    for expr in [*dashboard_expressions(board), *variable_queries(board)]:
        unknown = metric_names(expr) - exposed - PROMETHEUS_SERIES
        assert not unknown, f"dashboard reads {sorted(unknown)}, which no node exposes: {expr}"
    for alert, expr in rule_expressions(RULES.read_text(encoding="utf-8")).items():
        unknown = metric_names(expr) - exposed - PROMETHEUS_SERIES
        assert not unknown, f"{alert} reads {sorted(unknown)}, which no node exposes: {expr}"


# ---------------------------------------------------------------------------- real Prometheus
class PrometheusError(AssertionError):
    pass


@dataclass
class Prometheus:
    """A ``prometheus`` server on loopback with its own config and TSDB in ``directory``."""

    directory: Path
    targets: dict[str, str]  # region -> host:port of its /metrics
    rule_files: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.directory / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        # JSON is YAML: written with json.dumps, so no YAML writer is needed.
        targets = [
            {"targets": [address], "labels": {"region": region}}
            for region, address in self.targets.items()
        ]
        return json.dumps(
            {
                "global": {
                    "scrape_interval": SCRAPE_INTERVAL,
                    "scrape_timeout": SCRAPE_INTERVAL,
                    "evaluation_interval": SCRAPE_INTERVAL,
                },
                "rule_files": [str(p) for p in self.rule_files],
                "scrape_configs": [{"job_name": JOB, "static_configs": targets}],
            },
            indent=2,
        )

    def start(self) -> Prometheus:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "prometheus.yml"
        config.write_text(self.config())
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    tool("prometheus"),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.directory / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                cwd=self.directory,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        poll("Prometheus ready", self._ready)
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise PrometheusError(f"prometheus exited with {self.proc.returncode}:\n{self.tail()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError):
            return False

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=RPC_TIMEOUT) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:  # 400/422: a bad query, with Prometheus's words
            raise PrometheusError(f"{url}: {error.code} {error.read().decode()}") from None
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise PrometheusError(f"prometheus ignored SIGTERM:\n{self.tail()}") from None

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if kind is None:
            code = self.stop()
            assert code == 0, f"prometheus exited with {code}:\n{self.tail()}"
        else:
            self.proc.kill()
            self.proc.wait()


def poll(what: str, attempt: Callable[[], T | None], timeout: float = POLL_TIMEOUT) -> T:
    """Call ``attempt`` until it returns something truthy; that value. Fails after
    ``timeout`` seconds (a generous deadline, never a measurement)."""
    deadline = time.monotonic() + timeout
    while True:
        value = attempt()
        if value:
            return value
        if time.monotonic() > deadline:
            raise PrometheusError(f"{what}: not seen within {timeout:g} s")
        time.sleep(0.25)


def _stub(cls: Any, channel: Any) -> Any:
    # The generated *_grpc modules are untyped; the stubs are Any to the tests.
    return cls(channel)


def by_label(series: list[dict[str, Any]], *labels: str) -> dict[tuple[str, ...], float]:
    return {tuple(s["metric"].get(k, "") for k in labels): float(s["value"][1]) for s in series}


def test_prometheus_scrapes_a_federation(federation: SmallFederation, tmp_path: Path) -> None:
    nodes = federation.nodes
    targets = {region: federation.metrics_target(region) for region in nodes}
    revoked = card_id(CITY)
    clean = card_id(CITY)

    def check_cards() -> None:
        # Terminals at every node, so that each has a check rate for Prometheus to see.
        for node in nodes.values():
            for card in (revoked, clean):
                request = card_status_pb2.CheckCardRequest(card_id=card)
                node.card_status.CheckCard(request, timeout=RPC_TIMEOUT)

    with Prometheus(tmp_path / "prometheus", targets, (RULES,)) as prometheus:
        revocation = admin_pb2.Revocation(card_id=revoked, reason=types_pb2.LOSS)
        answer = nodes[CITY].admin.Revoke(
            admin_pb2.RevokeRequest(revocations=[revocation]), timeout=RPC_TIMEOUT
        )
        assert answer.added == 1

        def all_up() -> bool:
            up = by_label(prometheus.query(f'up{{job="{JOB}"}}'), "instance")
            return up == {(address,): 1.0 for address in targets.values()}

        poll("every node scraped (up == 1)", all_up)

        # Sync lag for the city's feed, at both nodes with an upstream, caught up (0).
        def lag() -> dict[tuple[str, ...], float] | None:
            series = prometheus.query(
                f'blacklist_sync_lag_versions{{job="{JOB}", publisher="{CITY}"}}'
            )
            found = by_label(series, "instance")
            want = {(targets[r],): 0.0 for r in ("440000", CITY)}
            return found if found == want else None

        poll("a sync lag series for 440100 at the province and the city", lag)

        # Check rates by result: the revoked card once the revocation has travelled,
        # the clean one everywhere.
        def rates() -> dict[tuple[str, ...], float] | None:
            check_cards()
            series = prometheus.query(
                f'sum by (instance, result) (rate(blacklist_checks_total{{job="{JOB}"}}[30s])) > 0'
            )
            found = by_label(series, "instance", "result")
            want = {(targets[r], result) for r in targets for result in ("REVOKED", "NOT_REVOKED")}
            return found if want <= set(found) else None

        poll("a check rate series for REVOKED and NOT_REVOKED at every node", rates)

        # The dashboard's side-by-side versions: the city's feed at version 1 everywhere.
        def versions() -> bool:
            series = prometheus.query(
                f'max by (instance, publisher) (blacklist_feed_version{{job="{JOB}", publisher="{CITY}"}})'
            )
            return by_label(series, "instance") == {(a,): 1.0 for a in targets.values()}

        poll("feed 440100 at version 1 on every node", versions)

        # Every dashboard query is valid PromQL to a real Prometheus, and the headline
        # panels have data.
        check_cards()
        board = dashboard()
        for expr in [*dashboard_expressions(board), *variable_queries(board)]:
            if expr.startswith("label_values("):
                expr = _LABEL_VALUES.sub(r"\1", expr)
            result = prometheus.query(substitute(expr))
            if metric_names(expr) & {"blacklist_checks_total", "blacklist_feed_version"}:
                assert result, f"no data for dashboard query {expr}"

        # The alert rules loaded and evaluate cleanly against real series.
        def rules_evaluated() -> list[dict[str, Any]] | None:
            groups = prometheus.api("rules", type="alert")["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            return rules if rules and all(r["health"] == "ok" for r in rules) else None

        rules = poll("alert rules evaluated", rules_evaluated)
        assert {r["name"] for r in rules} == ALERTS
        for rule in rules:
            assert rule["duration"] > 0, rule["name"]
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule["name"]
            assert {"summary", "description"} <= set(rule["annotations"]), rule["name"]
        # A healthy federation: nothing firing.
        firing = prometheus.query('ALERTS{alertstate="firing"}')
        assert firing == [], firing
