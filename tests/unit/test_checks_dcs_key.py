"""`checker-type: dcs-key` with a scripted key source (the real etcd: the integration
test_dcs_key.py), and a vip-manager file as yaim reads it."""

from __future__ import annotations

import ipaddress
import threading
from types import SimpleNamespace

import pytest
import yaml

from tests.unit.fakes import V4, V6, FakeDCS, healthy_balancer
from yaim import checks, config, conflicts
from yaim.checks.dcs_key import Checker
from yaim.claims import Ledger
from yaim.errors import CheckError, DCSError
from yaim.state import NodeState
from yaim.threads.health import HealthThread

KEY = "/service/pg/leader"


class Source:
    """Answers follow_key from a script: a (value, revision), None (no change), or an
    exception to raise; records the `after` of each call."""

    def __init__(self, *script):
        self.script = list(script)
        self.afters = []

    def follow_key(self, key, after, timeout):
        assert key == KEY and timeout == 1.0
        self.afters.append(after)
        answer = self.script.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def checker(*script) -> Checker:
    settings = SimpleNamespace(trigger_key=KEY, trigger_value="pg1", check_interval_s=1.0)
    return Checker(settings, Source(*script))


def test_healthy_exactly_while_the_key_holds_the_value():
    check = checker(("pg2", 5), None, ("pg1", 9), (None, 12))
    results = [check.check() for _ in range(4)]
    assert [r.healthy for r in results] == [False, False, True, False]
    assert results[0].reason == f"trigger-key {KEY} holds 'pg2', not 'pg1'"
    assert results[3].reason == f"trigger-key {KEY} is not set"
    assert check.source.afters == [None, 5, 5, 9]  # a read, then follows from the last change


def test_a_value_that_merely_starts_with_the_trigger_value_is_not_it():
    assert not checker(("pg10", 3)).check().healthy


def test_the_last_answer_stands_while_the_dcs_is_away_and_the_next_check_waits():
    check = checker(("pg1", 5), DCSError("etcd unreachable"), ("pg2", 8))
    assert check.check().healthy and check.pause(1.0) == 0.0
    kept = check.check()
    assert kept.healthy and "unreadable (etcd unreachable); kept" in kept.reason
    assert check.pause(1.0) == 1.0
    assert not check.check().healthy and check.source.afters == [None, 5, 5]


def test_without_any_answer_the_node_is_unhealthy():
    result = checker(DCSError("etcd unreachable")).check()
    assert not result.healthy and "cannot be read: etcd unreachable" in result.reason


def test_its_answers_are_not_tried_again_and_it_paces_itself():
    check = checker(("pg2", 5), None)
    settings = SimpleNamespace(
        retry_num=3, retry_after_s=0.0, check_rise=1, check_fall=1, node_name="n1"
    )
    thread = HealthThread(
        check, NodeState(), settings, print, period=1.0, stop=threading.Event(), on_crash=print
    )
    thread.step([])
    assert check.source.afters == [None]  # one try, not retry-num
    assert thread.next_timeout() == 0.0  # the follow waits, not the thread


def test_create_hands_a_dcs_handle_only_to_a_checker_that_reads_the_dcs():
    settings = SimpleNamespace(checker_type="dcs-key", trigger_key=KEY)
    made = []
    created = checks.create(settings, lambda: made.append(1) or Source())
    assert isinstance(created, Checker) and made == [1]
    with pytest.raises(CheckError, match="needs the DCS"):
        checks.create(settings)
    checks.create(SimpleNamespace(checker_type="none"), lambda: made.append(2))
    assert made == [1]


VIP_MANAGER_FILE = {  # vip-manager 1.0's keys, as its README lists them
    "ip": "198.51.100.10",
    "netmask": 24,
    "interface": "eth0",
    "trigger-key": KEY,
    "trigger-value": "pg1",
    "dcs-type": "etcd",
    "dcs-endpoints": ["http://192.0.2.1:2379", "http://192.0.2.2:2379"],
    "etcd-user": "patroni",
    "etcd-password": "snakeoil",
    "interval": 1000,
    "retry-after": 250,
    "retry-num": 3,
    "manager-type": "basic",
    "verbose": False,
}


def load(tmp_path, data):
    path = tmp_path / "vip-manager.yml"
    path.write_text(yaml.safe_dump(data))
    return config.load(str(path), {})


def test_a_vip_manager_file_runs_as_a_one_address_cluster_on_the_leader_key(tmp_path):
    cfg = load(tmp_path, VIP_MANAGER_FILE)
    assert cfg.checker_type == "dcs-key" and cfg.trigger_key == KEY
    assert cfg.trigger_value == "pg1" and cfg.netmask == 24
    assert cfg.ip == ipaddress.ip_address("198.51.100.10")
    assert cfg.dcs_clustername == "vip-198.51.100.10"  # a directory of its own per address
    assert cfg.log_level == "INFO" and cfg.as_dict()["ip"] == "198.51.100.10"


def test_vip_manager_defaults_trigger_value_to_the_node_name_and_verbose_to_debug(tmp_path):
    data = dict(VIP_MANAGER_FILE, verbose=True, **{"node-name": "db2"})
    del data["trigger-value"]
    cfg = load(tmp_path, data)
    assert cfg.trigger_value == "db2" and cfg.log_level == "DEBUG"


def test_an_ipv6_address_gets_a_cluster_name_without_colons(tmp_path):
    cfg = load(tmp_path, dict(VIP_MANAGER_FILE, ip="2001:db8::10"))
    assert cfg.dcs_clustername == "vip-2001-db8--10"


def test_an_explicit_cluster_name_and_checker_win(tmp_path):
    data = dict(VIP_MANAGER_FILE, **{"dcs-clustername": "writer", "checker-type": "none"})
    cfg = load(tmp_path, data)
    assert cfg.dcs_clustername == "writer" and cfg.checker_type == "none"


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"ip": "198.51.100.10/24"}, "ip: must be one address"),
        ({"ip": "fe80::1%eth0"}, "ip: must be one address"),
        ({"ip": "not-an-address"}, "ip: not an IP address"),
        ({"ip": "203.0.113.5", "allowed-networks": ["198.51.100.0/24"]}, "outside allowed"),
        ({"trigger-key": "service/pg/leader"}, "trigger-key: must be an absolute key path"),
        ({"trigger-key": "/service/../leader"}, "trigger-key: must not hold empty, '.' or '..'"),
        ({"trigger-key": "/service//leader"}, "trigger-key: must not hold empty"),
        ({"trigger-key": "/service/pg/leader?wait=true"}, "trigger-key: must not hold '?'"),
        ({"trigger-key": "/" + "k" * 1100}, "at most 1024 characters"),
        ({"trigger-key": None, "checker-type": "dcs-key"}, "trigger-key: required when"),
        ({"trigger-value": 200}, "trigger-value: must be a string"),
        ({"manager-type": "hetzner"}, "manager-type: must be one of basic"),
        ({"verbose": "loud"}, "verbose: must be true or false"),
    ],
)
def test_bad_vip_manager_values_are_refused_naming_the_key(tmp_path, overrides, fragment):
    with pytest.raises(config.ConfigError) as caught:
        load(tmp_path, dict(VIP_MANAGER_FILE, **overrides))
    assert any(fragment in problem for problem in caught.value.problems), caught.value.problems


def test_the_balancer_puts_the_configured_ip_into_the_pool_once_where_it_is_missing(monkeypatch):
    monkeypatch.setattr(conflicts, "probe", lambda ifname, addresses, duration: {})
    store, ledger = FakeDCS([]), Ledger("n1", 3.0)
    thread = healthy_balancer(store, ledger, ip=V4)
    thread.step([])
    assert store.pool == {str(V4)} and store.calls.count(f"add {V4}") == 1
    thread.step([])  # there now, and this round's snapshot shows it: no second write
    thread.step([])
    assert store.calls.count(f"add {V4}") == 1
    assert ledger.claimed() == {V4}  # and the healthy node took it
    store.pool.clear()  # an operator removed it: the next look puts it back
    thread.step([])
    assert store.calls.count(f"add {V4}") == 2


def test_a_configured_ip_spelled_otherwise_in_the_pool_is_added_as_the_pool_takes_it(
    monkeypatch,
):
    """The pool refuses a name not in canonical form; the node adds the canonical one."""
    monkeypatch.setattr(conflicts, "probe", lambda ifname, addresses, duration: {})
    store = FakeDCS(["2001:db8:0::7"])
    thread = healthy_balancer(store, Ledger("n1", 3.0), ip=V6)
    thread.step([])
    assert store.pool == {"2001:db8:0::7", str(V6)} and store.calls.count(f"add {V6}") == 1
