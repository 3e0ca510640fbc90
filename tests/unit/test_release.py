"""Releases: every address off the interface first (one actuator round for all of
them), then the marks; nothing deleted when the actuator could not remove them."""

from __future__ import annotations

import pytest

from tests.unit.fakes import V4, V6, FakeInterface, NotedDCS, balancer_round_setup


@pytest.fixture
def n1(monkeypatch):
    """n1's balancer thread holding V4 and V6, on the interface, its actuator rounds counted."""
    thread, store, ledger, _ = balancer_round_setup(monkeypatch, {}, NotedDCS)
    interface = FakeInterface(ledger)
    thread.sync_actuator = interface.sync
    thread.step([])
    interface.sync(0.0)
    assert ledger.held() == {V4, V6} and ledger.claim(V4).on
    interface.rounds.clear()
    return thread, store, ledger, interface.rounds


def test_a_release_of_several_addresses_takes_one_actuator_round_before_any_mark_goes(n1):
    thread, store, ledger, rounds = n1
    thread.state.set_health(False, "down")
    thread.step([])
    assert rounds == [set()], "one round, with both addresses already dropped"
    assert store.marks == {} and set(store.released) == {str(V4), str(V6)}
    assert ledger.claimed() == set()


def test_addresses_the_actuator_could_not_remove_keep_their_marks_and_reasons(n1):
    """They stay held, taken for what they were taken for: they were held again as
    "resumed" before, which they never were."""
    thread, store, ledger, _ = n1
    thread.sync_actuator = lambda timeout: False
    thread.state.set_health(False, "down")
    thread.step([])
    assert ledger.held() == {V4, V6} and ledger.claim(V4).reason == "free"
    assert set(store.marks) == {str(V4), str(V6)} and store.released == {}


def test_a_mark_never_held_here_goes_only_after_an_actuator_round(monkeypatch):
    """An earlier run's mark: its address may still be on the interface until the actuator's
    round removes the leftover, and no mark may go before its address."""
    thread, store, ledger, _ = balancer_round_setup(monkeypatch, {}, NotedDCS)
    store.put_mark(V4, "n1")
    thread.state.set_health(False, "down")
    thread.sync_actuator = lambda timeout: False
    thread.step([])
    assert str(V4) in store.marks and ledger.claimed() == set()
    interface = FakeInterface(ledger)
    thread.sync_actuator = interface.sync
    thread.step([])
    assert interface.rounds == [set()] and store.marks == {}
