"""The watch thread: wakes the balancer the moment the cluster changes.

It blocks on the DCS's watch (v2 `wait=true`, v3 a watch stream) through its own
DCS handle and pokes the balancer for every change that may change the plan: a
mark deleted or expired, an address added or removed, a node come or gone, a
drain flag. Refreshes do not wake it (v2 refreshes silently, v3 keep-alives are
no events). The balancer's own read every interval stays the safety net: a lost
watch costs speed, never safety; the next watch starts with a full read.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, List

from yaim.dcs import DCS
from yaim.threads.base import DCSWorker

log = logging.getLogger(__name__)

# Seconds one watch request waits for news before it is made again.
WATCH_WAIT = 30.0
# Seconds the shutdown waits for the thread once its watch is interrupted.
STOP_TIMEOUT = 0.5


class WatchThread(DCSWorker):
    """Runs the watch back to back; after a failure it waits `backoff` seconds.

    Its period is the time one watch request may wait, so a quiet cluster never
    looks like a stuck thread.
    """

    def __init__(self, dcs: DCS, on_change: Callable[[], None], backoff: float, **kwargs) -> None:
        kwargs.setdefault("period", WATCH_WAIT)
        super().__init__(
            "watch", dcs, "watch lost (the balancer reads every interval meanwhile)", **kwargs
        )
        self.on_change = on_change
        self.backoff = backoff

    def next_timeout(self) -> float:
        return self.backoff if self.failing else 0.0

    def interrupt(self, timeout: float = STOP_TIMEOUT) -> None:
        """Shutdown, from the main thread: end the blocking watch and wait up to `timeout`
        for the thread to wind it up (the stop Event is set already)."""
        self.dcs.interrupt()
        self.join(timeout)

    def dcs_round(self, messages: List[Any]) -> None:
        if self.dcs.wait_for_change(self.period):
            self.on_change()
