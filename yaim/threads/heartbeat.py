"""The heartbeat thread: keeps the node key and this node's marks alive in the DCS.

A round starts with the session's keep-alive (v3: the one lease every key of the
node hangs on), then touches or deletes the node key as health and the link say (and
while the node takes no part, its `out` key with the reason), then renews
every live claim's mark through the ledger, all in one batch (`DCS.refresh_marks`: v2 sends
them a few at once, each with its own send time): a refresh that works moves its fence
time to when the request that restarted the TTL was sent (`DCS.ttl_start`: v2 the
refresh itself, v3 that keep-alive, never later); one that finds the mark gone or
someone else's fences it at once, unless the address was kept through a whole-etcd
outage on the peers' word (the failsafe hold): the balancer makes that mark again
from its next read (one thread makes marks: a read sent before this thread had made
it again would find it gone). When the DCS cannot be reached nothing moves, and the
actuator thread fences when the time comes (yaim.claims).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, List, Optional

from yaim.claims import Ledger
from yaim.dcs import DCS, Incomplete
from yaim.state import NodeState
from yaim.threads.base import DCSWorker
from yaim.threads.failsafe import Policy
from yaim.threads.watch import Behind

log = logging.getLogger(__name__)


class HeartbeatThread(DCSWorker):
    """Advertises the node while it is healthy and renews every claimed mark.

    `on_change` is called when the node key appears, a mark is lost, or one kept through
    an etcd outage is to be made again, so the balancer acts at once instead of at its
    next interval; for the last two with a `Behind` message, for the balancer's cache may
    not show yet what this thread's own request found. With the failsafe on, a node that
    just started advertises itself only once it may take (Policy.settling): else the
    others would hand it its share at once, and the share would wait unheld for its
    first ttl.
    """

    def __init__(
        self,
        dcs: DCS,
        ledger: Ledger,
        state: NodeState,
        on_change: Callable[[Optional[Behind]], None],
        policy: Optional[Policy] = None,
        **kwargs,
    ) -> None:
        super().__init__("heartbeat", dcs, "heartbeat failed", **kwargs)
        self.ledger = ledger
        self.state = state
        self.policy = Policy(None) if policy is None else policy
        self.on_change = on_change
        self.advertised = False
        self.out = False  # this node's out key may be there (written since it last took part)
        self.since = 0.0  # when the node key was written after the node last took no part
        self.joining = False  # what the node key said last

    def dcs_round(self, messages: List[Any]) -> None:
        self.dcs.keep_alive()
        self._advertise()
        self._renew_marks()

    def _advertise(self) -> None:
        """The node key while the node takes part, else the `out` key with the reason, each
        written before the other is deleted: yaimctl always finds the node, and why. The
        node key says `joining` until the node has taken part for `rebalance-delay`
        without a break (its key stayed), and the weight: the others plan with both."""
        if self.state.taking_part and not self.policy.settling():
            now = time.monotonic()
            if not self.advertised:
                self.since = now
            placement = self.state.placement
            joining = now - self.since < placement.delay
            self.dcs.touch_node(placement.weight, joining)
            if self.joining and not joining:
                log.info(
                    "node %s has taken part for rebalance-delay (%.1f s): it takes its share",
                    self.dcs.node,
                    placement.delay,
                )
            self.joining = joining
            if not self.advertised:
                self.advertised = True
                self.on_change(None)
        elif self.advertised:
            self.dcs.delete_node()
            self.advertised = False
            log.info("removed the node key of %s: %s", self.dcs.node, self.state.out_reason)
        if not self.state.taking_part:
            self.dcs.touch_out(self.state.out_reason)
            self.out = True
        elif self.out:
            self.dcs.delete_out()
            self.out = False

    def _renew_marks(self) -> None:
        addresses = self.ledger.renewable()
        # Asked before the refreshes are sent: the balancer may make a mark again meanwhile,
        # and a refresh sent before that would then take it for lost.
        kept = {address for address in addresses if self.policy.covers(address)}
        failed: Optional[Incomplete] = None
        try:
            done = self.dcs.refresh_marks(addresses)
        except Incomplete as exc:  # the answers there were count, then the round fails
            done, failed = exc.done, exc
        wake = False
        for address, (ok, sent_at) in done.items():
            if ok:
                self.ledger.renewed(address, self.dcs.ttl_start(sent_at))
                self.policy.remarked(address)  # it outlived the outage (a v3 lease may)
            elif address in kept:
                wake = True  # kept through an outage: the balancer makes it again now
            elif self.ledger.lost(address, "gone or someone else's"):
                wake = True
        if wake:  # found by this thread's request: the watch may not have shown it yet
            self.on_change(Behind("the heartbeat found a mark of this node gone or someone else's"))
        if failed is not None:
            raise failed
