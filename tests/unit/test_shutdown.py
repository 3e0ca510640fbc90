"""Shutdown without a network: the addresses first, then the marks (a note only for an
address gone from the interface, no deletion for one still on it), then the node key;
the releases a stuck actuator thread could not report come from the ledger, once."""

from __future__ import annotations

import ipaddress
import logging
import time
from types import SimpleNamespace
from typing import Dict, List, Optional

import pytest

from tests.unit.fakes import FakeTool
from yaim import shutdown
from yaim.actuator import Actuator
from yaim.claims import Interface, Ledger
from yaim.errors import DCSError
from yaim.view import Mark, Snapshot

A, B, C = (ipaddress.ip_address(f"198.51.100.{i}") for i in (1, 2, 3))
CONFIG = SimpleNamespace(interface="lan0")


KEYS = [("delete node",), ("delete out",)]  # after the marks: the node's own keys


class Store:
    """The quick DCS handle: `marks` (address -> (holder, number)) are what a read shows."""

    node = "n1"
    config = CONFIG

    def __init__(self, marks: Dict[object, tuple], down: bool = False) -> None:
        self.marks = {str(a): Mark(holder, 2.0, number) for a, (holder, number) in marks.items()}
        self.down = down
        self.calls: List[tuple] = []

    def read(self) -> Snapshot:
        if self.down:
            raise DCSError("read: etcd is gone")
        return Snapshot(pool=frozenset(self.marks), marks=self.marks, nodes=frozenset({"n1"}))

    def release_mark(self, address, mark: Optional[int]) -> bool:
        if self.down:
            raise DCSError("delete: etcd is gone")
        self.calls.append(("release", address, mark))
        return True

    def delete_node(self) -> None:
        self.calls.append(("delete node",))

    def delete_out(self) -> None:
        self.calls.append(("delete out",))


def test_marks_go_after_their_addresses_with_a_note_only_where_the_address_is_gone(caplog):
    store = Store({})
    interface = Interface(on=frozenset({B}), present=frozenset({B, C}))
    assert shutdown.release(store, {A: 7, B: 8, C: 9}, interface)
    assert store.calls == [("release", A, 7), ("release", C, None), *KEYS]
    assert "leaving the mark of 198.51.100.2 on node n1 to expire" in caplog.text


def test_an_interface_that_could_not_be_listed_vouches_for_nothing():
    store = Store({})
    assert shutdown.release(store, {A: 7}, None)
    assert store.calls == [("release", A, None), *KEYS]


def test_a_dead_dcs_costs_a_warning_and_the_marks_expire(caplog):
    store = Store({A: ("n1", 7)}, down=True)
    assert shutdown.marked_here(store) == {}
    assert not shutdown.release(store, {A: 7}, Interface(frozenset(), frozenset()))
    assert "giving up on the DCS, the marks will expire" in caplog.text


class Thread:
    """The actuator thread as shutdown sees it: finished or stuck, and its last picture."""

    def __init__(self, alive: bool, interface: Optional[Interface]) -> None:
        self.alive = alive
        self.interface = interface

    def join(self, timeout: float) -> None:
        pass

    def is_alive(self) -> bool:
        return self.alive


@pytest.fixture
def node(monkeypatch):
    """A ledger of n1 holding A and B on the interface; the store shutdown will use."""
    events: list = []
    ledger = Ledger("n1", 3.0, lambda *event: events.append(event))
    for address in (A, B):
        ledger.hold(address, time.monotonic(), "free", mark=int(address) % 100)
    ledger.confirm(Interface(frozenset({A, B}), frozenset({A, B})))
    store = Store({A: ("n1", 1), B: ("n1", 2), C: ("n1", 3)})  # C: marked, never held
    monkeypatch.setattr(shutdown, "quick_store", lambda config: store)
    ledger.close()
    return ledger, store, events


def test_after_the_actuator_s_last_round_its_picture_decides(node, caplog):
    caplog.set_level(logging.INFO)
    ledger, store, events = node
    left = Interface(frozenset(), frozenset())
    ledger.confirm(left)  # the actuator's last round took both off
    shutdown.stop(CONFIG, ledger, Thread(False, left), crashed=False)
    assert store.calls == [("release", a, n) for a, n in ((A, 1), (B, 2), (C, 3))] + KEYS
    assert events[2:] == [("release", A, "stopping"), ("release", B, "stopping")]
    assert caplog.text.count("released 198.51.100.1 on node n1: stopping") == 1


def test_a_stuck_actuator_s_addresses_go_with_the_ip_command_and_its_releases_once(
    node, monkeypatch
):
    """The shutdown read the thread's own record of what it had notified, while it ran."""
    ledger, store, events = node
    tool = FakeTool()
    tool.put(A, label="lan0:yaim")
    tool.put(B, label="lan0:yaim")
    made: List[Actuator] = []

    def make(config, tools=None):
        made.append(Actuator("lan0", "yaim", 32, 128, [tool]))
        return made[-1]

    monkeypatch.setattr(shutdown, "make_actuator", make)
    stuck = Thread(True, Interface(frozenset({A, B}), frozenset({A, B})))
    shutdown.stop(CONFIG, ledger, stuck, crashed=False)
    assert A not in tool.entries and B not in tool.entries and len(made) == 1
    assert events[2:] == [("release", A, "stopping"), ("release", B, "stopping")]
    ledger.confirm(Interface(frozenset(), frozenset()))  # the stuck thread's late round
    assert len(events) == 4
    assert ("release", A, 1) in store.calls and store.calls[-2:] == KEYS
