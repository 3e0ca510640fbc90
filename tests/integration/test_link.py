"""The service link in the lab, separate from the DCS link (lan0 and dcs0 of each node):
lan0 set down, its carrier lost (the hub's end of its veth down, lan0 still up), lan0
deleted and made again, and a flapping link; then the periodic announcements as a
client on the lan sees them.

Each link case runs RUNS times in one lab and prints its times (how long until the
others held the node's addresses, how long until it held its share again), so that
a run of the file is also the measurement of the closing note. While its link is down
the node is listed by `yaimctl nodes` as out, with the cause.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest

from lab.netns import Lab
from lab.util import wait_until
from tests.conftest import LabEnv
from tests.integration.conftest import (
    CLEAN_BOUND,
    INTERVAL,
    POOL,
    TTL,
    holding,
    ok,
    put_address,
    request,
    settled,
    start_cluster,
    unchanged_for,
)

pytestmark = pytest.mark.netns

RISE = 1000  # link-rise, ms
TAKEN_BOUND = CLEAN_BOUND  # 2 x interval + 1 s: the others hold the node's addresses
BACK_BOUND = RISE / 1000 + CLEAN_BOUND  # link-rise + 2 x interval + 1 s: its share back
RUNS = 5
FLAP = 0.3  # seconds between the flapping link's changes
FLAPPING = 5.0  # seconds it flaps
ARPWATCH = Path(__file__).resolve().parents[2] / "lab" / "arpwatch.py"

Action = Callable[[Lab], None]
CASES: Dict[str, Tuple[Action, Action, str]] = {
    "set down": (lambda net: net.link(1, "lan0", False), lambda net: net.lan_up(1), "set down"),
    "carrier lost": (
        lambda net: net.carrier(1, False),
        lambda net: net.carrier(1, True),
        "has no carrier",
    ),
    "deleted": (lambda net: net.delete_lan(1), lambda net: net.create_lan(1), "is gone"),
}


def figures(name: str, times: List[float]) -> str:
    return f"{name}: p50 {statistics.median(times):.2f} s, max {max(times):.2f} s"


def health_says(lab: LabEnv, cause: str) -> bool:
    """n1's /health answers 503 and names `cause`."""
    code, body = request(lab, 1, "/health")
    return code == 503 and cause in body


def listed(lab: LabEnv) -> dict:
    """n1 as `yaimctl nodes --json` lists it (asked in n2's namespace)."""
    nodes = {node["name"]: node for node in json.loads(ok(lab, "nodes", "--json", node=2))}
    return nodes.get("n1", {})


def out_says(lab: LabEnv, cause: str) -> bool:
    """yaimctl lists n1, without its node key, as out for `cause`."""
    n1 = listed(lab)
    return n1.get("healthy") is False and cause in (n1.get("out") or "")


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_node_whose_service_link_goes_hands_over_and_takes_its_share_back(
    lab: LabEnv, no_two_holders, case: str
) -> None:
    cut, heal, cause = CASES[case]
    start_cluster(lab, link_rise=RISE)
    net, pool = lab.lab, set(POOL)
    taken: List[float] = []
    back: List[float] = []
    for run in range(RUNS):
        mine = holding(lab, 1)
        assert mine, f"run {run}: n1 holds nothing to hand over"
        cut_at = time.monotonic()
        cut(net)
        sample = lab.observer.wait_for(
            settled([2, 3]), TAKEN_BOUND + 2, f"n2 and n3 to hold n1's {sorted(map(str, mine))}"
        )
        taken.append(sample.time - cut_at)
        assert not net.addresses(1) & pool, "n1 keeps nothing while its link is down"
        wait_until(  # a deletion may be told a round after the set down it begins with
            lambda: health_says(lab, cause), 2.0, what=f"/health of n1: 503 naming {cause!r}"
        )
        wait_until(
            lambda: out_says(lab, cause), 2.0, what=f"yaimctl nodes: n1 out, naming {cause!r}"
        )
        healed_at = time.monotonic()
        heal(net)
        assert not net.addresses(1) & pool, "nothing on n1 when its link returns"
        sample = lab.observer.wait_for(settled([1, 2, 3]), BACK_BOUND + 3, "n1's share back")
        back.append(sample.time - healed_at)
        assert listed(lab)["healthy"] and listed(lab)["out"] is None
    print(
        f"link {case} (interval {INTERVAL} ms, ttl {TTL} ms, link-rise {RISE} ms, {RUNS} runs):"
        f" {figures('others hold', taken)}; {figures('share back', back)}"
    )
    assert max(taken) <= TAKEN_BOUND, taken
    assert max(back) <= BACK_BOUND, back
    said = [
        line
        for line in lab.nodes[0].log().splitlines()
        if "stops taking part" in line or "stays out" in line
    ]
    stops = [n for n, line in enumerate(said) if "stops taking part" in line]
    told = [" ".join(said[n : n + 2]) for n in stops]  # a deletion: maybe a round later
    assert len(stops) == RUNS and all(cause in words for words in told), said


def test_a_link_flapping_faster_than_link_rise_moves_nothing_after_the_first_drop(
    lab: LabEnv, no_two_holders
) -> None:
    start_cluster(lab, link_rise=RISE)
    net = lab.lab
    net.carrier(1, False)
    lab.observer.wait_for(settled([2, 3]), TAKEN_BOUND + 2, "n2 and n3 to hold everything")
    before, since = lab.observer.holders(), time.monotonic()
    up = True
    for _ in range(int(FLAPPING / FLAP)):  # the fault's own pace, not a wait for yaim
        time.sleep(FLAP)
        net.carrier(1, up)
        up = not up
    flapped = time.monotonic() - since
    assert unchanged_for(lab, before, since, flapped + 0.5) == []
    net.carrier(1, True)
    lab.observer.wait_for(settled([1, 2, 3]), BACK_BOUND + 3, "n1's share back after the flaps")


def test_announce_refresh_sends_each_held_address_every_period_and_reply_mode_replies(
    lab: LabEnv, no_two_holders
) -> None:
    refresh = 2000
    for address in POOL:
        put_address(lab, address)
    for i in (1, 2, 3):
        mode = "reply" if i == 3 else "request"
        lab.node(
            i, interval=INTERVAL, ttl=TTL, announce_refresh=refresh, announce_mode=mode
        ).start()
    lab.observer.wait_for(settled([1, 2, 3]), 15, "the pool to settle")
    holders, since = lab.observer.holders(), time.monotonic()
    seconds = 4 * refresh / 1000
    argv = [sys.executable, str(ARPWATCH), "--seconds", str(seconds)]
    seen = json.loads(lab.lab.run(lab.lab.cli, argv, timeout=seconds + 10).stdout)
    assert unchanged_for(lab, holders, since, seconds) == [], "nothing moved meanwhile"
    times: Dict[str, List[float]] = defaultdict(list)
    operations: Dict[str, set] = defaultdict(set)
    for when, operation, sender, target in seen:
        if sender == target:
            times[sender].append(when)
            operations[sender].add(operation)
    slack = refresh / 1000 + INTERVAL / 1000 + 0.5
    for address in POOL:
        (holder,) = holders[address]
        sent = times[str(address)]
        gaps = [b - a for a, b in zip([0.0, *sent], [*sent, seconds])]
        assert len(sent) >= 3 and max(gaps) <= slack, (address, sent)
        assert operations[str(address)] == ({2} if holder == 3 else {1}), (address, holder)


def test_an_address_removed_by_hand_is_put_back_at_once_by_its_address_event(
    lab: LabEnv, no_two_holders
) -> None:
    """The actuator lists the interface only when an address event says it moved: with an
    interval of 3 s a round-by-round look would take up to 3 s, the event wakes it at once."""
    start_cluster(lab, n=2, interval=3000, ttl=9000)
    net = lab.lab
    back = []
    for address in sorted(holding(lab, 1), key=str)[:3]:
        prefix = 32 if address.version == 4 else 128
        removed_at = time.monotonic()
        net.ip(net.node_ns(1), "addr", "del", f"{address}/{prefix}", "dev", "lan0")
        sample = lab.observer.wait_for(lambda h, a=address: 1 in h.get(a, ()), 3.0, "put back")
        back.append(sample.time - removed_at)
    print(f"removed by hand (interval 3000 ms): {figures('back', back)}")
    assert max(back) < 1.0, back
