"""The node's own status page: ``/`` on the metrics port, beside ``/metrics`` (issue #13).

For the operator without Grafana at hand, what HAProxy's stats page or Prometheus's status
pages give: this node's role and region, every feed's head (version, digest, entries), its
age (since the publisher's newest signed time this copy satisfies: head statements,
blacklist/sync/freshness.py) and its lag (behind the upstream at the last pull, and behind the
newest signed head statement), each upstream's state, rejections by cause in the last hour,
and the data directory's size. One static HTML page, no JavaScript; it reloads itself every
10 s (``<meta http-equiv="refresh">``).

Everything on it is read at request time from the node's own metrics registry (the same
numbers ``/metrics`` shows, so the page and Prometheus cannot disagree) and the store's heads
(for the digests). "Last hour" is the difference between the rejection counters now and
their values sampled once a minute (:class:`RejectionWindow`; while the node is younger
than an hour, since it started). :func:`render` is a pure function of a :class:`PageView`.
"""

from __future__ import annotations

import html
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from blacklist.isotime import iso8601

WINDOW_SECONDS = 3600.0
SAMPLE_SECONDS = 60.0
REFRESH_SECONDS = 10
REJECTION_COUNTERS = ("blacklist_deltas_rejected_total", "blacklist_head_statements_rejected_total")


# ---------------------------------------------------------------------------- what is shown
@dataclass(frozen=True)
class FeedRow:
    publisher: str
    version: int
    digest: str  # hex, first 16 digits
    entries: int
    age_seconds: float | None
    behind_upstream: int | None  # versions, at the last pull (None: never pulled)
    behind_statement: int | None  # versions behind the newest signed head statement


@dataclass(frozen=True)
class PageView:
    role: str
    region: str
    build: str
    now: float
    feeds: tuple[FeedRow, ...]
    upstreams: Mapping[str, bool]  # address → holds a working session
    last_pull: float | None  # unix time of the last completed pull
    subscribers: int
    rejections: Mapping[str, int]  # "delta: bad_signature" → count in the window
    window_seconds: float
    data_bytes: int
    checks: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s // 3600} h" if s < 172800 else f"{s // 86400} d"


def _size(n: int) -> str:
    if n < 1024:
        return f"{n:,} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:,.1f} {unit}"


def _table(headers: Iterable[str], rows: Iterable[Iterable[str]], empty: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    if not body:
        return f"<p class=empty>{html.escape(empty)}</p>"
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em;margin:0 0 .2em} h2{font-size:1.05em;margin:1.4em 0 .4em}
table{border-collapse:collapse} th,td{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:left}
th{background:#f3f3f3} td{font-variant-numeric:tabular-nums} .empty,.meta{color:#666}
"""


def render(view: PageView) -> str:
    """The page: header, feeds, upstreams, rejections, data directory."""
    feeds = _table(
        ("feed", "version", "digest", "entries", "age", "behind upstream", "behind statement"),
        (
            (
                f.publisher + (" (own)" if f.publisher == view.region else ""),
                str(f.version),
                f.digest,
                f"{f.entries:,}",
                _age(f.age_seconds),
                "—" if f.behind_upstream is None else str(f.behind_upstream),
                "—" if f.behind_statement is None else str(f.behind_statement),
            )
            for f in view.feeds
        ),
        "no feed held yet",
    )
    upstreams = _table(
        ("upstream", "state"),
        ((a, "connected" if up else "not connected") for a, up in sorted(view.upstreams.items())),
        "no upstream: this node syncs from nobody",
    )
    # While the node is younger than the window: since it started.
    if view.window_seconds >= WINDOW_SECONDS - SAMPLE_SECONDS:
        window = "in the last hour"
    else:
        window = f"since the node started {_age(view.window_seconds)} ago"
    rejections = _table(
        ("cause", window),
        ((cause, f"{n:,}") for cause, n in sorted(view.rejections.items()) if n),
        f"no rejection {window}",
    )
    pull = (
        f"last pull {_age(view.now - view.last_pull)} ago"
        if view.last_pull
        else "no pull completed yet"
    )
    notes = "".join(f"<p class=meta>{html.escape(n)}</p>" for n in view.notes)
    title = f"{view.role} {view.region}"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        f"<title>{html.escape(title)} — blacklist node</title><style>{STYLE}</style></head><body>"
        f"<h1>Node {html.escape(view.region)} ({html.escape(view.role)})</h1>"
        f"<p class=meta>build {html.escape(view.build)} · {iso8601(int(view.now))} · "
        f"{view.checks:,} checks answered · {view.subscribers} child(ren) subscribed · "
        f"{html.escape(pull)} · <a href=/metrics>/metrics</a></p>"
        f"<h2>Feeds</h2>{feeds}<h2>Upstreams</h2>{upstreams}"
        f"<h2>Rejections</h2>{rejections}"
        f"<h2>Data directory</h2><p>{_size(view.data_bytes)} on disk</p>{notes}"
        "</body></html>"
    )


# ---------------------------------------------------------------------------- from the node
Samples = Mapping[str, list[tuple[dict[str, str], float]]]


def samples_of(registry: CollectorRegistry) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in registry.collect():
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def rejection_totals(samples: Samples) -> dict[str, int]:
    """Every rejection counter by cause: ``delta: fork``, ``head statement: bad_signature``."""
    totals: dict[str, int] = {}
    for name in REJECTION_COUNTERS:
        kind = "delta" if "deltas" in name else "head statement"
        for labels, value in samples.get(name, []):
            totals[f"{kind}: {labels.get('cause', '?')}"] = int(value)
    return totals


class RejectionWindow:
    """Counter values sampled once a minute, for "in the last hour" (a counter only has a
    total). Thread-safe: the HTTP threads read, a timer thread writes."""

    def __init__(self, window: float = WINDOW_SECONDS) -> None:
        self._window = window
        self._samples: deque[tuple[float, dict[str, int]]] = deque()
        self._lock = threading.Lock()

    def observe(self, now: float, totals: dict[str, int]) -> None:
        with self._lock:
            self._samples.append((now, totals))
            # Keep one sample at or before the window's start, so the window stays whole.
            while len(self._samples) > 1 and self._samples[1][0] <= now - self._window:
                self._samples.popleft()

    def since(self, now: float, totals: dict[str, int]) -> tuple[dict[str, int], float]:
        """Counts in the window, and how long the window really is (shorter while young)."""
        with self._lock:
            base_t, base = self._samples[0] if self._samples else (now, {})
        return {k: v - base.get(k, 0) for k, v in totals.items()}, max(0.0, now - base_t)


def directory_bytes(path: Path) -> int:
    """Space the data directory takes on disk (allocated blocks: LMDB's file is sparse)."""
    total = 0
    try:
        entries = list(os.scandir(path))
    except OSError:
        return 0
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        total += getattr(st, "st_blocks", 0) * 512 or st.st_size
    return total


def view_of(
    samples: Samples,
    heads: Mapping[str, Any],
    *,
    role: str,
    region: str,
    now: float,
    rejections: Mapping[str, int],
    window_seconds: float,
    data_bytes: int,
) -> PageView:
    def by(name: str, label: str) -> dict[str, float]:
        return {labels.get(label, ""): v for labels, v in samples.get(name, [])}

    versions = by("blacklist_feed_version", "publisher")
    ages = by("blacklist_feed_age_seconds", "publisher")
    entries = by("blacklist_feed_entries", "publisher")
    upstream_lag = by("blacklist_sync_lag_versions", "publisher")
    statement_lag = by("blacklist_feed_lag_versions", "publisher")
    feeds = tuple(
        FeedRow(
            publisher,
            int(version),
            bytes(getattr(heads.get(publisher), "digest", b"")).hex()[:16],
            int(entries.get(publisher, 0)),
            ages.get(publisher),
            int(upstream_lag[publisher]) if publisher in upstream_lag else None,
            int(statement_lag[publisher]) if publisher in statement_lag else None,
        )
        for publisher, version in sorted(versions.items())
    )
    build = next(
        (labels.get("version", "?") for labels, _ in samples.get("blacklist_build_info", [])), "?"
    )
    last = by("blacklist_sync_last_success_timestamp_seconds", "").get("")
    return PageView(
        role=role,
        region=region,
        build=build,
        now=now,
        feeds=feeds,
        upstreams={a: v == 1.0 for a, v in by("blacklist_upstream_connected", "upstream").items()},
        last_pull=last or None,
        subscribers=int(by("blacklist_sync_subscribers", "").get("", 0)),
        rejections=rejections,
        window_seconds=window_seconds,
        data_bytes=data_bytes,
        checks=int(sum(v for _, v in samples.get("blacklist_checks_total", []))),
    )


class StatusPage:
    """The page of one node: call :meth:`html` per request; :meth:`start` the sampler."""

    def __init__(
        self,
        registry: CollectorRegistry,
        heads: Callable[[], Mapping[str, Any]],
        *,
        role: str,
        region: str,
        data_dir: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        self._heads = heads
        self._role, self._region, self._data_dir = role, region, data_dir
        self._clock = clock
        self.window = RejectionWindow()
        self._stop = threading.Event()

    def sample(self) -> None:
        self.window.observe(self._clock(), rejection_totals(samples_of(self._registry)))

    def start(self) -> None:
        self.sample()

        def run() -> None:
            while not self._stop.wait(SAMPLE_SECONDS):
                self.sample()

        threading.Thread(target=run, name="status-page-sampler", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def html(self) -> str:
        now = self._clock()
        samples = samples_of(self._registry)
        counts, span = self.window.since(now, rejection_totals(samples))
        return render(
            view_of(
                samples,
                self._heads(),
                role=self._role,
                region=self._region,
                now=now,
                rejections=counts,
                window_seconds=min(span, WINDOW_SECONDS),
                data_bytes=directory_bytes(self._data_dir),
            )
        )


# ---------------------------------------------------------------------------- serving
class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log on stderr (prometheus_client's server is silent too)."""


def serve_http(
    host: str,
    port: int,
    registry: CollectorRegistry,
    page: Callable[[], str],
    ready: Callable[[], tuple[bool, str]] | None = None,
) -> tuple[Any, threading.Thread]:
    """``/`` the status page, ``/ready`` a replica's readiness (200 or 503 with the reason:
    node/readiness.py; 200 on a node that never gates), everything else prometheus_client's
    exposition (``/metrics``), on one port, in daemon threads (as ``start_http_server``)."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == "/ready":
            serving, reason = ready() if ready is not None else (True, "not a gated replica")
            text = f"{'SERVING' if serving else 'NOT_SERVING'} {reason}\n".encode()
            start_response(
                "200 OK" if serving else "503 Service Unavailable",
                [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(text)))],
            )
            return [text]
        if environ.get("PATH_INFO", "/") in ("/", "/index.html"):
            body = page().encode("utf-8")
            start_response(
                "200 OK",
                [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))],
            )
            return [body]
        return metrics(environ, start_response)

    server_class: type[_Server] = type(
        "_Server",
        (_Server,),
        {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET},
    )
    httpd = make_server(host.strip("[]"), port, app, server_class, handler_class=_QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return httpd, thread
