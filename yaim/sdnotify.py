"""The service manager's side of the daemon: sd_notify(3) messages and journald priorities.

Under systemd with `Type=notify` the daemon says READY=1 once its threads and status
endpoint are up (so `systemctl start` returns, and `is-active` says active, only then),
RELOADING=1 and READY=1 around a SIGHUP reload, STOPPING=1 when it begins to let go of
its addresses, and WATCHDOG=1 from the main loop while its liveness checks pass: a hung
daemon (its main loop stopped, or the actuator stuck) stops sending, and systemd kills it
after `WatchdogSec=`; ExecStopPost then removes its addresses, as after any kill.

Outside systemd ($NOTIFY_SOCKET unset) every call is a no-op. Written on the standard
library's socket module (a datagram on a Unix socket, the protocol of sd_notify(3)):
python-systemd would be a new dependency, compiled, and missing from some of the
distributions yaim supports, for ten lines.

journald reads a line's syslog priority from a `<N>` prefix on a service's stderr when
`JOURNAL_STREAM` names that stderr (systemd.exec(5)); it adds its own timestamp.
`JournalFormatter` writes those lines, so `journalctl -p warning` shows the warnings.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Mapping, Optional

log = logging.getLogger(__name__)

# logging level -> syslog priority (syslog(3): 2 crit, 3 err, 4 warning, 6 info, 7 debug)
PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
JOURNAL_FORMAT = "%(levelname)s %(threadName)s: %(message)s"


class ServiceManager:
    """sd_notify(3) towards $NOTIFY_SOCKET; every message a no-op without it."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        address = environ.get("NOTIFY_SOCKET") or None
        if address is not None and address.startswith("@"):  # the abstract namespace
            address = "\0" + address[1:]
        self.address = address
        self.watchdog_s = _watchdog_seconds(environ)
        self._last_watchdog = float("-inf")
        self._failed = False

    def send(self, *fields: str) -> bool:
        """One message of `KEY=value` fields; False if there is no socket or it failed
        (logged once: the service manager then decides, by its own timeouts)."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            if not self._failed:
                log.warning("cannot notify the service manager on %r: %s", self.address, exc)
            self._failed = True
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", "STATUS=" + status)

    def reloading(self) -> bool:
        monotonic_usec = int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1_000_000)
        return self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1", "STATUS=releasing its addresses and stopping")

    def watchdog(self, now: float) -> bool:
        """WATCHDOG=1 when half of `WatchdogSec=` has passed since the last one (monotonic
        `now`); only called while the daemon's liveness checks pass."""
        if self.watchdog_s is None or now - self._last_watchdog < self.watchdog_s / 2:
            return False
        self._last_watchdog = now
        return self.send("WATCHDOG=1")


def _watchdog_seconds(environ: Mapping[str, str]) -> Optional[float]:
    """`WatchdogSec=` in seconds, as systemd passes it (WATCHDOG_USEC, for WATCHDOG_PID)."""
    pid = environ.get("WATCHDOG_PID")
    if pid is not None and pid != str(os.getpid()):
        return None  # meant for another process (a parent that execs us is the same)
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1_000_000 if usec > 0 else None


def journal_stderr(environ: Mapping[str, str] = os.environ, fd: int = 2) -> bool:
    """Whether `fd` is the stream journald gave the service (JOURNAL_STREAM is dev:inode)."""
    expected = environ.get("JOURNAL_STREAM", "")
    try:
        stat = os.fstat(fd)
    except OSError:
        return False
    return expected == f"{stat.st_dev}:{stat.st_ino}"


class JournalFormatter(logging.Formatter):
    """A line with its syslog priority first (`<4>WARNING ...`) and no timestamp."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        priority = next((p for level, p in PRIORITIES if record.levelno >= level), 7)
        text = super().format(record)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())
