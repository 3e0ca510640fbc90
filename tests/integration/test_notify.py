"""Notify commands in the namespace lab, with etcd v2.

Every node's commands append one line per event to a file of the node's own:
`take ADDRESS`, `release ADDRESS`, `fence ADDRESS` and `health 1|0`. Replayed in
order, a node's lines must give back exactly the addresses on its interface, so
every take comes before the release or fence of the same address. Timing as in
test_daemon.py: interval 500 ms, ttl 2000 ms; the observer fails a test on any
address seen on two nodes.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

from lab.util import live_group_members, wait_until
from tests.integration.conftest import (
    CLEAN_BOUND,
    INTERVAL,
    POOL,
    TTL,
    delete_address,
    put_address,
    settled,
)

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_two_holders")]

ADDRESSES = POOL[:4]
Line = Tuple[str, str]


def events_file(lab, i: int) -> Path:
    return lab.lab.base_dir / f"notify-n{i}"


def notify_settings(lab, i: int, **more: object) -> Dict[str, object]:
    """Node i's settings: every event appends its line to `events_file(lab, i)`."""
    path = events_file(lab, i)
    line = ["sh", "-c", f'echo "$YAIM_EVENT $YAIM_ADDRESS" >> {path}']
    health = ["sh", "-c", f'echo "$YAIM_EVENT $YAIM_HEALTHY" >> {path}']
    settings: Dict[str, object] = dict(interval=INTERVAL, ttl=TTL, notify_health=health)
    settings.update(notify_take=line, notify_release=line, notify_fence=line)
    settings.update(more)
    return settings


def lines(lab, i: int) -> List[Line]:
    path = events_file(lab, i)
    if not path.exists():
        return []
    return [tuple(line.split(" ", 1)) for line in path.read_text().splitlines()]  # type: ignore


def replayed(events: List[Line]) -> Set[str]:
    """The addresses held after `events`; AssertionError if one is out of order."""
    held: Set[str] = set()
    for event, what in events:
        if event == "take":
            assert what not in held, f"take {what} while held: {events}"
            held.add(what)
        elif event in ("release", "fence"):
            assert what in held, f"{event} {what} while not held: {events}"
            held.remove(what)
    return held


def on(lab, i: int) -> Set[str]:
    """The pool addresses on node i's interface, as the observer saw them last."""
    return {str(a) for a, nodes in lab.observer.holders().items() if nodes == [i]}


def lines_match_interfaces(lab, indexes) -> None:
    """Wait until every node's lines replay to the addresses on its interface."""
    for i in indexes:
        wait_until(
            lambda i=i: replayed(lines(lab, i)) == on(lab, i),
            5,
            what=f"n{i}'s notify lines to match its interface",
        )


def start(lab, settings: Dict[int, Dict[str, object]], match=None):
    """Put the addresses in the pool, start one node per entry of `settings`, let it
    settle; then the lines of the nodes in `match` (default: all) match their interfaces."""
    for address in ADDRESSES:
        put_address(lab, address)
    nodes = [lab.node(i, **more).start() for i, more in settings.items()]
    lab.observer.wait_for(settled(list(settings), ADDRESSES), 15, "the pool to settle")
    lines_match_interfaces(lab, settings if match is None else match)
    return nodes


def new_lines(lab, i: int, since: int, count: int) -> List[Line]:
    """Node i's lines after the first `since`, once there are `count` of them."""
    wait_until(
        lambda: len(lines(lab, i)) >= since + count,
        5,
        what=f"{count} new notify lines of n{i}",
    )
    return lines(lab, i)[since:]


@pytest.mark.parametrize("lab", [2], indirect=True)
def test_a_failover_leaves_release_and_take_lines_on_the_right_nodes_in_order(lab):
    n1, _ = start(lab, {i: notify_settings(lab, i) for i in (1, 2)})
    moved = on(lab, 1)
    seen = {i: len(lines(lab, i)) for i in (1, 2)}
    stopped_at = time.monotonic()
    n1.signal(signal.SIGTERM)
    assert n1.wait_exit(3) == 0
    exited = time.monotonic() - stopped_at
    print(f"SIGTERM with notify commands: exit after {exited:.2f} s")
    assert exited <= 1.5
    # the shutdown ran n1's commands before it exited
    assert sorted(lines(lab, 1)[seen[1] :]) == sorted(("release", a) for a in moved)
    lab.observer.wait_for(settled([2], ADDRESSES), CLEAN_BOUND + 5, "n2 to take over")
    taken = new_lines(lab, 2, seen[2], len(moved))
    assert sorted(taken) == sorted(("take", a) for a in moved)
    assert "notify-release" in n1.log() and "(stopping)" in n1.log()

    seen = {i: len(lines(lab, i)) for i in (1, 2)}
    n1.start()  # back: n2 releases what is over its share, n1 takes it
    lab.observer.wait_for(settled([1, 2], ADDRESSES), 10, "n1 to take its share again")
    lines_match_interfaces(lab, (1, 2))
    back = on(lab, 1)
    restarted = lines(lab, 1)[seen[1] :]
    assert restarted[0] == ("health", "1")
    assert sorted(restarted[1:]) == sorted(("take", a) for a in back)
    assert sorted(lines(lab, 2)[seen[2] :]) == sorted(("release", a) for a in back)


@pytest.mark.parametrize("lab", [2], indirect=True)
def test_a_node_cut_off_from_the_dcs_leaves_a_fence_line(lab):
    start(lab, {i: notify_settings(lab, i) for i in (1, 2)})
    mine = on(lab, 1)
    seen = len(lines(lab, 1))
    lab.lab.link(1, "dcs0", up=False)
    fenced = new_lines(lab, 1, seen, len(mine))
    assert sorted(fenced) == sorted(("fence", a) for a in mine)
    lab.observer.wait_for(settled([2], ADDRESSES), TTL / 1000 + 5, "n2 to take over")
    lab.lab.link(1, "dcs0", up=True)
    lab.observer.wait_for(settled([1, 2], ADDRESSES), 10, "n1 to rejoin")
    lines_match_interfaces(lab, (1, 2))


@pytest.mark.parametrize("lab", [2], indirect=True)
def test_an_unhealthy_result_leaves_a_health_line(lab):
    url = lab.lab.start_health(1, 8008)
    start(lab, {1: notify_settings(lab, 1, health_url=url), 2: notify_settings(lab, 2)})
    assert lines(lab, 1)[0] == ("health", "1")
    mine = on(lab, 1)
    seen = len(lines(lab, 1))
    lab.lab.set_health(1, False)
    after = new_lines(lab, 1, seen, 1 + len(mine))
    assert after[0] == ("health", "0")
    assert sorted(after[1:]) == sorted(("release", a) for a in mine)
    assert "notify-health on node n1 (GET http://127.0.0.1:8008/health answered 500" in (
        lab.nodes[0].log()
    )
    lab.observer.wait_for(settled([2], ADDRESSES), CLEAN_BOUND + 5, "n2 to take over")
    seen = len(lines(lab, 1))
    lab.lab.set_health(1, True)
    assert new_lines(lab, 1, seen, 1)[0] == ("health", "1")
    lab.observer.wait_for(settled([1, 2], ADDRESSES), 10, "n1 to take its share again")
    lines_match_interfaces(lab, (1, 2))


@pytest.mark.parametrize("lab", [1], indirect=True)
def test_a_command_past_the_timeout_is_killed_and_the_next_events_still_run(lab):
    pids = lab.lab.base_dir / "hung-pids"
    hang = ["sh", "-c", f"echo $$ >> {pids}; echo hanging; sleep 60 & wait"]
    settings = notify_settings(lab, 1, notify_take=hang, notify_timeout=300)
    addresses = ADDRESSES[:2]
    for address in addresses:
        put_address(lab, address)
    n1 = lab.node(1, **settings).start()
    lab.observer.wait_for(settled([1], addresses), 15, "n1 to take the pool")
    said = "no exit within 300 ms, killed its process group: hanging"
    wait_until(lambda: n1.log().count(said) == 2, 5, what=f"two killed takes\n{n1.log()}")
    hung = [int(pid) for pid in pids.read_text().split()]
    assert len(hung) == 2 and all(live_group_members(pid) == [] for pid in hung)
    removed_at = time.monotonic()
    delete_address(lab, addresses[0])
    assert new_lines(lab, 1, 1, 1) == [("release", str(addresses[0]))]
    print(f"release notified {time.monotonic() - removed_at:.2f} s after the removal")
    assert lines(lab, 1) == [("health", "1"), ("release", str(addresses[0]))]


@pytest.mark.parametrize("lab", [2], indirect=True)
def test_a_missing_notify_command_is_logged_and_changes_nothing_else(lab):
    missing = "/nonexistent/yt-notify --route"  # a string, split like a shell would
    settings = {1: notify_settings(lab, 1, notify_take=missing), 2: notify_settings(lab, 2)}
    n1, _ = start(lab, settings, match=[2])
    log = n1.log()
    assert "notify-take: /nonexistent/yt-notify: command not found or not executable" in log
    mine = on(lab, 1)
    said = [
        re.compile(
            rf"notify-take {re.escape(str(address))} on node n1 \((free|handover)\):"
            " /nonexistent/yt-notify --route: command not found"
        )
        for address in mine
    ]
    wait_until(lambda: all(line.search(n1.log()) for line in said), 5, what=f"{said} in n1's log")
    # its other commands run: the health line, and a release line for each address it
    # gave back over its share after it was on its interface (its log names those)
    wait_until(
        lambda: len(lines(lab, 1)) == 1 + n1.log().count("notify-release "),
        5,
        what="n1's release lines to match the releases in its log",
    )
    before = lines(lab, 1)
    assert before[0] == ("health", "1") and {e for e, _ in before[1:]} <= {"release"}
    n1.signal(signal.SIGTERM)
    assert n1.wait_exit(3) == 0
    assert sorted(lines(lab, 1)[len(before) :]) == sorted(("release", a) for a in mine)
    lab.observer.wait_for(settled([2], ADDRESSES), CLEAN_BOUND + 5, "n2 to take over")
