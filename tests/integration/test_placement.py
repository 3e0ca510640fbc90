"""Placement in the lab (issue 19): rebalance-delay holds a returning or flapping node's
share back, `rebalance: manual` moves nothing until `yaimctl rebalance`, and weights
split the pool and a weight change moves the minimum. Each test on one API, the two
APIs alternating: the rules are yaim.balancer's, pure, and the same on both; what the
lab shows is the node key's `joining` and `weight` going through etcd and the timing."""

from __future__ import annotations

import ipaddress
import json
import signal
import time
from typing import Iterable

import pytest

from lab.util import wait_until
from tests.conftest import LabEnv
from tests.integration.conftest import (
    CLEAN_BOUND,
    CRASH_BOUND,
    INTERVAL,
    POOL,
    TTL,
    counts,
    ok,
    put_address,
    settled,
    start_cluster,
    unchanged_for,
    yaimctl,
)

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_two_holders")]

DELAY = 3000  # rebalance-delay, ms
EIGHT = [ipaddress.ip_address(f"198.51.100.{100 + i}") for i in range(8)]


def listed(lab: LabEnv, name: str, node: int = 2) -> dict:
    """Node `name` as `yaimctl nodes --json` lists it (asked in node `node`'s namespace)."""
    nodes = {n["name"]: n for n in json.loads(ok(lab, "nodes", "--json", node=node))}
    return nodes.get(name, {})


def joined(lab: LabEnv, name: str, timeout: float) -> float:
    """When node `name`'s key came back saying it is joining (monotonic)."""
    wait_until(lambda: listed(lab, name).get("joining") is True, timeout, what=f"{name} joining")
    return time.monotonic()


def waited(lab: LabEnv) -> None:
    """Every node has waited out rebalance-delay: nodes that are all joining (a cold start)
    split the pool as if none were, so the tests begin once none is."""
    wait_until(
        lambda: not any(n["joining"] for n in json.loads(ok(lab, "nodes", "--json"))),
        DELAY / 1000 + 5,
        what="every node's rebalance-delay over",
    )


def moved(before, after, addresses: Iterable) -> int:
    return sum(1 for a in addresses if before.get(a) != after.get(a))


def test_a_crashed_node_that_comes_back_takes_nothing_for_rebalance_delay_then_its_share(
    lab: LabEnv,
) -> None:
    nodes = start_cluster(lab, rebalance_delay=DELAY)
    waited(lab)
    nodes[0].crash()
    lab.observer.wait_for(settled([2, 3]), CRASH_BOUND + 2, "n2 and n3 to hold everything")
    before = lab.observer.holders()
    lab.lab.reboot(1)
    nodes[0].start()
    since = joined(lab, "n1", 15)
    assert unchanged_for(lab, before, since, DELAY / 1000 - 0.5) == [], "n1 took early"
    back = lab.observer.wait_for(settled([1, 2, 3]), DELAY / 1000 + CLEAN_BOUND + 2, "n1's share")
    print(f"n1 joined; its share back {back.time - since:.2f} s later (rebalance-delay 3 s)")
    assert back.time - since >= DELAY / 1000 - 0.5
    assert listed(lab, "n1")["joining"] is False
    assert "has taken part for rebalance-delay (3.0 s): it takes its share" in nodes[0].log()


def test_a_node_flapping_healthy_and_unhealthy_moves_nothing_after_its_first_release(
    lab: LabEnv,
) -> None:
    lab.dcs_type = "etcd3"
    for address in POOL:
        put_address(lab, address)
    urls = {i: lab.lab.start_health(i) for i in (1, 2, 3)}
    settings = dict(interval=INTERVAL, ttl=TTL, rebalance_delay=DELAY, check_interval=200)
    for i in (1, 2, 3):
        lab.node(i, health_url=urls[i], **settings).start()
    lab.observer.wait_for(settled([1, 2, 3]), 15, "the pool to settle")
    waited(lab)
    lab.lab.set_health(1, False)
    lab.observer.wait_for(settled([2, 3]), CLEAN_BOUND + 1, "n1's first release")
    before, since, healthy = lab.observer.holders(), time.monotonic(), False
    for _ in range(10):  # the fault's own pace: a second each way, ten times
        time.sleep(1.0)
        healthy = not healthy
        lab.lab.set_health(1, healthy)
    assert unchanged_for(lab, before, since, time.monotonic() - since + 0.5) == []
    lab.lab.set_health(1, True)
    lab.observer.wait_for(settled([1, 2, 3]), DELAY / 1000 + CLEAN_BOUND + 3, "n1's share back")


def rebalance(lab: LabEnv) -> dict:
    """`yaimctl rebalance --json`, which must settle the spread."""
    done = yaimctl(lab, "rebalance", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["settled"], result
    return result


def test_manual_moves_nothing_to_a_returning_node_until_yaimctl_rebalance(lab: LabEnv) -> None:
    for address in POOL:
        put_address(lab, address)
    nodes = [lab.node(i, interval=INTERVAL, ttl=TTL, rebalance="manual") for i in (1, 2, 3)]
    for node in nodes:  # one after the other: the first takes all, and keeps it
        node.start()
    wait_until(lambda: len(json.loads(ok(lab, "nodes", "--json"))) == 3, 15, what="3 nodes")
    lab.observer.wait_for(lambda h: counts(h) is not None, 15, "every address held")
    rebalance(lab)
    lab.observer.wait_for(settled([1, 2, 3]), CLEAN_BOUND, "the spread the rebalance made")
    nodes[0].signal(signal.SIGTERM)
    nodes[0].wait_exit(10)
    lab.observer.wait_for(settled([2, 3]), CLEAN_BOUND + 1, "n2 and n3 to hold everything")
    before = lab.observer.holders()
    nodes[0].start()
    wait_until(lambda: listed(lab, "n1").get("healthy") is True, 15, what="n1's node key")
    assert unchanged_for(lab, before, time.monotonic(), 2.0) == [], "manual moved something"
    assert "2 addresses over their holders' shares" in ok(lab, "status")
    result = rebalance(lab)
    assert len(result["moved"]) == 2 and {m["to"] for m in result["moved"]} == {"n1"}
    lab.observer.wait_for(settled([1, 2, 3]), CLEAN_BOUND, "the spread the rebalance made")
    assert "none over its holder's share" in ok(lab, "status")


def test_weights_two_one_one_split_eight_four_two_two_and_a_weight_change_moves_one(
    lab: LabEnv,
) -> None:
    lab.dcs_type = "etcd3"
    for address in EIGHT:
        put_address(lab, address)
    nodes = [
        lab.node(i, interval=INTERVAL, ttl=TTL, weight=w).start()
        for i, w in ((1, 2), (2, 1), (3, 1))
    ]
    spread = {1: 4, 2: 2, 3: 2}
    lab.observer.wait_for(lambda h: counts(h, EIGHT) == spread, 15, "4/2/2")
    assert listed(lab, "n1")["weight"] == 2
    before = lab.observer.holders()
    nodes[1].config["weight"] = 2
    nodes[1].write_config()
    nodes[1].signal(signal.SIGHUP)
    after = lab.observer.wait_for(
        lambda h: counts(h, EIGHT) == {1: 3, 2: 3, 3: 2}, CLEAN_BOUND + 2, "3/3/2"
    ).holders
    assert moved(before, after, EIGHT) == 1, "a weight change moves the minimum"
    assert ": weight applied" in nodes[1].log()
