"""The one vocabulary of a node's events and their reasons.

The words a claim's life is told in: the notify commands' events (`notify-take`,
...), the label values of the claim metrics (`yaim_takeovers_total{reason}`, ...)
and the log lines' reasons all come from here, so a reason is added in one place
and every series of it exists (at 0) from the start.
"""

from __future__ import annotations

from typing import Mapping

TAKE, RELEASE, FENCE, HEALTH = "take", "release", "fence", "health"

# What the notify-* commands hear of: a claim's three events and the node's health.
EVENTS = (TAKE, RELEASE, FENCE, HEALTH)

# Why an address is taken, released or fenced: the metric's label, then the log's words.
REASONS: Mapping[str, Mapping[str, str]] = {
    TAKE: {
        "free": "it was free",
        "handover": "its holder had released it",
        "resumed": "its mark was still ours",
    },
    RELEASE: {
        "removed": "removed from the pool",
        "unhealthy": "not healthy",
        "drained": "the node is drained",
        "rebalance": "over its share",
        "stopping": "stopping",
        "link-down": "the service link is down",
    },
    FENCE: {
        "deadline": "its mark could not be refreshed in time",
        "mark-lost": "its mark is gone or someone else's",
    },
}


def words(event: str, reason: str) -> str:
    """The log's words for the reason of a take, release or fence."""
    return REASONS[event][reason]
