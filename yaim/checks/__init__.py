"""Health checkers behind one small interface, one file per kind.

`checker-type` names the module (`yaim/checks/<kind>.py`), which defines a
class named `Checker`: a new kind of check is one new file.
"""

from __future__ import annotations

import abc
import importlib
from typing import NamedTuple


class CheckResult(NamedTuple):
    """The outcome of one check, with the reason an operator would want in the log."""

    healthy: bool
    reason: str


class BaseChecker(abc.ABC):
    """Checks the local service once per call; never raises for an unhealthy service."""

    def __init__(self, config) -> None:
        self.config = config

    @abc.abstractmethod
    def check(self) -> CheckResult:
        """Run one check, bounded by `check-timeout`."""

    def close(self) -> None:
        """Release what the checker holds open (connections); called at shutdown."""


def create(config) -> BaseChecker:
    """The checker that `checker-type` names."""
    module = importlib.import_module("yaim.checks." + config.checker_type)
    return module.Checker(config)
