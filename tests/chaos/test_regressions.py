"""Regression tests of the bugs the chaos run found, each as small as it can be."""

from __future__ import annotations

import logging
import time

import pytest
import yaml

from tests.unit.fakes import V4, V6, FakeDCS, balancer_round_setup
from yaim import config, conflicts, daemon, dcs
from yaim.view import Conflict


class Store:
    """Stands in for a DCS backend: the daemon is built, never run."""

    CACHEABLE = False

    def __init__(self, cfg, **kwargs) -> None:
        self.node = cfg.node_name
        self.endpoint = cfg.dcs_endpoints[0]
        self.last_success = None
        self.config = cfg

    def clone(self) -> Store:
        return Store(self.config)

    def check_release(self) -> None:
        """The server's release is not asked: there is no server."""


@pytest.fixture
def built(tmp_path, monkeypatch):
    monkeypatch.setattr(dcs, "connect", Store)
    path = tmp_path / "yaim.yml"
    values = {"interface": "lo", "checker-type": "none", "node-name": "n1", "log-level": "INFO"}
    path.write_text(yaml.safe_dump(values))
    yield daemon.Daemon(config.load(str(path)))
    logging.getLogger().setLevel(logging.WARNING)


def test_a_sigstopped_daemon_is_not_stopped_as_stuck_when_continued(built):
    """Chaos: SIGSTOP for longer than the ttl, then SIGCONT, and the main thread, first
    to run, found the actuator's last round older than the ttl and stopped the daemon
    ("actuator thread has not finished a round"). Its own wait overran just as much:
    the process was frozen, not the actuator stuck."""
    now = time.monotonic()
    frozen = 3 * built.config.ttl_s
    built.actuator.last_success = now - frozen
    built._note_freeze(now - frozen, now)
    built._watch(now + 0.01)
    assert not built.stop.is_set() and built.crashed == []
    built._watch(now + built.config.ttl_s + built.config.interval_s + 0.01)
    assert built.stop.is_set() and built.crashed == ["actuator (stuck)"], "stuck after all"


def test_an_actuator_stuck_while_the_process_runs_still_stops_the_daemon(built):
    now = time.monotonic()
    built._note_freeze(now - built.config.interval_s, now)  # an ordinary wait
    built.thawed = now - 100
    built.actuator.last_success = now - 2 * built.config.ttl_s
    built._watch(now)
    assert built.crashed == ["actuator (stuck)"]


# The conflict probe met a SIGSTOPped node: its marks expired, the others probed before
# taking its addresses, its kernel (not stopped) answered, and they noted a conflict
# with its MAC: every node skipped those addresses for conflict-backoff (300 s), after
# the node was continued and had dropped them. The node now deletes the notes naming
# its own MAC for addresses it has not got; and the node that noted a conflict skips
# the address by the note alone once it is written.

OWN_MAC = "02:00:00:00:00:01"


class ClearableDCS(FakeDCS):
    def clear_conflict(self, address, note: str) -> bool:
        self.calls.append(f"clear {address}")
        return self.notes.pop(str(address), None) == note


@pytest.fixture
def frozen_node(monkeypatch):
    """n1's balancer thread, whose MAC another node's note names for V6."""
    monkeypatch.setattr(conflicts, "own_mac", lambda ifname: OWN_MAC)
    thread, store, state, _ = balancer_round_setup(monkeypatch, {}, ClearableDCS)
    store.notes[str(V6)] = Conflict(OWN_MAC, "n2").text()
    return thread, store, state


def test_a_node_clears_the_conflict_notes_naming_its_own_mac_and_takes_again(
    frozen_node, monkeypatch
):
    thread, store, state = frozen_node
    monkeypatch.setattr(conflicts, "is_local", lambda address: False)
    thread.step([])
    assert f"clear {V6}" in store.calls and store.notes == {}
    thread.step([])
    assert state.held() == {V4, V6}


def test_an_address_still_on_the_host_without_yaim_keeps_its_note(frozen_node, monkeypatch):
    thread, store, state = frozen_node
    monkeypatch.setattr(conflicts, "is_local", lambda address: True)
    for _ in range(2):
        thread.step([])
    assert str(V6) in store.notes and state.held() == {V4}


def test_the_node_that_noted_a_conflict_goes_by_the_note_once_written(monkeypatch):
    thread, store, state, _ = balancer_round_setup(monkeypatch, {V6: OWN_MAC}, ClearableDCS)
    thread.step([])
    assert str(V6) in store.notes and state.held() == {V4}
    del store.notes[str(V6)]  # the frozen node that answered is back and cleared it
    monkeypatch.setattr(conflicts, "probe", lambda ifname, addresses, duration: {})
    thread.step([])
    assert state.held() == {V4, V6}


# etcd3, its leader hung: the keep-alive of a node's lease kept failing, its addresses
# were fenced, and every round the balancer "resumed" them (a mark on the lease counts
# as refreshed by the keep-alive, which had not got through) with a fence time already
# past: took, fenced, took, fenced, a `fence` notification each time, until a keep-alive
# worked again. An address whose fence time has passed is not held at all now.


class StaleLeaseDCS(ClearableDCS):
    def ttl_start(self, sent_at: float) -> float:
        return sent_at - 10.0  # the lease's last renewal: long ago


def test_a_mark_whose_lease_was_not_renewed_in_time_is_not_held(monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    thread, store, state, _ = balancer_round_setup(monkeypatch, {}, StaleLeaseDCS)
    store.marks.update({str(V4): "n1", str(V6): "n1"})  # ours, on the lease
    for _ in range(3):
        thread.step([])
    assert state.held() == set()
    assert not [r for r in caplog.records if r.getMessage().startswith("took")]
