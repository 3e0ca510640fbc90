"""Run an operator's command: no shell, its own session, a timeout that kills its group.

Shared by the shell check and the notify commands. The command runs without a
shell (name one, `sh -c '...'`, to get one) in a session of its own, so that on
a timeout the whole process group is killed: the command and everything it
started, not only the first process. Its output goes to a temporary file, not a
pipe: a grandchild that left the group and still held a pipe open could
otherwise keep the caller reading long after the timeout. Commands still running
when yaim exits are killed the same way (atexit).
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
from typing import IO, Mapping, NamedTuple, Optional, Sequence, Set

log = logging.getLogger(__name__)

OUTPUT_TAIL = 300  # characters of output kept: the end, where errors are
SHOWN_HEAD = 100  # characters of the command line that name it in messages
REAP_TIMEOUT = 1.0  # seconds to wait for a killed command to be gone

_running: Set[int] = set()  # process groups of commands in progress (their leader not reaped)
_running_lock = threading.Lock()


class Outcome(NamedTuple):
    """How one run ended. `result`: ok, failed (non-zero exit or a signal), timeout
    (killed at the timeout) or error (it could not be started)."""

    result: str
    detail: str  # "exit status 3", "killed by SIGTERM", "command not found", ...
    output: str = ""  # the end of its output, on one line

    @property
    def ok(self) -> bool:
        return self.result == "ok"

    def describe(self) -> str:
        """The detail and the output, for a log line or a check's reason."""
        return f"{self.detail}: {self.output}" if self.output else self.detail


def shown(argv: Sequence[str]) -> str:
    """The command line, quoted as a shell would need it, shortened for messages."""
    line = " ".join(shlex.quote(word) for word in argv)
    return line if len(line) <= SHOWN_HEAD else line[:SHOWN_HEAD] + "..."


def warn_if_missing(key: str, argv: Sequence[str], consequence: str) -> None:
    """Log at start that a configured command cannot be found, instead of at its first run."""
    if shutil.which(argv[0]) is None:
        log.error("%s: %s: command not found or not executable; %s", key, argv[0], consequence)


def run(argv: Sequence[str], timeout: float, env: Optional[Mapping[str, str]] = None) -> Outcome:
    """Run `argv` (with `env`, else yaim's environment) for at most `timeout` seconds."""
    with tempfile.TemporaryFile() as captured:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=captured,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=None if env is None else dict(env),
            )
        except FileNotFoundError:
            return Outcome("error", "command not found")
        except OSError as exc:
            return Outcome("error", f"cannot run it: {exc.strerror}")
        with _running_lock:
            _running.add(proc.pid)
        try:
            status = _wait(proc, timeout)
        finally:
            with _running_lock:
                _running.discard(proc.pid)
        said = _tail(captured)
    if status is None:
        return Outcome(
            "timeout", f"no exit within {timeout * 1000:.0f} ms, killed its process group", said
        )
    if status < 0:
        return Outcome("failed", f"killed by {_signal_name(-status)}", said)
    return Outcome("ok" if status == 0 else "failed", f"exit status {status}", said)


def _wait(proc: subprocess.Popen, timeout: float) -> Optional[int]:
    """The exit status; None after a timeout, once the process group is killed."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    with _running_lock:
        _kill_group(proc.pid)
    try:
        proc.wait(REAP_TIMEOUT)
    except subprocess.TimeoutExpired:
        log.error("%s (pid %d) is still there after SIGKILL", shown(proc.args), proc.pid)
    return None


def _kill_group(pgid: int) -> None:
    """SIGKILL a command's process group. Its id is the leader's pid, listed in `_running`
    until the leader is reaped, so it cannot have been handed to anybody else."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


@atexit.register
def _kill_running() -> None:
    """yaim is exiting: no command it started may outlive it."""
    with _running_lock:
        for pgid in _running:
            _kill_group(pgid)


def _tail(captured: IO[bytes]) -> str:
    """The end of the command's output as one line."""
    size = captured.seek(0, os.SEEK_END)
    captured.seek(max(0, size - 4 * OUTPUT_TAIL))
    text = " ".join(captured.read().decode(errors="replace").split())
    return text if len(text) <= OUTPUT_TAIL else "..." + text[-OUTPUT_TAIL:]


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
