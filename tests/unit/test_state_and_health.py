"""Pure logic of the shared state (fence times) and of rise/fall, with fakes for the checker."""

from __future__ import annotations

import ipaddress
import threading
from types import SimpleNamespace

from yaim.actuator.announce import gratuitous_arp_frame
from yaim.checks import BaseChecker, CheckResult
from yaim.state import SharedState
from yaim.threads.health import HealthThread

A = ipaddress.ip_address("198.51.100.1")
B = ipaddress.ip_address("198.51.100.2")


def test_fence_time_is_send_time_plus_ttl_minus_margin():
    state = SharedState(ttl=3.0, margin=0.3)
    assert state.fence_time(100.0) == 102.7


def test_expired_addresses_are_dropped_and_only_those():
    state = SharedState(ttl=3.0, margin=0.3)
    state.hold(A, state.fence_time(100.0), "free")
    state.hold(B, state.fence_time(101.0), "free")
    assert state.next_fence_time() == 102.7
    assert state.fence_expired(now=102.69) == []
    assert state.fence_expired(now=103.0) == [(A, 103.0 - 102.7)]
    assert state.held() == {B}
    assert state.ended_by(A) == ("fence", "deadline")


def test_extend_never_moves_the_fence_back_and_ignores_dropped():
    state = SharedState(ttl=3.0, margin=0.3)
    state.hold(A, state.fence_time(100.0), "free")
    state.extend(A, 99.0)
    assert state.next_fence_time() == 102.7
    state.extend(A, 101.0)
    assert state.next_fence_time() == 103.7
    assert state.drop(A, "release", "rebalance") == 103.7
    state.extend(A, 105.0)
    assert state.held() == set()


def test_each_address_keeps_why_it_was_last_taken_and_what_last_ended_it():
    state = SharedState(ttl=3.0, margin=0.3)
    state.hold(A, 10.0, "free")
    assert state.drop(B, "release", "rebalance") is None  # not held: nothing ended
    state.drop(A, "release", "unhealthy")
    state.hold(A, 10.0, "handover")
    assert state.drop(A, "fence", "mark-lost") == 10.0
    assert state.drop(A, "release", "removed") is None  # dropped already: the fence stands
    assert (state.taken_for(A), state.ended_by(A)) == ("handover", ("fence", "mark-lost"))


def test_closed_state_holds_nothing_more():
    state = SharedState(ttl=3.0, margin=0.3)
    state.hold(A, 10.0, "free")
    assert state.close() == {A}
    assert not state.hold(B, 10.0, "free")
    assert state.held() == set()
    assert state.ended_by(A) == ("release", "stopping")


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
    state = SharedState(3.0, 0.3)
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
