"""yaim end to end: real daemons in namespaces, a real etcd, an observer of every interface.

Timing: interval 500 ms, ttl 2000 ms (a whole number of seconds, as etcd keeps
TTLs). The contract's bounds: a crash is repaired within ttl + 2 x interval +
1 s = 4 s; a clean stop, an unhealthy result or a new address within
2 x interval + 1 s = 2 s. The observer samples every interface every 50 ms and
the fixture's teardown fails the test on any address seen on two nodes.
Every test runs against both DCS APIs: `etcd` (v2 keys) and `etcd3` (v3, leases).
"""

from __future__ import annotations

import ipaddress
import signal
import sys
import time

import pytest

from lab.etcd import EtcdCluster
from lab.util import wait_until
from tests.integration.conftest import (
    CLEAN_BOUND,
    CRASH_BOUND,
    INTERVAL,
    POOL,
    TTL,
    counts,
    cut_n1_from_etcd,
    delete_address,
    put_address,
    settled,
    start_cluster,
    status,
    unchanged_for,
)

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_two_holders")]


@pytest.fixture(autouse=True, params=["etcd", "etcd3"])
def dcs_type(request, lab):
    """The API the nodes (and the test's own pool edits) speak."""
    lab.dcs_type = request.param
    return request.param


def mark_holders(lab):
    """Address -> holder name, from etcd itself."""
    return {ipaddress.ip_address(a): holder for a, holder in lab.keys().holders().items()}


def node_keys(lab):
    return lab.keys().nodes()


def seen_by_all(lab, nodes):
    """Wait until every node's own view (its /status) shows the holders the interfaces show:
    each has read the settled cluster, so each knows the marks a handover names."""
    expected = {str(a): f"n{h[0]}" for a, h in lab.observer.holders().items()}

    def agree():
        return all(
            {e["address"]: e["holder"] for e in status(lab, n.i)["ips"]} == expected for n in nodes
        )

    wait_until(agree, 5, what="every node to read the settled cluster")


def handed_over(nodes, addresses):
    """Whether one of `nodes` logged taking each of `addresses` as handed over (no probe)."""
    logs = "".join(node.log() for node in nodes)
    return all(f"took {a} on node n" in logs for a in addresses) and all(
        any(f"took {a} on node {n.name}: its holder had released it" in logs for n in nodes)
        for a in addresses
    )


def test_three_nodes_settle_two_each_and_marks_match_interfaces(lab):
    start_cluster(lab)
    holders = lab.observer.holders()
    assert sorted(counts(holders).values()) == [2, 2, 2]
    marks = mark_holders(lab)
    assert {a: f"n{holders[a][0]}" for a in POOL} == marks
    assert node_keys(lab) == {"n1", "n2", "n3"}
    for i in (1, 2, 3):
        assert lab.lab.addresses(i, label="lan0:yaim") == {a for a in POOL if holders[a] == [i]}


def test_crash_is_repaired_within_ttl_plus_two_intervals(lab):
    nodes = start_cluster(lab)
    lost = {a for a, h in lab.observer.holders().items() if h == [1]}
    crashed_at = time.monotonic()
    nodes[0].crash()
    sample = lab.observer.wait_for(settled([2, 3]), CRASH_BOUND + 5, "takeover")
    took = sample.time - crashed_at
    print(f"SIGKILL failover of {len(lost)} addresses: {took:.2f} s")
    assert took <= CRASH_BOUND
    assert sorted(counts(sample.holders).values()) == [3, 3]


def test_sigterm_releases_at_once_and_exits_zero(lab):
    nodes = start_cluster(lab)
    seen_by_all(lab, nodes)
    lost = {a for a, h in lab.observer.holders().items() if h == [1]}
    stopped_at = time.monotonic()
    nodes[0].signal(signal.SIGTERM)
    assert nodes[0].wait_exit(3) == 0
    exited = time.monotonic() - stopped_at
    sample = lab.observer.wait_for(settled([2, 3]), CLEAN_BOUND + 5, "takeover")
    took = sample.time - stopped_at
    print(f"SIGTERM: exit after {exited:.2f} s, failover {took:.2f} s")
    assert exited <= 1.5
    assert took <= CLEAN_BOUND
    assert lab.lab.addresses(1) == set()
    assert "n1" not in node_keys(lab)
    assert "n1" not in mark_holders(lab).values()
    assert handed_over(nodes[1:], lost), "released at exit: taken without a probe"


def test_unhealthy_node_drops_everything_and_comes_back(lab):
    urls = {i: lab.lab.start_health(i, 8008) for i in (1, 2, 3)}
    for address in POOL:
        put_address(lab, address)
    nodes = [lab.node(i, interval=INTERVAL, ttl=TTL, health_url=urls[i]).start() for i in urls]
    lab.observer.wait_for(settled([1, 2, 3]), 15, "the pool to settle")
    seen_by_all(lab, nodes)
    lost = {a for a, h in lab.observer.holders().items() if h == [1]}
    failed_at = time.monotonic()
    lab.lab.set_health(1, False)
    sample = lab.observer.wait_for(settled([2, 3]), CLEAN_BOUND + 5, "takeover")
    took = sample.time - failed_at
    print(f"unhealthy failover: {took:.2f} s")
    assert took <= CLEAN_BOUND + INTERVAL / 1000, lab.logs()  # + one check interval
    assert handed_over(nodes[1:], lost), "released when unhealthy: taken without a probe"
    assert lab.lab.addresses(1) == set()
    wait_until(lambda: "n1" not in node_keys(lab), 2, what="n1's node key to go")
    lab.lab.set_health(1, True)
    lab.observer.wait_for(settled([1, 2, 3]), 10, "n1 to take its share again\n")


def test_addresses_added_and_removed_with_the_seeds_curl(lab):
    start_cluster(lab)
    extra = ipaddress.ip_address("198.51.100.120")
    added_at = time.monotonic()
    put_address(lab, extra)
    sample = lab.observer.wait_for(
        settled([1, 2, 3], [*POOL, extra]), CLEAN_BOUND + 5, "the new address\n"
    )
    assert sample.time - added_at <= CLEAN_BOUND
    removed_at = time.monotonic()
    delete_address(lab, POOL[0])
    sample = lab.observer.wait_for(
        lambda h: POOL[0] not in h, CLEAN_BOUND + 5, "the removed address to go\n"
    )
    assert sample.time - removed_at <= CLEAN_BOUND
    lab.observer.wait_for(settled([1, 2, 3], [*POOL[1:], extra]), 5, "rebalance")
    assert str(POOL[0]) not in lab.keys().pool()


def test_an_invalid_entry_is_logged_once_and_changes_nothing(lab):
    nodes = start_cluster(lab)
    before = lab.observer.holders()
    put_at = time.monotonic()
    put_address(lab, "not-an-ip")
    put_address(lab, "198.51.100.300")
    wait_until(
        lambda: all("'198.51.100.300'" in n.log() for n in nodes),
        5,
        what="the refusal in every log",
    )
    assert unchanged_for(lab, before, put_at, 4 * INTERVAL / 1000) == []
    for node in nodes:
        assert node.log().count("refused pool entry 'not-an-ip'") == 1
        assert node.running


def test_node_cut_off_from_etcd_fences_before_its_marks_expire(lab):
    start_cluster(lab)
    cut_at, gone, taken = cut_n1_from_etcd(lab)
    print(f"cut off: n1 fenced after {gone - cut_at:.2f} s, others took over after", end=" ")
    print(f"{taken - cut_at:.2f} s")
    assert gone - cut_at < TTL / 1000
    assert gone < taken
    assert "fenced" in lab.nodes[0].log()
    lab.lab.link(1, "dcs0", up=True)
    lab.observer.wait_for(settled([1, 2, 3]), 10, "n1 to rejoin\n")


def test_one_stopped_member_of_three_changes_nothing(lab):
    hosts = ["192.0.2.2", "192.0.2.3", "192.0.2.2"]
    with EtcdCluster(
        size=3, netns=lab.lab.hub, host=hosts, base_dir=lab.lab.base_dir / "etcd3"
    ) as cluster:
        for address in POOL:
            put_address(lab, address, endpoint="192.0.2.3")
        for i in (1, 2, 3):
            lab.node(i, interval=INTERVAL, ttl=TTL, dcs_endpoints=cluster.endpoints).start()
        lab.observer.wait_for(settled([1, 2, 3]), 15, "the pool to settle")
        before = lab.observer.holders()
        stopped_at = time.monotonic()
        cluster.stop_member(0)
        assert unchanged_for(lab, before, stopped_at, 3 * TTL / 1000) == []
        lab.nodes.clear()
        lab.lab.stop_processes()


def test_leftovers_are_removed_and_a_hand_removed_address_comes_back(lab):
    leftover = "198.51.100.199/32"
    lab.lab.ip(lab.lab.node_ns(1), "addr", "add", leftover, "dev", "lan0", "label", "lan0:yaim")
    foreign = "198.51.100.198/32"
    lab.lab.ip(lab.lab.node_ns(1), "addr", "add", foreign, "dev", "lan0")
    start_cluster(lab)
    addresses = lab.lab.addresses(1)
    assert ipaddress.ip_address("198.51.100.199") not in addresses
    assert ipaddress.ip_address("198.51.100.198") in addresses
    mine = sorted(a for a, h in lab.observer.holders().items() if h == [1])
    lab.lab.ip(lab.lab.node_ns(1), "addr", "del", f"{mine[0]}/32", "dev", "lan0")
    lab.observer.wait_for(lambda h: h.get(mine[0]) == [1], 3, "the address to be re-added")
    assert f"re-adding {mine[0]}" in lab.nodes[0].log()


def test_a_takeover_is_announced_to_the_neighbours(lab):
    start_cluster(lab)
    net = lab.lab
    for address in POOL:
        net.run(net.cli, ["ping", "-c1", "-W1", str(address)])
    macs = {i: net.mac(net.node_ns(i)) for i in (1, 2, 3)}
    moved = sorted(a for a, h in lab.observer.holders().items() if h == [1])
    assert all(net.neigh(net.cli)[a] == macs[1] for a in moved)
    lab.nodes[0].crash()
    sample = lab.observer.wait_for(settled([2, 3]), CRASH_BOUND + 5, "takeover")
    expected = {a: macs[sample.holders[a][0]] for a in moved}
    wait_until(
        lambda: {a: net.neigh(net.cli).get(a) for a in moved} == expected,
        1.0,
        what="the client's ARP cache to follow the takeover without traffic",
    )


def test_cleanup_after_a_sigkill_leaves_nothing_behind(lab):
    nodes = start_cluster(lab)
    mine = {a for a, h in lab.observer.holders().items() if h == [1]}
    nodes[0].signal(signal.SIGKILL)
    nodes[0].wait_exit(3)
    assert lab.lab.addresses(1) == mine, "a SIGKILLed daemon leaves its addresses"
    argv = [sys.executable, "-m", "yaim", "--cleanup", "-c", str(nodes[0].config_path)]
    done = lab.lab.run(lab.lab.node_ns(1), argv, check=False)
    assert done.returncode == 0, done.stderr
    assert lab.lab.addresses(1) == set()
    assert "n1" not in mark_holders(lab).values()
    assert "n1" not in node_keys(lab)
    lab.observer.wait_for(settled([2, 3]), CLEAN_BOUND + 5, "takeover")


def test_a_pool_of_both_families_settles(lab):
    both = [*POOL, ipaddress.ip_address("2001:db8::100")]
    for address in both:
        put_address(lab, address)
    for i in (1, 2, 3):
        lab.node(i, interval=INTERVAL, ttl=TTL).start()
    lab.observer.wait_for(settled([1, 2, 3], both), 15, "IPv4 and IPv6 to settle")
    assert all(node.running for node in lab.nodes)
