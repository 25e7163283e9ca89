"""The status page at ``/`` on the metrics port (node/status_page.py, issue #13).

In a real browser: headless Chromium loads the page of a running province and of its city
(over plain HTTP, as an operator would) and the test reads the rendered text: role and
region, each feed's head with its digest, entries and age, the upstream's state, the data
directory. The page's pure parts (the HTML from a view, the rejection window at, below and
above an hour) are tested without a browser.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.gen.blacklist.v1 import admin_pb2, types_pb2
from node.status_page import (
    SAMPLE_SECONDS,
    WINDOW_SECONDS,
    FeedRow,
    PageView,
    RejectionWindow,
    directory_bytes,
    rejection_totals,
    render,
)
from tests.headless_chromium import Browser, chromium
from tests.node_harness import NodeProcess, card_id, write_config, write_node

GZ, PROVINCE = "440100", "440000"


def page_url(node: NodeProcess) -> str:
    return node.metrics_url.removesuffix("metrics")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert chromium() is not None, "chromium is not installed: run `make tools`"
    with Browser() as b:
        yield b


def wait_for_version(node: NodeProcess, publisher: str, version: int) -> None:
    deadline = time.monotonic() + 30
    while node.scrape().get("blacklist_feed_version", publisher=publisher) < version:
        assert time.monotonic() < deadline, f"{publisher} v{version} never reached {node.grpc}"
        time.sleep(0.05)


def test_a_province_and_its_city_in_a_real_browser(tmp_path: Path, browser: Browser) -> None:
    province_files = write_node(tmp_path / "province", PROVINCE, ["4499"], role="province")
    city_files = write_node(tmp_path / "city", GZ, trusted=[province_files.keys.public])  # type: ignore[union-attr]
    assert city_files.keys is not None
    write_config(
        province_files.config,
        {**province_files.fields, "trusted_keys": [
            str(province_files.keys.public), str(city_files.keys.public)  # type: ignore[union-attr]
        ]},
    )  # fmt: skip
    with NodeProcess(province_files.config) as province:
        write_config(
            city_files.config,
            {**city_files.fields, "upstreams": [province.grpc], "sync_interval": 0.5},
        )
        with NodeProcess(city_files.config) as city:
            done = city.admin.Revoke(
                admin_pb2.RevokeRequest(
                    revocations=[
                        admin_pb2.Revocation(card_id=card_id(GZ), reason=types_pb2.LOSS)
                        for _ in range(3)
                    ]
                ),
                timeout=10,
            )
            wait_for_version(province, GZ, done.version)
            deadline = time.monotonic() + 30
            while province.scrape().get("blacklist_sync_subscribers") < 1:  # the push stream
                assert time.monotonic() < deadline, "the city never subscribed"
                time.sleep(0.05)
            digest = bytes(done.digest).hex()[:16]

            text = browser.text(page_url(city))
            assert text.startswith(f"Node {GZ} (city)"), text
            row = next(line for line in text.splitlines() if line.startswith(f"{GZ} (own)"))
            assert row.split("\t")[:4] == [f"{GZ} (own)", str(done.version), digest, "3"], row
            assert f"{province.grpc}\tconnected" in text
            assert "no rejection since the node started" in text
            assert "on disk" in text and "/metrics" in text

            text = browser.text(page_url(province))
            assert text.startswith(f"Node {PROVINCE} (province)"), text
            row = next(line for line in text.splitlines() if line.startswith(GZ))
            assert row.split("\t")[:4] == [GZ, str(done.version), digest, "3"], row
            assert "no upstream: this node syncs from nobody" in text
            assert "1 child(ren) subscribed" in text
            assert browser.screenshot(page_url(province)).startswith(b"\x89PNG\r\n\x1a\n")
            # /metrics is still the exposition, on the same port.
            assert province.scrape().value("blacklist_feed_version", publisher=GZ) == done.version


# ---------------------------------------------------------------------------- pure parts
def view(**overrides: object) -> PageView:
    fields: dict[str, object] = {
        "role": "city",
        "region": GZ,
        "build": "0.1.0",
        "now": 1_767_312_000.0,
        "feeds": (FeedRow(GZ, 7, "ab" * 8, 1234, 3.0, None, 0),),
        "upstreams": {"10.0.0.2:50051": False},
        "last_pull": 1_767_311_990.0,
        "subscribers": 2,
        "rejections": {"delta: fork": 2, "delta: bad_signature": 0},
        "window_seconds": WINDOW_SECONDS,
        "data_bytes": 5 << 20,
    }
    fields.update(overrides)
    return PageView(**fields)  # type: ignore[arg-type]


def test_render_shows_every_part() -> None:
    page = render(view())
    assert "<h1>Node 440100 (city)</h1>" in page
    assert (
        "<td>440100 (own)</td><td>7</td><td>abababababababab</td><td>1,234</td><td>3 s</td>" in page
    )
    assert "<td>10.0.0.2:50051</td><td>not connected</td>" in page
    assert "<th>in the last hour</th>" in page and "<td>delta: fork</td><td>2</td>" in page
    assert "bad_signature" not in page  # causes with none in the window are left out
    assert "5.0 MiB on disk" in page and "last pull 10 s ago" in page
    assert "2026-01-02T00:00:00Z" in page and "<script" not in page


def test_render_escapes_what_it_shows() -> None:
    page = render(view(upstreams={"<b>x</b>": True}, region="<i>"))
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page and "<i>" not in page


@pytest.mark.parametrize(
    ("span", "label"),
    [
        (WINDOW_SECONDS, "in the last hour"),
        (WINDOW_SECONDS - SAMPLE_SECONDS, "in the last hour"),  # one sample short: an hour
        (WINDOW_SECONDS - SAMPLE_SECONDS - 1, "since the node started 58 min ago"),
        (0.0, "since the node started 0 s ago"),
    ],
)
def test_a_young_node_says_since_when(span: float, label: str) -> None:
    assert f"no rejection {label}" in render(view(rejections={}, window_seconds=span))


def test_the_window_counts_the_last_hour_only() -> None:
    window = RejectionWindow()
    for minute in range(0, 121):  # two hours of samples, one a minute, one rejection each
        window.observe(minute * 60.0, {"delta: fork": minute})
    counts, span = window.since(120 * 60.0, {"delta: fork": 120})
    assert (counts, span) == ({"delta: fork": 60}, WINDOW_SECONDS)  # at the hour exactly
    counts, span = window.since(120 * 60.0 + 30, {"delta: fork": 121})
    assert (counts, span) == ({"delta: fork": 61}, WINDOW_SECONDS + 30)  # above: oldest kept
    young = RejectionWindow()
    young.observe(100.0, {})
    assert young.since(160.0, {"delta: fork": 4}) == ({"delta: fork": 4}, 60.0)  # below


def test_rejection_totals_name_the_kind() -> None:
    samples = {
        "blacklist_deltas_rejected_total": [({"cause": "fork"}, 2.0)],
        "blacklist_head_statements_rejected_total": [({"cause": "bad_signature"}, 1.0)],
    }
    assert rejection_totals(samples) == {"delta: fork": 2, "head statement: bad_signature": 1}


def test_directory_bytes(tmp_path: Path) -> None:
    assert directory_bytes(tmp_path / "none") == 0
    (tmp_path / "a").write_bytes(b"x" * 10_000)
    assert directory_bytes(tmp_path) >= 10_000
