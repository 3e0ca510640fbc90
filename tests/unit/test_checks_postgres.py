"""The postgres checker without a server: its errors at start and its hard deadline.
(Against real servers and a pgbouncer: tests/integration/test_checks.py.)"""

from __future__ import annotations

import socket
import sys
import time

import pytest

from lab.postgres import postgres_checker
from yaim.errors import CheckError


def test_without_a_driver_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg raises ImportError
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    with pytest.raises(CheckError) as caught:
        postgres_checker("host=127.0.0.1")
    assert "checker-type postgres needs psycopg 3 or psycopg2" in str(caught.value)
    assert "python3-psycopg" in str(caught.value)


def test_without_psycopg_3_psycopg2_checks(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    checker = postgres_checker("host=db.example port=6432 password=hunter2")
    assert checker.driver.module.__name__ == "psycopg2"
    assert checker.target == "PostgreSQL at db.example:6432"


def test_a_malformed_dsn_is_refused_at_start():
    with pytest.raises(CheckError) as caught:
        postgres_checker("host=127.0.0.1 nonsense")
    assert str(caught.value).startswith("postgres-dsn: ")
    assert "\n" not in str(caught.value)


def test_the_target_is_named_without_the_password():
    checker = postgres_checker("host=db.example port=6432 user=yaim password=hunter2")
    assert checker.target == "PostgreSQL at db.example:6432"
    assert postgres_checker("dbname=x").target == "PostgreSQL at the local socket"


def test_a_server_that_never_answers_fails_the_check_in_time():
    """The TCP handshake succeeds (the listen backlog) but no byte ever comes back: only
    the checker's own deadline can end the check before libpq's 2 s connect timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        checker = postgres_checker(f"host=127.0.0.1 port={port}", timeout_ms=300)
        started = time.monotonic()
        first = checker.check()
        took = time.monotonic() - started
        second = checker.check()  # the first is still connecting: no second connection
        assert not first.healthy and not second.healthy
        assert first.reason == f"PostgreSQL at 127.0.0.1:{port}: no answer within 300 ms"
        assert second.reason.endswith("the previous check is still waiting")
        assert 0.3 <= took < 0.6, took
        checker.close()
