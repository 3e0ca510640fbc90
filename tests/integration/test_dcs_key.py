"""`checker-type: dcs-key` against a real etcd, both APIs: the backends' `follow_key` (a
read, a watch of one key that answers a change at once and nothing after its timeout,
a lost history read afresh) and the checker on them, as Patroni's leader key moves."""

from __future__ import annotations

import ipaddress
import threading
import time

import pytest

from lab.etcd import ClusterKeys
from tests.integration.conftest import CLEAN_BOUND, INTERVAL, TTL, b64, lose_history, v3
from yaim import checks, config

both = pytest.mark.parametrize("make", ["etcd", "etcd3"], indirect=True)

WAIT = 2.0  # s a follow may wait: far above what a change needs to arrive


def leader_key(make) -> str:
    """A Patroni-like key outside the yaim cluster's directory, one per test."""
    return f"/service/{make.root.rsplit('/', 1)[1]}-pg/leader"


def put(make, etcd, key: str, value: str) -> None:
    if make.dcs_type == "etcd3":
        v3(etcd, "/v3/kv/put", {"key": b64(key), "value": b64(value)})
    else:
        etcd.put(key, value)


def delete(make, etcd, key: str) -> None:
    if make.dcs_type == "etcd3":
        v3(etcd, "/v3/kv/deleterange", {"key": b64(key)})
    else:
        etcd.delete(key)


@both
def test_a_read_gives_the_value_and_a_revision_to_follow_from(make, etcd):
    handle, key = make("n1"), leader_key(make)
    absent = handle.follow_key(key, None, WAIT)
    assert absent.value is None and absent.revision > 0
    put(make, etcd, key, "pg1")
    present = handle.follow_key(key, None, WAIT)
    assert present.value == "pg1" and present.revision > absent.revision


@both
def test_a_follow_answers_a_change_at_once_and_none_when_nothing_changed(make, etcd):
    handle, key = make("n1"), leader_key(make)
    put(make, etcd, key, "pg1")
    seen = handle.follow_key(key, None, WAIT)
    put(make, etcd, "/elsewhere/other", "x")  # another key's change is none of this one's
    started = time.monotonic()
    assert handle.follow_key(key, seen.revision, 0.5) is None
    assert 0.4 < time.monotonic() - started < 1.5
    threading.Timer(0.3, put, (make, etcd, key, "pg2")).start()
    started = time.monotonic()
    changed = handle.follow_key(key, seen.revision, WAIT)
    assert changed.value == "pg2" and changed.revision > seen.revision
    assert time.monotonic() - started < 1.0  # the change, not the timeout
    delete(make, etcd, key)
    gone = handle.follow_key(key, changed.revision, WAIT)
    assert gone.value is None and gone.revision > changed.revision


@both
def test_a_change_made_before_the_follow_began_is_not_missed(make, etcd):
    handle, key = make("n1"), leader_key(make)
    put(make, etcd, key, "pg1")
    seen = handle.follow_key(key, None, WAIT)
    put(make, etcd, key, "pg2")  # between two checks
    assert handle.follow_key(key, seen.revision, WAIT).value == "pg2"


@both
def test_a_lost_history_is_read_afresh(make, etcd):
    handle, key = make("n1"), leader_key(make)
    put(make, etcd, key, "pg1")
    seen = handle.follow_key(key, None, WAIT)
    put(make, etcd, key, "pg3")
    lose_history(make, etcd)
    fresh = handle.follow_key(key, seen.revision, WAIT)
    assert fresh.value == "pg3"


def checker_for(make, tmp_path, key: str, endpoint: str):
    """The checker a vip-manager file makes: trigger-key alone sets checker-type."""
    path = tmp_path / "vip-manager.yml"
    path.write_text(
        f"dcs-type: {make.dcs_type}\ndcs-endpoints: [{endpoint}]\ninterface: lo\n"
        f"ip: 198.51.100.10\ntrigger-key: {key}\ntrigger-value: pg1\n"
        "interval: 500\nttl: 2000\nretry-after: 50\n"
    )
    cfg = config.load(str(path), environ={})
    assert cfg.checker_type == "dcs-key"
    return checks.create(cfg, lambda: make("n1", endpoints=[endpoint]))


@both
def test_the_checker_follows_the_leader_key_and_keeps_its_word_while_etcd_is_away(
    make, etcd, relay, tmp_path
):
    key = leader_key(make)
    checker = checker_for(make, tmp_path, key, relay.endpoint)
    first = checker.check()
    assert not first.healthy and "is not set" in first.reason
    threading.Timer(0.2, put, (make, etcd, key, "pg1")).start()
    result = checker.check()  # the watch brings the change
    assert result.healthy and "holds 'pg1'" in result.reason
    assert checker.pause(0.5) == 0.0  # the watch waited: check again at once
    assert not checker.retried  # the DCS's requests are tried already
    put(make, etcd, key, "pg2")
    result = checker.check()
    assert not result.healthy and "holds 'pg2', not 'pg1'" in result.reason
    put(make, etcd, key, "pg1")
    assert checker.check().healthy
    relay.close()  # etcd gone: the last word stands, and the next check waits
    kept = checker.check()
    assert kept.healthy and "unreadable" in kept.reason and "kept" in kept.reason
    assert checker.pause(0.5) == 0.5


@both
def test_before_any_answer_the_node_is_unhealthy(make, relay, tmp_path):
    checker = checker_for(make, tmp_path, leader_key(make), relay.endpoint)
    relay.close()
    result = checker.check()
    assert not result.healthy and "cannot be read" in result.reason


# --- a vip-manager file's cluster in the lab: the address follows the leader key ------

VIP = ipaddress.ip_address("198.51.100.100")
SCOPE = "/service/pgcluster"


@pytest.fixture(params=["etcd", "etcd3"])
def vip_lab(request, lab):
    """Three nodes with vip-manager's keys only (no checker-type, no pool entry): the
    one address follows Patroni's leader key, which the test writes."""
    lab.dcs_type = request.param
    leader = ClusterKeys(lab.etcd, request.param, root=SCOPE)
    leader.put_key("/leader", "n1")
    for i in (1, 2, 3):
        lab.node(
            i,
            interval=INTERVAL,
            ttl=TTL,
            checker_type=None,  # a vip-manager file names none: trigger-key makes it dcs-key
            ip=str(VIP),
            trigger_key=SCOPE + "/leader",
        ).start()
    return lab, leader


def held_by(i):
    """A predicate: VIP on node i alone (None: on no node)."""
    return lambda holders: list(holders.get(VIP, ())) == ([] if i is None else [i])


@pytest.mark.netns
@pytest.mark.usefixtures("no_two_holders")
def test_the_address_follows_the_leader_key_on_both_apis(vip_lab):
    lab, leader = vip_lab
    lab.observer.wait_for(held_by(1), 15, f"{VIP} on n1, the leader")
    cluster = ClusterKeys(lab.etcd, lab.dcs_type, root=f"/service/vip-{VIP}")
    assert cluster.pool() == {str(VIP)}  # the nodes put their ip into the pool
    for new in (2, 3, 1):
        switched_at = time.monotonic()
        leader.put_key("/leader", f"n{new}")
        sample = lab.observer.wait_for(held_by(new), CLEAN_BOUND + 5, f"{VIP} on n{new}")
        took = sample.time - switched_at
        print(f"{lab.dcs_type}: leader key to n{new}: {VIP} there after {took:.2f} s")
        assert took <= CLEAN_BOUND
    leader.put_key("/leader", None)  # no leader (Patroni between two): nobody holds it
    lab.observer.wait_for(held_by(None), CLEAN_BOUND + 5, f"{VIP} on no node")
    assert "trigger-key /service/pgcluster/leader is not set" in lab.nodes[0].log()
