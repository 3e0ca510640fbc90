"""The notifier thread: runs the operator's `notify-*` commands off every other thread's path.

The other threads only queue an event, which never blocks them; this thread runs
the commands one at a time, so the events of an address run in the order they
happened. Each command is killed (its whole process group) at `notify-timeout`.
The queue is bounded: when it is full the oldest event is dropped and counted,
so a flood of events costs a warning, not memory. At shutdown the events still
queued get at most `notify-timeout` in all, after the addresses are gone.
A command's environment is `yaim.command`'s minimal one plus the event's
YAIM_EVENT, YAIM_ADDRESS, YAIM_NODE, YAIM_REASON and YAIM_HEALTHY.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable, Deque, List, NamedTuple, Optional, Tuple

from yaim import command
from yaim.events import EVENTS
from yaim.threads.base import Worker
from yaim.view import IPAddress

log = logging.getLogger(__name__)

QUEUE_LIMIT = 1000
IDLE_PERIOD = 60.0  # seconds; the thread has nothing to do until an event pokes it
CLOSE_SLACK = 1.5  # seconds beyond notify-timeout at shutdown: a killed command's reaping
# How the outcome of a run is logged: a command that could not start is a config error.
LEVELS = {"ok": logging.INFO, "failed": logging.WARNING, "timeout": logging.WARNING}


class Notice(NamedTuple):
    """One event to notify, with what was true when it happened."""

    event: str  # one of yaim.events.EVENTS
    address: Optional[IPAddress]  # None for health
    reason: str
    healthy: bool
    argv: Tuple[str, ...]

    def __str__(self) -> str:
        address = "" if self.address is None else f" {self.address}"
        return f"notify-{self.event}{address}"


class Notifier(Worker):
    """Owns the event queue; `submit` is the other threads' `notify`."""

    def __init__(
        self,
        config,
        healthy: Callable[[], bool],
        limit: int = QUEUE_LIMIT,
        **kwargs,
    ) -> None:
        # Its own stop Event: it outlives the other threads, to report the last releases.
        super().__init__("notify", period=IDLE_PERIOD, stop=threading.Event(), **kwargs)
        self.config = None
        self.reconfigure(config)
        self.healthy = healthy
        self.limit = limit
        self._queue: Deque[Notice] = collections.deque()
        self._lock = threading.Lock()
        self._dropped = 0  # events dropped since the queue was last empty
        self._deadline = float("inf")  # for the events left at shutdown

    def _command(self, event: str) -> Optional[Tuple[str, ...]]:
        return getattr(self.config, f"notify_{event}")

    def reconfigure(self, config) -> None:
        """The commands for the events from now on, the timeout at once (start and reload)."""
        for event in EVENTS:
            argv = getattr(config, f"notify_{event}")
            if argv is not None and (self.config is None or argv != self._command(event)):
                command.warn_if_missing(f"notify-{event}", argv, "its events will fail")
        self.config = config

    def submit(self, event: str, address: Optional[IPAddress], reason: str) -> None:
        """Queue `event` if a command is set for it; when the queue is full, drop the oldest."""
        argv = self._command(event)
        if argv is None:
            return
        entry = Notice(event, address, reason, self.healthy(), argv)
        with self._lock:
            if len(self._queue) >= self.limit:
                self._drop(self._queue.popleft(), f"the queue is full ({self.limit} events)")
            self._queue.append(entry)
            first = len(self._queue) == 1
        if first:  # else the thread is busy with the queue and will get to it
            self.poke()

    def _drop(self, entry: Notice, why: str) -> None:
        """Count an event that will not run; warn at the first of a series (lock held)."""
        self.metrics.notify_dropped.labels(entry.event).inc()
        if not self._dropped:
            log.warning(
                "%s on node %s (%s) dropped, not run: %s; more may follow",
                entry,
                self.config.node_name,
                entry.reason,
                why,
            )
        self._dropped += 1

    def _next(self) -> Optional[Notice]:
        """The oldest event; None when there is none (and the end of a series of drops)."""
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            if self._dropped:
                log.warning("notify: %d events dropped in all, not run", self._dropped)
                self._dropped = 0
            return None

    def step(self, messages: List[Any]) -> None:
        while not self.stop.is_set():
            entry = self._next()
            if entry is None:
                return
            self._run(entry, self.config.notify_timeout_s)

    def close(self) -> None:
        """Shutdown: run what is queued within `notify-timeout` from now, then end."""
        self._deadline = time.monotonic() + self.config.notify_timeout_s
        self.stop.set()
        self.poke()

    def close_and_wait(self) -> None:
        """The daemon's shutdown: close(), and wait a bounded time for the queue's run."""
        if not self.is_alive():
            return
        self.close()
        self.join(self.config.notify_timeout_s + CLOSE_SLACK)
        if self.is_alive():
            log.warning("a notify command is still running at exit: it is killed")

    def finish(self, messages: List[Any]) -> None:
        """After close(): run the queue until its deadline; drop and count the rest."""
        while True:
            entry = self._next()
            if entry is None:
                return
            left = self._deadline - time.monotonic()
            if left <= 0:
                with self._lock:
                    self._drop(entry, "notify-timeout is over at shutdown")
                continue
            self._run(entry, min(left, self.config.notify_timeout_s))

    def _run(self, entry: Notice, timeout: float) -> None:
        """Run the event's command; its outcome goes to the log and the metrics."""
        variables = dict(
            YAIM_EVENT=entry.event,
            YAIM_ADDRESS="" if entry.address is None else str(entry.address),
            YAIM_NODE=self.config.node_name,
            YAIM_REASON=entry.reason,
            YAIM_HEALTHY="1" if entry.healthy else "0",
        )
        outcome = command.run(entry.argv, timeout, self.config, variables)
        self.metrics.notify_runs.labels(entry.event, outcome.result).inc()
        log.log(
            LEVELS.get(outcome.result, logging.ERROR),
            "%s on node %s (%s): %s: %s",
            entry,
            self.config.node_name,
            entry.reason,
            command.shown(entry.argv),
            outcome.describe(),
        )
