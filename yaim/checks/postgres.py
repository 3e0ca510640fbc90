"""`checker-type: postgres`: healthy iff `postgres-query` succeeds and the first column
of its first row is true-ish, on a PostgreSQL server or through a pgbouncer.

psycopg 3 is imported only here, so yaim needs it only when this checker is chosen
(`pip install yaim[postgres]`, or Debian's python3-psycopg).

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
import math
import os
import queue
import socket
import threading
import time
from typing import Any, Optional

from yaim.checks import BaseChecker, CheckResult
from yaim.errors import CheckError

REASON_LIMIT = 300  # characters of a server's error message kept for the reason
STATEMENT_SHARE = 0.9  # of the time left when the query is sent, for statement_timeout


def unavailable() -> Optional[str]:
    """What this checker lacks here, None if nothing (yaim.checks.unavailable)."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        return (
            f"postgres needs psycopg 3, which cannot be imported ({exc}):"
            " install python3-psycopg, or pip install 'yaim[postgres]'"
        )
    return None


def _import_psycopg() -> Any:
    problem = unavailable()
    if problem is not None:
        raise CheckError("checker-type " + problem)
    import psycopg

    return psycopg


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= REASON_LIMIT else text[:REASON_LIMIT] + "..."


class Checker(BaseChecker):
    """Runs `postgres-query` once per check on a kept connection."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.psycopg = _import_psycopg()
        try:
            params = self.psycopg.conninfo.conninfo_to_dict(config.postgres_dsn)
        except self.psycopg.Error as exc:
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
                cursor.execute(f"{limit}; {query}", prepare=False)
                cursor.nextset()  # past the SET LOCAL
                row = cursor.fetchone() if cursor.description else None
        except self.psycopg.Error as exc:
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
        conn = self.psycopg.connect(
            self.config.postgres_dsn,
            autocommit=True,
            prepare_threshold=None,
            connect_timeout=math.ceil(self.config.check_timeout_s),
            fallback_application_name="yaim",
        )
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
                dup = os.dup(self._conn.pgconn.socket)
            except (self.psycopg.Error, OSError):
                return
            with socket.socket(fileno=dup) as sock, contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
