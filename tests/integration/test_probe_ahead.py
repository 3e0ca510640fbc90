"""Probing ahead of an expiry (yaim.lookout), end to end: real daemons in namespaces, a
real etcd, both APIs. A crashed holder's addresses are held the moment their marks
expire, without the probe after the mark; a frozen holder's, whose kernel still answers,
are not taken at all while it answers. The observer fails the test on any address seen
on two nodes (the `no_two_holders` fixture)."""

from __future__ import annotations

import re
import signal
import time

import pytest

from tests.integration.conftest import CRASH_BOUND, TTL, settled, start_cluster

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_two_holders")]

LOG_TIME = "%Y-%m-%d %H:%M:%S"


@pytest.fixture(autouse=True, params=["etcd", "etcd3"])
def dcs_type(request, lab):
    lab.dcs_type = request.param
    return request.param


def lines(nodes, pattern, since=0.0):
    """(node, wall time, line) of the log lines of `nodes` matching `pattern`, logged at
    `since` (time.time()) or later."""
    found = []
    for node in nodes:
        for line in node.log().splitlines():
            if re.search(pattern, line):
                stamp = time.mktime(time.strptime(line[:19], LOG_TIME)) + int(line[20:23]) / 1000
                if stamp >= since - 0.001:
                    found.append((node.name, stamp, line))
    return found


def test_a_crashed_holders_addresses_are_held_without_the_probe_after_the_mark(lab):
    nodes = start_cluster(lab)
    lost = sorted(a for a, h in lab.observer.holders().items() if h == [1])
    crashed_at, wall = time.monotonic(), time.time()
    nodes[0].crash()  # SIGKILL, lan0 and dcs0 down: nothing answers for its addresses
    sample = lab.observer.wait_for(settled([2, 3]), CRASH_BOUND + 5, "takeover")
    took = sample.time - crashed_at
    print(f"crash failover of {len(lost)} addresses: {took:.2f} s")
    survivors = nodes[1:]
    suspected = lines(survivors, r"holder n1 does not answer for ", wall)
    assert suspected, "the others noticed n1 silent on the link"
    for address in lost:
        said = rf"not probing {address} again on node n\d: nobody answered"
        skipped = lines(survivors, said, wall)
        taken = lines(survivors, rf"took {address} on node n\d: it was free", wall)
        assert len(skipped) == 1 and len(taken) == 1, (address, skipped, taken)
        assert skipped[0][0] == taken[0][0], "skipped by the node that took it"
        # the take follows at once: no probe-timeout (250 ms) in between
        assert taken[0][1] - skipped[0][1] < 0.1, (skipped, taken)
    assert took <= TTL / 1000 + 0.5 + 0.4


def test_a_frozen_holders_addresses_are_not_taken_while_its_kernel_answers(lab):
    nodes = start_cluster(lab)
    lost = sorted(a for a, h in lab.observer.holders().items() if h == [1])
    survivors = nodes[1:]
    wall = time.time()
    nodes[0].signal(signal.SIGSTOP)
    try:
        refused = {}

        def every_take_refused():
            for address in lost:
                said = rf"not taking {address} on node n\d: .* already answers"
                found = lines(survivors, said, wall)
                if found:
                    refused[address] = found
            return set(refused) == set(lost)

        deadline = time.monotonic() + TTL / 1000 + 5
        while not every_take_refused():
            assert time.monotonic() < deadline, f"not refused: {set(lost) - set(refused)}"
            time.sleep(0.1)
        holders = lab.observer.holders()
        assert all(holders.get(a) == [1] for a in lost), holders
        for address in lost:
            assert not lines(survivors, rf"not probing {address} again"), "never silent"
    finally:
        resumed = time.time()
        nodes[0].signal(signal.SIGCONT)
    # Running again, n1 drops them first (their fence times passed, or its heartbeat
    # found the lease gone: whichever thread runs first), then deletes the notes that
    # name its MAC; then the pool settles again, n1 taking its share back.
    deadline = time.monotonic() + 5
    while not all(lines(nodes[:1], rf"cleared the conflicts note of {a} ", resumed) for a in lost):
        assert time.monotonic() < deadline, "n1 did not clear the conflicts notes"
        time.sleep(0.1)
    for address in lost:
        fenced = lines(nodes[:1], rf"fenc(ed|ing) {address} on node n1", resumed)
        cleared = lines(nodes[:1], rf"cleared the conflicts note of {address} ", resumed)
        assert fenced and fenced[0][1] <= cleared[0][1], (fenced, cleared)
    lab.observer.wait_for(settled([1, 2, 3]), TTL / 1000 + 5, "the pool to settle again")
