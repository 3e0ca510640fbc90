"""The failsafe hold end to end: real daemons asking each other over their peer endpoints
while the real etcd is stopped or cut away, sampled every 50 ms by the observer.

Timing as in test_daemon (interval 500 ms, ttl 2000 ms). Each test waits until every
node has a good view (its /status names the nodes it would ask) before it breaks
etcd: a node that just started, or whose etcd came back less than a ttl ago, holds
nothing on its peers' word. The fixture's teardown fails a test on any address seen
on two nodes. Every test runs against both DCS APIs.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from lab.netns import lan_address
from lab.util import wait_until
from tests.integration.conftest import (
    CRASH_BOUND,
    INTERVAL,
    POOL,
    TTL,
    cut_n1_from_etcd,
    failsafe_settings,
    settled,
    start_cluster,
    status,
    unchanged_for,
    yaimctl,
)

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_two_holders")]

OUTAGE = 3 * TTL / 1000


@pytest.fixture(autouse=True, params=["etcd", "etcd3"])
def dcs_type(request, lab):
    lab.dcs_type = request.param
    return request.param


def start_failsafe(lab, n=3, **settings):
    """n daemons with the failsafe on, settled, each with a good view of all n."""
    nodes = start_cluster(lab, n, **failsafe_settings(lab), **settings)
    names = sorted(node.name for node in nodes)
    wait_until(
        lambda: all(status(lab, node.i)["failsafe"]["view"] == names for node in nodes),
        3 * TTL / 1000 + 5,
        what="every node's failsafe view",
    )
    return nodes


def holding_on_word(lab, nodes):
    return all(status(lab, node.i)["failsafe"]["holding"] for node in nodes)


def full_share(lab, since, until):
    """The share of the samples in [since, until] with every pool address on one node."""
    window = [s for s in lab.observer.samples if since <= s.time <= until]
    full = [s for s in window if all(len(s.holders.get(a, ())) == 1 for a in POOL)]
    return len(full) / max(1, len(window))


def marks_match_interfaces(lab):
    expected = {str(a): f"n{h[0]}" for a, h in lab.observer.holders().items()}
    return lab.keys().holders() == expected


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_whole_etcd_outage_drops_nothing_and_moves_nothing(lab, how):
    nodes = start_failsafe(lab)
    before = lab.observer.holders()
    stopped_at = time.monotonic()
    lab.etcd.stop_member(0, sig=how)
    changed = unchanged_for(lab, before, stopped_at, OUTAGE)
    share = full_share(lab, stopped_at, stopped_at + OUTAGE)
    assert changed == [], f"the pool changed during the outage: {changed[:3]}"
    assert holding_on_word(lab, nodes)
    asked = yaimctl(lab, "status")
    assert asked.returncode == 1 and "failsafe hold, keeping 198.51.100." in asked.stderr
    back_at = time.monotonic()
    lab.etcd.start_member(0)
    wait_until(lambda: marks_match_interfaces(lab), CRASH_BOUND, what="the marks made again")
    remade = time.monotonic() - back_at
    assert unchanged_for(lab, before, back_at, 2 * TTL / 1000) == []
    wait_until(lambda: not holding_on_word(lab, nodes[:1]), TTL / 1000 + 2, what="the hold's end")
    logs = "".join(node.log() for node in nodes)
    assert "every node of the view" in logs and "leaves the failsafe hold" in logs
    print(f"etcd {how.name} for {OUTAGE:.1f} s: pool fully held in {share:.1%} of the samples;")
    print(f"marks all made again {remade:.2f} s after etcd started")


def test_one_node_cut_from_etcd_still_fences_and_the_others_take_over(lab):
    start_failsafe(lab)
    cut_at, gone, _ = cut_n1_from_etcd(lab)
    assert gone - cut_at < TTL / 1000
    assert "said no: etcd answers here" in lab.nodes[0].log()
    lab.lab.link(1, "dcs0", up=True)
    lab.observer.wait_for(settled([1, 2, 3]), 10, "n1 to rejoin")


def test_etcd_back_for_one_node_first_puts_no_address_on_two_nodes(lab):
    nodes = start_failsafe(lab)
    lab.etcd.stop_member(0)
    wait_until(lambda: holding_on_word(lab, nodes), 2 * TTL / 1000, what="the hold")
    for i in (2, 3):
        lab.lab.link(i, "dcs0", up=False)
    lab.etcd.start_member(0)
    # n1 keeps its promises, n2 and n3 fence when it says no; then n1 takes the pool over.
    lab.observer.wait_for(settled([1]), CRASH_BOUND + TTL / 1000 + 2, "n1 to hold the pool")
    assert "refused node n2 a hold" in nodes[0].log()
    for i in (2, 3):
        lab.lab.link(i, "dcs0", up=True)
    lab.observer.wait_for(settled([1, 2, 3]), 15, "the pool to settle again")


def test_a_holder_crashed_in_the_outage_has_its_addresses_held_once_etcd_is_back(lab):
    nodes = start_failsafe(lab)
    lab.etcd.stop_member(0)
    wait_until(lambda: holding_on_word(lab, nodes), 2 * TTL / 1000, what="the hold")
    nodes[2].crash()
    lab.etcd.start_member(0)
    back_at = time.monotonic()
    taken = lab.observer.wait_for(settled([1, 2]), CRASH_BOUND + TTL / 1000 + 5, "the takeover")
    print(f"crashed holder's addresses held again {taken.time - back_at:.2f} s after etcd")
    # Within the crash bound from etcd's return: the promises to n3 end at most a ttl after
    # it (a take needs a probe and a round more, less than the bound's 2 intervals + 1 s);
    # etcd3 adds its election, after which the new leader renews every lease, n3's too.
    assert taken.time - back_at <= CRASH_BOUND + 1.0


def test_a_node_started_with_etcd_reachable_from_it_alone_takes_nothing_held(lab):
    nodes = start_failsafe(lab, n=2)
    before = lab.observer.holders()
    for node in nodes:
        lab.lab.link(node.i, "dcs0", up=False)
    wait_until(lambda: holding_on_word(lab, nodes), 2 * TTL / 1000, what="the hold")
    wait_until(lambda: not lab.keys().holders(), 2 * TTL / 1000 + 2, what="the marks to expire")
    started_at = time.monotonic()
    newcomer = lab.node(3, interval=INTERVAL, ttl=TTL, **failsafe_settings(lab)).start()
    assert unchanged_for(lab, before, started_at, OUTAGE) == []
    assert "not taking" in newcomer.log()
    for node in nodes:
        lab.lab.link(node.i, "dcs0", up=True)


def mac(lab, i):
    """The MAC of node i's lan0."""
    return json.loads(lab.lab.ip(lab.lab.node_ns(i), "-j", "link", "show", "lan0"))[0]["address"]


def neighbour_mac(lab, i, address):
    """The MAC node i's neighbour cache has for `address` ("" if none)."""
    entries = json.loads(lab.lab.ip(lab.lab.node_ns(i), "-j", "neigh", "show", address))
    return entries[0].get("lladdr", "") if entries else ""


def test_a_node_whose_interface_was_made_again_is_reachable_by_its_peers_asks(lab):
    """A new interface has a new MAC, and the peers' caches would keep the old one for up
    to a minute: the node announces its own address when it takes part again."""
    nodes = start_failsafe(lab)
    n2 = lan_address(2)
    for i in (1, 3):
        lab.lab.run(lab.lab.node_ns(i), ["ping", "-c", "1", "-W", "1", n2])
    old = neighbour_mac(lab, 1, n2)
    lab.lab.delete_lan(2)
    lab.lab.create_lan(2)
    assert mac(lab, 2) != old
    lab.observer.wait_for(settled([1, 2, 3]), 15, "n2 to take part again")
    wait_until(
        lambda: neighbour_mac(lab, 1, n2) == neighbour_mac(lab, 3, n2) == mac(lab, 2),
        2.0,
        what="n1 and n3 to know n2's new MAC",
    )
    wait_until(
        lambda: all(
            status(lab, node.i)["failsafe"]["view"] == ["n1", "n2", "n3"] for node in nodes
        ),
        3 * TTL / 1000 + 5,
        what="every node's failsafe view",
    )
    before = lab.observer.holders()
    stopped_at = time.monotonic()
    lab.etcd.stop_member(0)
    assert unchanged_for(lab, before, stopped_at, OUTAGE) == []
    assert "did not answer" not in "".join(node.log() for node in nodes)
    lab.etcd.start_member(0)


def test_an_ask_sealed_with_another_secret_is_refused(lab):
    nodes = start_cluster(lab, 2, **failsafe_settings(lab))
    other = lab.lab.base_dir / "other-peer.key"
    other.write_bytes(b"not the cluster's secret, 32 b")
    other.chmod(0o600)
    intruder = lab.node(3, interval=INTERVAL, ttl=TTL, **failsafe_settings(lab))
    intruder.config["peer-secret-file"] = str(other)
    intruder.start()
    lab.observer.wait_for(settled([1, 2, 3]), 15, "the pool to settle")
    names = ["n1", "n2", "n3"]
    wait_until(
        lambda: all(status(lab, i)["failsafe"]["view"] == names for i in (1, 2, 3)),
        3 * TTL / 1000 + 5,
        what="every node's failsafe view",
    )
    lab.etcd.stop_member(0)
    lab.observer.wait_for(lambda h: not h, TTL / 1000 + 2, "every address fenced")
    assert "refused an ask: wrong signature" in intruder.log()
    assert not any(status(lab, node.i)["failsafe"]["holding"] for node in nodes)
    lab.etcd.start_member(0)
    lab.observer.wait_for(settled([1, 2, 3]), CRASH_BOUND + 5, "the pool back")
