"""The balancer thread: reads the cluster, plans with `yaim.balancer`, marks and unmarks.

Take = create the mark (atomically), then hold the address, which the actuator
adds and announces. Release = stop holding, wait until the actuator has removed
the address, then delete the mark. Never the other way round.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, List, Set

from yaim import balancer
from yaim.dcs import DCS
from yaim.state import SharedState
from yaim.threads.base import DCSWorker
from yaim.view import ClusterView, IPAddress, Rejected, in_order, parse_snapshot

log = logging.getLogger(__name__)

# Why an address is taken or released: the metrics' label, then the log's words.
REASONS = {
    "free": "it was free",
    "resumed": "its mark was still ours",
    "removed": "removed from the pool",
    "unhealthy": "not healthy",
    "drained": "the node is drained",
    "rebalance": "over its share",
}


class BalancerThread(DCSWorker):
    """One round per interval, or at once when health changes or a mark is lost."""

    def __init__(
        self,
        dcs: DCS,
        state: SharedState,
        config,
        sync_actuator: Callable[[float], bool],
        **kwargs,
    ) -> None:
        super().__init__("balancer", dcs, "balancer cannot reach the DCS", **kwargs)
        self.state = state
        self.config = config
        self.me = config.node_name
        self.sync_actuator = sync_actuator
        self.rejected: Set[Rejected] = set()
        self.drained = False

    def dcs_round(self, messages: List[Any]) -> None:
        self._act(self._read_view())

    def _read_view(self) -> ClusterView:
        snapshot = self.dcs.read()
        view, rejected = parse_snapshot(snapshot, self.config.allowed_networks)
        for entry in sorted(set(rejected) - self.rejected):
            log.warning("refused pool entry %r on node %s: %s", entry.name, self.me, entry.reason)
        self.rejected = set(rejected)
        self._note_drain(self.me in snapshot.drained)
        self.state.set_view(view)
        if not self.state.healthy:
            view = view._replace(nodes=view.nodes - {self.me})
        return view

    def _note_drain(self, drained: bool) -> None:
        if drained == self.drained:
            return
        self.drained = drained
        self.metrics.drained.set(drained)
        held = ", ".join(map(str, in_order(self.state.held()))) or "no address"
        if drained:
            log.info(
                "drained node %s: releasing %s, taking none (operator's drain key)", self.me, held
            )
        else:
            log.info("undrained node %s: taking its share again (drain key removed)", self.me)

    def _act(self, view: ClusterView) -> None:
        held = self.state.held()
        for address in in_order(held - view.pool):
            self._release(address, "removed")
        for address in in_order(held & view.pool):
            holder = view.holders.get(address)
            if holder != self.me and self.state.drop(address) is not None:
                self.metrics.fencing.labels("mark-lost").inc()
                log.warning(
                    "fencing %s on node %s: its mark is %s",
                    address,
                    self.me,
                    "held by " + holder if holder else "gone",
                )
                self.sync_actuator(self.config.interval_s)
        plan = balancer.plan(view, self.me)
        if self.drained:
            reason = "drained"
        else:
            reason = "unhealthy" if self.me not in view.nodes else "rebalance"
        for address in in_order(plan.release):
            self._release(address, reason)
        for address in in_order(plan.keep - self.state.held()):
            self._claim(address, self.dcs.refresh_mark, "resumed")
        for address in in_order(plan.take):
            self._claim(address, self.dcs.create_mark, "free")

    def _claim(self, address: IPAddress, mark: Callable[[IPAddress], bool], reason: str) -> None:
        """Get a live mark through `mark`, then hold the address; `reason` is a REASONS key."""
        sent_at = time.monotonic()
        if not mark(address):
            log.debug("%s is not ours to take this round", address)
            return
        if not self.state.hold(address, self.state.fence_time(self.dcs.ttl_start(sent_at))):
            self.dcs.delete_mark(address)
            return
        self.sync_actuator(0.0)  # add it now, not at the actuator's next round; no waiting
        self.metrics.takeovers.labels(reason).inc()
        log.info("took %s on node %s: %s", address, self.me, REASONS[reason])

    def _release(self, address: IPAddress, reason: str) -> None:
        """Remove the address from the interface first, then delete its mark."""
        fence_time = self.state.drop(address)
        if not self.sync_actuator(self.config.interval_s):
            if fence_time is not None:
                self.state.hold(address, fence_time)
            log.error("keeping %s on node %s: it could not be removed yet", address, self.me)
            return
        self.dcs.delete_mark(address)
        self.metrics.releases.labels(reason).inc()
        log.info("released %s on node %s: %s", address, self.me, REASONS[reason])
