"""What every role thread shares: a period, a wake-up queue, a stop Event, crash reporting."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, List, Optional

from yaim.errors import DCSError
from yaim.metrics import Metrics

log = logging.getLogger(__name__)


class Worker(threading.Thread):
    """Runs `step()` every `period` seconds, or at once when poked.

    `queue.get(timeout=...)` is both the sleep and the "act now" trigger. An
    exception escaping `step()` is a bug: it is logged and reported through
    `on_crash`, and the daemon shuts down instead of running half alive.
    """

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

    def poke(self, item: Any = None) -> None:
        """Wake the thread now (with an optional message for it)."""
        self.inbox.put(item)

    def next_timeout(self) -> float:
        """Seconds until the next step is due; roles with deadlines shorten it."""
        return self.period

    def _wait(self) -> List[Any]:
        """Sleep until the next step is due or a poke arrives; return every message waiting."""
        try:
            items = [self.inbox.get(timeout=max(0.0, self.next_timeout()))]
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
                log.warning("%s, node %s: %s", self.what_fails, self.dcs.node, exc)
            self.failing = True
            return
        if self.failing:
            log.info("%s: works again via %s", self.name, self.dcs.endpoint)
        self.failing = False

    def dcs_round(self, messages: List[Any]) -> None:
        """One round; a DCSError ends it early."""
        raise NotImplementedError
