"""`checker-type: shell`: healthy iff `shell-command` exits 0 within `check-timeout`.

`yaim.command` runs it: no shell, its own session, the whole process group killed
at the timeout, the end of its output kept for the reason, a minimal environment
(`command-environment` adds to it) and no ambient capabilities unless
`command-capabilities: inherit`.
"""

from __future__ import annotations

from yaim import command
from yaim.checks import BaseChecker, CheckResult


class Checker(BaseChecker):
    """Runs `shell-command` once per check; exit status 0 in time means healthy."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.argv = list(config.shell_command)
        self.shown = command.shown(self.argv)
        command.warn_if_missing(
            "shell-command", self.argv, "the node stays unhealthy until it is there"
        )

    def check(self) -> CheckResult:
        outcome = command.run(self.argv, self.config.check_timeout_s, self.config)
        return CheckResult(outcome.ok, f"{self.shown}: {outcome.describe()}")
