"""The health-checker thread: runs the checker, applies rise/fall, reports changes.

A slow or hung check only delays this thread: the heartbeat, the balancer and
the actuator go on, each in its own thread.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, List

from yaim.checks import BaseChecker, CheckResult
from yaim.state import SharedState
from yaim.threads.base import Worker

log = logging.getLogger(__name__)


class HealthThread(Worker):
    """Turns check results into the node's health state."""

    def __init__(
        self,
        checker: BaseChecker,
        state: SharedState,
        config,
        on_change: Callable[[bool], None],
        **kwargs,
    ) -> None:
        super().__init__("health", **kwargs)
        self.checker = checker
        self.state = state
        self.config = config
        self.on_change = on_change
        self.streak = 0

    def check_round(self) -> CheckResult:
        """One round: up to `retry-num` tries, `retry-after` apart, until one is healthy."""
        result = self.checker.check()
        for _ in range(self.config.retry_num - 1):
            if result.healthy or self.stop.wait(self.config.retry_after_s):
                break
            result = self.checker.check()
        return result

    def step(self, messages: List[Any]) -> None:
        result = self.check_round()
        log.debug("check: %s (%s)", "healthy" if result.healthy else "unhealthy", result.reason)
        if result.healthy == self.state.healthy:
            self.streak = 0
            self.state.set_health(result.healthy, result.reason)
            return
        self.streak += 1
        needed = self.config.check_rise if result.healthy else self.config.check_fall
        if self.streak < needed:
            return
        self.streak = 0
        self.state.set_health(result.healthy, result.reason)
        log.info(
            "node %s is now %s: %s",
            self.config.node_name,
            "healthy" if result.healthy else "unhealthy",
            result.reason,
        )
        self.on_change(result.healthy)

    def finish(self, messages: List[Any]) -> None:
        self.checker.close()
