"""Health checkers behind one small interface, one file per kind.

`checker-type` names the module (`yaim/checks/<kind>.py`, a dash as `_`), which
defines a class named `Checker`: a new kind of check is one new file. A module whose
library may be missing says so in a function `unavailable()` (None: nothing missing);
one that reads the DCS says `READS_DCS = True` and gets a handle from the daemon.
"""

from __future__ import annotations

import abc
import importlib
from types import ModuleType
from typing import Any, Callable, NamedTuple, Optional

from yaim.errors import CheckError


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

    # Whether an unhealthy answer is tried again (`retry-num`): not where the answer is
    # the DCS's word, whose requests are tried already.
    retried = True

    def pause(self, period: float) -> float:
        """Seconds from one check to the next: `period` (check-interval); a checker that
        waits for a change itself (a watch) says 0."""
        return period

    def close(self) -> None:
        """Release what the checker holds open (connections); called at shutdown."""


def _module(config) -> ModuleType:
    return importlib.import_module("yaim.checks." + config.checker_type.replace("-", "_"))


def unavailable(config) -> Optional[str]:
    """Why the checker `checker-type` names cannot run here (a library it needs is missing),
    None if it can. Each kind is imported only when chosen, so this is asked before the
    daemon starts and by --check-config, where a problem is a configuration error."""
    try:
        module = _module(config)
    except ImportError as exc:
        return f"{config.checker_type} cannot be loaded: {exc}"
    lacks = getattr(module, "unavailable", None)
    return None if lacks is None else lacks()


def create(config, dcs_handle: Optional[Callable[[], Any]] = None) -> BaseChecker:
    """The checker that `checker-type` names; `dcs_handle` makes the DCS handle of one
    that reads the DCS (a handle of its own: its watch waits in the health thread)."""
    module = _module(config)
    if not getattr(module, "READS_DCS", False):
        return module.Checker(config)
    if dcs_handle is None:
        raise CheckError(f"checker-type {config.checker_type} needs the DCS, and has none here")
    return module.Checker(config, dcs_handle())
