"""What the threads know of the node besides its claims: its health and its latest read.

Neither is a claim (the claims live in yaim.claims, behind their own lock): each is
one value, written by one thread (health by the health thread, the read by the
balancer) and read by the others, and each is replaced whole by one assignment,
so a reader sees the old value or the new one, never half of either, without a
lock.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

from yaim.view import ClusterView, Rejected, Snapshot


class Health(NamedTuple):
    """The node's health as rise/fall made it, and the reason of the result that did."""

    healthy: bool
    reason: str


class Reading(NamedTuple):
    """The balancer's latest read: as the DCS gave it, as planned from, and what it refused."""

    snapshot: Snapshot
    view: ClusterView
    rejected: Tuple[Rejected, ...]


class NodeState:
    """The node's health and latest read."""

    def __init__(self) -> None:
        self.health = Health(False, "not checked yet")
        self.latest: Optional[Reading] = None

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
