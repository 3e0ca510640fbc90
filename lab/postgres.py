"""Throw-away PostgreSQL clusters and pgbouncers for the checker tests (Debian's packages).

    with PostgresServer() as pg:          # initdb + pg_ctl start in a fresh temp dir
        pg.dsn()                          # "host=127.0.0.1 port=P dbname=postgres user=postgres"
        pg.stop(); pg.start()

PostgreSQL and pgbouncer refuse to run as root, so under root everything runs as
`nobody` (setpriv execs the command, so pids stay the command's own). The
directory is made with mkdtemp outside pytest's tmp_path, whose parents only
root may enter, and handed to that user; the unix socket goes in it too. Run in
`netns` (an `ip netns` name), the server listens on that namespace's own
127.0.0.1. Teardown stops the server (fast, then immediate, then SIGKILL of the
postmaster pid it wrote) and removes the directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import List, Optional, Sequence

try:  # the lab's own queries; the checker's tests also run where only psycopg2 is
    import psycopg
except ImportError:
    psycopg = None

from lab.util import (
    Service,
    command_line,
    netns_argv,
    spawn,
    stop_processes,
    tail,
    wait_until,
)
from yaim.checks import BaseChecker, create

PGBOUNCER = "/usr/sbin/pgbouncer"
RUN_AS = "nobody"
SUPERUSER = "postgres"
INITDB_LOCALE = ("-E", "UTF8", "--locale=C")  # whatever locales the machine has generated


def bin_dir() -> Path:
    """The newest PostgreSQL's bin directory (/usr/lib/postgresql/<version>/bin)."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not found:
        raise FileNotFoundError("no /usr/lib/postgresql/*/bin/initdb: apt-get install postgresql")
    return Path(max(found, key=lambda path: int(Path(path).parts[-3]))).parent


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def as_service_user(argv: Sequence[str]) -> List[str]:
    """`argv` run as `nobody` when we are root (setpriv execs it), else unchanged."""
    if os.geteuid() != 0:
        return list(argv)
    return ["setpriv", f"--reuid={RUN_AS}", "--regid=nogroup", "--clear-groups", *argv]


def tcp_dsn(port: int) -> str:
    """A libpq connection string for the superuser's `postgres` database at 127.0.0.1:`port`."""
    return f"host=127.0.0.1 port={port} dbname=postgres user={SUPERUSER}"


def service_dir(prefix: str) -> Path:
    """A new private directory the service user owns."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        shutil.chown(str(path), RUN_AS, "nogroup")
    return path


class PostgresServer(Service):
    """One PostgreSQL cluster on 127.0.0.1:`port` (of `netns`, if given); a context manager."""

    def __init__(self, netns: Optional[str] = None, port: Optional[int] = None) -> None:
        self.netns = netns
        self.port = port or free_port()
        self.bin = bin_dir()
        self.dir = service_dir("yt-pg-")
        self.data = self.dir / "data"
        self.log_path = self.dir / "postgres.log"

    def bring_up(self) -> None:
        self.init()
        self.start()

    def _run(self, *argv: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        full = netns_argv(self.netns, as_service_user([str(self.bin / argv[0]), *argv[1:]]))
        res = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(
                f"{command_line(full)}: exit {res.returncode}\n{res.stdout}{res.stderr}"
                + tail(self.log_path)
            )
        return res

    def init(self) -> None:
        """initdb with trust authentication; settings for a fast, private test server."""
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", *INITDB_LOCALE)
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.dir}'",
            "fsync": "off",
            "full_page_writes": "off",
            "synchronous_commit": "off",
            "max_connections": "20",
        }
        with open(str(self.data / "postgresql.conf"), "a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def start(self) -> None:
        """pg_ctl start, returning once the server accepts connections."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop (`fast` ends open sessions, as a service stop does)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def dsn(self) -> str:
        """The libpq connection string of the superuser over TCP."""
        return tcp_dsn(self.port)

    def teardown(self) -> None:
        """Stop the server whatever it takes, then remove its directory."""
        for mode in ("fast", "immediate"):
            if not self.running:
                break
            with contextlib.suppress(Exception):
                self.stop(mode)
        if self.running:
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int((self.data / "postmaster.pid").read_text().split()[0])
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(str(self.dir), ignore_errors=True)


class PgBouncer(Service):
    """A pgbouncer in front of `server` (in the root namespace) on a free port; a context
    manager. Transaction pooling with a pool of one server connection by default, so
    that every client shares one session: whatever a client leaves set in it is seen
    by the next one."""

    def __init__(
        self, server: PostgresServer, pool_mode: str = "transaction", pool_size: int = 1
    ) -> None:
        self.server = server
        self.port = free_port()
        self.dir = service_dir("yt-pgb-")
        self.log_path = self.dir / "pgbouncer.log"
        self.settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": str(self.dir / "users.txt"),
            "pool_mode": pool_mode,
            "default_pool_size": str(pool_size),
            "logfile": str(self.log_path),
        }
        self.proc: Optional[subprocess.Popen] = None

    def bring_up(self) -> None:
        self.start()

    def start(self) -> None:
        """Write the config and run pgbouncer in the foreground; return once it listens."""
        (self.dir / "users.txt").write_text(f'"{SUPERUSER}" ""\n')
        lines = ["[databases]", f"postgres = {self.server.dsn()}", "[pgbouncer]"]
        lines += [f"{key} = {value}" for key, value in self.settings.items()]
        ini = self.dir / "pgbouncer.ini"
        ini.write_text("\n".join(lines) + "\n")
        self.proc = spawn(as_service_user([PGBOUNCER, str(ini)]), self.dir / "stdout.log")
        wait_until(self._listening, 10.0, what=f"pgbouncer on port {self.port}")

    def _listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError("pgbouncer exited\n" + tail(self.log_path))
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def dsn(self) -> str:
        """The connection string of the pooled `postgres` database."""
        return tcp_dsn(self.port)

    def teardown(self) -> None:
        if self.proc is not None:
            stop_processes([self.proc])
        shutil.rmtree(str(self.dir), ignore_errors=True)


def query_value(dsn: str, query: str) -> object:
    """The first value `query` returns, in a fresh autocommit connection (None: no row)."""
    if psycopg is None:
        raise RuntimeError("the lab's queries need psycopg 3 (pip install psycopg)")
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(query, prepare=False).fetchone()
    return None if row is None else row[0]


def postgres_checker(dsn: str, query: str = "SELECT 1", timeout_ms: int = 2000) -> BaseChecker:
    """yaim's postgres checker for `dsn`, made as the daemon makes it."""
    config = SimpleNamespace(
        checker_type="postgres",
        postgres_dsn=dsn,
        postgres_query=query,
        check_timeout=timeout_ms,
        check_timeout_s=timeout_ms / 1000,
    )
    return create(config)
