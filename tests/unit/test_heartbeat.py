"""The heartbeat thread's round against a scripted DCS: refreshes move fence times through
the ledger, a lost mark is fenced at once and the actuator asked to remove it now."""

from __future__ import annotations

import ipaddress
import threading
import time
from typing import List, Set

import pytest

from yaim.claims import Ledger
from yaim.dcs import DCS, Incomplete, Refreshed
from yaim.errors import DCSError
from yaim.link import Link
from yaim.state import NodeState, Placement
from yaim.threads.failsafe import Policy
from yaim.threads.heartbeat import HeartbeatThread

A, B, C = (ipaddress.ip_address(f"198.51.100.{i}") for i in (7, 8, 9))


class ScriptedDCS:
    """Every mark refreshes but those in `lost`; records the node key calls."""

    node = "n1"
    endpoint = "scripted"

    def check_release(self) -> None:
        """The scripted server serves what the daemon speaks."""

    def __init__(self, lost: Set) -> None:
        self.lost = lost
        self.calls: List[str] = []

    def keep_alive(self) -> None:
        self.calls.append("keep_alive")

    def touch_node(self, weight: int = 1, joining: bool = False) -> None:
        self.calls.append("touch_node")
        self.published = (weight, joining)

    def delete_node(self) -> None:
        self.calls.append("delete_node")

    def touch_out(self, reason: str) -> None:
        self.calls.append(f"touch_out {reason}")

    def delete_out(self) -> None:
        self.calls.append("delete_out")

    def refresh_mark(self, address) -> bool:
        self.calls.append(f"refresh {address}")
        return address not in self.lost

    refresh_marks = DCS.refresh_marks

    def ttl_start(self, sent_at: float) -> float:
        return sent_at


def heartbeat(lost: Set, events: List[str], dcs=None, policy=None):
    ledger = Ledger("n1", 3.0, wake=lambda: events.append("actuator"))
    state = NodeState()
    state.set_health(True, "test")
    thread = HeartbeatThread(
        ScriptedDCS(lost) if dcs is None else dcs,
        ledger,
        state,
        lambda message: events.append("balancer" if message is None else "balancer: read"),
        policy=policy,
        period=1.0,
        stop=threading.Event(),
        on_crash=print,
    )
    return thread, ledger


def test_a_lost_mark_is_fenced_and_the_actuator_is_asked_to_remove_it_now():
    events: List[str] = []
    thread, ledger = heartbeat({B}, events)
    started = time.monotonic()
    ledger.hold(A, started, "free")
    ledger.hold(B, started, "free")
    events.clear()
    thread.step([])
    assert ledger.held() == {A} and ledger.next_fence_time() > ledger.fence_time(started)
    assert ledger.claim(B).end == ("fence", "mark-lost")
    # the node key appeared (balancer), then B went: the actuator first, without waiting;
    # the balancer reads, for its cache may not show B's mark gone yet (a hung member)
    assert events == ["balancer", "actuator", "balancer: read"]
    assert thread.dcs.calls == ["keep_alive", "touch_node", f"refresh {A}", f"refresh {B}"]


def test_a_node_out_has_its_out_key_with_the_reason_instead_of_the_node_key():
    """Each key is written before the other goes: yaimctl finds the node all along."""
    events: List[str] = []
    thread, _ = heartbeat(set(), events)
    thread.step([])
    thread.state.link = Link(False, "lan0 has no carrier")
    thread.step([])
    thread.state.link = Link(True, "lan0 is up again for 1 s")
    thread.state.set_health(False, "http check: 503")
    thread.step([])
    thread.state.set_health(True, "http check: 200")
    thread.step([])
    thread.step([])
    rounds = " | ".join(thread.dcs.calls).split("keep_alive | ")[1:]
    assert [r.rstrip(" |") for r in rounds] == [
        "touch_node",
        "delete_node | touch_out link down: lan0 has no carrier",
        "touch_out not healthy: http check: 503",
        "touch_node | delete_out",
        "touch_node",
    ]


def test_refreshes_that_all_work_ask_nothing_of_the_actuator():
    events: List[str] = []
    thread, ledger = heartbeat(set(), events)
    ledger.hold(A, time.monotonic(), "free")
    events.clear()
    thread.step([])
    thread.step([])
    assert events == ["balancer"] and ledger.held() == {A}


class KeptPolicy(Policy):
    """The failsafe's word on `kept`; records when it was asked, in `calls`."""

    def __init__(self, kept: Set, calls: List[str]) -> None:
        super().__init__(None)
        self.kept, self.calls, self.ended = kept, calls, []

    def covers(self, address) -> bool:
        self.calls.append(f"covers {address}")
        return address in self.kept

    def remarked(self, address) -> None:
        self.ended.append(address)


class Batched(ScriptedDCS):
    """Answers a whole batch at once, as a pooled backend does: each refresh with its own
    send time (`sent`), given in a different order than asked; `failing` makes the batch
    Incomplete after those before it in the ledger's order."""

    def __init__(self, lost: Set, sent: dict, failing=None) -> None:
        super().__init__(lost)
        self.sent, self.failing = sent, failing

    def refresh_marks(self, addresses):
        addresses = list(addresses)
        self.calls.append("refresh " + " ".join(map(str, addresses)))
        if self.failing in addresses:
            answered = addresses[: addresses.index(self.failing)]
        else:
            answered = addresses
        done = {a: Refreshed(a not in self.lost, self.sent[a]) for a in reversed(answered)}
        if self.failing in addresses:
            raise Incomplete("etcd is gone", done)
        return done


def test_each_mark_s_fence_time_counts_from_its_own_request_and_covers_are_asked_first():
    events: List[str] = []
    calls: List[str] = []
    now = time.monotonic()
    sent = {A: now + 0.5, B: now + 0.25, C: now + 0.75}
    policy = KeptPolicy({C}, calls)
    dcs = Batched({C}, sent)
    dcs.calls = calls
    thread, ledger = heartbeat(set(), events, dcs, policy)
    for address in (A, B, C):
        ledger.hold(address, now, "free")
    events.clear()
    thread.step([])
    assert calls == [
        "keep_alive",
        "touch_node",
        f"covers {A}",
        f"covers {B}",
        f"covers {C}",
        f"refresh {A} {B} {C}",
    ]
    assert ledger.claim(A).fence == ledger.fence_time(sent[A])
    assert ledger.claim(B).fence == ledger.fence_time(sent[B])
    assert policy.ended == [B, A], "the renewed ones, in the order of their answers"
    # C: gone, but kept through an outage: not fenced, the balancer makes it again
    assert ledger.held() == {A, B, C} and events == ["balancer", "balancer: read"]


def test_the_answers_before_a_failed_refresh_count_and_the_round_fails():
    events: List[str] = []
    now = time.monotonic()
    sent = {A: now + 0.5, B: now + 0.5, C: now + 0.5}
    thread, ledger = heartbeat(set(), events, Batched({B}, sent, failing=C))
    for address in (A, B, C):
        ledger.hold(address, now, "free")
    with pytest.raises(DCSError):
        thread.dcs_round([])
    assert ledger.claim(A).fence == ledger.fence_time(sent[A])
    assert ledger.claim(B).end == ("fence", "mark-lost")
    assert ledger.claim(C).fence == ledger.fence_time(now), "C unanswered: unchanged"
    thread.step([])
    assert thread.failing


def test_the_node_key_says_joining_until_the_node_took_part_for_rebalance_delay(monkeypatch):
    """rebalance-delay counts from the node key's return, without a break: a flap starts
    it again; the weight goes with every write."""
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    thread, _ = heartbeat(set(), [])
    thread.state.placement = Placement(weight=2, delay=3.0)
    published = []
    for at, healthy in ((100, True), (102, True), (103.5, True), (104, False), (105, True)):
        clock[0] = at
        thread.state.set_health(healthy, "test")
        thread.step([])
        published.append(thread.dcs.published if healthy else None)
    assert published == [(2, True), (2, True), (2, False), None, (2, True)]
