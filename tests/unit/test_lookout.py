"""The lookout (yaim.lookout): when an address counts as silent, which holders and
addresses are probed when, and the balancer holding a silent address without probing it
again after its mark (and probing every other one as before)."""

from __future__ import annotations

import ipaddress
import logging
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.unit.fakes import V4, V6, NotedDCS, healthy_balancer
from yaim import balancer, conflicts
from yaim.actuator.announce import gratuitous_arp_frame
from yaim.actuator.probe import (
    PACKET_OUTGOING,
    PROBES,
    arp_answer,
    arp_probe_frame,
    mac_bytes,
    mac_text,
)
from yaim.claims import Ledger
from yaim.lookout import Lookout, Silence, sentinels, successors
from yaim.state import NodeState, Reading
from yaim.threads import lookout as lookout_thread_module
from yaim.view import ClusterView

WINDOW = 0.25  # probe-timeout
STEP = WINDOW / PROBES
A = ipaddress.ip_address("198.51.100.10")
ROOT = Path(__file__).resolve().parents[2]


def probed_every_step(silence: Silence, address, start: float, until: float) -> float:
    """Probe `address` every STEP from `start` while before `until`; the last send time."""
    at = start
    while at < until - 1e-9:
        silence.sent([address], at)
        last, at = at, at + STEP
    return last


# --- the rule ---


def test_silent_after_the_whole_window_of_probes_and_not_before():
    silence = Silence(WINDOW, PROBES)
    last = probed_every_step(silence, A, 0.0, WINDOW + 1e-6)
    assert last == pytest.approx(WINDOW)
    assert not silence.silent(A, WINDOW - 0.01), "less than probe-timeout since the first probe"
    assert silence.silent(A, WINDOW + 0.001)


def test_an_answer_at_any_time_starts_the_silence_again():
    silence = Silence(WINDOW, PROBES)
    probed_every_step(silence, A, 0.0, 1.0)
    assert silence.silent(A, 1.0)
    silence.heard(A)  # the holder answered a moment before the balancer asks
    probed_every_step(silence, A, 1.0, 1.0 + WINDOW - 0.01)
    assert not silence.silent(A, 1.0 + WINDOW - 0.01)
    probed_every_step(silence, A, 1.0 + WINDOW - 0.01 + STEP / 2, 1.0 + 2 * WINDOW)
    assert silence.silent(A, 1.0 + 2 * WINDOW)


def test_a_gap_in_the_probes_starts_the_silence_again():
    silence = Silence(WINDOW, PROBES)
    probed_every_step(silence, A, 0.0, 1.0)
    silence.sent([A], 1.0 + 2 * STEP)  # the thread stalled for two probe intervals
    assert not silence.silent(A, 1.0 + 2 * STEP)
    assert not silence.silent(A, 1.0 + 2 * STEP + WINDOW)  # and nothing was sent since


def test_probes_stopped_too_long_ago_prove_nothing_about_now():
    silence = Silence(WINDOW, PROBES)
    last = probed_every_step(silence, A, 0.0, 1.0)
    assert silence.silent(A, last + STEP)
    assert not silence.silent(A, last + 2 * STEP)


def test_each_counted_probe_had_a_probe_interval_to_be_answered():
    silence = Silence(WINDOW, PROBES)
    gap = silence.max_gap
    for at in (0.0, gap, 2 * gap):  # as far apart as a run allows
        silence.sent([A], at)
    # the window has passed since the first, but the last one has just gone out:
    assert not silence.silent(A, 2 * gap), "two probes had time to be answered, not three"
    silence.sent([A], 2 * gap + STEP)
    assert silence.silent(A, 2 * gap + STEP + 1e-9)


def test_lost_packets_end_every_silence():
    silence = Silence(WINDOW, PROBES)
    probed_every_step(silence, A, 0.0, 1.0)
    silence.deaf()
    assert not silence.silent(A, 1.0)


# --- what is probed when ---

NODES = ["n1", "n2", "n3"]
POOL = [ipaddress.ip_address(f"198.51.100.{100 + i}") for i in range(6)]


def settled_view(nodes=NODES, pool=POOL) -> ClusterView:
    """Three nodes, six addresses (or those given), as the balancer settles them from
    nothing."""
    view = ClusterView(nodes=frozenset(nodes), pool=frozenset(pool), holders={})
    holders = {a: node for node in nodes for a in balancer.plan(view, node).take}
    return view._replace(holders=holders)


def of(view: ClusterView, node: str):
    return {a for a, holder in view.holders.items() if holder == node}


def test_one_sentinel_per_other_holder_its_lowest_address():
    view = settled_view()
    assert sentinels(view, "n1") == {n: min(of(view, n)) for n in ("n2", "n3")}


def test_a_node_watches_only_the_holders_it_is_an_heir_of_and_every_holder_is_watched():
    """50 nodes, 500 addresses: the sentinels sent per interval are about M + N, not
    N x (N - 1); the few nodes the balancer gives a vanished holder's addresses to watch
    it (the odd addresses go to the nodes holding most, then by name: the same ~M/N + 1
    nodes for every holder), the others watch nobody."""
    nodes = [f"n{i:02d}" for i in range(50)]
    pool = [ipaddress.ip_address("2001:db8::") + i for i in range(500)]
    view = settled_view(nodes, pool)
    watched = {node: set(sentinels(view, node)) for node in nodes}
    per_holder = len(pool) // len(nodes)
    assert set().union(*watched.values()) == set(nodes), "every holder is watched"
    watching = [node for node in nodes if watched[node]]
    assert len(watching) <= per_holder + 2
    assert sum(map(len, watched.values())) <= (per_holder + 2) * (len(nodes) - 1)
    for gone in nodes[::10]:
        heirs = {n for n in nodes if balancer.plan(without(view, gone), n).take & of(view, gone)}
        assert heirs and all(gone in watched[n] for n in heirs), gone


def test_the_watched_holders_are_chosen_again_from_settled_views_only():
    view = settled_view()
    lookout = lookout_of("n2")
    lookout.follow(view, 0.0)
    assert set(lookout.sentinels) == {"n1", "n3"}
    chosen = dict(lookout.sentinels)
    joined, free = ipaddress.ip_address("198.51.100.90"), ipaddress.ip_address("198.51.100.91")
    moving = view._replace(
        nodes=view.nodes | {"n4"},
        pool=view.pool | {joined, free},
        holders={**view.holders, joined: "n4"},
    )
    lookout.follow(moving, 1.0)  # a free address: not chosen again from this view
    assert lookout.sentinels == chosen
    lookout.follow(without(moving, "n1"), 2.0)  # n1 gone: kept those still holding theirs
    assert lookout.sentinels == {"n3": chosen["n3"]}
    two = settled_view(["n2", "n3"])
    lookout.follow(two, 3.0)
    assert lookout.sentinels == sentinels(two, "n2") == {"n3": min(of(two, "n3"))}


def test_the_lookout_imports_no_actuator_and_no_socket():
    """yaim.lookout is pure: the probe's count is given to it, not imported."""
    code = "import sys, yaim.lookout\n"
    code += "print([m for m in sys.modules if 'actuator' in m or m == 'socket'])"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def without(view: ClusterView, gone: str) -> ClusterView:
    """The view once `gone`'s marks and node key have expired."""
    holders = {a: h for a, h in view.holders.items() if h != gone}
    return view._replace(nodes=view.nodes - {gone}, holders=holders)


def test_successors_are_the_planned_taker_and_the_two_wanting_most():
    view = settled_view()
    for node in ("n2", "n3"):  # two left: both may take either address
        planned = balancer.plan(without(view, "n1"), node).take
        assert successors(view, node, {"n1"}) == of(view, "n1") >= planned
    nodes = [f"n{i}" for i in range(1, 7)]
    pool = [ipaddress.ip_address(f"198.51.100.{100 + i}") for i in range(60)]
    big = ClusterView(nodes=frozenset(nodes), pool=frozenset(pool), holders={})
    big = big._replace(holders={a: n for n in nodes for a in balancer.plan(big, n).take})
    gone = without(big, "n1")
    probing = {a: {n for n in nodes[1:] if a in successors(big, n, {"n1"})} for a in pool}
    for address in of(big, "n1"):
        (taker,) = [n for n in nodes[1:] if address in balancer.plan(gone, n).take]
        assert taker in probing[address] and len(probing[address]) <= 3, address
    assert all(not probing[a] for a in pool if big.holders[a] != "n1")


def lookout_of(me: str = "n2") -> Lookout:
    return Lookout(me, WINDOW, PROBES, period=0.5, patience=3.0, linger=0.5)


def run(lookout: Lookout, start: float, until: float, answer=None) -> float:
    """Drive the lookout as its thread does, from `start` to `until`: at each due time tick,
    send what is due; `answer(address, now)` returns the MAC that answers, or None."""
    now = start
    while now < until:
        lookout.tick(now)
        probes = lookout.due(now)
        lookout.sent(probes, now)
        for address, _ in probes:
            mac = answer(address, now) if answer else None
            if mac is not None:
                lookout.heard(address, mac, now + 0.001)
        now = max(lookout.next_time(), now + 0.001)
    return now


def test_a_holder_that_answers_gets_one_probe_per_interval_to_its_mac_alone():
    view = settled_view()
    lookout = lookout_of()
    lookout.follow(view, 0.0)
    sent = []

    def answer(address, now):
        sent.append((address, now))
        return "02:00:00:00:00:01"

    run(lookout, 0.0, 5.0, answer)
    assert not lookout.suspects and not lookout.probed
    assert {a for a, _ in sent} == set(sentinels(view, "n2").values())
    assert len(sent) == 2 * 10, "one per holder per interval"
    later = lookout.due(lookout.next_round)
    assert all(mac == "02:00:00:00:00:01" for _, mac in later), "unicast once it answered"


def test_answers_read_only_at_the_next_step_suspect_nobody_and_wake_it_twice_an_interval():
    view = settled_view()
    lookout = lookout_of()
    lookout.follow(view, 0.0)
    waiting, steps, now = [], 0, 0.0
    while now < 5.0:  # the thread outside suspicion: answers wait in the socket
        for address, mac in waiting:
            lookout.heard(address, mac, now)  # read first, as LookoutThread.step does
        waiting.clear()
        assert not lookout.tick(now) and not lookout.urgent()
        probes = lookout.due(now)
        lookout.sent(probes, now)
        waiting += [(address, "02:00:00:00:00:01") for address, _ in probes]
        steps, now = steps + 1, lookout.next_time()
    assert steps == 2 * 10, "a probe and a judgement per interval, however many answer"
    run(lookout, now, now + 1.0)  # nobody answers any more
    assert lookout.suspects and lookout.urgent(), "a suspect's answer is read as it comes"


def test_a_holder_gone_silent_is_suspected_and_its_addresses_probed_until_silent():
    view = settled_view()
    lookout = lookout_of()
    lookout.follow(view, 0.0)
    crashed = 1.0
    mine = successors(view, "n2", {"n1"})
    assert mine

    def answer(address, now):
        return None if view.holders[address] == "n1" and now >= crashed else "02:00:00:00:00:09"

    changes = []
    now = 0.0
    while now < crashed + 0.5 + WINDOW + 0.3:
        changes += lookout.tick(now)
        probes = lookout.due(now)
        lookout.sent(probes, now)
        for address, _ in probes:
            heard = answer(address, now) if address in view.holders else None
            if heard is not None:
                lookout.heard(address, heard, now + 0.001)
        now = max(lookout.next_time(), now + 0.001)
    suspected = [c for c in changes if c.what == "suspected"]
    assert [c.holder for c in suspected] == ["n1"] and suspected[0].probed == mine
    assert set(lookout.probed) == mine
    assert lookout.silent(mine | of(view, "n3"), now) == mine
    assert lookout.next_time() - now <= STEP + 1e-9, "probed every probe interval"


def test_an_answer_of_the_sentinel_ends_the_suspicion_and_the_probes_after_a_while():
    view = settled_view()
    lookout = lookout_of()
    lookout.follow(view, 0.0)
    end = run(lookout, 0.0, 1.0)  # nobody answers anything
    assert set(lookout.suspects) == {"n1", "n3"}
    both = successors(view, "n2", {"n1", "n3"})
    assert set(lookout.probed) == both
    changes = lookout.heard(sentinels(view, "n2")["n1"], "02:00:00:00:00:01", end)
    assert [(c.holder, c.what) for c in changes] == [("n1", "answers")]
    assert set(lookout.probed) == both, "probed a while longer"
    lookout.tick(end + 0.6)  # linger over
    assert set(lookout.probed) == successors(view, "n2", {"n3"})


def test_a_mark_gone_from_the_view_keeps_its_address_probed_while_the_balancer_takes_it():
    view = settled_view()
    lookout = lookout_of()
    lookout.follow(view, 0.0)
    end = run(lookout, 0.0, 1.5)
    mine = successors(view, "n2", {"n1"})
    assert lookout.silent(mine, end) == mine
    expired = view._replace(
        nodes=view.nodes - {"n1"}, holders={a: h for a, h in view.holders.items() if h != "n1"}
    )
    lookout.follow(expired, end)  # the lookout saw the read before the balancer asked
    lookout.sent(lookout.due(end + 0.01), end + 0.01)
    assert lookout.silent(mine, end + 0.02) == mine


def test_patience_ends_the_probes_of_a_holder_whose_marks_live_on():
    view = settled_view()
    lookout = lookout_of()
    lookout.follow(view, 0.0)
    end = run(lookout, 0.0, 5.0)
    assert not lookout.suspects and lookout.given_up == {"n1", "n3"}
    assert not lookout.probed
    lookout.heard(sentinels(view, "n2")["n1"], "02:00:00:00:00:01", end)
    assert lookout.given_up == {"n3"}, "suspected again once it has answered"


def test_nothing_is_watched_while_the_node_takes_no_part():
    lookout = lookout_of()
    lookout.follow(settled_view(), 0.0)
    run(lookout, 0.0, 1.0)
    lookout.follow(None, 1.0)
    lookout.tick(2.0)
    assert not lookout.watching and lookout.due(2.0) == []


# --- the probe's answers ---

OWN = bytes.fromhex("020000000001")
OTHER = bytes.fromhex("020000000002")


def test_any_arp_packet_from_the_address_is_an_answer_but_ours_and_probes():
    incoming = ("lan0", 0x0806, 0, 1, OTHER)  # (interface, protocol, packet type, ...)
    reply = gratuitous_arp_frame(OTHER, A, True)
    assert arp_answer(reply, incoming, OWN) == (A.packed, mac_text(OTHER))
    assert arp_answer(gratuitous_arp_frame(OWN, A, False), incoming, OWN) is None
    assert arp_answer(arp_probe_frame(OTHER, A), incoming, OWN) is None, "sender 0.0.0.0"
    outgoing = ("lan0", 0x0806, PACKET_OUTGOING, 1, OTHER)
    assert arp_answer(reply, outgoing, OWN) is None


def test_mac_bytes_reads_what_mac_text_writes():
    assert mac_bytes(mac_text(OTHER)) == OTHER
    assert mac_bytes("2001:db8::1 (no MAC given)") is None


# --- the balancer ---


@pytest.fixture
def n1(monkeypatch):
    """n1's balancer thread with a lookout that finds V4 silent; V4 and V6 marked by n2,
    which does not take part; the probes sent after a mark."""
    probed = []

    def probe(ifname, addresses, duration):
        probed.append(sorted(map(str, addresses)))
        return {}

    monkeypatch.setattr(conflicts, "probe", probe)
    asked = []

    def ahead(addresses):
        asked.append(set(addresses))
        return frozenset(a for a in addresses if a == V4)

    store = NotedDCS([V4, V6])
    ledger = Ledger("n1", 3.0)
    thread = healthy_balancer(store, ledger, ahead=ahead)
    store.put_mark(V4, "n2")
    store.put_mark(V6, "n2")
    thread.step([])
    assert ledger.held() == set() and probed == []
    return thread, store, ledger, probed, asked


def test_an_expired_mark_whose_address_is_silent_is_held_without_a_probe(n1, caplog):
    caplog.set_level(logging.INFO)
    thread, store, ledger, probed, asked = n1
    store.release_by(V4, "n2", note=False)  # expired: no note
    store.release_by(V6, "n2", note=False)
    thread.step([])
    assert ledger.held() == {V4, V6}
    assert asked == [{V4, V6}], "asked once, after both marks were made"
    assert probed == [[str(V6)]], "the silent one is not probed again"
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith(f"not probing {V4} again on node n1: nobody answered") for m in messages
    )
    assert f"took {V4} on node n1: it was free" in messages


def test_a_handover_needs_no_lookout(n1):
    thread, store, ledger, probed, asked = n1
    store.release_by(V4, "n2")
    thread.step([])
    assert ledger.held() == {V4} and asked == [] and probed == []


def test_an_answer_after_the_mark_is_still_a_conflict(monkeypatch):
    """A silent address is not probed again; one that is not silent is, and an answer then
    refuses it as before."""
    monkeypatch.setattr(conflicts, "probe", lambda ifname, addresses, d: {V6: "02:00:00:00:00:09"})
    store = NotedDCS([V4, V6])
    ledger = Ledger("n1", 3.0)
    thread = healthy_balancer(store, ledger, ahead=lambda addresses: frozenset({V4}) & addresses)
    thread.step([])
    assert ledger.held() == {V4}
    assert str(V6) in store.notes and str(V6) not in store.marks


# --- the thread ---


class FakeProber:
    """The sockets as the lookout thread sees them: `waiting` answers not read yet."""

    instances: list = []
    fail = None  # what every send raises: the link cannot be used

    def __init__(self, ifname: str) -> None:
        self.sent = []
        self.waiting = []
        self.lost = False
        FakeProber.instances.append(self)

    def fds(self):
        return []

    def send(self, probes) -> None:
        if self.fail:
            raise self.fail
        self.sent.append(list(probes))

    def heard(self):
        answers, self.waiting, lost, self.lost = self.waiting, [], self.lost, False
        return answers, lost

    def close(self) -> None:
        pass


@pytest.fixture
def lookout_thread(monkeypatch):
    """n2's lookout thread over the settled view, its clock and prober faked; n1 silent."""
    clock = [0.0]
    monkeypatch.setattr(lookout_thread_module.time, "monotonic", lambda: clock[0])
    FakeProber.instances, FakeProber.fail = [], None
    monkeypatch.setattr(lookout_thread_module, "Prober", FakeProber)
    state = NodeState()
    state.set_health(True, "fine")
    view = settled_view()
    state.latest = Reading(None, view, ())
    config = SimpleNamespace(
        node_name="n2", interface="lan0", interval_s=0.5, ttl_s=2.0, probe_timeout_s=WINDOW
    )
    thread = lookout_thread_module.LookoutThread(
        config, state, stop=threading.Event(), on_crash=print
    )

    def advance(until: float) -> None:
        while clock[0] < until:
            thread.step([])
            prober = FakeProber.instances[-1] if FakeProber.instances else None
            for address, _ in prober.sent[-1] if prober and prober.sent else []:
                if view.holders.get(address) == "n3":  # n3 answers, n1 has crashed
                    prober.waiting.append((address, "02:00:00:00:00:03"))
            clock[0] = max(clock[0] + 0.001, thread.lookout.next_time())

    return thread, view, advance


def test_the_thread_reads_every_waiting_answer_before_it_says_silent(lookout_thread):
    thread, view, advance = lookout_thread
    advance(1.5)
    mine = successors(view, "n2", {"n1"})
    assert thread.silent(mine) == mine
    prober = FakeProber.instances[-1]
    prober.waiting.append((min(mine), "02:00:00:00:00:01"))  # in the socket, not read yet
    assert thread.silent(mine) == mine - {min(mine)}


def test_dropped_packets_or_a_failed_send_leave_nothing_silent(lookout_thread, caplog):
    thread, view, advance = lookout_thread
    advance(1.5)
    mine = successors(view, "n2", {"n1"})
    FakeProber.instances[-1].lost = True
    assert thread.silent(mine) == frozenset()
    advance(2.0)
    assert thread.silent(mine) == mine
    FakeProber.fail = OSError("Network is down")
    caplog.set_level(logging.INFO)
    advance(3.0)
    assert thread.silent(mine) == frozenset()
    warned = [r.getMessage() for r in caplog.records if "cannot probe lan0" in r.getMessage()]
    assert len(warned) == 1, "said once"
    FakeProber.fail = None
    advance(3.5)
    assert thread.silent(mine) == mine
    assert any("can probe lan0 ahead of expiries again" in r.getMessage() for r in caplog.records)
