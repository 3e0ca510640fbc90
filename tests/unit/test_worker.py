"""The thread base: a crash is reported (so the daemon stops cleanly), a poke acts at once."""

from __future__ import annotations

import threading

from lab.util import wait_until
from yaim.threads.base import Worker


class Counting(Worker):
    def __init__(self, fail_at=None, **kwargs):
        super().__init__("counting", **kwargs)
        self.rounds = 0
        self.fail_at = fail_at
        self.finished = threading.Event()
        self.messages = []

    def step(self, messages):
        self.rounds += 1
        self.messages += messages
        if self.rounds == self.fail_at:
            raise RuntimeError("bug")

    def finish(self, messages):
        self.finished.set()


def test_a_crash_is_reported_and_ends_the_thread():
    crashed = []
    worker = Counting(fail_at=1, period=60, stop=threading.Event(), on_crash=crashed.append)
    worker.start()
    worker.join(5)
    assert crashed == ["counting"] and not worker.is_alive()
    assert not worker.finished.is_set()


def test_a_poke_runs_a_round_now_and_stop_runs_finish():
    stop = threading.Event()
    worker = Counting(period=60, stop=stop, on_crash=print)
    worker.start()
    worker.poke("hello")
    wait_until(lambda: worker.rounds >= 2, 5, what="the poked round")
    assert worker.rounds == 2 and worker.messages == ["hello"]
    stop.set()
    worker.poke()
    assert worker.finished.wait(5)
    worker.join(5)
    assert not worker.is_alive()
