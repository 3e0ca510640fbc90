"""The daemon's Prometheus metrics, in a registry of its own.

One `Metrics` object per daemon, handed to its threads; the DCS backends know
nothing of it: the daemon passes them `dcs_request` as their observer. A
private registry keeps two daemons in one process (tests) apart and keeps the
client library's process metrics, which are not yaim's, out of /metrics.
Every name starts with `yaim_`, as the contract says.
"""

from __future__ import annotations

from typing import Iterable

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from yaim.events import EVENTS, FENCE, REASONS, RELEASE, TAKE

CONTENT_TYPE = CONTENT_TYPE_LATEST

# The label values, known up front so that every series exists (at 0) from the start;
# those of the claims and the notify events are yaim.events' vocabulary.
CHECK_RESULTS = ("healthy", "unhealthy")
NOTIFY_RESULTS = ("ok", "failed", "timeout", "error")  # yaim.command.Outcome.result

# A `*_created` timestamp per counter doubles /metrics and tells an operator nothing;
# the switch is process-wide and appeared in prometheus-client 0.17.
if hasattr(prometheus_client, "disable_created_metrics"):
    prometheus_client.disable_created_metrics()

# Seconds; DCS requests and checks are timed out at a few seconds at most.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Counters, gauges and histograms of one daemon; cheap to create, safe from any thread."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._node()
        self._dcs()
        self._claims()
        self._notify()
        self.loop_duration = Histogram(
            "yaim_loop_duration_seconds",
            "Time one round of a daemon thread took",
            ["thread"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def _node(self) -> None:
        """The node's state and its health checks."""
        registry = self.registry
        self.addresses_held = Gauge(
            "yaim_addresses_held", "Pool addresses this node holds now", registry=registry
        )
        self.healthy = Gauge(
            "yaim_healthy", "1 if this node is healthy (rise/fall applied)", registry=registry
        )
        self.failsafe = Gauge(
            "yaim_failsafe",
            "1 while the node keeps addresses past their marks on its peers' promises"
            " (the failsafe hold: etcd does not answer)",
            registry=registry,
        )
        self.link_up = Gauge(
            "yaim_link_up",
            "1 if the service link is up (for link-rise, after it was down)",
            registry=registry,
        )
        self.drained = Gauge(
            "yaim_drained", "1 if an operator drained this node", registry=registry
        )
        self.checks = Counter(
            "yaim_checks", "Health check rounds by result", ["result"], registry=registry
        )
        self.check_duration = Histogram(
            "yaim_check_duration_seconds",
            "Time one health check round took",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        _zero(self.checks, CHECK_RESULTS)

    def _dcs(self) -> None:
        """The DCS requests, by operation (the first word of the request's description)."""
        registry = self.registry
        self.dcs_last_success_age = Gauge(
            "yaim_dcs_last_success_age_seconds",
            "Seconds since the last successful DCS request",
            registry=registry,
        )
        self.dcs_requests = Counter(
            "yaim_dcs_requests", "DCS requests by operation", ["operation"], registry=registry
        )
        self.dcs_errors = Counter(
            "yaim_dcs_request_errors",
            "DCS requests that failed (timeouts, refused connections, server errors)",
            ["operation"],
            registry=registry,
        )
        self.dcs_latency = Histogram(
            "yaim_dcs_request_duration_seconds",
            "Time one DCS request took, failed ones included",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def _claims(self) -> None:
        """What the claims ledger reports: takes, releases and fences, by reason."""
        registry = self.registry
        self.takeovers = Counter(
            "yaim_takeovers", "Addresses this node took, by reason", ["reason"], registry=registry
        )
        self.releases = Counter(
            "yaim_releases",
            "Addresses this node released cleanly, by reason",
            ["reason"],
            registry=registry,
        )
        self.fencing = Counter(
            "yaim_fencing_events",
            "Addresses dropped because their mark could not be kept, by cause",
            ["cause"],
            registry=registry,
        )
        for counter, event in (
            (self.takeovers, TAKE),
            (self.releases, RELEASE),
            (self.fencing, FENCE),
        ):
            _zero(counter, REASONS[event])

    def _notify(self) -> None:
        """The notify commands, by event."""
        registry = self.registry
        self.notify_runs = Counter(
            "yaim_notify_runs",
            "Notify commands run, by event and result (ok, failed, timeout, error: not started)",
            ["event", "result"],
            registry=registry,
        )
        self.notify_dropped = Counter(
            "yaim_notify_dropped",
            "Notify events never run: dropped from a full queue or left at shutdown",
            ["event"],
            registry=registry,
        )
        _zero(self.notify_dropped, EVENTS)
        for event in EVENTS:
            for result in NOTIFY_RESULTS:
                self.notify_runs.labels(event, result)

    def dcs_request(self, operation: str, seconds: float, ok: bool) -> None:
        """The DCS observer: one request (one try) of `operation` took `seconds`."""
        self.dcs_requests.labels(operation).inc()
        self.dcs_latency.labels(operation).observe(seconds)
        if not ok:
            self.dcs_errors.labels(operation).inc()

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric, for GET /metrics."""
        return generate_latest(self.registry)


def _zero(counter: Counter, values: Iterable[str]) -> None:
    """Create a counter's series for each label value, so that each is exposed at 0."""
    for value in values:
        counter.labels(value)
