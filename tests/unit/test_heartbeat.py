"""The heartbeat thread's round against a scripted DCS: refreshes move fence times, a
lost mark drops its address and has the actuator remove it now."""

from __future__ import annotations

import ipaddress
import threading
from typing import List, Set

from yaim.state import SharedState
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
    state = SharedState(3.0, 0.3)
    state.set_health(True, "test")

    def sync_actuator(timeout: float) -> bool:
        events.append(f"sync {timeout}")
        return False

    thread = HeartbeatThread(
        ScriptedDCS(lost),
        state,
        lambda: events.append("balancer"),
        sync_actuator,
        period=1.0,
        stop=threading.Event(),
        on_crash=print,
    )
    return thread, state


def test_a_lost_mark_drops_its_address_and_the_actuator_is_asked_to_remove_it_now():
    events: List[str] = []
    thread, state = heartbeat({B}, events)
    state.hold(A, 1.0, "free")
    state.hold(B, 1.0, "free")
    thread.step([])
    assert state.held() == {A} and state.next_fence_time() > 1.0  # A refreshed
    assert state.ended_by(B) == ("fence", "mark-lost")
    # the node key appeared (balancer), then B went: the actuator first, without waiting
    assert events == ["balancer", "sync 0.0", "balancer"]
    assert thread.dcs.calls == ["keep_alive", "touch_node"]


def test_refreshes_that_all_work_ask_nothing_of_the_actuator():
    events: List[str] = []
    thread, state = heartbeat(set(), events)
    state.hold(A, 1.0, "free")
    thread.step([])
    thread.step([])
    assert events == ["balancer"] and state.held() == {A}
