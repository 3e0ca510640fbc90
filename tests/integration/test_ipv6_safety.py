"""IPv6 end to end, neighbour announcements and address safety, in the namespace lab.

An IPv6 pool spreads and fails over like an IPv4 one, and the takeover reaches
a neighbour's cache by unsolicited neighbour advertisement alone (the IPv4 twin,
gratuitous ARP, is test_daemon's test_a_takeover_is_announced_to_the_neighbours).
A pool address that a host outside yaim already has (the lab's client, `cli`) is
never taken: the probe hears it, and the conflict note in etcd keeps every node
off it. An address outside allowed-networks never reaches an interface. After
a SIGKILL, `yaim --cleanup` removes the IPv6 addresses too, and nothing it did
not add. Timing as in test_daemon (interval 500 ms, ttl 2000 ms).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import signal
import sys
import time
from typing import Dict

import pytest

from lab.etcd import etcd_request
from lab.util import wait_until
from tests.integration.conftest import CRASH_BOUND, INTERVAL, TTL, settled

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_two_holders")]

POOL6 = [ipaddress.ip_address(f"2001:db8::{100 + i}") for i in range(6)]
POOL4 = [ipaddress.ip_address(f"198.51.100.{100 + i}") for i in range(4)]
TAKEN4 = ipaddress.ip_address("198.51.100.150")  # the client's own, before yaim starts
TAKEN6 = ipaddress.ip_address("2001:db8::150")
ROOT = "/service/yaim"
# Lists lan0's addresses with their address protocol, through yaim's netlink tool.
PROTOCOLS = (
    "import json\nfrom yaim.actuator.netlink import Netlink\n"
    "print(json.dumps({str(e.address): e.protocol for e in Netlink().list('lan0')}))"
)


def start(lab, pool, n=3, **settings):
    """Put `pool` into etcd and start n nodes (the lab's timing unless overridden)."""
    for address in pool:
        lab.keys().add(address)
    settings.setdefault("interval", INTERVAL)
    settings.setdefault("ttl", TTL)
    return [lab.node(i, **settings).start() for i in range(1, n + 1)]


def ever_held(lab, address):
    """The nodes that had `address` on lan0 in any sample so far."""
    return {i for sample in list(lab.observer.samples) for i in sample.holders.get(address, ())}


def conflict_notes(lab) -> Dict[str, dict]:
    """Address -> the conflicts note as etcd has it (v2: with its TTL; v3: with its lease)."""
    endpoint, netns = lab.etcd.endpoints[0], lab.etcd.netns
    prefix = ROOT + "/conflicts/"
    if lab.dcs_type == "etcd3":
        body = {
            "key": base64.b64encode(prefix.encode()).decode(),
            "range_end": base64.b64encode((prefix[:-1] + "0").encode()).decode(),
        }
        answer = etcd_request(endpoint, "POST", "/v3/kv/range", netns=netns, body=body)
        return {
            base64.b64decode(kv["key"]).decode()[len(prefix) :]: dict(
                json.loads(base64.b64decode(kv["value"])), lease=int(kv.get("lease", 0))
            )
            for kv in answer.get("kvs", [])
        }
    answer = etcd_request(endpoint, "GET", "/v2/keys" + prefix, netns=netns)
    return {
        node["key"][len(prefix) :]: dict(json.loads(node["value"]), ttl=node.get("ttl"))
        for node in answer.get("node", {}).get("nodes", [])
    }


def test_an_ipv6_pool_spreads_fails_over_and_neighbours_follow_without_traffic(lab):
    nodes = start(lab, POOL6)
    lab.observer.wait_for(settled([1, 2, 3], POOL6), 15, "the IPv6 pool to settle")
    net = lab.lab
    mine = sorted(a for a, h in lab.observer.holders().items() if h == [1])
    assert len(mine) == 2
    marks = json.loads(net.run(net.node_ns(1), [sys.executable, "-c", PROTOCOLS]).stdout)
    assert len({marks[str(a)] for a in mine}) == 1 and marks[str(mine[0])] >= 0x80, marks
    for address in mine:
        net.run(net.cli, ["ping", "-6", "-c1", "-W1", str(address)])
    macs = {i: net.mac(net.node_ns(i)) for i in (1, 2, 3)}
    assert {a: net.neigh(net.cli)[a] for a in mine} == {a: macs[1] for a in mine}
    crashed_at = time.monotonic()
    nodes[0].crash()
    sample = lab.observer.wait_for(settled([2, 3], POOL6), CRASH_BOUND + 5, "the takeover")
    expected = {a: macs[sample.holders[a][0]] for a in mine}
    wait_until(
        lambda: {a: net.neigh(net.cli).get(a) for a in mine} == expected,
        sample.time + 1.0 - time.monotonic(),
        interval=0.01,
        what="the client's neighbour cache to follow the takeover without traffic",
    )
    print(
        f"IPv6 failover after SIGKILL: {sample.time - crashed_at:.2f} s, neighbour cache"
        f" updated {time.monotonic() - sample.time:.2f} s after the takeover was seen"
    )
    assert sample.time - crashed_at <= CRASH_BOUND


@pytest.mark.parametrize("dcs_type", ["etcd", "etcd3"])
def test_a_pool_address_a_host_outside_yaim_has_is_never_taken(lab, dcs_type):
    lab.dcs_type = dcs_type
    net = lab.lab
    net.ip(net.cli, "addr", "add", f"{TAKEN4}/24", "dev", "lan0")
    net.ip(net.cli, "addr", "add", f"{TAKEN6}/64", "dev", "lan0", "nodad")
    free = [*POOL4, *POOL6[:2]]
    started_at = time.monotonic()
    nodes = start(lab, [*free, TAKEN4, TAKEN6])
    sample = lab.observer.wait_for(settled([1, 2, 3], free), 15, "the free addresses to settle")
    print(f"settled with two conflicts after {sample.time - started_at:.2f} s")
    wait_until(
        lambda: set(conflict_notes(lab)) == {str(TAKEN4), str(TAKEN6)},
        5,
        what="a conflicts note for both addresses",
    )
    notes = conflict_notes(lab)
    cli_mac = net.mac(net.cli)
    assert {note["mac"] for note in notes.values()} == {cli_mac}, notes
    assert {note["node"] for note in notes.values()} <= {"n1", "n2", "n3"}
    if dcs_type == "etcd3":
        assert all(note["lease"] for note in notes.values()), notes
    else:
        assert all(0 < note["ttl"] <= 300 for note in notes.values()), notes
    # A few more rounds: still nobody takes them, and nobody logs them again.
    wait_until(lambda: time.monotonic() > sample.time + 4 * INTERVAL / 1000, 5, what="4 rounds")
    assert ever_held(lab, TAKEN4) == set() and ever_held(lab, TAKEN6) == set()
    for taken in (TAKEN4, TAKEN6):
        seen = [node.log().count(f"not taking {taken} on node") for node in nodes]
        assert sorted(seen) == [0, 0, 1], seen
        assert all(node.log().count(f"skipping {taken} on node") <= 1 for node in nodes)


def test_an_address_outside_allowed_networks_is_never_added(lab):
    outside = [ipaddress.ip_address("203.0.113.7"), ipaddress.ip_address("2001:db9::7")]
    allowed = ["198.51.100.0/24", "2001:db8::/32"]
    nodes = start(lab, [*POOL4, POOL6[0], *outside], allowed_networks=allowed)
    lab.observer.wait_for(settled([1, 2, 3], [*POOL4, POOL6[0]]), 15, "the allowed ones to settle")
    wait_until(
        lambda: all(f"refused pool entry '{outside[1]}'" in node.log() for node in nodes),
        5,
        what="the refusal in every log",
    )
    assert all(ever_held(lab, address) == set() for address in outside)
    for node in nodes:
        for address in outside:
            line = f"refused pool entry '{address}' on node {node.name}: outside allowed-networks"
            assert node.log().count(line) == 1, node.log()


def test_cleanup_after_a_sigkill_removes_the_ipv6_addresses_and_nothing_else(lab):
    net, ns = lab.lab, lab.lab.node_ns(1)
    foreign = {ipaddress.ip_address("2001:db8::199"), ipaddress.ip_address("198.51.100.199")}
    net.ip(ns, "addr", "add", "2001:db8::199/128", "dev", "lan0", "nodad")  # by hand: unmarked
    net.ip(ns, "addr", "add", "198.51.100.199/32", "dev", "lan0", "label", "lan0:other")
    pool = [POOL4[0], *POOL6[:3]]  # two nodes, two each: n1 holds at least one IPv6 address
    nodes = start(lab, pool, n=2)
    lab.observer.wait_for(settled([1, 2], pool), 15, "the pool to settle")
    mine = {a for a in pool if lab.observer.holders()[a] == [1]}
    assert 6 in {a.version for a in mine}, mine
    nodes[0].signal(signal.SIGKILL)
    nodes[0].wait_exit(3)
    assert net.addresses(1) == mine | foreign, "a SIGKILLed daemon leaves its addresses"
    argv = [sys.executable, "-m", "yaim", "--cleanup", "-c", str(nodes[0].config_path)]
    done = net.run(ns, argv, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert net.addresses(1) == foreign
    lab.observer.wait_for(settled([2], pool), 5, "n2 to take over")
