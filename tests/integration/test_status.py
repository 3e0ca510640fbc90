"""The status endpoint and SIGHUP reload on running daemons in the lab.

Every request is made from inside the node's namespace (the endpoint listens on
127.0.0.1:9720 there, the default). Timing as in test_daemon.
"""

from __future__ import annotations

import signal
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab.util import wait_until
from tests.integration.conftest import (
    CLEAN_BOUND,
    CRASH_BOUND,
    INTERVAL,
    TTL,
    holding,
    request,
    settled,
    start,
    status,
    unchanged_for,
)

pytestmark = pytest.mark.netns


@pytest.fixture(autouse=True)
def checked(lab):
    """No address on two nodes at once, at any moment of the test."""
    yield lab
    print(lab.logs())  # pytest shows it when the test fails
    assert lab.observer.violations == [], f"two holders: {lab.observer.violations[:5]}"


def metrics(lab, i):
    """Sample name + sorted labels -> value, from a scrape that must parse as Prometheus text."""
    code, body = request(lab, i, "/metrics")
    assert code == 200, body
    values = {}
    for family in text_string_to_metric_families(body):
        assert family.name.startswith("yaim_"), family.name
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def total(values, name, **labels):
    """Sum of the samples called `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, lab), v in values.items() if n == name and wanted <= set(lab))


def with_health(lab, n=3):
    """n nodes checking their own health server (the same URL in each namespace), settled."""
    urls = {lab.lab.start_health(i, 8008) for i in range(1, n + 1)}
    assert len(urls) == 1, urls
    url = urls.pop()
    return start(lab, n, health_url=url), url


def test_health_and_status_follow_the_node_and_only_get_is_allowed(lab):
    with_health(lab)
    code, body = request(lab, 1, "/health")
    assert (code, body) == (200, "healthy: GET http://127.0.0.1:8008/health answered 200\n")
    mine = holding(lab, 1)
    state = status(lab, 1)
    assert state["node"] == "n1" and state["healthy"] and not state["drained"]
    assert state["dcs"]["endpoint"] == lab.etcd.endpoints[0] and state["dcs"]["fresh"]
    assert 0 <= state["dcs"]["last_success_age"] < TTL / 1000
    assert state["addresses"] == [str(a) for a in sorted(mine)]
    assert [node["name"] for node in state["nodes"]] == ["n1", "n2", "n3"]
    seen = {str(a): f"n{h[0]}" for a, h in lab.observer.holders().items()}
    wait_until(  # n1's view is as old as its last read of the DCS
        lambda: {e["address"]: e["holder"] for e in status(lab, 1)["ips"]} == seen,
        2 * INTERVAL / 1000,
        what="n1's view of the pool to match the interfaces",
    )
    for method in ("POST", "PUT", "DELETE"):
        assert request(lab, 1, "/health", method)[0] == 405
    assert request(lab, 1, "/nothing")[0] == 404

    lab.lab.set_health(1, False)
    wait_until(lambda: request(lab, 1, "/health")[0] == 503, 5, what="/health to say 503")
    assert request(lab, 1, "/health")[1].startswith("unhealthy: GET http://127.0.0.1:8008/health")
    lab.observer.wait_for(settled([2, 3]), CLEAN_BOUND + 5, "n1's addresses to move")
    assert status(lab, 1)["healthy"] is False and status(lab, 1)["addresses"] == []

    # healthy again, but cut off from etcd: the DCS session goes stale
    lab.lab.set_health(1, True)
    lab.observer.wait_for(settled([1, 2, 3]), 10, "n1 to take its share again")
    assert request(lab, 1, "/health")[0] == 200
    cut_at = time.monotonic()
    lab.lab.link(1, "dcs0", up=False)
    wait_until(lambda: request(lab, 1, "/health")[0] == 503, TTL / 1000 + 3, what="503 cut off")
    print(f"/health turned 503 {time.monotonic() - cut_at:.2f} s after the DCS link went down")
    code, body = request(lab, 1, "/health")
    assert body.startswith("DCS session stale"), body
    assert status(lab, 1)["dcs"]["fresh"] is False
    lab.lab.link(1, "dcs0", up=True)
    wait_until(lambda: request(lab, 1, "/health")[0] == 200, 5, what="200 again")


def test_metrics_count_a_failover_and_parse_as_prometheus_text(lab):
    nodes = start(lab)
    before = {i: metrics(lab, i) for i in (1, 2)}
    for i in (1, 2):
        assert before[i][("yaim_addresses_held", ())] == len(holding(lab, i))
        assert before[i][("yaim_healthy", ())] == 1
        assert total(before[i], "yaim_dcs_requests_total", operation="read") > 0
        assert total(before[i], "yaim_checks_total", result="healthy") > 0
        assert total(before[i], "yaim_loop_duration_seconds_count", thread="balancer") > 0
        assert total(before[i], "yaim_fencing_events_total") == 0
    lost = holding(lab, 3)
    nodes[2].crash()
    lab.observer.wait_for(settled([1, 2]), CRASH_BOUND + 5, "takeover")
    after = {i: metrics(lab, i) for i in (1, 2)}
    took = sum(
        total(after[i], "yaim_takeovers_total", reason="free")
        - total(before[i], "yaim_takeovers_total", reason="free")
        for i in (1, 2)
    )
    assert took == len(lost)
    assert sum(after[i][("yaim_addresses_held", ())] for i in (1, 2)) == 6


def test_sighup_applies_log_level_and_check_settings_and_refuses_a_bad_file(lab):
    nodes, url = with_health(lab)
    node = nodes[0]
    before = lab.observer.holders()
    hup_at = time.monotonic()
    node.config.update({"log-level": "INFO", "check-fall": 2, "check-interval": 400, "ttl": 3000})
    node.write_config()
    node.signal(signal.SIGHUP)
    wait_until(lambda: "reloaded" in node.log(), 5, what="the reload in n1's log")
    after_reload = node.log().split("reloaded", 1)[1]
    assert "check-interval, check-fall, log-level applied" in after_reload.splitlines()[0]
    assert "ttl changed in" in after_reload and "needs a restart" in after_reload
    assert unchanged_for(lab, before, hup_at, 4 * INTERVAL / 1000) == []
    assert " DEBUG " not in node.log().split("needs a restart", 1)[1]

    # a new http-url takes effect at once: the new check fails, n1 lets go
    node.config["http-url"] = "http://127.0.0.1:8009/health"
    node.write_config()
    node.signal(signal.SIGHUP)
    lab.observer.wait_for(lambda h: not any(1 in n for n in h.values()), 10, "n1 to let go")
    assert "8009/health failed" in status(lab, 1)["health_reason"]
    node.config["http-url"] = url
    node.write_config()
    node.signal(signal.SIGHUP)
    lab.observer.wait_for(settled([1, 2, 3]), 10, "n1 healthy again")

    before = lab.observer.holders()
    hup_at = time.monotonic()
    node.config_path.write_text("interval: [\n")
    node.signal(signal.SIGHUP)
    wait_until(lambda: "reload refused" in node.log(), 5, what="the refusal in n1's log")
    assert unchanged_for(lab, before, hup_at, 4 * INTERVAL / 1000) == []
    assert node.running and status(lab, 1)["healthy"]
