"""`checker-type: postgres`: healthy iff `postgres-query` succeeds and the first column
of its first row is true-ish, on a PostgreSQL server or through a pgbouncer.

The driver is imported only here, so yaim needs it only when this checker is chosen:
psycopg 3 (`pip install yaim[postgres]`, Debian's python3-psycopg), or psycopg2 where
psycopg 3 is missing (Debian 11, Ubuntu 22.04, RHEL's python3-psycopg2). `_Driver`
holds the few calls in which they differ; everything below is the same for both.

One connection (autocommit) is kept between checks and opened anew after any failure.
`check-timeout` bounds a check three ways, each chosen to work through pgbouncer:

* Statement timeout: the query goes out as `SET LOCAL statement_timeout = <ms>;
  <query>` in one simple-protocol message, which the server runs as one implicit
  transaction, so the timeout ends with it. <ms> is 90 % of the check's time left,
  so that the server's own error ("canceling statement due to statement timeout")
  normally comes before the hard deadline below. The usual ways break with pgbouncer:
  `options=-c statement_timeout=...` is a startup parameter it refuses
  ("unsupported startup parameter: options"), and a session-level SET would stay
  on a pooled server connection that another client gets next (transaction
  pooling). Statements are never prepared, which transaction pooling does not
  allow either.
* Connect timeout: check-timeout rounded up to whole seconds, as libpq counts them
  (at least 2 s).
* A hard deadline: the check runs in a helper thread. With no answer in time (a
  pgbouncer queueing for a server connection, a dead network) it counts as failed
  at once and the connection's socket is shut down, so the helper's wait ends and
  the next check connects anew. While a helper is still connecting, further checks
  fail at once instead of piling up.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import queue
import socket
import threading
import time
from typing import Any, Dict, Optional

from yaim.checks import BaseChecker, CheckResult
from yaim.errors import CheckError

REASON_LIMIT = 300  # characters of a server's error message kept for the reason
STATEMENT_SHARE = 0.9  # of the time left when the query is sent, for statement_timeout


DRIVERS = ("psycopg", "psycopg2")  # preferred first


def _driver_module() -> Any:
    """psycopg 3, else psycopg2; ImportError naming why neither, if neither imports."""
    problems = []
    for name in DRIVERS:
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            problems.append(str(exc))
    raise ImportError("; ".join(problems))


def unavailable() -> Optional[str]:
    """What this checker lacks here, None if nothing (yaim.checks.unavailable)."""
    try:
        _driver_module()
    except ImportError as exc:
        return (
            f"postgres needs psycopg 3 or psycopg2, and neither can be imported ({exc}):"
            " install python3-psycopg (or python3-psycopg2), or pip install 'yaim[postgres]'"
        )
    return None


class _Driver:
    """psycopg 3 or psycopg2, where they differ: parsing a DSN, connecting in autocommit
    without prepared statements (psycopg2 never prepares), running the check's two
    statements in one simple-protocol message, and the connection's socket."""

    def __init__(self) -> None:
        problem = unavailable()
        if problem is not None:
            raise CheckError("checker-type " + problem)
        self.module = _driver_module()
        self.v3 = self.module.__name__ == "psycopg"
        self.Error = self.module.Error

    def params(self, dsn: str) -> Dict[str, str]:
        if self.v3:
            return self.module.conninfo.conninfo_to_dict(dsn)
        return self.module.extensions.parse_dsn(dsn)

    def connect(self, dsn: str, connect_timeout: int) -> Any:
        options = {"connect_timeout": connect_timeout, "fallback_application_name": "yaim"}
        if self.v3:
            return self.module.connect(dsn, autocommit=True, prepare_threshold=None, **options)
        conn = self.module.connect(dsn, **options)
        conn.autocommit = True
        return conn

    def last_row(self, cursor: Any, statements: str) -> Optional[tuple]:
        """The first row of the last of `statements` (None: no row, or no result)."""
        if self.v3:
            cursor.execute(statements, prepare=False)
            cursor.nextset()  # past the first statement's result
        else:
            cursor.execute(statements)  # psycopg2 keeps the last statement's result only
        return cursor.fetchone() if cursor.description else None

    def socket(self, conn: Any) -> int:
        return conn.pgconn.socket if self.v3 else conn.fileno()


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= REASON_LIMIT else text[:REASON_LIMIT] + "..."


class Checker(BaseChecker):
    """Runs `postgres-query` once per check on a kept connection."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.driver = _Driver()
        try:
            params = self.driver.params(config.postgres_dsn)
        except self.driver.Error as exc:
            raise CheckError(f"postgres-dsn: {_one_line(str(exc))}") from None
        host = params.get("host") or params.get("hostaddr") or "the local socket"
        port = f":{params['port']}" if params.get("port") else ""
        self.target = f"PostgreSQL at {host}{port}"
        self._lock = threading.Lock()  # guards _conn between the helper thread and the others
        self._conn: Any = None
        self._closed = False
        self._helper: Optional[threading.Thread] = None

    def check(self) -> CheckResult:
        if self._helper is not None and self._helper.is_alive():
            return CheckResult(False, f"{self.target}: the previous check is still waiting")
        answer: queue.Queue = queue.Queue(maxsize=1)
        deadline = time.monotonic() + self.config.check_timeout_s
        self._helper = threading.Thread(
            target=lambda: answer.put(self._check_now(deadline)),
            name="postgres-check",
            daemon=True,
        )
        self._helper.start()
        try:
            return answer.get(timeout=self.config.check_timeout_s)
        except queue.Empty:
            self._break_connection()
            return CheckResult(
                False, f"{self.target}: no answer within {self.config.check_timeout} ms"
            )

    def close(self) -> None:
        """Close the connection; a helper still waiting is cut off and closes it itself."""
        with self._lock:
            self._closed = True
        if self._helper is not None and self._helper.is_alive():
            self._break_connection()
        else:
            self._disconnect()

    # in the helper thread ---------------------------------------------------

    def _check_now(self, deadline: float) -> CheckResult:
        query = self.config.postgres_query
        try:
            with self._connection().cursor() as cursor:
                left = STATEMENT_SHARE * (deadline - time.monotonic())
                limit = f"SET LOCAL statement_timeout = {max(1, int(left * 1000))}"
                row = self.driver.last_row(cursor, f"{limit}; {query}")
        except self.driver.Error as exc:
            self._disconnect()
            return CheckResult(False, f"{self.target}: {_one_line(str(exc))}")
        finally:
            if self._closed:
                self._disconnect()
        if row is None:
            return CheckResult(False, f"{self.target}: {query!r} returned no row")
        return CheckResult(bool(row[0]), f"{self.target}: {query!r} returned {row[0]!r}")

    def _connection(self) -> Any:
        with self._lock:
            if self._conn is not None:
                return self._conn
        conn = self.driver.connect(self.config.postgres_dsn, math.ceil(self.config.check_timeout_s))
        with self._lock:
            self._conn = conn
        return conn

    def _disconnect(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    # in the checking thread ---------------------------------------------------

    def _break_connection(self) -> None:
        """Shut the socket down under the helper's feet: its wait ends with an error.

        The descriptor is only touched under the lock, while the connection (and so
        the descriptor) is still open: never one that has been reused since.
        """
        with self._lock:
            if self._conn is None or self._conn.closed:
                return
            try:
                dup = os.dup(self.driver.socket(self._conn))
            except (self.driver.Error, OSError):
                return
            with socket.socket(fileno=dup) as sock, contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
