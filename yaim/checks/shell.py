"""`checker-type: shell`: healthy iff `shell-command` exits 0 within `check-timeout`.

The command runs without a shell (name one, `sh -c '...'`, to get one) in a session
of its own, so that on a timeout the whole process group is killed: the command
and everything it started, not only the first process. Its output goes to a
temporary file, not a pipe: a grandchild that left the group and still held a
pipe open could otherwise keep this thread reading long after the timeout.
Checks still running when yaim exits are killed the same way (atexit).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
from typing import IO, Optional, Set

from yaim.checks import BaseChecker, CheckResult

log = logging.getLogger(__name__)

OUTPUT_TAIL = 300  # characters of output kept for the reason: the end, where errors are
SHOWN_HEAD = 100  # characters of the command line that name it in the reason
REAP_TIMEOUT = 1.0  # seconds to wait for a killed command to be gone

_running: Set[int] = set()  # process groups of checks in progress (their leader not reaped)
_running_lock = threading.Lock()


def _kill_group(pgid: int) -> None:
    """SIGKILL a check's process group. Its id is the leader's pid, listed in `_running`
    until the leader is reaped, so it cannot have been handed to anybody else."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


@atexit.register
def _kill_running() -> None:
    """yaim is exiting: no check it started may outlive it."""
    with _running_lock:
        for pgid in _running:
            _kill_group(pgid)


def _tail(output: IO[bytes]) -> str:
    """The end of the command's output as one line."""
    size = output.seek(0, os.SEEK_END)
    output.seek(max(0, size - 4 * OUTPUT_TAIL))
    text = " ".join(output.read().decode(errors="replace").split())
    return text if len(text) <= OUTPUT_TAIL else "..." + text[-OUTPUT_TAIL:]


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class Checker(BaseChecker):
    """Runs `shell-command` once per check; exit status 0 in time means healthy."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.argv = list(config.shell_command)
        shown = " ".join(shlex.quote(word) for word in self.argv)
        self.shown = shown if len(shown) <= SHOWN_HEAD else shown[:SHOWN_HEAD] + "..."
        if shutil.which(self.argv[0]) is None:
            log.error(
                "shell-command: %s: command not found or not executable;"
                " the node stays unhealthy until it is there",
                self.argv[0],
            )

    def check(self) -> CheckResult:
        with tempfile.TemporaryFile() as output:
            try:
                proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except FileNotFoundError:
                return CheckResult(False, f"{self.shown}: command not found")
            except OSError as exc:
                return CheckResult(False, f"{self.shown}: cannot run it: {exc.strerror}")
            with _running_lock:
                _running.add(proc.pid)
            try:
                status = self._wait(proc)
            finally:
                with _running_lock:
                    _running.discard(proc.pid)
            return self._result(status, _tail(output))

    def _wait(self, proc: subprocess.Popen) -> Optional[int]:
        """The exit status; None after a timeout, once the process group is killed."""
        try:
            return proc.wait(self.config.check_timeout_s)
        except subprocess.TimeoutExpired:
            pass
        with _running_lock:
            _kill_group(proc.pid)
        try:
            proc.wait(REAP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.error("%s (pid %d) is still there after SIGKILL", self.shown, proc.pid)
        return None

    def _result(self, status: Optional[int], output: str) -> CheckResult:
        said = f": {output}" if output else ""
        if status is None:
            return CheckResult(
                False,
                f"{self.shown}: no exit within {self.config.check_timeout} ms,"
                f" killed its process group{said}",
            )
        if status < 0:
            return CheckResult(False, f"{self.shown}: killed by {_signal_name(-status)}{said}")
        return CheckResult(status == 0, f"{self.shown}: exit status {status}{said}")
