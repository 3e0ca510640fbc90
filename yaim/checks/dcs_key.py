"""`checker-type: dcs-key`: healthy while a key in the DCS holds a value (vip-manager's
`trigger-key` and `trigger-value`), e.g. Patroni's `/<namespace>/<scope>/leader` and
this node's Patroni name, so that the node holding the writer address is the primary.

The key is followed with a watch: each check waits up to `check-interval` for the key
to change, so a switchover is seen the moment Patroni writes it, not an interval later.
The DCS handle (`KeySource`) comes from the daemon; this module knows only its method.
Its requests are tried `retry-num` times already, so an answer is not tried again.

While the DCS does not answer, the last value seen stands: the marks, not the health,
keep an address off a node cut from etcd (its marks lapse and it fences), and in a
whole-etcd outage nobody can change the key, so the node Patroni last named is still
the one to serve (with `failsafe`, its peers confirm it). Before any answer: unhealthy.
"""

from __future__ import annotations

from typing import Optional, Protocol, Tuple

from yaim.checks import BaseChecker, CheckResult
from yaim.errors import DCSError
from yaim.names import shown


class KeySource(Protocol):
    """What the checker needs of a DCS handle (yaim.dcs.DCS.follow_key)."""

    def follow_key(
        self, key: str, after: Optional[int], timeout: float
    ) -> Optional[Tuple[Optional[str], int]]:
        """The key's (value, revision); with `after`, None if it did not change in `timeout`."""


READS_DCS = True  # yaim.checks.create gives it a handle


class Checker(BaseChecker):
    """Healthy while `trigger-key` holds `trigger-value`."""

    retried = False

    def __init__(self, config, key_source: KeySource) -> None:
        super().__init__(config)
        self.source = key_source
        self.revision: Optional[int] = None  # of the last answer; None: read afresh
        self.last: Optional[CheckResult] = None
        self.answered = False  # the latest try got an answer: follow on at once

    def check(self) -> CheckResult:
        key = self.config.trigger_key
        try:
            state = self.source.follow_key(key, self.revision, self.config.check_interval_s)
        except DCSError as exc:
            self.answered = False
            if self.last is None:
                return CheckResult(False, f"trigger-key {shown(key)} cannot be read: {exc}")
            kept = "kept: " + self.last.reason
            return CheckResult(self.last.healthy, f"trigger-key unreadable ({exc}); {kept}")
        self.answered = True
        if state is not None:  # a read, or a change
            value, self.revision = state
            self.last = self._judge(key, value)
        assert self.last is not None, "a read (revision None) always answers"
        return self.last

    def _judge(self, key: str, value: Optional[str]) -> CheckResult:
        wanted = self.config.trigger_value
        if value == wanted:
            return CheckResult(True, f"trigger-key {shown(key)} holds '{shown(wanted)}'")
        if value is None:
            return CheckResult(False, f"trigger-key {shown(key)} is not set")
        return CheckResult(
            False, f"trigger-key {shown(key)} holds '{shown(value)}', not '{shown(wanted)}'"
        )

    def pause(self, period: float) -> float:
        """The watch waited already; after a failure, a whole check-interval."""
        return 0.0 if self.answered else period
