"""Run an operator's command: no shell, its own session, a timeout that kills its group.

Shared by the shell check and the notify commands. The command runs without a
shell (name one, `sh -c '...'`, to get one) in a session of its own, so that on
a timeout the whole process group is killed: the command and everything it
started, not only the first process. Its output goes to a temporary file, not a
pipe: a grandchild that left the group and still held a pipe open could
otherwise keep the caller reading long after the timeout. Commands still running
when yaim exits are killed the same way (atexit).

A command gets a minimal environment built from nothing (`environment`), not
yaim's: every config key can be set by a YAIM_<KEY> variable, YAIM_ETCD_PASSWORD
too. And it does not get the ambient capabilities the packaged unit gives yaim
(CAP_NET_ADMIN, CAP_NET_RAW) unless `command-capabilities: inherit` says so. No
library clears the ambient set of a child, so it is one prctl(2) through ctypes.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import logging
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
from typing import IO, Callable, Dict, Iterable, Mapping, NamedTuple, Optional, Sequence, Set

log = logging.getLogger(__name__)

OUTPUT_TAIL = 300  # characters of output kept: the end, where errors are
SHOWN_HEAD = 100  # characters of the command line that name it in messages
REAP_TIMEOUT = 1.0  # seconds to wait for a killed command to be gone
# What a command gets from yaim's environment when set, besides `command-environment`.
PASSED = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # when yaim has none
PR_CAP_AMBIENT = 47  # prctl(2) option and sub-option, from <linux/prctl.h>
PR_CAP_AMBIENT_CLEAR_ALL = 4

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
    if shutil.which(argv[0], path=_path()) is None:
        log.error("%s: %s: command not found or not executable; %s", key, argv[0], consequence)


def environment(
    passed: Iterable[str] = (), variables: Optional[Mapping[str, str]] = None
) -> Dict[str, str]:
    """The whole environment of an operator's command, built from nothing.

    From yaim's environment: the names in PASSED and in `passed` (the operator's
    `command-environment`, say PGPASSFILE) that are set, and PATH always (SAFE_PATH
    when yaim has none). Then `variables`: a notify command's YAIM_EVENT and the
    rest. Nothing else, so no YAIM_<KEY> variable and no secret reaches a command
    unless the operator names it.
    """
    env = {name: os.environ[name] for name in (*PASSED, *passed) if name in os.environ}
    env["PATH"] = _path()
    env.update(variables or {})
    return env


def _path() -> str:
    """The PATH that commands are looked up in and get: yaim's, or SAFE_PATH."""
    return os.environ.get("PATH") or SAFE_PATH


def run(
    argv: Sequence[str], timeout: float, config, variables: Optional[Mapping[str, str]] = None
) -> Outcome:
    """Run `argv` for at most `timeout` seconds, as `config`'s command-* keys say.

    Its environment is `environment(command-environment, variables)`; yaim's ambient
    capabilities are cleared in it unless `command-capabilities` is `inherit`.
    """
    keep = config.command_capabilities == "inherit"
    with tempfile.TemporaryFile() as captured:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=captured,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=environment(config.command_environment, variables),
                preexec_fn=None if keep else _ambient_clearer(),
            )
        except FileNotFoundError:
            return Outcome("error", "command not found")
        except OSError as exc:
            return Outcome("error", f"cannot run it: {exc.strerror}")
        except subprocess.SubprocessError:  # what the child's failed preexec_fn becomes
            return Outcome("error", "cannot clear its ambient capabilities, not run")
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


@functools.lru_cache(maxsize=None)
def _ambient_clearer() -> Optional[Callable[[], None]]:
    """The preexec_fn that empties a command's ambient capability set, or None if yaim has none.

    Needed when yaim runs as a user with ambient capabilities (the packaged unit):
    they survive execve. With the ambient set empty, a non-root command starts
    with no permitted or effective capability (at execve those are the ambient
    set plus what the program file grants, and NoNewPrivileges, as in the
    packaged unit, voids file grants), and it cannot raise an ambient one again,
    which needs it permitted. The inheritable set is left alone: by itself it
    gives nothing, only programs that root marked with inheritable file
    capabilities (setcap ...+i) could take from it, and not under
    NoNewPrivileges. A yaim running as root gives its commands root's
    capabilities whatever the ambient set: run it as a user.

    A preexec_fn runs Python in the child of a fork of a threaded program, which
    the subprocess docs warn about (a lock held by another thread at the fork
    stays held), so it is installed only when there is something to clear, read
    once from /proc/self/status (yaim never raises an ambient capability later).
    prctl is looked up here, in yaim; the child only calls it. If the child cannot
    clear the set the command is not run.
    """
    if not _has_ambient():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
    prctl.restype = ctypes.c_int

    def clear() -> None:
        if prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAP_AMBIENT_CLEAR_ALL) failed")

    return clear


def _has_ambient() -> bool:
    """Whether this process has an ambient capability; an unreadable status counts as yes,
    so that clearing is tried rather than skipped. No CapAmb line: no ambient set (< 4.3)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapAmb:"):
                    return int(line.split()[1], 16) != 0
    except OSError:
        return True
    return False


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
