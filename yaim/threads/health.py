"""The health-checker thread: runs the checker, applies rise/fall, reports changes.

A slow or hung check only delays this thread: the heartbeat, the balancer and
the actuator go on, each in its own thread.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, List, NamedTuple

from yaim.checks import BaseChecker, CheckResult
from yaim.state import NodeState
from yaim.threads.base import Worker

log = logging.getLogger(__name__)


class Reconfigure(NamedTuple):
    """New check settings and the checker built from them (a SIGHUP reload)."""

    config: Any
    checker: BaseChecker


class HealthThread(Worker):
    """Turns check results into the node's health state."""

    def __init__(
        self,
        checker: BaseChecker,
        state: NodeState,
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
        self.reported = False  # whether any health state has been logged yet

    def check_round(self) -> CheckResult:
        """One round: up to `retry-num` tries, `retry-after` apart, until one is healthy
        (one for a checker whose answers are not tried again)."""
        result = self.checker.check()
        tries = self.config.retry_num if self.checker.retried else 1
        for _ in range(tries - 1):
            if result.healthy or self.stop.wait(self.config.retry_after_s):
                break
            result = self.checker.check()
        return result

    def next_timeout(self) -> float:
        """check-interval, or what the checker says (0 after a watch that waited already)."""
        return self.checker.pause(self.period)

    def reconfigure(self, config, checker: BaseChecker) -> None:
        """Check with `checker` and `config`'s settings from the next round on.

        The health state and the current streak are kept, so a reload by itself
        never turns the node unhealthy or drops an address.
        """
        self.poke(Reconfigure(config, checker))

    def _apply(self, messages: List[Any]) -> None:
        for message in messages:
            if isinstance(message, Reconfigure):
                old, self.checker = self.checker, message.checker
                self.config = message.config
                self.period = message.config.check_interval_s
                old.close()

    def step(self, messages: List[Any]) -> None:
        self._apply(messages)
        started = time.monotonic()
        result = self.check_round()
        self.metrics.check_duration.observe(time.monotonic() - started)
        self.metrics.checks.labels("healthy" if result.healthy else "unhealthy").inc()
        log.debug("check: %s (%s)", "healthy" if result.healthy else "unhealthy", result.reason)
        if result.healthy == self.state.healthy:
            self.streak = 0
            self.state.set_health(result.healthy, result.reason)
            if not self.reported:  # a node that starts unhealthy says why, once
                self._report("is", result)
            return
        self.streak += 1
        needed = self.config.check_rise if result.healthy else self.config.check_fall
        if self.streak < needed:
            return
        self.streak = 0
        self.state.set_health(result.healthy, result.reason)
        self._report("is now", result)
        self.on_change(result.healthy)

    def _report(self, verb: str, result: CheckResult) -> None:
        """The one INFO line of a state change, with the reason of the result that made it."""
        self.reported = True
        state = "healthy" if result.healthy else "unhealthy"
        log.info("node %s %s %s: %s", self.config.node_name, verb, state, result.reason)

    def finish(self, messages: List[Any]) -> None:
        self.checker.close()
