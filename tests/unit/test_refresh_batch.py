"""A round's refreshes as one batch (DCS.refresh_marks): one after the other by default,
REFRESH_WIDTH at once on v2, each with its own send time and the retry policy, stopping
at the first that fails; and a round's creates (DCS.create_marks), likewise. The v2
backend here has a scripted refresh instead of etcd (against a real one:
tests/integration/test_dcs_etcd2.py)."""

from __future__ import annotations

import ipaddress
import threading
import time
from typing import Callable, Dict, List, TypeVar

import pytest
import yaml

from yaim import config
from yaim.dcs import DCS, Incomplete, etcd2
from yaim.errors import DCSError

ADDRESSES = [ipaddress.ip_address(f"198.51.100.{i}") for i in range(1, 33)]
DELAY = 0.02  # seconds one scripted refresh takes
T = TypeVar("T")


class Scripted(etcd2.Backend):
    """A v2 backend whose refresh is a sleep (a try fails with OSError for an address in
    `failing`); records what was in flight, and every send time."""

    def __init__(self, cfg, **kwargs) -> None:
        super().__init__(cfg, **kwargs)
        self.script = self  # the helpers (clones) report here
        self.lock = threading.Lock()
        self.in_flight = self.peak = 0
        self.sent: Dict[object, float] = {}
        self.attempts: List[object] = []
        self.failing: set = set()
        self.barrier = None  # the first refreshes wait here until that many are on the way

    def clone(self) -> DCS:
        twin = super().clone()
        twin.script = self.script
        return twin

    def _connect(self, endpoint: str) -> object:
        return object()

    def refresh_mark(self, address) -> bool:
        script = self.script

        def operation(client: object) -> bool:
            with script.lock:
                script.attempts.append(address)
                script.sent.setdefault(address, time.monotonic())
                script.in_flight += 1
                script.peak = max(script.peak, script.in_flight)
            try:
                if script.barrier is not None and len(script.attempts) <= script.barrier.parties:
                    script.barrier.wait(5)
                time.sleep(DELAY)
                if address in script.failing:
                    raise OSError("connection refused")
                return address.packed[-1] % 2 == 0  # odd ones are someone else's
            finally:
                with script.lock:
                    script.in_flight -= 1

        return self._call(f"refresh {address}", operation)

    def create_mark(self, address) -> bool:
        return self.refresh_mark(address)  # the same script: odd ones are someone else's


@pytest.fixture
def backend(tmp_path):
    path = tmp_path / "yaim.yml"
    values = {
        "dcs-type": "etcd",
        "interface": "lo",
        "checker-type": "none",
        "retry-num": 2,
        "retry-after": 10,
    }
    path.write_text(yaml.safe_dump(values))
    return Scripted(config.load(str(path), {}))


def at_once(backend: Scripted, send: Callable[[List[object]], T]) -> T:
    """`send(ADDRESSES)`, its first REFRESH_WIDTH requests waiting for each other: they
    were on the way together, and the batch took far less than one after the other."""
    backend.barrier = threading.Barrier(etcd2.REFRESH_WIDTH)
    started = time.monotonic()
    answer = send(ADDRESSES)
    took = time.monotonic() - started
    assert backend.peak == etcd2.REFRESH_WIDTH
    assert took < 0.5 * len(ADDRESSES) * DELAY, took
    return answer


def test_v2_refreshes_go_out_a_few_at_once_each_with_its_own_send_time(backend):
    done = at_once(backend, backend.refresh_marks)
    assert list(done) == ADDRESSES
    assert all(done[a].ok == (a.packed[-1] % 2 == 0) for a in ADDRESSES)
    assert all(done[a].sent_at <= backend.sent[a] for a in ADDRESSES)
    assert len({done[a].sent_at for a in ADDRESSES}) == len(ADDRESSES)
    helpers = backend._helpers
    assert backend.refresh_marks(ADDRESSES[:3]).keys() == set(ADDRESSES[:3])
    assert backend._helpers == helpers, "the helpers and their connections are kept"


def test_one_mark_is_refreshed_by_the_handle_itself(backend):
    before = time.monotonic()
    [(address, (ok, sent_at))] = backend.refresh_marks(ADDRESSES[1:2]).items()
    assert address == ADDRESSES[1] and ok and before <= sent_at <= backend.sent[address]
    assert backend._helpers == []


def test_a_bug_in_a_helper_is_raised_in_the_caller_s_thread(backend, monkeypatch):
    def broken(client: object) -> bool:
        raise KeyError("a bug")

    monkeypatch.setattr(Scripted, "_call", lambda self, what, operation: broken(None))
    with pytest.raises(KeyError):
        backend.refresh_marks(ADDRESSES[:4])


def test_a_refresh_that_fails_after_its_retries_ends_the_batch(backend):
    many = [ipaddress.ip_address(f"198.51.100.{i}") for i in range(1, 201)]
    failing = many[1]
    backend.failing = {failing}
    with pytest.raises(Incomplete) as caught:
        backend.refresh_marks(many)
    done = caught.value.done
    assert backend.attempts.count(failing) == 2, "the retry policy: retry-num tries"
    assert failing not in done and len(backend.sent) < len(many) / 2, "nothing sent after"
    assert set(done) == set(backend.sent) - {failing} and list(done) == sorted(done)
    assert "connection refused" in str(caught.value) and "after 2 tries" in str(caught.value)


def test_a_helper_s_failed_try_counts_for_its_owner_at_once(backend):
    """The failsafe judges by the heartbeat's handle whether etcd answers (etcd_answers),
    from the first try that failed on, not from the end of its retries."""
    backend.failing = {ADDRESSES[0]}
    seen = []

    def second_try_waits(seconds: float) -> bool:
        seen.append(backend.last_failure)
        return False

    backend.stop.wait = second_try_waits  # the pause between the tries
    with pytest.raises(Incomplete):
        backend.refresh_marks(ADDRESSES[:2])
    assert seen and seen[0] is not None
    assert backend.last_failure is not None and backend.last_success is not None


def test_by_default_refreshes_go_one_after_the_other_and_stop_at_a_failure(backend):
    backend.failing = {ADDRESSES[2]}
    with pytest.raises(Incomplete) as caught:
        DCS.refresh_marks(backend, ADDRESSES)
    assert list(caught.value.done) == ADDRESSES[:2]
    assert backend.peak == 1 and backend.attempts == ADDRESSES[:3] + ADDRESSES[2:3]


def test_the_helpers_start_where_their_owner_works_now(tmp_path):
    """The owner (the heartbeat's handle) may have just failed over from a hung member
    (its node key's write): its helpers must not try that member first for every mark
    (a chaos round: each refresh lost a try's timeout there, and two marks came due)."""
    path = tmp_path / "yaim.yml"
    endpoints = [f"http://192.0.2.{i}:2379" for i in (1, 2, 3)]
    values = {"dcs-type": "etcd", "dcs-endpoints": endpoints, "interface": "lo"}
    path.write_text(yaml.safe_dump({**values, "checker-type": "none"}))
    backend = Scripted(config.load(str(path), {}))
    backend.refresh_marks(ADDRESSES[:8])
    for n in range(len(endpoints)):
        backend._current = n
        backend.refresh_marks(ADDRESSES[:8])
        assert {helper.endpoint for helper in backend._helpers} == {backend.endpoint}


def test_v2_creates_go_out_a_few_at_once_and_answer_those_made_with_their_send_times(backend):
    made = at_once(backend, backend.create_marks)
    assert list(made) == [a for a in ADDRESSES if a.packed[-1] % 2 == 0]
    assert all(made[a] <= backend.sent[a] for a in made)


def test_a_create_that_fails_after_its_retries_fails_the_batch(backend):
    backend.failing = {ADDRESSES[5]}
    with pytest.raises(DCSError):
        backend.create_marks(ADDRESSES)
    assert backend.create_marks(ADDRESSES[:1]) == {}, "one alone: by the handle itself"
    assert backend.attempts[-1] == ADDRESSES[0]
