"""The node's health state and rise/fall, with a scripted checker (the claims: test_claims)."""

from __future__ import annotations

import ipaddress
import threading
from types import SimpleNamespace

from yaim.actuator.announce import gratuitous_arp_frame
from yaim.checks import BaseChecker, CheckResult
from yaim.state import NodeState
from yaim.threads.health import HealthThread

A = ipaddress.ip_address("198.51.100.1")


class Scripted(BaseChecker):
    """Answers with a fixed script of results."""

    def __init__(self, results):
        super().__init__(None)
        self.results = list(results)
        self.calls = 0

    def check(self) -> CheckResult:
        self.calls += 1
        healthy = self.results.pop(0)
        return CheckResult(healthy, f"scripted {healthy}")


def health(results, rise=1, fall=1, retry_num=1):
    config = SimpleNamespace(
        retry_num=retry_num, retry_after_s=0.0, check_rise=rise, check_fall=fall, node_name="n1"
    )
    changes = []
    state = NodeState()
    thread = HealthThread(
        Scripted(results),
        state,
        config,
        changes.append,
        period=1.0,
        stop=threading.Event(),
        on_crash=print,
    )
    return thread, state, changes


def run_rounds(thread, n):
    for _ in range(n):
        thread.step([])


def test_the_health_state_says_whether_it_changed():
    state = NodeState()
    assert (state.healthy, state.health_reason, state.view) == (False, "not checked yet", None)
    assert state.set_health(True, "fine") and not state.set_health(True, "still fine")
    assert state.health == (True, "still fine")


def test_rise_needs_consecutive_successes():
    thread, state, changes = health([True, False, True, True], rise=2)
    run_rounds(thread, 3)
    assert not state.healthy and changes == []
    run_rounds(thread, 1)
    assert state.healthy and changes == [True]


def test_fall_needs_consecutive_failures():
    thread, state, changes = health([True, False, True, False, False], fall=2)
    run_rounds(thread, 4)
    assert state.healthy and changes == [True]
    run_rounds(thread, 1)
    assert not state.healthy and changes == [True, False]


def test_a_round_retries_until_one_success():
    thread, state, _ = health([False, False, True], retry_num=3)
    run_rounds(thread, 1)
    assert state.healthy and thread.checker.calls == 3


def test_a_round_fails_only_when_every_try_fails():
    thread, state, _ = health([True, False, False], retry_num=2)
    run_rounds(thread, 2)
    assert not state.healthy and thread.checker.calls == 3


def test_gratuitous_arp_frame_layout():
    mac = bytes.fromhex("020000000001")
    frame = gratuitous_arp_frame(mac, A)
    assert len(frame) == 42
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == mac and frame[12:14] == b"\x08\x06"
    arp = frame[14:]
    assert arp[6:8] == b"\x00\x01"  # request
    assert arp[8:14] == mac and arp[14:18] == A.packed and arp[24:28] == A.packed
