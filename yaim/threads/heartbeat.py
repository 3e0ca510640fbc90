"""The heartbeat thread: keeps the node key and this node's marks alive in the DCS.

Every refresh that succeeds moves the address's fence time; one that finds the
mark gone or someone else's drops the address at once, and has the actuator
thread remove it now rather than at its next round: another node may be taking
it over. When the DCS cannot be reached nothing moves, and the actuator thread
fences when the time comes.

A round starts with the session's keep-alive (v3: the one lease every key of the
node hangs on). The fence time moves to when the request that restarted the TTL
was sent (`ttl_start`): v2 the refresh itself, v3 that keep-alive, never later.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, List

from yaim.dcs import DCS
from yaim.state import SharedState
from yaim.threads.base import DCSWorker
from yaim.view import in_order

log = logging.getLogger(__name__)


class HeartbeatThread(DCSWorker):
    """Advertises the node while it is healthy and refreshes every held mark.

    `on_change` is called when the node key appears or a mark is lost, so the
    balancer acts at once instead of at its next interval; `sync_actuator(0.0)`
    asks the actuator thread for a round without waiting for it.
    """

    def __init__(
        self,
        dcs: DCS,
        state: SharedState,
        on_change: Callable[[], None],
        sync_actuator: Callable[[float], bool],
        **kwargs,
    ) -> None:
        super().__init__("heartbeat", dcs, "heartbeat failed", **kwargs)
        self.state = state
        self.on_change = on_change
        self.sync_actuator = sync_actuator
        self.advertised = False

    def dcs_round(self, messages: List[Any]) -> None:
        self.dcs.keep_alive()
        self._advertise()
        self._refresh_marks()

    def _advertise(self) -> None:
        if self.state.healthy:
            self.dcs.touch_node()
            if not self.advertised:
                self.advertised = True
                self.on_change()
        elif self.advertised:
            self.dcs.delete_node()
            self.advertised = False
            log.info("removed the node key of %s: not healthy", self.dcs.node)

    def _refresh_marks(self) -> None:
        lost = False
        for address in in_order(self.state.held()):
            sent_at = time.monotonic()
            if self.dcs.refresh_mark(address):
                self.state.extend(address, self.dcs.ttl_start(sent_at))
            elif self.state.drop(address, "fence", "mark-lost") is not None:
                self.metrics.fencing.labels("mark-lost").inc()
                log.warning(
                    "fencing %s on node %s: its mark is gone or someone else's",
                    address,
                    self.dcs.node,
                )
                lost = True
        if lost:
            self.sync_actuator(0.0)
            self.on_change()
