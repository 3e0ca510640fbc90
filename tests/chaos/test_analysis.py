"""The chaos checks themselves, on made-up samples: they catch what they claim to."""

from __future__ import annotations

import ipaddress

from lab.observer import Sample
from tests.chaos.analysis import (
    HELD,
    LINK_DOWN,
    REMOVED,
    TWO_HOLDERS,
    UNHEALTHY,
    Analyser,
    first_move,
    full_share,
)
from tests.chaos.model import CLEAN, HARD, Bounds, Fault, Ledger, Timeline

A = ipaddress.ip_address("198.51.100.100")
B = ipaddress.ip_address("198.51.100.101")
C = ipaddress.ip_address("198.51.100.102")
BOUNDS = Bounds(interval=0.5, ttl=2.0, detection=1.0, sigcont=0.5)  # crash 4, clean 2


def setup(pool=(A, B)):
    timeline = Timeline(BOUNDS)
    for address in pool:
        timeline.pool.begin(address, 0.0)
    ledger = Ledger()
    return timeline, ledger, Analyser(timeline, ledger)


def samples(start, end, holders, step=0.04):
    """Samples every `step` from `start` to `end` (excluded), all with `holders`."""
    n = round((end - start) / step)
    return [Sample(start + k * step, holders) for k in range(n)]


def failed(ledger):
    return [v.check for v in ledger.violations]


def test_two_holders_is_a_violation_once_per_episode():
    _, ledger, analyser = setup()
    analyser.feed(samples(1, 2, {A: [1], B: [2]}) + samples(2, 3, {A: [1, 2], B: [2]}))
    analyser.feed(samples(3, 4, {A: [1], B: [2]}))
    assert failed(ledger) == [TWO_HOLDERS]
    assert ledger.longest("overlap")[0] >= 0.96


def test_two_holders_with_a_sigstopped_node_is_exempt_until_sigcont_plus_grace():
    timeline, ledger, analyser = setup()
    timeline.paused.begin(1, 1.0)
    timeline.paused.end(1, 4.0)
    analyser.feed(samples(1, 4.4, {A: [1, 2], B: [2]}) + samples(4.4, 5, {A: [2], B: [2]}))
    assert failed(ledger) == []
    assert ledger.longest("overlap while SIGSTOPped")[0] >= 3.3
    analyser.feed(samples(5, 5.6, {A: [1, 2], B: [2]}))
    assert failed(ledger) == [TWO_HOLDERS], "only the paused node is exempt, and not for ever"


def test_unheld_longer_than_the_faults_bound_is_a_violation():
    timeline, ledger, analyser = setup()
    timeline.faults.append(Fault("sigterm", CLEAN, 1.0))
    analyser.feed(samples(0, 1, {A: [1], B: [2]}) + samples(1, 3.5, {B: [2]}))
    analyser.feed(samples(3.5, 4, {A: [3], B: [2]}))
    assert failed(ledger) == [HELD]
    assert "unheld for 2.50 s, allowed 2.00 s (sigterm)" in ledger.violations[0].text


def test_a_crash_allows_the_crash_bound():
    timeline, ledger, analyser = setup()
    timeline.faults.append(Fault("crash", HARD, 1.0))
    analyser.feed(samples(0, 1, {A: [1], B: [2]}) + samples(1, 4.5, {B: [2]}))
    analyser.feed(samples(4.5, 5, {A: [3], B: [2]}))
    assert failed(ledger) == []


def test_while_etcd_is_down_the_bound_counts_from_when_it_answers_again():
    timeline, ledger, analyser = setup()
    timeline.faults.append(Fault("etcd-all", HARD, 1.0))
    timeline.dcs_down.begin("etcd", 1.0)
    analyser.feed(samples(0, 3, {A: [1], B: [2]}) + samples(3, 9, {}))
    analyser.check_open(9.0)
    assert failed(ledger) == [], "no deadline while etcd is down"
    timeline.dcs_down.end("etcd", 9.0)
    analyser.feed(samples(9, 12.5, {}) + samples(12.5, 13, {A: [1], B: [2]}))
    assert failed(ledger) == []
    analyser.feed(samples(13, 13.5, {A: [1]}) + samples(13.5, 18, {A: [1]}))
    analyser.check_open(18.0)
    assert failed(ledger) == [HELD], "B went at 13, etcd was up since 9: crash bound from 13"


def test_an_address_added_must_be_taken_within_the_clean_bound():
    timeline, ledger, analyser = setup()
    analyser.feed(samples(0, 1, {A: [1], B: [2]}))
    c = ipaddress.ip_address("198.51.100.102")
    timeline.pool.begin(c, 1.01)
    before = samples(1.01, 3.2, {A: [1], B: [2]})
    analyser.feed(before + samples(3.2, 3.5, {A: [1], B: [2], c: [3]}))
    assert failed(ledger) == [HELD]


def test_a_removed_address_must_go_and_one_never_in_the_pool_must_never_appear():
    timeline, ledger, analyser = setup()
    timeline.pool.end(B, 1.0)
    analyser.feed(samples(0, 2.9, {A: [1], B: [2]}))
    assert failed(ledger) == []
    analyser.feed(samples(2.9, 3.2, {A: [1], B: [2]}))
    stray = ipaddress.ip_address("198.51.100.199")
    analyser.feed(samples(3.2, 3.3, {A: [1], stray: [3]}))
    assert failed(ledger) == [REMOVED, REMOVED]


def test_an_unhealthy_node_must_hold_nothing_after_the_unhealthy_bound():
    timeline, ledger, analyser = setup()
    timeline.unhealthy.begin(1, 1.0)
    analyser.feed(samples(0, 3.9, {A: [1], B: [2]}))
    assert failed(ledger) == []
    analyser.feed(samples(3.9, 4.2, {A: [1], B: [2]}))
    assert failed(ledger) == [UNHEALTHY]


def test_a_node_whose_link_is_down_must_hold_nothing_after_one_interval():
    timeline, ledger, analyser = setup()
    timeline.link_down.begin(1, 1.0)
    analyser.feed(samples(0, 1.5, {A: [1], B: [2]}))
    assert failed(ledger) == []
    analyser.feed(samples(1.5, 1.8, {A: [1], B: [2]}))
    assert failed(ledger) == [LINK_DOWN]


def after_outage(bounds: Bounds, kind: str, down: float, up: float):
    """A run with these bounds where a fault of `kind` began at 1 and etcd was down from
    `down` to `up`: (its ledger, its analyser)."""
    timeline, ledger, analyser = setup()
    timeline.bounds = analyser.bounds = bounds
    timeline.faults.append(Fault(kind, HARD, 1.0))
    timeline.dcs_down.begin("etcd", down)
    timeline.dcs_down.end("etcd", up)
    return ledger, analyser


def test_with_etcd3_a_new_leader_s_lease_renewal_is_added_after_an_outage():
    ledger, analyser = after_outage(Bounds(0.5, 2.0, 1.0, 0.5, renewal=1.0), "storm", 1.2, 2.0)
    analyser.feed(samples(0, 1, {A: [1], B: [2]}) + samples(1, 6.8, {B: [2]}))
    analyser.feed(samples(6.8, 7.2, {A: [3], B: [2]}))
    assert failed(ledger) == [], "etcd back at 2: crash bound 4 s + 1 s of lease renewal"


def test_with_the_failsafe_the_promises_add_one_ttl_after_an_outage():
    bounds = Bounds.for_config(0.5, 2.0, 0.5, 3, 0.25, failsafe=True)
    ledger, analyser = after_outage(bounds, "etcd-all-crash", 1.0, 5.0)
    analyser.feed(samples(0, 3, {A: [1], B: [2]}) + samples(3, 10.8, {B: [2]}))
    analyser.feed(samples(10.8, 11.2, {A: [3], B: [2]}))
    assert failed(ledger) == [], "etcd back at 5: crash bound 4 s + one ttl of promises"
    analyser.feed(samples(11.2, 12, {A: [3]}) + samples(12, 18.2, {A: [3]}))
    analyser.check_open(18.2)
    assert failed(ledger) == [HELD], "B went at 11.2 with etcd up: the crash bound alone"


def test_the_share_of_samples_with_the_whole_pool_held():
    window = samples(0, 1, {A: [1], B: [2]}) + samples(1, 1.4, {A: [1]})
    window += samples(1.4, 1.6, {A: [1, 2], B: [2]})
    assert full_share(window, {A, B}) == 25 / 40, "B gone 10 samples, on two 5 more"
    assert full_share(window, {A}) == 35 / 40
    assert full_share([], {A}) == 0.0, "an outage nobody watched proves nothing"


def test_the_first_move_is_any_address_off_its_node_or_on_another_too():
    before = {A: [1], B: [2]}
    assert first_move(samples(0, 1, {A: [1], B: [2], C: [3]}), before) is None
    for after in ({A: [1]}, {A: [1], B: [3]}, {A: [1, 3], B: [2]}):
        moved = first_move(samples(0, 1, before) + samples(1, 2, after), before)
        assert moved is not None and abs(moved[0].time - 1) < 1e-9, after
        assert moved[1] == next(a for a in before if after.get(a) != before[a])
