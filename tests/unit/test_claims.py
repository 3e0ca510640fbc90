"""The claims ledger without threads: fence times, the hold rule, each event reported
exactly once and in pairs, releases finished only once the address is off."""

from __future__ import annotations

import ipaddress
import logging
from typing import List, Tuple

import pytest

from tests.unit.fakes import Clock
from yaim.claims import HANDOVER_WINDOW, Interface, Ledger, fence_margin
from yaim.metrics import Metrics

A, B, C = (ipaddress.ip_address(f"198.51.100.{i}") for i in (1, 2, 3))
TTL = 3.0  # the margin is 0.3 s, so a mark lasts 2.7 s from its TTL's start


class Made:
    """A ledger of node n1 on a test clock, its events and its metrics."""

    def __init__(self) -> None:
        self.clock = Clock(100.0)
        self.events: List[Tuple[str, object, str]] = []
        self.wakes = 0
        self.metrics = Metrics()
        self.ledger = Ledger(
            "n1",
            TTL,
            lambda event, address, reason: self.events.append((event, address, reason)),
            self.metrics,
            self._wake,
            self.clock,
        )

    def _wake(self) -> None:
        self.wakes += 1

    def hold(self, *addresses, reason: str = "free") -> None:
        for address in addresses:
            assert self.ledger.hold(address, self.clock.now, reason)

    def interface(self, *on, present=()) -> None:
        """The actuator's word: `on` are yaim's, `present` the others on the interface."""
        self.ledger.confirm(Interface(frozenset(on), frozenset(on) | frozenset(present)))

    def count(self, metric: str, label: str, value: str) -> float:
        return self.metrics.registry.get_sample_value(f"yaim_{metric}_total", {label: value})


@pytest.fixture
def made() -> Made:
    return Made()


def test_the_fence_time_is_the_ttl_start_plus_ttl_minus_the_margin(made):
    assert fence_margin(3.0) == pytest.approx(0.3) and fence_margin(0.5) == 0.1
    assert made.ledger.fence_time(100.0) == pytest.approx(102.7)


def test_an_address_is_held_only_while_its_mark_is_sure_to_live_long_enough(made):
    # 2.7 s of life from its TTL's start; at least HANDOVER_WINDOW x ttl = 1.5 s must be left
    assert HANDOVER_WINDOW * TTL == 1.5
    assert not made.ledger.hold(A, made.clock.now - 1.3, "free")
    assert made.ledger.hold(A, made.clock.now - 1.2, "free")
    assert made.ledger.held() == {A} and made.wakes == 1
    assert made.count("takeovers", "reason", "free") == 1


def test_a_closed_ledger_holds_nothing_more_and_releases_everything(made):
    made.hold(A)
    made.interface(A)
    made.ledger.close()
    assert not made.ledger.hold(B, made.clock.now, "free")
    assert made.ledger.held() == set()
    made.interface()
    assert made.events == [("take", A, "free"), ("release", A, "stopping")]
    assert made.ledger.finish(made.ledger.claimed()) == {A: None}


def test_expired_claims_are_fenced_and_only_those(made, caplog):
    made.ledger.hold(A, 100.0, "free")
    made.ledger.hold(B, 101.0, "free")
    assert made.ledger.next_fence_time() == pytest.approx(102.7)
    made.clock.now = 102.69
    assert made.ledger.expired() == []
    made.clock.now = 103.0
    [fenced] = made.ledger.expired()
    assert fenced.address == A and fenced.late == pytest.approx(0.3)
    assert made.ledger.held() == {B} and made.ledger.next_fence_time() == pytest.approx(103.7)
    assert made.count("fencing_events", "cause", "deadline") == 1
    said = "fenced 198.51.100.1 on node n1: its mark could not be refreshed in time (0.30s late)"
    assert said in caplog.text


def test_a_renewal_never_moves_the_fence_back_and_ignores_what_was_fenced(made):
    made.ledger.hold(A, 100.0, "free")
    made.ledger.renewed(A, 99.0)
    assert made.ledger.next_fence_time() == pytest.approx(102.7)
    made.ledger.renewed(A, 101.0)
    assert made.ledger.next_fence_time() == pytest.approx(103.7)
    assert made.ledger.lost(A, "gone")
    made.ledger.renewed(A, 105.0)
    assert made.ledger.next_fence_time() is None and made.ledger.renewable() == []


def test_take_once_on_the_interface_then_the_end_of_whoever_ended_it_first(made):
    made.hold(A, reason="handover")
    made.hold(B)
    made.interface()  # neither is on yet
    assert made.events == []
    made.interface(A, B)
    made.interface(A, B)
    assert made.events == [("take", A, "handover"), ("take", B, "free")]
    assert made.ledger.lost(A, "held by n2")  # fenced first
    assert made.ledger.release([A, B], "unhealthy") == [B]  # A is ended already
    assert not made.ledger.lost(A, "gone")
    made.interface(B)  # B's removal failed this round
    assert made.events[2:] == [("fence", A, "mark-lost")]
    made.interface()
    made.interface()
    assert made.events[3:] == [("release", B, "unhealthy")]
    assert made.count("fencing_events", "cause", "mark-lost") == 1


def test_a_claim_ended_before_it_got_on_reports_neither_take_nor_end(made):
    made.hold(A, B)
    made.ledger.release([B], "rebalance")
    made.interface(A)
    assert made.events == [("take", A, "free")]
    assert made.ledger.finish([B]) == {B: None}
    assert made.count("releases", "reason", "rebalance") == 1


def test_an_address_held_again_before_it_was_off_keeps_its_take(made):
    made.hold(A)
    made.interface(A)
    assert made.ledger.lost(A, "gone")
    made.hold(A, reason="free")  # marked anew before the actuator's round
    made.interface(A)
    assert made.events == [("take", A, "free")]


def test_a_release_is_finished_once_the_address_is_off_with_the_note_s_mark(made, caplog):
    caplog.set_level(logging.INFO)
    made.ledger.hold(A, made.clock.now, "free", mark=7)
    made.hold(B)
    made.ledger.saw({B: 8, C: 9})  # C is not claimed: nothing to note
    made.interface(A, B)
    assert made.ledger.release([A, B, C], "drained") == [A, B]
    made.interface(present=[B])  # B is off as yaim's, but someone else's B is there
    assert made.ledger.finish([A, B, C]) == {A: 7, B: None}, "no note for an address still here"
    assert made.ledger.claimed() == set()
    assert "released 198.51.100.1 on node n1: the node is drained" in caplog.text
    assert made.count("releases", "reason", "drained") == 2


def test_a_release_that_did_not_get_off_in_time_stays_held_with_its_reason(made, caplog):
    """It used to be held again as "resumed", a reason it was never taken for."""
    made.hold(A, reason="handover")
    made.interface(A)
    made.ledger.release([A], "rebalance")
    made.interface(A)  # the removal failed
    assert made.ledger.finish([A]) == {}
    assert made.ledger.held() == {A} and made.ledger.claim(A).reason == "handover"
    assert "keeping 198.51.100.1 on node n1: could not be removed yet" in caplog.text
    made.ledger.release([A], "rebalance")  # the next round's try
    made.interface()
    assert made.ledger.finish([A]) == {A: None}
    assert made.events == [("take", A, "handover"), ("release", A, "rebalance")]
    assert made.count("takeovers", "reason", "handover") == 1


def test_a_mark_lost_after_its_address_went_off_gets_no_note(made):
    made.ledger.hold(A, made.clock.now, "free", mark=7)
    made.interface(A)
    made.ledger.release([A], "rebalance")
    made.interface()
    assert not made.ledger.lost(A, "held by n2")
    assert made.ledger.finish([A]) == {A: None}


def test_a_fenced_claim_is_forgotten_once_off_and_a_releasing_one_renewed(made):
    made.hold(A, B)
    made.interface(A, B)
    made.ledger.release([B], "rebalance")
    assert made.ledger.renewable() == [A, B], "B may still be on: its mark must live"
    made.clock.now += 3.0
    assert [f.address for f in made.ledger.expired()] == [A, B]
    made.interface()
    assert made.ledger.claimed() == set()
    assert made.events[2:] == [("fence", A, "deadline"), ("fence", B, "deadline")]
