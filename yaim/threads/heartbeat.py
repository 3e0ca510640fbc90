"""The heartbeat thread: keeps the node key and this node's marks alive in the DCS.

A round starts with the session's keep-alive (v3: the one lease every key of the
node hangs on), then touches or deletes the node key as health and the link say, then renews
every live claim's mark through the ledger: a refresh that works moves its fence
time to when the request that restarted the TTL was sent (`DCS.ttl_start`: v2 the
refresh itself, v3 that keep-alive, never later); one that finds the mark gone or
someone else's fences it at once, unless the address was kept through a whole-etcd
outage on the peers' word (the failsafe hold): then its mark is made again, first,
and only one found someone else's fences it. When the DCS cannot be reached nothing
moves, and the actuator thread fences when the time comes (yaim.claims).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, List, Optional

from yaim.claims import Ledger
from yaim.dcs import DCS
from yaim.state import NodeState
from yaim.threads.base import DCSWorker
from yaim.threads.failsafe import Policy
from yaim.view import IPAddress

log = logging.getLogger(__name__)


class HeartbeatThread(DCSWorker):
    """Advertises the node while it is healthy and renews every claimed mark.

    `on_change` is called when the node key appears or a mark is lost, so the
    balancer acts at once instead of at its next interval.
    """

    def __init__(
        self,
        dcs: DCS,
        ledger: Ledger,
        state: NodeState,
        on_change: Callable[[], None],
        policy: Optional[Policy] = None,
        **kwargs,
    ) -> None:
        super().__init__("heartbeat", dcs, "heartbeat failed", **kwargs)
        self.ledger = ledger
        self.state = state
        self.policy = Policy(None) if policy is None else policy
        self.on_change = on_change
        self.advertised = False

    def dcs_round(self, messages: List[Any]) -> None:
        self.dcs.keep_alive()
        self._advertise()
        self._renew_marks()

    def _advertise(self) -> None:
        if self.state.taking_part:
            self.dcs.touch_node()
            if not self.advertised:
                self.advertised = True
                self.on_change()
        elif self.advertised:
            self.dcs.delete_node()
            self.advertised = False
            log.info("removed the node key of %s: %s", self.dcs.node, self.state.out_reason)

    def _remark(self, address: IPAddress) -> bool:
        """Make the mark of an address kept through an outage again (atomically: only if
        nobody has marked it since); True if it is ours again."""
        if not self.policy.covers(address):
            return False
        made = self.dcs.create_mark(address)
        log.info(
            "%s the mark of %s on node %s, kept through the etcd outage%s",
            "made again" if made else "could not make again",
            address,
            self.dcs.node,
            "" if made else ": someone else marked it",
        )
        return made

    def _renew_marks(self) -> None:
        lost = False
        for address in self.ledger.renewable():
            sent_at = time.monotonic()
            if self.dcs.refresh_mark(address) or self._remark(address):
                self.ledger.renewed(address, self.dcs.ttl_start(sent_at))
            elif self.ledger.lost(address, "gone or someone else's"):
                lost = True
            self.policy.remarked(address)
        if lost:
            self.on_change()
