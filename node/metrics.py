"""Prometheus metrics of a node, on a registry the caller owns (so tests can use their own).

Names follow Prometheus conventions and, for gRPC, go-grpc-prometheus (`grpc_server_*`), so
existing dashboards for gRPC services work unchanged.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from blacklist.checker import CheckStatus
from blacklist.clock import Clock, system_clock
from blacklist.rejections import NORMAL_CAUSES, TAMPERING_CAUSES
from blacklist.store import RevocationStore
from blacklist.storereader import StoreReader
from blacklist.sync.freshness import ALL_STATEMENT_CAUSES

VERSION = "0.1.0"
# 10 µs .. 100 ms: a check is microseconds in process; the tail shows queueing.
CHECK_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1)
RPC_BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 0.25, 1.0, 5.0)
# grpc_server_handling_seconds: fine enough for a check's microseconds, long enough for a
# snapshot push.
CALL_BUCKETS = tuple(sorted({*CHECK_BUCKETS, *RPC_BUCKETS}))
CARD_STATUS = "blacklist.v1.CardStatus"


class CheckSecondsView(Collector):
    """``blacklist_check_seconds``, the name the dashboards and alerts read check latency
    from, shown at scrape time from the one timing of each CheckCard call: the Edge
    interceptor's ``grpc_server_handling_seconds{grpc_method="CheckCard"}`` (issue #15: a
    call is timed once, not by the interceptor and again inside the handler)."""

    def __init__(self, handling: Histogram) -> None:
        self._handling = handling
        self._labels = {
            "grpc_type": "unary",
            "grpc_service": CARD_STATUS,
            "grpc_method": "CheckCard",
        }

    def collect(self) -> Iterator[HistogramMetricFamily]:
        view = HistogramMetricFamily(
            "blacklist_check_seconds",
            "Time to answer one CheckCard call, from the start of its handling to its answer "
            "(the same observations as grpc_server_handling_seconds for CheckCard)",
        )
        prefix = "grpc_server_handling_seconds"
        for family in self._handling.collect():
            for s in family.samples:
                labels = dict(s.labels)
                le = labels.pop("le", None)
                if labels != self._labels or s.name.endswith("_created"):
                    continue
                name = "blacklist_check_seconds" + s.name[len(prefix) :]
                view.add_sample(name, {"le": le} if le is not None else {}, s.value)
        yield view


class FeedCollector(Collector):
    """Per-publisher gauges read from the store at scrape time (no bookkeeping on writes)."""

    def __init__(self, store: StoreReader, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        entries = GaugeMetricFamily(
            "blacklist_feed_entries", "Revoked entries held, per publisher", labels=["publisher"]
        )
        psams = GaugeMetricFamily("blacklist_psam_denials", "Denied PSAMs held, all publishers")
        psams.add_metric([], len(self._store.psams))
        version = GaugeMetricFamily(
            "blacklist_feed_version", "Feed version held, per publisher", labels=["publisher"]
        )
        age = GaugeMetricFamily(
            "blacklist_feed_age_seconds",
            "Seconds since the newest time the publisher signed (a head statement or its "
            "head delta) at which its head was one this node holds",
            labels=["publisher"],
        )
        now = self._clock()
        for publisher, feed in sorted(self._store.feeds.items()):
            entries.add_metric([publisher], feed.entries)
            version.add_metric([publisher], feed.version)
            age.add_metric([publisher], max(0.0, now - feed.checked_at))
        yield entries
        yield version
        yield age
        yield psams


class StatementCollector(Collector):
    """Versions this node is behind each publisher's newest verified head statement
    (blacklist/sync/freshness.py): signed proof that the feed moved on without it."""

    def __init__(self, store: RevocationStore) -> None:
        self._store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        lag = GaugeMetricFamily(
            "blacklist_feed_lag_versions",
            "Versions this node's head is behind the publisher's newest signed head "
            "statement it verified, per publisher",
            labels=["publisher"],
        )
        for publisher, statement in sorted(self._store.statements.all().items()):
            held = self._store.head(publisher).version
            lag.add_metric([publisher], max(0, statement.version - held))
        yield lag


LAPSE_WINDOW = 86_400  # "lapsing in the next 24 h"


class LapseCollector(Collector):
    """Entries by reason and the ones lapsing soon (issue #17), read at scrape time from the
    writer's store: the counts are kept per write (blacklist/reasoncounts.py), and the
    lapsing ones are a range of the lapses index."""

    def __init__(self, store: RevocationStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        by_reason = GaugeMetricFamily(
            "blacklist_entries",
            "Revoked entries held, all publishers, by reason (lapsed ones until swept)",
            labels=["reason"],
        )
        for reason, n in self._store.reason_counts.by_reason().items():
            by_reason.add_metric([reason.name.lower()], n)
        now = int(self._clock())
        soon = GaugeMetricFamily(
            "blacklist_entries_lapsing_next_24h",
            "Entries whose end time falls in the next 24 hours (temporary losses)",
        )
        # Still revoked now (end > now) and over within the window (end <= now + 24 h).
        soon.add_metric([], self._store.lapsing_between(now + 1, now + LAPSE_WINDOW + 1))
        due = GaugeMetricFamily(
            "blacklist_entries_lapsed_unswept",
            "Entries past their end time not swept yet (checks already answer them as "
            "absent; a number that stays up means the sweep does not run)",
        )
        due.add_metric([], self._store.lapsing_between(-(2**63), now + 1))
        yield by_reason
        yield soon
        yield due


class NodeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.checks = Counter(
            "blacklist_checks", "Card checks answered, by result", ["result"], registry=registry
        )
        self.started = Counter(
            "grpc_server_started",
            "RPCs started on the server",
            ["grpc_type", "grpc_service", "grpc_method"],
            registry=registry,
        )
        self.handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, regardless of success or failure",
            ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
            registry=registry,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Response latency of RPCs handled by the server",
            ["grpc_type", "grpc_service", "grpc_method"],
            buckets=CALL_BUCKETS,
            registry=registry,
        )
        self.handling.labels("unary", CARD_STATUS, "CheckCard")  # the view shows zeros
        registry.register(CheckSecondsView(self.handling))
        self.denied = Counter(
            "blacklist_denied_calls",
            "Calls refused by the role check (node/grpc/calls.py), by reason",
            ["reason", "grpc_method"],
            registry=registry,
        )
        self.revocations = Counter(
            "blacklist_revocations", "Cards revoked through Admin", registry=registry
        )
        self.reinstatements = Counter(
            "blacklist_reinstatements", "Cards reinstated through Admin", registry=registry
        )
        self.apply_seconds = Histogram(
            "blacklist_delta_apply_seconds",
            "Time to verify and apply one delta or snapshot",
            buckets=RPC_BUCKETS,
            registry=registry,
        )
        self.rejected = Counter(
            "blacklist_deltas_rejected",
            "Deltas refused for a cause only tampering produces (bad signature, fork, scope, "
            "dead key, ...), by cause",
            ["cause"],
            registry=registry,
        )
        self.ignored = Counter(
            "blacklist_deltas_ignored",
            "Deltas not applied for a normal cause: a copy held (duplicate), an older copy "
            "(replay), one ahead of its predecessor (version_gap)",
            ["cause"],
            registry=registry,
        )
        self.sync_applied = Counter(
            "blacklist_sync_deltas_applied",
            "Deltas and snapshots applied, by where they came from",
            ["source"],
            registry=registry,
        )
        self.sync_duplicates = Counter(
            "blacklist_sync_duplicates",
            "Copies of deltas already held (normal: push and pull overlap)",
            registry=registry,
        )
        self.sync_received_bytes = Counter(
            "blacklist_sync_received_bytes",
            "Bytes of signed deltas and snapshots received from upstreams and children",
            registry=registry,
        )
        self.sync_last_success = Gauge(
            "blacklist_sync_last_success_timestamp_seconds",
            "When this node last completed a pull from an upstream (unix time)",
            registry=registry,
        )
        self.sync_lag = Gauge(
            "blacklist_sync_lag_versions",
            "Versions this node is behind its upstream, per publisher, at the last pull",
            ["publisher"],
            registry=registry,
        )
        self.statements = Counter(
            "blacklist_head_statements",
            "Head statements received and kept (accepted) or already held (duplicate)",
            ["result"],
            registry=registry,
        )
        self.statements_rejected = Counter(
            "blacklist_head_statements_rejected",
            "Head statements refused, by cause (time_backwards and too_far_ahead happen in "
            "the normal course; bad_signature, key_not_allowed, fork and malformed do not)",
            ["cause"],
            registry=registry,
        )
        self.statements_signed = Counter(
            "blacklist_head_statements_signed",
            "Head statements this node's authority signed",
            registry=registry,
        )
        self.snapshot_transfers = Counter(
            "blacklist_snapshot_transfers",
            "Snapshot transfers, by direction (sent/received) and result",
            ["direction", "result"],
            registry=registry,
        )
        self.sync_too_large = Counter(
            "blacklist_sync_deltas_too_large",
            "Deltas larger than any message within the peer's limit: sent (this node could "
            "not put one in an answer) or received (an upstream said so); the feed moves by "
            "its next snapshot",
            ["direction"],
            registry=registry,
        )
        self.upstream_up = Gauge(
            "blacklist_upstream_connected",
            "1 while this node holds a working session with the upstream",
            ["upstream"],
            registry=registry,
        )
        self.sync_subscribers = Gauge(
            "blacklist_sync_subscribers", "Children subscribed to this node", registry=registry
        )
        self.psam_refusals = Counter(
            "blacklist_psam_refusals",
            "Checks refused because the terminal presented a denied PSAM, by method",
            ["grpc_method"],
            registry=registry,
        )
        self.psam_revocations = Counter(
            "blacklist_psam_revocations", "PSAMs denied through Admin", registry=registry
        )
        self.trusted_keys = Gauge(
            "blacklist_trusted_keys",
            "Signing keys this node trusts now (certified and valid, or configured)",
            registry=registry,
        )
        self.trust_refreshes = Counter(
            "blacklist_trust_refreshes",
            "Rebuilds of the trusted keys (new certificates or revocations from feeds, or "
            "the periodic re-check of validity times)",
            ["trigger"],
            registry=registry,
        )
        self.trust_dropped_claims = Gauge(
            "blacklist_trust_dropped_claims",
            "Region-prefix claims the publisher directory ignores now because another "
            "publisher's claim to the same prefix wins (issue #11: never a crash)",
            registry=registry,
        )
        self.swept = Counter(
            "blacklist_entries_swept",
            "Lapsed entries the sweep removed from the store and the index",
            registry=registry,
        )
        self.build_info = Gauge(
            "blacklist_build_info",
            "Build information (always 1)",
            ["version", "python"],
            registry=registry,
        )
        self.build_info.labels(VERSION, platform.python_version()).set(1)
        # Pre-create label sets so dashboards see zeros rather than gaps.
        for status in CheckStatus:
            self.checks.labels(status.name)
        for cause in (*TAMPERING_CAUSES, "snapshot_checksum"):
            self.rejected.labels(cause)
        for cause in NORMAL_CAUSES:
            self.ignored.labels(cause)
        for method in ("CheckCard", "BatchCheck", "CheckStream"):
            self.psam_refusals.labels(method)
        for result in ("accepted", "duplicate"):
            self.statements.labels(result)
        for cause in ALL_STATEMENT_CAUSES:
            self.statements_rejected.labels(cause)
        for trigger in ("feed", "timer"):
            self.trust_refreshes.labels(trigger)
        for direction in ("sent", "received"):
            self.sync_too_large.labels(direction)

    def watch_store(self, store: StoreReader, clock: Clock = system_clock) -> None:
        self.registry.register(FeedCollector(store, clock))

    def watch_lapses(self, store: RevocationStore, clock: Clock = system_clock) -> None:
        """Entries by reason and lapsing soon, from the writer's store."""
        self.registry.register(LapseCollector(store, clock))

    def watch_statements(self, store: RevocationStore) -> None:
        """The statement lag, from the writer's store (a worker's follower has none)."""
        self.registry.register(StatementCollector(store))
