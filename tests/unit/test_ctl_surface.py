"""The daemon's operator surface without a network: the status endpoint on loopback,
the metrics, the health thread's reconfiguration and SIGHUP's reload decisions."""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import signal
import threading
import time
from types import SimpleNamespace

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from yaim import cli, config, ctl, daemon, dcs, reload
from yaim.checks import BaseChecker, CheckResult
from yaim.events import REASONS
from yaim.link import Link
from yaim.metrics import CONTENT_TYPE, Metrics
from yaim.state import NodeState, Reading
from yaim.status import Sources, StatusError, StatusServer
from yaim.threads.failsafe import FailsafeThread
from yaim.threads.health import HealthThread, Reconfigure
from yaim.view import Mark, Snapshot, parse_snapshot

# --- the status endpoint ---


@pytest.fixture
def server():
    """A StatusServer on a free loopback port whose sources the test sets."""
    state = {"health": (True, "healthy: fine"), "status": {"node": "n1"}}

    def broken() -> bytes:
        raise RuntimeError("a bug in a source")

    sources = Sources(
        lambda: state["health"],
        lambda: state["status"],
        lambda: b"yaim_x 1\n" if not state.get("broken") else broken(),
        CONTENT_TYPE,
    )
    running = StatusServer(("127.0.0.1", 0), sources).start()
    running.state = state
    yield running
    running.stop()
    assert not running.thread.is_alive()


def fetch(server, path, method="GET"):
    connection = http.client.HTTPConnection(*server.address, timeout=5)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read().decode()
    finally:
        connection.close()


def test_health_answers_200_or_503_with_the_reason(server):
    assert fetch(server, "/health") == (200, "text/plain; charset=utf-8", "healthy: fine\n")
    server.state["health"] = (False, "unhealthy: GET failed")
    assert fetch(server, "/health")[::2] == (503, "unhealthy: GET failed\n")


def test_status_is_json_and_metrics_are_prometheus_text(server):
    code, kind, body = fetch(server, "/status?pretty")
    assert (code, kind, json.loads(body)) == (200, "application/json", {"node": "n1"})
    code, kind, body = fetch(server, "/metrics")
    assert (code, kind, body) == (200, CONTENT_TYPE, "yaim_x 1\n")


def test_only_get_is_served(server):
    for method in ("POST", "PUT", "DELETE", "PATCH", "HEAD"):
        assert fetch(server, "/health", method)[0] == 405, method
    assert fetch(server, "/")[0] == 404


def test_a_failing_source_is_a_500_and_the_endpoint_lives_on(server):
    server.state["broken"] = True
    assert fetch(server, "/metrics")[0] == 500
    assert fetch(server, "/health")[0] == 200


def test_an_address_in_use_is_a_clear_error(server):
    with pytest.raises(StatusError, match=r"status-listen: cannot listen on 127\.0\.0\.1:"):
        StatusServer(server.address, server.server.sources)


# --- metrics ---


def test_every_metric_is_named_yaim_and_the_text_parses():
    metrics = Metrics()
    metrics.dcs_request("read", 0.01, True)
    metrics.dcs_request("read", 0.5, False)
    metrics.takeovers.labels("free").inc()
    metrics.fencing.labels("deadline").inc()
    families = {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}
    assert all(name.startswith("yaim_") for name in families), sorted(families)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families.values()
        for s in family.samples
    }
    assert samples[("yaim_dcs_requests_total", (("operation", "read"),))] == 2
    assert samples[("yaim_dcs_request_errors_total", (("operation", "read"),))] == 1
    assert samples[("yaim_takeovers_total", (("reason", "free"),))] == 1
    assert samples[("yaim_fencing_events_total", (("cause", "deadline"),))] == 1


def test_the_dcs_reports_every_try_to_its_observer(tmp_path):
    path = tmp_path / "yaim.yml"
    path.write_text(yaml.safe_dump({"interface": "lo", "checker-type": "none", "retry-after": 1}))
    seen = []
    store = dcs.connect(config.load(str(path), {}), observe=lambda *a: seen.append(a))
    answers = [dcs.Transient("refused"), "done"]

    def attempt(endpoint):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert store._retry("refresh /service/yaim/ips/198.51.100.1/marked", attempt) == "done"
    assert [(kind, ok) for kind, _, ok in seen] == [("refresh", False), ("refresh", True)]
    assert all(0 <= seconds < 1 for _, seconds, _ in seen)


def test_every_reason_of_a_take_release_or_fence_has_its_series_from_the_start():
    text = Metrics().exposition().decode()
    for event, metric, label in (
        ("take", "yaim_takeovers_total", "reason"),
        ("release", "yaim_releases_total", "reason"),
        ("fence", "yaim_fencing_events_total", "cause"),
    ):
        for reason in REASONS[event]:
            assert f'{metric}{{{label}="{reason}"}} 0.0' in text


# --- the health thread takes new settings and a new checker ---


class Fixed(BaseChecker):
    def __init__(self, healthy: bool) -> None:
        self.healthy = healthy
        self.closed = False

    def check(self) -> CheckResult:
        return CheckResult(self.healthy, f"fixed {self.healthy}")

    def close(self) -> None:
        self.closed = True


def settings(**values):
    base = {"retry_num": 1, "retry_after_s": 0.0, "check_rise": 1, "check_fall": 1}
    base.update(node_name="n1", check_interval_s=1.0)
    return SimpleNamespace(**dict(base, **values))


def test_reconfigure_swaps_checker_and_settings_and_keeps_the_health_state():
    state = NodeState()
    old = Fixed(True)
    metrics = Metrics()
    thread = HealthThread(
        old,
        state,
        settings(),
        lambda healthy: None,
        period=1.0,
        stop=threading.Event(),
        on_crash=print,
        metrics=metrics,
    )
    thread.step([])
    assert state.healthy
    new = Fixed(False)
    thread.step([Reconfigure(settings(check_fall=2, check_interval_s=0.4), new)])
    assert old.closed and thread.checker is new and thread.period == 0.4
    assert state.healthy, "one bad result of two needed"
    thread.step([])
    assert not state.healthy
    checks = {
        s.labels["result"]: s.value
        for f in text_string_to_metric_families(metrics.exposition().decode())
        if f.name == "yaim_checks"
        for s in f.samples
        if s.name == "yaim_checks_total"
    }
    assert checks == {"healthy": 1, "unhealthy": 2}


# --- SIGHUP: what is applied, what waits for a restart, what is refused ---


class Store:
    """Stands in for a DCS backend: the daemon only keeps it and reads its freshness."""

    CACHEABLE = False
    problem = None

    def check_release(self) -> None:
        """The stand-in's server serves what the daemon speaks."""

    def __init__(self, config, **kwargs) -> None:
        self.node = config.node_name
        self.endpoint = config.dcs_endpoints[0]
        self.root = f"/{config.dcs_namespace}/{config.dcs_clustername}"
        self.last_success = None
        self.config = config

    def clone(self) -> Store:
        return Store(self.config)


@pytest.fixture
def node(tmp_path, monkeypatch):
    """A Daemon that is built but not run, on a file the test rewrites."""
    monkeypatch.setattr(dcs, "connect", Store)
    path = tmp_path / "yaim.yml"
    values = {"interface": "lo", "checker-type": "none", "node-name": "n1", "log-level": "INFO"}
    path.write_text(yaml.safe_dump(values))
    made = daemon.Daemon(config.load(str(path)))
    made.values, made.path = values, path
    yield made
    logging.getLogger().setLevel(logging.WARNING)


def rewrite(node, **changes):
    node.values.update({key.replace("_", "-"): value for key, value in changes.items()})
    node.path.write_text(yaml.safe_dump(node.values))


def hup(node):
    """SIGHUP as the daemon gets it: the handler queues it, the main loop reloads."""
    node._on_signal(signal.SIGHUP, None)
    node._handle_signals()


def queued(thread):
    items = []
    while not thread.inbox.empty():
        items.append(thread.inbox.get_nowait())
    return items


def test_reload_applies_live_keys_and_reports_the_rest(node, caplog):
    caplog.set_level(logging.INFO)
    rewrite(node, check_fall=3, check_interval=700, log_level="DEBUG", ttl=6000, interface="eth9")
    hup(node)
    assert (node.config.check_fall, node.config.check_interval) == (3, 700)
    assert (node.config.ttl, node.config.interface) == (3000, "lo")
    assert logging.getLogger().level == logging.DEBUG
    [message] = queued(node.health)
    assert isinstance(message, Reconfigure) and message.config.check_fall == 3
    assert "check-interval, check-fall, log-level applied" in caplog.text
    assert "ttl, interface changed in" in caplog.text and "needs a restart" in caplog.text


def test_a_peer_listen_found_at_start_is_no_change_on_reload(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(dcs, "connect", Store)
    (tmp_path / "peer.key").write_bytes(b"a shared secret of the cluster")
    path = tmp_path / "yaim.yml"
    values = {
        "interface": "lo",
        "checker-type": "none",
        "peer-secret-file": str(tmp_path / "peer.key"),
    }
    path.write_text(yaml.safe_dump(values))
    made = daemon.Daemon(config.load(str(path)))
    try:
        assert made.config.peer_listen == "127.0.0.1:9721"
        hup(made)
        assert made.config.peer_listen == "127.0.0.1:9721"
        assert "needs a restart" not in caplog.text
    finally:
        for thread in made.threads:
            if isinstance(thread, FailsafeThread):
                thread.server.server_close()


def test_reload_of_log_level_only_keeps_the_checker(node):
    rewrite(node, log_level="WARNING")
    hup(node)
    assert queued(node.health) == [] and logging.getLogger().level == logging.WARNING


def test_a_bad_file_is_refused_and_the_running_config_kept(node, caplog):
    running = node.config
    node.path.write_text("check-fall: 0\ninterval: [\n")
    hup(node)
    rewrite(node, check_fall=0)
    hup(node)
    assert node.config is running and queued(node.health) == []
    assert caplog.text.count("reload refused, keeping the running configuration") == 2


def test_reload_of_notify_commands_keeps_the_checker(node, caplog):
    caplog.set_level(logging.INFO)
    rewrite(node, notify_take=["systemctl", "reload", "haproxy"], notify_timeout=800)
    hup(node)
    assert node.notifier.config.notify_take == ("systemctl", "reload", "haproxy")
    assert node.notifier.config.notify_timeout == 800 and queued(node.health) == []
    assert "notify-take, notify-timeout applied" in caplog.text


def test_live_keys():
    assert all(map(reload.is_live, ["log-level", "check-rise", "checker-type", "http-url"]))
    assert all(map(reload.is_live, ["notify-take", "notify-health", "notify-timeout"]))
    assert not any(map(reload.is_live, ["interface", "ttl", "dcs-endpoints", "status-listen"]))


def test_a_signal_handler_only_queues_the_signal_and_the_main_loop_acts(node, caplog):
    """It logged from inside the handler, which can interrupt a write to the log."""
    caplog.set_level(logging.DEBUG)
    node._on_signal(signal.SIGTERM, None)
    assert caplog.records == [] and not node.stop.is_set() and node.signals == [signal.SIGTERM]
    node.wakeup.wait(5)  # set by the handler: returns at once
    node._handle_signals()
    assert node.stop.is_set() and node.signals == []
    assert "received SIGTERM: releasing everything and stopping" in caplog.text


# --- /health and /status from the daemon's state ---


def test_health_needs_a_healthy_node_and_a_fresh_dcs_session(node):
    report = node.report
    assert report.health() == (False, "unhealthy: not checked yet")
    node.state.set_health(True, "always")
    assert report.health() == (False, "DCS session stale: last successful request never")
    node.heartbeat.dcs.last_success = time.monotonic() - 5
    assert report.health()[1] == "DCS session stale: last successful request 5.0 s ago"
    node.balancer.dcs.last_success = time.monotonic()
    assert report.health() == (True, "healthy: always")
    status = report.status()
    assert status["dcs"]["fresh"] and status["dcs"]["endpoint"] == "http://127.0.0.1:2379"
    assert (status["node"], status["healthy"], status["drained"]) == ("n1", True, False)
    assert status["addresses"] == [] and status["cluster"] == "/service/yaim"
    assert (status["ips"], status["nodes"], status["problems"]) == ([], [], [])


def test_a_link_down_is_503_with_its_cause_in_health_status_metric_and_notify(node):
    node.state.set_health(True, "always")
    node.balancer.dcs.last_success = time.monotonic()
    submitted = []
    node.notifier.submit = lambda *event: submitted.append(event)
    node._on_link_change(Link(False, "lo has no carrier"))
    assert node.report.health() == (False, "link down: lo has no carrier")
    assert node.report.status()["link"] == {"up": False, "cause": "lo has no carrier"}
    assert b"yaim_link_up 0.0" in node.metrics.exposition()
    assert submitted == [("health", None, "lo has no carrier")]
    assert not node.notifier.healthy(), "YAIM_HEALTHY=0 while the link is down"
    node._on_link_change(Link(True, "lo is up again for 1 s"))
    assert node.report.health() == (True, "healthy: always")


def test_status_shows_the_cluster_in_yaimctl_status_s_shape(node):
    """/status and `yaimctl status --json` render the cluster with one function."""
    snapshot = Snapshot(
        pool=frozenset({"198.51.100.1", "198.51.100.2"}),
        marks={"198.51.100.1": Mark("n1", 2.0)},
        nodes=frozenset({"n1"}),
    )
    view, rejected = parse_snapshot(snapshot)
    node.state.latest = Reading(snapshot, view, rejected)
    node.ledger.hold(ipaddress.ip_address("198.51.100.1"), time.monotonic(), "free")
    status = node.report.status()
    expected = ctl.status_value(ctl.summarize(snapshot), "/service/yaim", "http://127.0.0.1:2379")
    assert {key: status[key] for key in expected} == expected
    assert status["addresses"] == ["198.51.100.1"]
    assert status["problems"] == ["not held by any node: 198.51.100.2"]


# --- log destinations ---


def test_log_file_is_used_and_one_that_cannot_be_opened_is_a_config_error(tmp_path, capsys):
    path = tmp_path / "yaim.yml"
    values = {"interface": "lo", "checker-type": "none", "log-file": str(tmp_path / "yaim.log")}
    path.write_text(yaml.safe_dump(values))
    [handler] = cli.log_handlers(config.load(str(path), {}))
    handler.handle(logging.makeLogRecord({"msg": "took 198.51.100.1 on node n1: it was free"}))
    handler.close()
    assert "took 198.51.100.1" in (tmp_path / "yaim.log").read_text()

    values["log-file"] = str(tmp_path / "missing" / "yaim.log")
    path.write_text(yaml.safe_dump(values))
    assert cli.main(["-c", str(path)]) == 2
    assert f"{path}: log-file: cannot open it: " in capsys.readouterr().err


def test_a_dcs_problem_is_503_with_its_words_in_health_and_status(node):
    node.state.set_health(True, "always")
    node.balancer.dcs.last_success = time.monotonic()
    node.heartbeat.dcs.problem = "etcd 3.5.16 at http://127.0.0.1:2379 serves no v2 API"
    assert node.report.health() == (False, "DCS unusable: " + node.heartbeat.dcs.problem)
    assert node.report.status()["dcs"]["problem"] == node.heartbeat.dcs.problem
