"""The balancer thread skips the conflict probe for an address its holder handed over
(off the interface, a `released` note naming the mark, the mark deleted), and only then."""

from __future__ import annotations

import itertools
import logging
from typing import Dict

import pytest

from tests.unit import test_announce_safety
from tests.unit.test_announce_safety import V4, V6, FakeDCS, balancer_round_setup
from yaim.dcs import wakes_balancer
from yaim.view import Mark, Release, Snapshot


class NotedDCS(FakeDCS):
    """FakeDCS whose marks have numbers, with `released` notes; n2 is a node too."""

    numbers = itertools.count(100)

    def __init__(self, pool) -> None:
        super().__init__(pool)
        self.number: Dict[str, int] = {}
        self.released: Dict[str, str] = {}
        self.nodes = {"n1"}

    def read(self) -> Snapshot:
        snapshot = super().read()
        return snapshot._replace(
            marks={a: Mark(h, 2.0, self.number[a]) for a, h in self.marks.items()},
            nodes=frozenset(self.nodes),
            released=dict(self.released),
        )

    def put_mark(self, address, node: str) -> None:
        self.marks[str(address)] = node
        self.number[str(address)] = next(self.numbers)

    def create_mark(self, address) -> bool:
        if str(address) in self.marks:
            return False
        self.put_mark(address, self.node)
        return True

    def release_mark(self, address, mark) -> bool:
        if mark is not None:
            self.released[str(address)] = Release(self.node, mark).text()
        return self.delete_mark(address)

    def release_by(self, address, node: str, note: bool = True) -> None:
        """Another node releases its mark (with a note) or lets it expire (without)."""
        if note:
            self.released[str(address)] = Release(node, self.number[str(address)]).text()
        del self.marks[str(address)]

    def clear_note(self, kind: str, address, note: str) -> bool:
        self.calls.append(f"clear {kind} {address}")
        return self.released.pop(str(address), None) == note


@pytest.fixture
def n1(monkeypatch):
    """n1's balancer thread; V4 and V6 marked by n2, which does not take part."""
    monkeypatch.setattr(test_announce_safety, "FakeDCS", NotedDCS)
    thread, store, state, probed = balancer_round_setup(monkeypatch, {})
    store.put_mark(V4, "n2")
    store.put_mark(V6, "n2")
    thread.step([])
    assert state.held() == set() and probed == []
    return thread, store, state, probed


def test_a_handover_lasts_while_the_address_stays_free_and_its_mark_was_seen_recently(n1):
    thread, store, state, probed = n1
    store.release_by(V4, "n2")
    state.set_health(False, "down for a round: takes nothing")
    thread.step([])
    state.set_health(True, "fine")
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
    holder, number, sent_at = thread.seen_marks[V4]
    thread.seen_marks[V4] = (holder, number, sent_at - thread.config.ttl_s / 2)
    store.release_by(V4, "n2")
    thread.step([])
    assert state.held() == {V4} and probed == [[str(V4)]]


def test_a_release_writes_the_note_of_its_own_mark(n1):
    thread, store, state, _ = n1
    store.release_by(V4, "n2")
    thread.step([])
    number = store.number[str(V4)]
    state.set_health(False, "down")
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
    ],
)
def test_released_notes_never_wake_the_balancer(key, deleted, wakes):
    """The note comes with a mark's deletion, which wakes it; its expiry changes nothing."""
    assert wakes_balancer(key, deleted) is wakes
