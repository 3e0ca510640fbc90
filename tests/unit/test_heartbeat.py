"""The heartbeat thread's round against a scripted DCS: refreshes move fence times through
the ledger, a lost mark is fenced at once and the actuator asked to remove it now."""

from __future__ import annotations

import ipaddress
import threading
import time
from typing import List, Set

from yaim.claims import Ledger
from yaim.state import NodeState
from yaim.threads.heartbeat import HeartbeatThread

A, B = (ipaddress.ip_address(f"198.51.100.{i}") for i in (7, 8))


class ScriptedDCS:
    """Every mark refreshes but those in `lost`; records the node key calls."""

    node = "n1"
    endpoint = "scripted"

    def __init__(self, lost: Set) -> None:
        self.lost = lost
        self.calls: List[str] = []

    def keep_alive(self) -> None:
        self.calls.append("keep_alive")

    def touch_node(self) -> None:
        self.calls.append("touch_node")

    def delete_node(self) -> None:
        self.calls.append("delete_node")

    def refresh_mark(self, address) -> bool:
        return address not in self.lost

    def ttl_start(self, sent_at: float) -> float:
        return sent_at


def heartbeat(lost: Set, events: List[str]):
    ledger = Ledger("n1", 3.0, wake=lambda: events.append("actuator"))
    state = NodeState()
    state.set_health(True, "test")
    thread = HeartbeatThread(
        ScriptedDCS(lost),
        ledger,
        state,
        lambda: events.append("balancer"),
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
    # the node key appeared (balancer), then B went: the actuator first, without waiting
    assert events == ["balancer", "actuator", "balancer"]
    assert thread.dcs.calls == ["keep_alive", "touch_node"]


def test_refreshes_that_all_work_ask_nothing_of_the_actuator():
    events: List[str] = []
    thread, ledger = heartbeat(set(), events)
    ledger.hold(A, time.monotonic(), "free")
    events.clear()
    thread.step([])
    thread.step([])
    assert events == ["balancer"] and ledger.held() == {A}
