"""What every role thread shares: a period, a wake-up queue, a stop Event, crash reporting;
and the one selectable wake-up of the daemon (a pipe), for the main loop and for a
thread that also waits on a file descriptor of its own (the actuator's link events)."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import threading
import time
import weakref
from typing import Any, Callable, List, Optional

from yaim.errors import DCSError
from yaim.metrics import Metrics

log = logging.getLogger(__name__)


class Wakeup:
    """A byte in a pipe to sleep on: `set` may be called from any thread, and from a
    signal handler (threading.Event.set takes a lock the interrupted thread may hold).
    The pipe is closed when the object is collected."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        for fd in (self._read, self._write):
            os.set_blocking(fd, False)
        weakref.finalize(self, _close, self._read, self._write)

    def set(self) -> None:
        with contextlib.suppress(BlockingIOError):  # the pipe is full: a wake-up is pending
            os.write(self._write, b"\0")

    def wait(self, timeout: float, fd: Optional[int] = None) -> None:
        """Sleep until set, `fd` is readable, or for `timeout` seconds; then clear."""
        poller = select.poll()
        for watched in (self._read, fd):
            if watched is not None:
                poller.register(watched, select.POLLIN)
        poller.poll(max(0.0, timeout) * 1000)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 512):
                pass


def _close(*fds: int) -> None:
    for fd in fds:
        os.close(fd)


class Worker(threading.Thread):
    """Runs `step()` every `period` seconds, or at once when poked.

    `queue.get(timeout=...)` is both the sleep and the "act now" trigger; a worker
    whose `watched_fd()` names a file descriptor sleeps on a Wakeup with it instead,
    so that the descriptor becoming readable wakes it too. An exception escaping
    `step()` is a bug: it is logged and reported through `on_crash`, and the daemon
    shuts down instead of running half alive.
    """

    watches_fd = False  # a subclass that overrides watched_fd says so

    def __init__(
        self,
        name: str,
        period: float,
        stop: threading.Event,
        on_crash: Callable[[str], None],
        metrics: Optional[Metrics] = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.period = period
        self.stop = stop
        self.on_crash = on_crash
        self.metrics = Metrics() if metrics is None else metrics
        self._loop_duration = self.metrics.loop_duration.labels(name)
        self.inbox: queue.Queue = queue.Queue()
        self.last_success = time.monotonic()
        self._wakeup = Wakeup() if self.watches_fd else None

    def poke(self, item: Any = None) -> None:
        """Wake the thread now (with an optional message for it)."""
        self.inbox.put(item)
        if self._wakeup is not None:
            self._wakeup.set()

    def next_timeout(self) -> float:
        """Seconds until the next step is due; roles with deadlines shorten it."""
        return self.period

    def watched_fd(self) -> Optional[int]:
        """A file descriptor whose readability also wakes the thread (`watches_fd`)."""
        return None

    def _wait(self) -> List[Any]:
        """Sleep until the next step is due, a poke arrives or the watched descriptor is
        readable; return every message waiting."""
        timeout = max(0.0, self.next_timeout())
        if self._wakeup is not None:
            self._wakeup.wait(timeout, self.watched_fd())
            items: List[Any] = []
        else:
            try:
                items = [self.inbox.get(timeout=timeout)]
            except queue.Empty:
                return []
        while True:
            try:
                items.append(self.inbox.get_nowait())
            except queue.Empty:
                return [item for item in items if item is not None]

    def run(self) -> None:
        self.last_success = time.monotonic()  # the clock of `stuck_for` starts now
        try:
            messages: List[Any] = []
            while not self.stop.is_set():
                started = time.monotonic()
                self.step(messages)
                self.last_success = time.monotonic()
                self._loop_duration.observe(self.last_success - started)
                messages = self._wait()
            self.finish(messages)
        except Exception:
            log.critical("thread %s crashed", self.name, exc_info=True)
            self.on_crash(self.name)

    def step(self, messages: List[Any]) -> None:
        """One round of the role's work."""
        raise NotImplementedError

    def finish(self, messages: List[Any]) -> None:
        """Last work after the stop Event is set."""

    def stuck_for(self, now: Optional[float] = None) -> float:
        """Seconds since the last completed step beyond what the period allows."""
        now = time.monotonic() if now is None else now
        return max(0.0, now - self.last_success - self.period)


class DCSWorker(Worker):
    """A worker whose rounds talk to the DCS.

    A DCS outage is not a bug: the round is abandoned, and the outage is logged
    once when it starts and once when it ends, not every round.
    """

    def __init__(self, name: str, dcs, what_fails: str, **kwargs) -> None:
        super().__init__(name, **kwargs)
        self.dcs = dcs
        self.what_fails = what_fails
        self.failing = False

    def step(self, messages: List[Any]) -> None:
        try:
            self.dcs_round(messages)
        except DCSError as exc:
            if self.stop.is_set():
                return  # shutting down: a request cut short is expected
            if not self.failing:
                self.dcs.check_release()  # a server without the API says so once
                log.warning("%s, node %s: %s", self.what_fails, self.dcs.node, exc)
            self.failing = True
            return
        if self.failing:
            log.info("%s: works again via %s", self.name, self.dcs.endpoint)
            self.dcs.check_release()
        self.failing = False

    def dcs_round(self, messages: List[Any]) -> None:
        """One round; a DCSError ends it early."""
        raise NotImplementedError
