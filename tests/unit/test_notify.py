"""The notifier against real commands: order, environment, timeouts, a full queue, shutdown.

And the actuator thread's side: `take` is notified once the address is on the
interface, and the release or fence of whoever dropped it once it is off, so
that an address's events always come in pairs.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator, List, Optional, Set

import pytest

from lab.util import live_group_members, wait_until
from yaim.claims import Ledger
from yaim.errors import ActuatorError
from yaim.metrics import Metrics
from yaim.threads.actuator import ActuatorThread, Sync
from yaim.threads.notify import EVENTS, Notifier

A, B, C, D = (ipaddress.ip_address(f"198.51.100.{i}") for i in (7, 8, 9, 10))
LINE = '"$YAIM_EVENT|$YAIM_ADDRESS|$YAIM_NODE|$YAIM_REASON|$YAIM_HEALTHY"'


def settings(timeout_ms: int = 2000, **commands: List[str]) -> SimpleNamespace:
    """The config keys the notifier reads; `commands` by event name."""
    values = {f"notify_{event}": None for event in EVENTS}
    values.update({f"notify_{event}": tuple(argv) for event, argv in commands.items()})
    return SimpleNamespace(
        node_name="n1",
        notify_timeout=timeout_ms,
        notify_timeout_s=timeout_ms / 1000,
        command_environment=(),
        command_capabilities="none",
        **values,
    )


def record(path: Path, first: str = "") -> List[str]:
    """A command that appends one line with the event's environment to `path`."""
    return ["sh", "-c", f"{first}echo {LINE} >> {path}"]


def lines(path: Path, count: int) -> List[str]:
    """The first `count` lines of `path`, once it has that many."""
    wait_until(
        lambda: path.exists() and len(path.read_text().splitlines()) >= count,
        5,
        what=f"{count} lines in {path.name}",
    )
    return path.read_text().splitlines()


def runs(notifier: Notifier, event: str, result: str) -> float:
    labels = {"event": event, "result": result}
    return notifier.metrics.registry.get_sample_value("yaim_notify_runs_total", labels)


def dropped(notifier: Notifier, event: str) -> float:
    labels = {"event": event}
    return notifier.metrics.registry.get_sample_value("yaim_notify_dropped_total", labels)


class Made:
    """Notifiers made by the `make` fixture, closed and joined at teardown."""

    def __init__(self) -> None:
        self.healthy = True
        self.crashed: List[str] = []
        self.notifiers: List[Notifier] = []

    def __call__(self, config: SimpleNamespace, limit: int = 1000, start: bool = True):
        notifier = Notifier(
            config,
            lambda: self.healthy,
            limit=limit,
            on_crash=self.crashed.append,
            metrics=Metrics(),
        )
        self.notifiers.append(notifier)
        if start:
            notifier.start()
        return notifier


@pytest.fixture
def make() -> Iterator[Made]:
    made = Made()
    yield made
    for notifier in made.notifiers:
        notifier.close()
        if notifier.is_alive():
            notifier.join(10)
        assert not notifier.is_alive()
    assert made.crashed == []


def test_events_run_in_the_order_they_happened_with_their_environment(make, tmp_path):
    out = tmp_path / "events"
    slow = record(out, first="sleep 0.3; ")  # the others queue up behind it
    notifier = make(settings(take=slow, release=record(out), fence=record(out), health=record(out)))
    started = time.monotonic()
    notifier.submit("take", A, "free")
    notifier.submit("release", A, "unhealthy")
    make.healthy = False
    notifier.submit("health", None, "http://127.0.0.1:8008/health: status 500")
    notifier.submit("fence", B, "deadline")
    notifier.submit("take", B, "resumed")
    assert time.monotonic() - started < 0.1  # queued, never waited for
    assert lines(out, 5) == [
        "take|198.51.100.7|n1|free|1",
        "release|198.51.100.7|n1|unhealthy|1",
        "health||n1|http://127.0.0.1:8008/health: status 500|0",
        "fence|198.51.100.8|n1|deadline|0",
        "take|198.51.100.8|n1|resumed|0",
    ]
    wait_until(lambda: runs(notifier, "take", "ok") == 2, 5, what="the metrics")
    assert runs(notifier, "release", "ok") == runs(notifier, "health", "ok") == 1


def test_exit_status_and_output_go_to_the_log_and_the_metrics(make, tmp_path, caplog):
    out = tmp_path / "events"
    failing = ["sh", "-c", "echo 'route table busy' >&2; exit 3"]
    notifier = make(settings(take=failing, release=record(out)))
    with caplog.at_level(logging.INFO, logger="yaim.threads.notify"):
        notifier.submit("take", A, "free")
        notifier.submit("release", A, "drained")
        lines(out, 1)
        wait_until(lambda: runs(notifier, "release", "ok") == 1, 5, what="the metrics")
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert said[0] == (
        logging.WARNING,
        "notify-take 198.51.100.7 on node n1 (free): sh -c 'echo '\"'\"'route table busy'\"'\"'"
        " >&2; exit 3': exit status 3: route table busy",
    )
    assert said[1][0] == logging.INFO
    assert said[1][1].startswith("notify-release 198.51.100.7 on node n1 (drained): sh -c")
    assert said[1][1].endswith(": exit status 0")
    assert runs(notifier, "take", "failed") == 1


def test_a_hung_command_is_killed_with_its_group_and_the_next_events_run(make, tmp_path, caplog):
    pids, out = tmp_path / "pids", tmp_path / "events"
    hang = ["sh", "-c", f"echo $$ > {pids}; sleep 60 & echo $! >> {pids}; echo hanging; wait"]
    notifier = make(settings(timeout_ms=300, take=hang, release=record(out)))
    started = time.monotonic()
    notifier.submit("take", A, "free")
    notifier.submit("release", A, "rebalance")
    assert lines(out, 1) == ["release|198.51.100.7|n1|rebalance|1"]
    took = time.monotonic() - started
    leader, child = (int(pid) for pid in pids.read_text().split())
    assert 0.3 <= took < 1.5, took
    assert child != leader and live_group_members(leader) == []
    assert "(free): sh -c" in caplog.text
    assert "no exit within 300 ms, killed its process group: hanging" in caplog.text
    assert runs(notifier, "take", "timeout") == 1


def test_a_full_queue_drops_the_oldest_events_and_counts_them(make, tmp_path, caplog):
    out = tmp_path / "events"
    notifier = make(settings(take=record(out)), limit=3, start=False)
    addresses = [ipaddress.ip_address(f"198.51.100.{i}") for i in range(1, 6)]
    with caplog.at_level(logging.WARNING, logger="yaim.threads.notify"):
        for address in addresses:
            notifier.submit("take", address, "free")
        assert dropped(notifier, "take") == 2
        notifier.start()
        assert [line.split("|")[1] for line in lines(out, 3)] == [
            "198.51.100.3",
            "198.51.100.4",
            "198.51.100.5",
        ]
        wait_until(lambda: "2 events dropped" in caplog.text, 5, what="the count in the log")
    warned = [r.getMessage() for r in caplog.records]
    assert warned == [
        "notify-take 198.51.100.1 on node n1 (free) dropped, not run:"
        " the queue is full (3 events); more may follow",
        "notify: 2 events dropped in all, not run",
    ]
    assert dropped(notifier, "release") == 0


def test_a_missing_command_is_logged_and_changes_nothing_else(make, tmp_path, caplog):
    out = tmp_path / "events"
    missing = ["/nonexistent/yt-notify", "--now"]
    with caplog.at_level(logging.ERROR):
        notifier = make(settings(take=missing, release=record(out)))
        assert "notify-take: /nonexistent/yt-notify: command not found or not executable" in (
            caplog.text
        )
        notifier.submit("take", A, "free")
        notifier.submit("release", A, "removed")
        assert lines(out, 1) == ["release|198.51.100.7|n1|removed|1"]
    said = "notify-take 198.51.100.7 on node n1 (free): /nonexistent/yt-notify --now:"
    assert f"{said} command not found" in caplog.text
    assert runs(notifier, "take", "error") == 1 and notifier.is_alive()


def test_events_without_a_command_are_not_queued(make, tmp_path):
    out = tmp_path / "events"
    notifier = make(settings(fence=record(out)), start=False)
    for event in ("take", "release", "health"):
        notifier.submit(event, A, "free")
    assert notifier.inbox.empty()
    notifier.submit("fence", A, "mark-lost")
    notifier.start()
    assert lines(out, 1) == ["fence|198.51.100.7|n1|mark-lost|1"]


def test_a_reload_changes_the_commands_of_later_events(make, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    notifier = make(settings(take=record(first)))
    notifier.submit("take", A, "free")
    lines(first, 1)
    notifier.reconfigure(settings(take=record(second)))
    notifier.submit("take", B, "free")
    assert lines(second, 1) == ["take|198.51.100.8|n1|free|1"]
    assert len(lines(first, 1)) == 1


def test_at_shutdown_the_queue_gets_notify_timeout_in_all(make, tmp_path, caplog):
    notifier = make(
        settings(timeout_ms=400, take=["sleep", "5"], release=record(tmp_path / "x")), start=False
    )
    for event, address in (("take", A), ("take", B), ("release", A)):
        notifier.submit(event, address, "stopping")
    closed = time.monotonic()
    notifier.close()
    notifier.start()
    notifier.join(5)
    assert not notifier.is_alive() and time.monotonic() - closed < 1.0
    assert runs(notifier, "take", "timeout") == 1
    assert dropped(notifier, "take") == dropped(notifier, "release") == 1
    assert "notify: 2 events dropped in all, not run" in caplog.text


# --- the actuator thread's events ---


class FakeActuator:
    """The interface as a set; adds of the addresses in `refuse` fail, and removes of
    those in `stuck`."""

    interface = "lan0"

    def __init__(self) -> None:
        self.on: Set = set()
        self.refuse: Set = set()
        self.stuck: Set = set()

    def scan(self):
        return set(self.on), set(self.on)

    def adopt(self, address) -> bool:
        return False

    def add(self, address) -> None:
        if address in self.refuse:
            raise ActuatorError(f"cannot add {address}")
        self.on.add(address)

    def remove(self, address) -> None:
        if address in self.stuck:
            raise ActuatorError(f"cannot remove {address}")
        self.on.discard(address)

    def announce(self, address) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


def actuator_thread(events: list):
    """An actuator thread over a FakeActuator, its ledger on a test clock: (thread, fake,
    ledger, clock); `events` gets (event, address, reason, on the interface then)."""
    fake, clock = FakeActuator(), Clock()

    def notify(event: str, address: Optional[object], reason: str) -> None:
        events.append((event, address, reason, address in fake.on))

    ledger = Ledger("n1", 3.0, notify, clock=clock)
    thread = ActuatorThread(
        lambda: fake, ledger, "n1", period=1.0, stop=threading.Event(), on_crash=print
    )
    return thread, fake, ledger, clock


def test_take_is_notified_once_the_address_is_on_the_interface():
    events: list = []
    thread, fake, ledger, clock = actuator_thread(events)
    ledger.hold(A, clock.now, "free")
    thread.step([Sync()])
    assert events == [("take", A, "free", True)]
    fake.on.discard(A)  # removed by hand: put back, but no new take
    thread.step([])
    assert A in fake.on and len(events) == 1
    fake.refuse = {B, C}
    ledger.hold(B, clock.now, "resumed")
    ledger.hold(C, clock.now, "free")
    thread.step([Sync(), Sync()])
    assert len(events) == 1  # neither is on the interface yet
    ledger.release([C], "rebalance")  # released before it ever got on: never notified
    fake.refuse = set()
    thread.step([])
    assert events[1:] == [("take", B, "resumed", True)]
    thread.step([])
    assert len(events) == 2


def test_an_address_dropped_before_the_actuator_added_it_has_neither_take_nor_release():
    """The balancer took it and released it over its share before the actuator's next
    round (a cold start): the operator's commands hear of neither."""
    events: list = []
    thread, _, ledger, clock = actuator_thread(events)
    ledger.hold(A, clock.now, "free")
    ledger.hold(B, clock.now, "free")
    ledger.release([B], "rebalance")
    thread.step([Sync(), Sync()])
    assert events == [("take", A, "free", True)]


def test_the_end_is_the_droppers_event_notified_once_the_address_is_off():
    events: list = []
    thread, fake, ledger, clock = actuator_thread(events)
    ledger.hold(A, clock.now, "handover")
    ledger.hold(B, clock.now, "free")
    thread.step([])
    ledger.release([A], "unhealthy")
    ledger.lost(B, "gone")
    fake.stuck = {A}
    thread.step([Sync()])
    assert events[2:] == [("fence", B, "mark-lost", False)]  # A is still on
    fake.stuck = set()
    thread.step([])
    assert events[3:] == [("release", A, "unhealthy", False)]
    assert events[:2] == [("take", A, "handover", True), ("take", B, "free", True)]


def test_an_address_dropped_and_held_again_before_the_actuator_ran_keeps_its_take():
    events: list = []
    thread, fake, ledger, clock = actuator_thread(events)
    ledger.hold(A, clock.now, "free")
    thread.step([])
    ledger.lost(A, "gone")
    ledger.hold(A, clock.now, "free")  # marked anew before the actuator's next round
    thread.step([])
    assert events == [("take", A, "free", True)] and A in fake.on


def test_a_fence_at_the_deadline_is_notified_once_the_address_is_off():
    events: list = []
    thread, fake, ledger, clock = actuator_thread(events)
    ledger.hold(D, clock.now, "free")
    thread.step([Sync()])
    clock.now += 3.0  # its mark was not refreshed: past its fence time
    thread.step([])
    assert events == [("take", D, "free", True), ("fence", D, "deadline", False)]
    assert fake.on == set()


def test_the_shutdown_releases_every_address_with_its_reason():
    events: list = []
    thread, _, ledger, clock = actuator_thread(events)
    ledger.hold(A, clock.now, "free")
    thread.step([])
    ledger.close()
    thread.finish([])
    assert events[1:] == [("release", A, "stopping", False)]
