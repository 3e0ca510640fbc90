"""The balancer thread skips the conflict probe for an address its holder handed over
(off the interface, a `released` note naming the mark, the mark deleted), and only then."""

from __future__ import annotations

import logging

import pytest

from tests.unit.fakes import V4, V6, NotedDCS, balancer_round_setup
from yaim.dcs import wakes_balancer
from yaim.view import Release


@pytest.fixture
def n1(monkeypatch):
    """n1's balancer thread and its ledger; V4 and V6 marked by n2, which does not take part."""
    thread, store, state, probed = balancer_round_setup(monkeypatch, {}, NotedDCS)
    store.put_mark(V4, "n2")
    store.put_mark(V6, "n2")
    thread.step([])
    assert state.held() == set() and probed == []
    return thread, store, state, probed


def test_a_handover_lasts_while_the_address_stays_free_and_its_mark_was_seen_recently(n1):
    thread, store, state, probed = n1
    store.release_by(V4, "n2")
    thread.state.set_health(False, "down for a round: takes nothing")
    thread.step([])
    thread.state.set_health(True, "fine")
    thread.step([])
    assert state.held() == {V4} and probed == []


def test_an_address_handed_over_is_taken_without_a_probe(n1, caplog):
    caplog.set_level(logging.INFO)
    thread, store, state, probed = n1
    store.release_by(V4, "n2")
    store.release_by(V6, "n2", note=False)
    thread.step([])
    assert state.held() == {V4, V6}
    assert probed == [[str(V6)]], "the expired mark's address is probed, the released one not"
    messages = [r.getMessage() for r in caplog.records]
    assert f"took {V4} on node n1: its holder had released it" in messages
    assert f"took {V6} on node n1: it was free" in messages


def test_no_handover_when_the_mark_was_last_seen_too_long_ago(n1):
    thread, store, state, probed = n1
    seen = thread.handovers.seen[V4]
    thread.handovers.seen[V4] = seen._replace(read_at=seen.read_at - thread.config.ttl_s / 2)
    store.release_by(V4, "n2")
    thread.step([])
    assert state.held() == {V4} and probed == [[str(V4)]]


def test_a_release_writes_the_note_of_its_own_mark(n1):
    thread, store, state, _ = n1
    store.release_by(V4, "n2")
    thread.step([])
    number = store.number[str(V4)]
    thread.state.set_health(False, "down")
    thread.step([])
    assert state.held() == set()
    assert Release.parse(store.released[str(V4)]) == Release("n1", number)


def test_resuming_a_mark_clears_its_own_released_note_first(n1):
    thread, store, state, _ = n1
    store.put_mark(V4, "n1")  # ours, not held: a release whose delete failed, say
    store.released[str(V4)] = Release("n1", store.number[str(V4)]).text()
    thread.step([])
    assert f"clear released {V4}" in store.calls and str(V4) not in store.released
    assert V4 in state.held()


@pytest.mark.parametrize(
    "key, deleted, wakes",
    [
        ("/ips/198.51.100.7/marked", True, True),
        ("/ips/198.51.100.7/marked", False, False),
        ("/released/198.51.100.7", False, False),
        ("/released/198.51.100.7", True, False),
        ("/conflicts/198.51.100.7", False, True),
        ("/nodes/n2", True, True),
        ("/out/n2", False, False),  # the node key's going woke it already
        ("/out/n2", True, False),
    ],
)
def test_released_notes_never_wake_the_balancer(key, deleted, wakes):
    """The note comes with a mark's deletion, which wakes it; its expiry changes nothing."""
    assert wakes_balancer(key, deleted) is wakes
