"""Watch-driven failover and the DCS load, for both backends.

- In the lab, with `interval` 2000 ms: when a node stops cleanly (its marks are
  deleted), or an address is added, another node holds the address within a small
  part of one interval, because the watch wakes its balancer; polling alone would
  take up to an interval.
- In this process, real heartbeat, balancer and watch threads of N nodes against a
  loopback etcd: the HTTP requests they send per node per interval at steady state,
  counted where every request passes (urllib3's connection pool). The balancer plans
  from the cluster cache and reads nothing at steady state; v2 refreshes every mark by
  itself (1 + M/N), v3 keeps one lease alive (1, whatever M).
"""

from __future__ import annotations

import ipaddress
import signal
import threading
import time
from collections import Counter
from typing import List

import pytest
import yaml

from lab.etcd import ClusterKeys
from lab.util import wait_until
from yaim import config, dcs
from yaim.claims import Interface, Ledger
from yaim.state import NodeState
from yaim.threads.balancer import BalancerThread
from yaim.threads.heartbeat import HeartbeatThread
from yaim.threads.watch import QUIET_POLL, Feed, WatchThread

BACKENDS = ["etcd", "etcd3"]
POOL = [ipaddress.ip_address(f"198.51.100.{100 + i}") for i in range(6)]
SLOW_INTERVAL, SLOW_TTL = 2000, 6000


def spread(nodes, addresses=POOL):
    """A predicate: every address on exactly one of `nodes`, counts differing by at most 1."""

    def check(holders):
        if any(len(holders.get(a, ())) != 1 or holders[a][0] not in nodes for a in addresses):
            return False
        per_node = Counter(holders[a][0] for a in addresses)
        counts = [per_node.get(n, 0) for n in nodes]
        return max(counts) - min(counts) <= 1

    return check


@pytest.mark.netns
@pytest.mark.parametrize("dcs_type", BACKENDS)
def test_the_watch_moves_addresses_within_a_fraction_of_the_interval(lab, dcs_type):
    lab.dcs_type = dcs_type
    keys = lab.keys()
    for address in POOL:
        keys.add(address)
    nodes = [lab.node(i, interval=SLOW_INTERVAL, ttl=SLOW_TTL).start() for i in (1, 2, 3)]
    lab.observer.wait_for(spread([1, 2, 3]), 20, "the pool to settle")
    mine = {a for a, h in lab.observer.holders().items() if h == [1]}

    nodes[0].signal(signal.SIGTERM)  # removes its addresses, then deletes its marks
    taken = lab.observer.wait_for(spread([2, 3]), 10, "takeover")
    last_seen = max(
        s.time for s in lab.observer.samples if any(1 in s.holders.get(a, ()) for a in mine)
    )
    gap = taken.time - last_seen

    extra = ipaddress.ip_address("198.51.100.120")
    added_at = time.monotonic()
    keys.add(extra)
    held = lab.observer.wait_for(spread([2, 3], [*POOL, extra]), 10, "the new address")
    added = held.time - added_at
    print(
        f"{dcs_type}, interval {SLOW_INTERVAL} ms: {len(mine)} addresses of a stopped node"
        f" unheld for {gap:.3f} s; a new address held after {added:.3f} s"
    )
    assert nodes[0].wait_exit(3) == 0
    assert gap < SLOW_INTERVAL / 1000 / 4, lab.logs()
    assert added < SLOW_INTERVAL / 1000 / 4, lab.logs()
    assert lab.observer.violations == []


# --- the DCS load ---

LOAD_INTERVAL_MS = 300
LOAD_ROUNDS = 10


class Node:
    """One node's DCS threads wired as the daemon wires them; no checker, no actuator:
    healthy throughout, and every address "removed from the interface" at once."""

    def __init__(self, cfg, stop: threading.Event, crashed: List[str]) -> None:
        self.ledger = Ledger(cfg.node_name, cfg.ttl_s)
        state = NodeState()
        state.set_health(True, "test")
        common = {"stop": stop, "on_crash": crashed.append}
        store = dcs.connect(cfg, stop=stop)
        period = cfg.interval_s
        watching = store.clone()
        feed = Feed(watching.root, watching.POOL_DIRS)
        self.balancer = BalancerThread(
            store, self.ledger, state, cfg, self.sync, period=period, feed=feed, **common
        )
        self.heartbeat = HeartbeatThread(
            store.clone(), self.ledger, state, self.balancer.poke, period=period, **common
        )
        self.watch = WatchThread(watching, self.balancer.poke, period, feed=feed, **common)
        self.threads = [self.heartbeat, self.balancer, self.watch]

    def sync(self, timeout: float) -> bool:
        """The actuator's round: what is held is on the interface, the rest off."""
        held = frozenset(self.ledger.held())
        self.ledger.confirm(Interface(held, held))
        return True


@pytest.mark.parametrize("dcs_type", BACKENDS)
@pytest.mark.parametrize("m", [6, 24])
def test_dcs_requests_per_node_per_interval(etcd, tmp_path, requests_made, dcs_type, m):
    n = 3
    cluster = f"load{dcs_type}{m}"
    keys = ClusterKeys(etcd, dcs_type, root="/service/" + cluster)
    addresses = [ipaddress.ip_address(f"198.51.100.{i}") for i in range(1, m + 1)]
    for address in addresses:
        keys.add(address)
    stop, crashed = threading.Event(), []
    nodes = []
    for i in range(1, n + 1):
        path = tmp_path / f"n{i}.yml"
        settings = {
            "dcs-type": dcs_type,
            "dcs-endpoints": etcd.endpoints,
            "dcs-clustername": cluster,
            "node-name": f"n{i}",
            "interface": "lo",
            "checker-type": "none",
            "interval": LOAD_INTERVAL_MS,
            "ttl": 2000,
        }
        path.write_text(yaml.safe_dump(settings))
        nodes.append(Node(config.load(str(path), environ={}), stop, crashed))
    try:
        for node in nodes:
            for thread in node.threads:
                thread.start()
        wait_until(
            lambda: [len(node.ledger.held()) for node in nodes] == [m // n] * n,
            10,
            what="every node to hold its share",
        )
        wait_until(lambda: set(keys.holders()) == set(map(str, addresses)), 5, what="marks")
        if dcs_type == "etcd":
            # The settle's sync writes expire a ttl later, and each expiry is an event that
            # every v2 watch answers with one request: the settle's tail, not steady state.
            wait_until(lambda: not keys.syncing(), 5, what="the settle's sync keys to expire")
        before, started = requests_made(), time.monotonic()
        time.sleep(LOAD_ROUNDS * LOAD_INTERVAL_MS / 1000)  # the measuring window itself
        made, took = requests_made() - before, time.monotonic() - started
    finally:
        stop.set()
        for node in nodes:
            for thread in (node.heartbeat, node.balancer):
                thread.poke()
                thread.join(5)
    intervals = took / (LOAD_INTERVAL_MS / 1000)
    per_node = made / n / intervals
    print(
        f"{dcs_type}: N={n} nodes, M={m} addresses: {made} requests in {intervals:.1f}"
        f" intervals = {per_node:.2f} per node per interval"
    )
    assert crashed == []
    # A round starts one interval after the last one ended, so a slow round (v2 with
    # many marks) means a little fewer rounds than intervals.
    # v3: the keep-alive, no read; v2: the node key, each mark and the watch's quiet poll
    expected = 1 if dcs_type == "etcd3" else 1 + m / n + 1 / QUIET_POLL
    assert 0.85 * expected <= per_node <= expected + 0.3
