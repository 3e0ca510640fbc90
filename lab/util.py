"""Small helpers shared by the lab: bounded polling and processes stopped by pid."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional, Sequence, Tuple, Type, TypeVar

T = TypeVar("T")


def wait_until(
    pred: Callable[[], T],
    timeout: float,
    interval: float = 0.02,
    what: str = "condition",
    ignore: Tuple[Type[BaseException], ...] = (),
) -> T:
    """Poll `pred` until it returns a truthy value and return that value.

    Exceptions listed in `ignore` count as "not yet". Raises TimeoutError naming
    `what`, the number of tries and the last value or exception.
    """
    deadline = time.monotonic() + timeout
    tries = 0
    last: object = None
    while True:
        tries += 1
        try:
            value = pred()
        except ignore as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"timed out after {timeout:.1f} s ({tries} tries) waiting for {what}; "
                f"last result: {last!r}"
            )
        time.sleep(interval)


def command_line(argv: Sequence[str]) -> str:
    """The argv as a shell-quoted line, for messages."""
    return " ".join(shlex.quote(a) for a in argv)


def netns_argv(netns: Optional[str], argv: Sequence[str]) -> list:
    """`argv` run inside the namespace `netns` (unchanged when None)."""
    return list(argv) if netns is None else ["ip", "netns", "exec", netns, *argv]


def spawn(
    argv: Sequence[str],
    log_path: Path,
    netns: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
) -> subprocess.Popen:
    """Start `argv` (in `netns`) with stdout and stderr appended to `log_path`.

    `ip netns exec` execs the command, so the pid is the command's own. The child
    gets its own session, so a Ctrl-C on the terminal reaches only our process,
    which then tears down in order.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    full_env.update(env or {})
    with open(str(log_path), "ab") as log:
        log.write(f"$ {command_line(argv)}\n".encode())
        log.flush()
        return subprocess.Popen(
            netns_argv(netns, argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
        )


def stop_processes(
    procs: Iterable[subprocess.Popen], timeout: float = 3.0, sig: int = signal.SIGTERM
) -> None:
    """Send `sig` to every live process (by pid), then SIGKILL those still alive
    after `timeout` seconds, and reap them all."""
    live = [p for p in procs if p.poll() is None]
    for p in live:
        p.send_signal(sig)
    deadline = time.monotonic() + timeout
    for p in live:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file, headed by its name."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"==> {path} (missing) <==\n"
    return "==> {} <==\n{}\n".format(path, "\n".join(text.splitlines()[-lines:]))


def live_group_members(pgid: int) -> list:
    """Pids of the processes in process group `pgid` that have not died. Members
    killed together with their parent stay zombies until init reaps them: gone."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        if int(fields[2]) == pgid and fields[0] not in "ZX":
            found.append(int(stat.parent.name))
    return found


class Service:
    """A context manager that brings a service up and always tears it down, also when
    bringing it up fails half way."""

    def bring_up(self) -> None:
        raise NotImplementedError

    def teardown(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        try:
            self.bring_up()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()
