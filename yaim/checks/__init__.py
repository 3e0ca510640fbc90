"""Health checkers behind one small interface, one file per kind.

`checker-type` names the module (`yaim/checks/<kind>.py`), which defines a
class named `Checker`: a new kind of check is one new file. A module whose library
may be missing says so in a function `unavailable()` (None: nothing missing).
"""

from __future__ import annotations

import abc
import importlib
from typing import NamedTuple, Optional


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


def unavailable(config) -> Optional[str]:
    """Why the checker `checker-type` names cannot run here (a library it needs is missing),
    None if it can. Each kind is imported only when chosen, so this is asked before the
    daemon starts and by --check-config, where a problem is a configuration error."""
    try:
        module = importlib.import_module("yaim.checks." + config.checker_type)
    except ImportError as exc:
        return f"{config.checker_type} cannot be loaded: {exc}"
    lacks = getattr(module, "unavailable", None)
    return None if lacks is None else lacks()


def create(config) -> BaseChecker:
    """The checker that `checker-type` names."""
    module = importlib.import_module("yaim.checks." + config.checker_type)
    return module.Checker(config)
