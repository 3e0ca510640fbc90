"""Address safety without a network: what counts as yaim's, allowed-networks in the
actuator, repeated announcements, the conflict flow of the balancer thread, the view."""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from typing import List

import pytest

from tests.unit.fakes import (
    V4,
    V6,
    Clock,
    FakeTool,
    balancer_round_setup,
)
from yaim import conflicts, ctl
from yaim.actuator import Actuator, AddressRefused, address_protocol
from yaim.claims import Interface, Ledger
from yaim.dcs import DCS
from yaim.errors import DCSError
from yaim.shutdown import clear
from yaim.threads import actuator as actuator_thread
from yaim.view import Conflict, Mark, Snapshot, parse_snapshot

OUTSIDE = ipaddress.ip_address("203.0.113.7")
OURS = address_protocol("lan0:yaim")
FAR = 1e12


def actuator(tool: FakeTool, allowed=()) -> Actuator:
    return Actuator("lan0", "yaim", 32, 128, [tool], allowed)


def test_ipv4_is_ours_by_its_label_and_ipv6_by_its_address_protocol():
    tool = FakeTool()
    leftover4, leftover6 = ipaddress.ip_address("198.51.100.8"), ipaddress.ip_address("2001:db8::8")
    tool.put(leftover4, label="lan0:yaim")
    tool.put(leftover6, protocol=OURS)
    tool.put(V4, label="lan0:other")
    tool.put(V6)  # by hand
    tool.put(ipaddress.ip_address("2001:db8::9"), protocol=OURS + 1 if OURS < 0xFF else 0x80)
    act = actuator(tool)
    assert act.scan().ours == {leftover4, leftover6}
    assert not act.adopt(V6), "an unmarked IPv6 address is someone's when marks are visible"
    act.add(ipaddress.ip_address("2001:db8::10"))
    assert tool.entries[ipaddress.ip_address("2001:db8::10")].protocol == OURS


def test_without_address_protocols_this_run_remembers_its_ipv6_addresses():
    tool = FakeTool(shows_protocol=False)
    first = actuator(tool)
    first.add(V6)
    first.add(V6)  # already there: still ours
    assert first.scan().ours == {V6}
    second = actuator(tool)  # the next run: nothing shows the address is yaim's
    assert second.scan().ours == set()
    assert second.adopt(V6), "its live mark in the DCS is all that tells: adopted"
    assert second.scan().ours == {V6}


def test_an_ipv6_address_that_was_there_is_not_taken_over_by_adding_it():
    tool = FakeTool(shows_protocol=False)
    tool.put(V6)
    act = actuator(tool)
    act.add(V6)
    assert act.scan().ours == set()


def test_the_actuator_refuses_an_address_outside_allowed_networks_and_says_so_once(caplog):
    tool = FakeTool()
    act = actuator(tool, [ipaddress.ip_network("198.51.100.0/24")])
    for _ in range(3):
        with pytest.raises(AddressRefused):
            act.add(OUTSIDE)
    act.add(V4)
    assert tool.adds == [V4]
    refusals = [r for r in caplog.records if "refusing to add 203.0.113.7" in r.getMessage()]
    assert len(refusals) == 1


class Recorder:
    """An Actuator stand-in around a FakeTool that records announcements."""

    def __init__(self, act: Actuator) -> None:
        self.act = act
        self.announced: List[object] = []
        self.interface = act.interface

    def __getattr__(self, name):
        return getattr(self.act, name)

    def announce(self, address) -> None:
        self.announced.append((address, clock.now))


clock = Clock()


def make_actuator_thread(act: Actuator, count: int, interval: float):
    recorder = Recorder(act)
    ledger = Ledger("n1", 3.0)
    thread = actuator_thread.ActuatorThread(
        lambda: recorder,
        ledger,
        "n1",
        announce_count=count,
        announce_interval=interval,
        period=1.0,
        stop=threading.Event(),
        on_crash=print,
    )
    thread.actuator = recorder
    return thread, recorder, ledger


def test_a_taken_address_is_announced_count_times_interval_apart(monkeypatch):
    monkeypatch.setattr(actuator_thread.time, "monotonic", clock)
    thread, recorder, ledger = make_actuator_thread(actuator(FakeTool()), 4, 0.2)
    ledger.hold(V6, FAR, "free")
    start = clock.now
    for _ in range(10):
        thread.step([])
        clock.now += 0.1
    assert [(a, round(t - start, 1)) for a, t in recorder.announced] == [
        (V6, 0.0),
        (V6, 0.2),
        (V6, 0.4),
        (V6, 0.6),
    ]


def test_announce_count_0_sends_none(monkeypatch):
    monkeypatch.setattr(actuator_thread.time, "monotonic", clock)
    thread, recorder, ledger = make_actuator_thread(actuator(FakeTool()), 0, 0.2)
    ledger.hold(V4, FAR, "free")
    thread.step([])
    assert recorder.announced == [] and V4 in recorder.act.scan().ours


def test_a_held_address_someone_else_put_there_is_left_alone_and_never_removed(caplog):
    tool = FakeTool()
    tool.put(V4, label="lan0:other")
    thread, recorder, ledger = make_actuator_thread(actuator(tool), 3, 0.5)
    ledger.hold(V4, FAR, "free")
    assert thread.reconcile() and thread.reconcile()
    assert tool.adds == [] and recorder.announced == []
    ledger.release([V4], "rebalance")
    assert thread.reconcile()
    assert V4 in tool.entries
    notes = [r for r in caplog.records if r.getMessage().startswith("leaving 198.51.100.7")]
    assert len(notes) == 1


def test_a_refused_address_is_not_a_failed_reconcile():
    tool = FakeTool()
    thread, _, ledger = make_actuator_thread(actuator(tool, [ipaddress.ip_network(V4)]), 3, 0.5)
    ledger.hold(OUTSIDE, FAR, "free")
    ledger.hold(V4, FAR, "free")
    assert thread.reconcile()
    assert OUTSIDE not in tool.entries and V4 in tool.entries


@pytest.mark.parametrize("shows_protocol, removed", [(False, {V6}), (True, set())])
def test_cleanup_removes_marked_ipv6_addresses_only_where_nothing_else_tells(
    shows_protocol, removed
):
    tool = FakeTool(shows_protocol)
    tool.put(V6)  # a crashed run's (or, with marks visible, someone else's)
    other = ipaddress.ip_address("2001:db8::99")
    tool.put(other)
    left = clear(actuator(tool), {V6})
    assert {V6, other} - set(tool.entries) == removed
    assert left == Interface(frozenset(), frozenset(tool.entries)), "every removal worked"


# --- the balancer thread's conflict flow ---


def test_an_answered_probe_notes_the_conflict_then_unmarks_and_never_holds(monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    thread, store, state, probed = balancer_round_setup(monkeypatch, {V6: "02:00:00:00:ab:02"})
    thread.step([])
    assert probed == [[str(V4), str(V6)]], "one probe for every address taken in a round"
    assert state.held() == {V4}
    assert store.calls[-2:] == [f"note {V6}", f"delete {V6}"], "the note first, then the mark"
    note = json.loads(store.notes[str(V6)])
    until = note.pop("until")
    assert note == {"mac": "02:00:00:00:ab:02", "node": "n1"}
    assert time.time() + 299 <= until <= time.time() + 300, "conflict-backoff from now"
    for _ in range(3):
        thread.step([])
    assert store.calls.count(f"create {V6}") == 1
    assert state.held() == {V4}
    assert thread.state.view.conflicts == {V6: Conflict("02:00:00:00:ab:02", "n1", until)}
    warnings = [r for r in caplog.records if r.getMessage().startswith(f"not taking {V6}")]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert not [r for r in caplog.records if r.getMessage().startswith("skipping")]


def test_a_round_whose_creates_failed_holds_none_of_them_the_next_resumes_them(monkeypatch):
    """create_marks raised (v3: its transaction's answer lost, etcd made the marks all the
    same): nothing is held on the strength of it; the marks are found at the next read."""
    thread, store, state, _ = balancer_round_setup(monkeypatch, {})

    def made_but_failed(addresses):
        DCS.create_marks(store, addresses)
        raise DCSError("the answer was lost")

    store.create_marks = made_but_failed
    thread.step([])
    assert thread.failing and state.held() == set()
    assert store.marks == {str(V4): "n1", str(V6): "n1"}
    del store.create_marks
    thread.step([])
    assert state.held() == {V4, V6}


def test_a_conflict_whose_note_cannot_be_written_is_still_skipped_here(monkeypatch):
    thread, store, state, _ = balancer_round_setup(monkeypatch, {V6: "02:00:00:00:ab:02"})
    store.fail_notes = True
    thread.step([])  # the DCS error ends the round, after the mark was given back
    assert str(V6) not in store.marks and thread.failing
    store.fail_notes = False
    for _ in range(3):
        thread.step([])
    assert store.calls.count(f"create {V6}") == 1
    assert state.held() == {V4}


def test_another_node_s_note_is_skipped_and_logged_once(monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    thread, store, state, _ = balancer_round_setup(monkeypatch, {})
    store.notes[str(V6)] = Conflict("02:00:00:00:ab:02", "n2").text()
    for _ in range(3):
        thread.step([])
    assert state.held() == {V4} and f"create {V6}" not in store.calls
    skips = [r for r in caplog.records if r.getMessage().startswith(f"skipping {V6}")]
    assert len(skips) == 1 and "node n2 saw 02:00:00:00:ab:02" in skips[0].getMessage()


def test_a_probe_that_cannot_run_takes_anyway_and_says_so_once(monkeypatch, caplog):
    thread, store, state, _ = balancer_round_setup(monkeypatch, {})

    def broken(ifname, addresses, duration):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(conflicts, "probe", broken)
    thread.step([])
    store.pool.add("198.51.100.9")
    thread.step([])
    assert state.held() == {V4, V6, ipaddress.ip_address("198.51.100.9")}
    assert len([r for r in caplog.records if "cannot probe lan0" in r.getMessage()]) == 1


def test_probe_timeout_0_takes_without_probing(monkeypatch):
    thread, _, state, probed = balancer_round_setup(monkeypatch, {V6: "02:00:00:00:ab:02"})
    thread.config.probe_timeout_s = 0
    thread.step([])
    assert probed == [] and state.held() == {V4, V6}


# --- the view ---


def test_an_unmarked_pool_address_with_a_note_leaves_the_pool_a_marked_one_stays():
    snapshot = Snapshot(
        pool=frozenset({str(V4), str(V6), "198.51.100.8"}),
        marks={str(V4): Mark("n2")},
        nodes=frozenset({"n1", "n2"}),
        conflicts={str(V4): "{}", str(V6): Conflict("aa", "n1").text(), "198.51.100.99": "x"},
    )
    view, rejected = parse_snapshot(snapshot)
    assert view.pool == {V4, ipaddress.ip_address("198.51.100.8")}
    assert view.conflicts == {V6: Conflict("aa", "n1")}
    assert rejected == ()
    unreadable = snapshot._replace(conflicts={str(V6): "not json"})
    assert parse_snapshot(unreadable)[0].conflicts == {V6: Conflict("?", "?")}


def test_yaimctl_still_lists_an_address_in_conflict_and_names_the_conflict():
    snapshot = Snapshot(
        pool=frozenset({str(V4), str(V6)}),
        marks={str(V4): Mark("n1", 2.0)},
        nodes=frozenset({"n1"}),
        conflicts={str(V6): Conflict("02:00:00:00:ab:02", "n2").text()},
    )
    cluster = ctl.summarize(snapshot)
    assert [(e.address, e.holder) for e in cluster.entries] == [(V4, "n1"), (V6, None)]
    assert ctl.problems(cluster) == [
        f"conflict on {V6}: 02:00:00:00:ab:02 answers for it, a host outside yaim (seen by n2);"
        " nobody takes it until the note expires",
        f"not held by any node: {V6}",
    ]


def test_a_conflict_whose_backoff_is_over_blocks_nothing_though_its_note_lives_on():
    """A new etcd leader renews every lease, the notes' too: their own end counts."""
    ended = Conflict("02:00:00:00:ab:02", "n2", 1000).text()
    lives = Conflict("02:00:00:00:ab:02", "n2", 3000).text()
    snapshot = Snapshot(
        pool=frozenset({str(V4), str(V6)}),
        marks={},
        nodes=frozenset({"n1"}),
        conflicts={str(V4): ended, str(V6): lives},
    )
    view, _ = parse_snapshot(snapshot, (), now=2000.0)
    assert view.pool == {V4} and set(view.conflicts) == {V6}
    assert set(parse_snapshot(snapshot)[0].conflicts) == {V4, V6}, "no clock: the TTL decides"


@pytest.mark.parametrize("until", [True, -1, 1.5, "2000", 2**63, None])
def test_an_until_that_is_no_time_leaves_the_note_to_its_ttl(until):
    text = json.dumps({"mac": "aa", "node": "n2", "until": until})
    assert Conflict.parse(text) == Conflict("aa", "n2") and not Conflict.parse(text).over(1e12)
