"""What the threads know of the node besides its claims: its health, its service link and
its latest read.

None is a claim (the claims live in yaim.claims, behind their own lock): each is
one value, written by one thread (health by the health thread, the link by the
actuator thread, the read by the balancer, the placement keys by the main loop's
reload) and read by the others, and each is
replaced whole by one assignment,
so a reader sees the old value or the new one, never half of either, without a
lock.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

from yaim.link import Link
from yaim.view import ClusterView, Rejected, Snapshot


class Health(NamedTuple):
    """The node's health as rise/fall made it, and the reason of the result that did."""

    healthy: bool
    reason: str


class Placement(NamedTuple):
    """The placement keys (yaim.balancer), which a SIGHUP may change: the weight the node
    key publishes, `rebalance` (auto or manual) and `rebalance-delay` in seconds."""

    weight: int = 1
    rebalance: str = "auto"
    delay: float = 0.0

    @classmethod
    def of(cls, config) -> Placement:
        return cls(config.weight, config.rebalance, config.rebalance_delay_s)


class Reading(NamedTuple):
    """The balancer's latest read: as the DCS gave it, as planned from, what it refused, and
    when it was sent (monotonic)."""

    snapshot: Snapshot
    view: ClusterView
    rejected: Tuple[Rejected, ...]
    at: float = 0.0


class NodeState:
    """The node's health, link and latest read.

    `link` is the link as yaim.link.LinkTracker judges it (up: the node may take part;
    the cause of its last change), not the kernel's every word.
    """

    def __init__(self, placement: Optional[Placement] = None) -> None:
        self.placement = Placement() if placement is None else placement
        self.health = Health(False, "not checked yet")
        self.link = Link(True, "not looked at yet")
        self.latest: Optional[Reading] = None

    @property
    def taking_part(self) -> bool:
        """Healthy, with the service link up: the node advertises itself and holds its share."""
        return self.health.healthy and self.link.up

    @property
    def out_reason(self) -> str:
        """Why the node does not take part (when it does not), in words for the log and the
        `out` key: the link first, for while it is down the check's result changes nothing."""
        if not self.link.up:
            return "link down: " + self.link.cause
        return "not healthy: " + self.health.reason

    @property
    def healthy(self) -> bool:
        return self.health.healthy

    @property
    def health_reason(self) -> str:
        return self.health.reason

    def set_health(self, healthy: bool, reason: str) -> bool:
        """Record the health state; True if it changed."""
        changed = healthy != self.health.healthy
        self.health = Health(healthy, reason)
        return changed

    @property
    def view(self) -> Optional[ClusterView]:
        """The view the balancer planned from last (None before its first read)."""
        return None if self.latest is None else self.latest.view
