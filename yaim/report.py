"""What a node shows of itself: GET /health, GET /status, and the age of its last DCS
success (the `yaim_dcs_last_success_age_seconds` gauge).

It only reads: the health and the latest read (yaim.state), the held claims
(yaim.claims), the DCS handles' last successes. /status shows the cluster in the one
shape `yaimctl status --json` shows it in (yaim.ctl.status_value), as this node last
read it, with this node's own state added. The config's secrets are scrubbed from
every string it returns, a last wall behind the masking where they are quoted.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple

from yaim import __version__, ctl
from yaim.claims import Ledger
from yaim.dcs import DCS
from yaim.redact import Secrets, mask_url
from yaim.state import NodeState
from yaim.view import in_order


class Freshness(NamedTuple):
    """The endpoint of the most recent successful DCS request, and its age (None: never)."""

    endpoint: str
    age: Optional[float]


class Report:
    """One node's /health and /status; `config()` is the configuration it runs with now."""

    def __init__(
        self,
        config: Callable[[], Any],
        state: NodeState,
        ledger: Ledger,
        stores: Sequence[DCS],
        drained: Callable[[], bool],
        failsafe: Callable[[], Dict[str, Any]],
    ) -> None:
        self.config = config
        self.state = state
        self.ledger = ledger
        self.stores = stores
        self.drained = drained
        self.failsafe = failsafe

    def dcs_age(self) -> Freshness:
        latest = max(self.stores, key=lambda store: store.last_success or float("-inf"))
        if latest.last_success is None:
            return Freshness(latest.endpoint, None)
        return Freshness(latest.endpoint, time.monotonic() - latest.last_success)

    def dcs_age_or_nan(self) -> float:
        """The age for the metric: NaN until the first success, as Prometheus expects."""
        age = self.dcs_age().age
        return float("nan") if age is None else age

    def _fresh(self, age: Optional[float]) -> bool:
        """A DCS session is fresh while its last success is younger than the TTL."""
        return age is not None and age < self.config().ttl_s

    def dcs_problem(self) -> Optional[str]:
        """Why the DCS cannot serve this node whatever the retries do (DCS.problem)."""
        return next((store.problem for store in self.stores if store.problem), None)

    def health(self) -> Tuple[bool, str]:
        """GET /health: the service link up, healthy, and the DCS answered within the last
        ttl."""
        age = self.dcs_age().age
        reason = Secrets.of(self.config()).scrub(self.state.health_reason)
        if not self.state.link.up:
            return False, "link down: " + self.state.link.cause
        if not self.state.healthy:
            return False, "unhealthy: " + reason
        problem = self.dcs_problem()
        if problem is not None:
            return False, "DCS unusable: " + problem
        if not self._fresh(age):
            since = "never" if age is None else f"{age:.1f} s ago"
            return False, f"DCS session stale: last successful request {since}"
        return True, "healthy: " + reason

    def status(self) -> Dict[str, Any]:
        """GET /status: the cluster as this node last read it, and the node itself."""
        config = self.config()
        endpoint, age = self.dcs_age()
        latest = self.state.latest
        cluster = ctl.Cluster((), (), ())
        if latest is not None:
            cluster = ctl.summary(latest.snapshot, latest.view, latest.rejected)
        shown = ctl.status_value(cluster, self.stores[0].root, mask_url(endpoint))
        shown.update(
            node=config.node_name,
            version=__version__,
            healthy=self.state.healthy,
            health_reason=self.state.health_reason,
            link={"up": self.state.link.up, "cause": self.state.link.cause},
            drained=self.drained(),
            failsafe=self.failsafe(),
            dcs={
                "endpoint": mask_url(endpoint),
                "last_success_age": None if age is None else round(age, 3),
                "fresh": self._fresh(age),
                "problem": self.dcs_problem(),
            },
            addresses=[str(a) for a in in_order(self.ledger.held())],
        )
        return Secrets.of(config).scrub_value(shown)
