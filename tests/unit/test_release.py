"""Releases: every address off the interface first (one actuator round for all of
them), then the marks; nothing deleted when the actuator could not remove them."""

from __future__ import annotations

from typing import List

import pytest

from tests.unit import test_announce_safety
from tests.unit.test_announce_safety import V4, V6, balancer_round_setup
from tests.unit.test_handover import NotedDCS


@pytest.fixture
def n1(monkeypatch):
    """n1's balancer thread holding V4 and V6, its actuator rounds counted."""
    monkeypatch.setattr(test_announce_safety, "FakeDCS", NotedDCS)
    thread, store, state, _ = balancer_round_setup(monkeypatch, {})
    thread.step([])
    assert state.held() == {V4, V6}
    rounds: List[set] = []
    thread.sync_actuator = lambda *args, **kwargs: rounds.append(state.held()) or True
    return thread, store, state, rounds


def test_a_release_of_several_addresses_takes_one_actuator_round_before_any_mark_goes(n1):
    thread, store, state, rounds = n1
    state.set_health(False, "down")
    thread.step([])
    assert rounds == [set()], "one round, with both addresses already dropped"
    assert store.marks == {} and set(store.released) == {str(V4), str(V6)}


def test_addresses_the_actuator_could_not_remove_keep_their_marks(n1):
    thread, store, state, _ = n1
    thread.sync_actuator = lambda *args, **kwargs: False
    state.set_health(False, "down")
    thread.step([])
    assert state.held() == {V4, V6}
    assert set(store.marks) == {str(V4), str(V6)} and store.released == {}
