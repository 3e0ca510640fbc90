"""Health checks against real services, alone and in the namespace lab.

First the postgres checker, on psycopg 3 and on psycopg2, against a throw-away
PostgreSQL cluster and a pgbouncer (transaction pooling, one server connection) in the
root namespace. Then whole
daemons in the lab (marked netns): a PostgreSQL that stops and starts again in
node 1's namespace, a shell check that hangs, one that is slow while the cluster
has to act, and one that flaps. Timing as in test_daemon.py: interval 500 ms,
ttl 2000 ms, and the observer fails a test on any address seen on two nodes.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import psycopg
import pytest

from lab.postgres import PgBouncer, PostgresServer, postgres_checker, query_value
from lab.util import live_group_members, wait_until
from tests.integration.conftest import (
    CLEAN_BOUND,
    INTERVAL,
    POOL,
    TTL,
    put_address,
    settled,
    unchanged_for,
)

SLEEP_10_S = "SELECT true FROM pg_sleep(10)"


# --- the postgres checker against a real server -------------------------------------


@pytest.fixture(scope="module")
def server():
    with PostgresServer() as pg:
        yield pg


@pytest.fixture(params=["psycopg", "psycopg2"])
def pg(request, server, monkeypatch):
    """The module's server, running (a test may have stopped it), checked through psycopg
    3 and through psycopg2, the driver where psycopg 3 is missing (import psycopg fails)."""
    if request.param == "psycopg2":
        monkeypatch.setitem(sys.modules, "psycopg", None)
    if not server.running:
        server.start()
    return server


@pytest.mark.parametrize(
    "query, healthy, said",
    [
        ("SELECT 1", True, "'SELECT 1' returned 1"),
        ("SELECT NOT pg_is_in_recovery()", True, "returned True"),
        ("SELECT pg_is_in_recovery()", False, "'SELECT pg_is_in_recovery()' returned False"),
        ("SELECT NULL", False, "returned None"),
        ("SELECT 1 WHERE false", False, "'SELECT 1 WHERE false' returned no row"),
        ("SELEKT 1", False, 'syntax error at or near "SELEKT"'),
    ],
)
def test_the_query_decides(pg, query, healthy, said):
    checker = postgres_checker(pg.dsn(), query)
    result = checker.check()
    checker.close()
    assert result.healthy is healthy
    assert result.reason.startswith(f"PostgreSQL at 127.0.0.1:{pg.port}: ")
    assert said in result.reason


def test_one_connection_is_kept_between_checks(pg):
    checker = postgres_checker(pg.dsn(), "SELECT pg_backend_pid()")
    reasons = {checker.check().reason for _ in range(8)}
    assert len(reasons) == 1, reasons  # the same backend answered every time
    count = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'yaim'"
    assert query_value(pg.dsn(), count) == 1
    checker.close()
    wait_until(lambda: query_value(pg.dsn(), count) == 0, 5, what="the connection to close")


def test_a_stopped_server_is_unhealthy_and_a_restarted_one_healthy_again(pg):
    checker = postgres_checker(pg.dsn(), "SELECT NOT pg_is_in_recovery()")
    assert checker.check().healthy
    pg.stop()
    cut, refused = checker.check(), checker.check()
    # the server's own word (psycopg 3 reads it), or libpq's (psycopg2 sees the socket close)
    said = ("terminating connection", "server closed the connection unexpectedly")
    assert not cut.healthy and any(words in cut.reason for words in said), cut
    assert not refused.healthy and "Connection refused" in refused.reason, refused
    pg.start()
    assert checker.check().healthy
    checker.close()


def test_the_server_ends_a_slow_query_within_check_timeout(pg):
    checker = postgres_checker(pg.dsn(), SLEEP_10_S, timeout_ms=400)
    started = time.monotonic()
    result = checker.check()
    took = time.monotonic() - started
    checker.close()
    assert not result.healthy
    assert "canceling statement due to statement timeout" in result.reason
    assert 0.3 <= took < 0.4, took  # statement_timeout: 90 % of the time left


def test_through_pgbouncer_in_transaction_pooling(pg):
    """No startup `options`, no prepared statements, and the statement timeout ends
    with the check's own transaction: the one pooled server session shows none."""
    with PgBouncer(pg) as bouncer:
        checker = postgres_checker(bouncer.dsn(), "SELECT NOT pg_is_in_recovery()")
        results = [checker.check() for _ in range(12)]  # past psycopg's prepare threshold
        assert all(result.healthy for result in results), results[-1]
        assert query_value(bouncer.dsn(), "SHOW statement_timeout") == "0"
        slow = postgres_checker(bouncer.dsn(), SLEEP_10_S, timeout_ms=400)
        assert "canceling statement due to statement timeout" in slow.check().reason
        assert checker.check().healthy
        checker.close()
        slow.close()


def test_a_query_queued_in_pgbouncer_fails_at_the_deadline(pg):
    """The only server connection is busy in another client's transaction, so the
    query waits in pgbouncer, where no statement timeout applies; the checker's own
    deadline ends the check, and it is healthy again once the pool frees up."""
    with PgBouncer(pg) as bouncer, psycopg.connect(bouncer.dsn()) as busy:
        busy.execute("SELECT 1")  # opens a transaction: holds the pool's connection
        checker = postgres_checker(bouncer.dsn(), timeout_ms=400)
        started = time.monotonic()
        result = checker.check()
        took = time.monotonic() - started
        assert result.reason == f"PostgreSQL at 127.0.0.1:{bouncer.port}: no answer within 400 ms"
        assert took < 0.7, took
        busy.rollback()
        wait_until(lambda: checker.check().healthy, 5, what="a healthy check after the queue")
        checker.close()


# --- whole daemons in the lab ---------------------------------------------------------


def start_cluster(lab, n1_settings):
    """The pool on three nodes: n1 with `n1_settings`, n2 and n3 always healthy."""
    for address in POOL:
        put_address(lab, address)
    common = {"interval": INTERVAL, "ttl": TTL}
    nodes = [lab.node(1, **common, **n1_settings).start()]
    nodes += [lab.node(i, **common).start() for i in (2, 3)]
    lab.observer.wait_for(settled([1, 2, 3]), 15, "the pool to settle")
    return nodes


def shell_settings(script: str, **more):
    return dict(checker_type="shell", shell_command=["sh", "-c", script], **more)


def pids_in(path: Path):
    return [int(pid) for pid in path.read_text().split()] if path.exists() else []


@pytest.mark.netns
@pytest.mark.usefixtures("no_two_holders")
def test_postgres_stopped_moves_the_addresses_and_started_brings_them_back(lab):
    with PostgresServer(netns=lab.lab.node_ns(1)) as pg:
        n1 = start_cluster(
            lab,
            dict(
                checker_type="postgres",
                postgres_dsn=pg.dsn(),
                postgres_query="SELECT NOT pg_is_in_recovery()",
                check_interval=250,
            ),
        )[0]
        assert "n1 is now healthy: PostgreSQL at 127.0.0.1" in n1.log()
        stopped_at = time.monotonic()
        pg.stop()
        sample = lab.observer.wait_for(settled([2, 3]), CLEAN_BOUND + 5, "takeover")
        print(f"PostgreSQL stopped: its addresses moved after {sample.time - stopped_at:.2f} s")
        assert sample.time - stopped_at <= CLEAN_BOUND
        assert "n1 is now unhealthy: PostgreSQL at 127.0.0.1" in n1.log()
        pg.start()
        lab.observer.wait_for(settled([1, 2, 3]), 10, "an even spread again")


@pytest.mark.netns
@pytest.mark.usefixtures("no_two_holders")
def test_a_hanging_shell_check_is_killed_and_the_node_turns_unhealthy(lab):
    base = lab.lab.base_dir
    hang, pids = base / "hang", base / "hung-pids"
    script = f"[ -e {hang} ] || exit 0; echo $$ >> {pids}; echo hanging; exec sleep 60"
    n1 = start_cluster(lab, shell_settings(script, check_timeout=500))[0]
    hang.touch()
    hung_at = time.monotonic()
    sample = lab.observer.wait_for(settled([2, 3]), CLEAN_BOUND + 5, "takeover")
    took = sample.time - hung_at
    print(f"hanging check: addresses moved after {took:.2f} s")
    # a round: retry-num 3 tries of 500 ms, 250 ms apart, after up to one check interval
    assert took <= CLEAN_BOUND + 2.0 + INTERVAL / 1000
    assert "n1 is now unhealthy: sh -c" in n1.log()
    assert "no exit within 500 ms, killed its process group: hanging" in n1.log()
    hung = pids_in(pids)
    assert len(hung) >= 3
    for pid in hung[:-1]:  # the latest may still be running
        assert live_group_members(pid) == []
    assert n1.running


@pytest.mark.netns
@pytest.mark.usefixtures("no_two_holders")
def test_a_missing_command_keeps_the_node_unhealthy_and_running(lab):
    for address in POOL:
        put_address(lab, address)
    missing = "/nonexistent/yt-check-service"
    n1 = lab.node(1, interval=INTERVAL, ttl=TTL, checker_type="shell", shell_command=missing)
    n1.start()
    said = f"node n1 is unhealthy: {missing}: command not found"
    wait_until(lambda: said in n1.log(), 5, what="the reason in n1's log")
    assert f"shell-command: {missing}: command not found" in n1.log()  # at start
    assert unchanged_for(lab, {}, time.monotonic(), 3 * INTERVAL / 1000) == []
    assert n1.running
    assert n1.log().count(said) == 1


@pytest.mark.netns
@pytest.mark.usefixtures("no_two_holders")
def test_a_slow_check_holds_up_neither_the_heartbeat_nor_the_balancer(lab):
    """n1's check takes 8 s, four times the TTL of its marks. While it runs: n1's
    marks must stay alive (else n1 fences and the others take over) and n1 must take
    its share of n2's addresses when n2 stops. Both happen before the check ends."""
    base = lab.lab.base_dir
    slow, started, done = base / "slow", base / "check-started", base / "check-done"
    script = f"[ -e {slow} ] || exit 0; echo $$ > {started}; sleep 8; echo done > {done}; exit 0"
    n1, n2, _ = start_cluster(lab, shell_settings(script, check_timeout=10000))
    slow.touch()
    wait_until(started.exists, 5, what="the slow check to start")
    hanging_since = time.monotonic()
    before = lab.observer.holders()
    assert unchanged_for(lab, before, hanging_since, 3 * TTL / 1000 / 2) == []
    stopped_at = time.monotonic()
    n2.signal(signal.SIGTERM)
    sample = lab.observer.wait_for(settled([1, 3]), CLEAN_BOUND + 5, "n1 and n3 to take over")
    print(f"n2 stopped while n1's check hung: taken over after {sample.time - stopped_at:.2f} s")
    assert sample.time - stopped_at <= CLEAN_BOUND
    assert not done.exists(), "the check ended before the takeover: this test proved nothing"
    # and a check still running when yaim stops dies with it
    check_pid = int(started.read_text())
    n1.signal(signal.SIGTERM)
    assert n1.wait_exit(3) == 0
    assert live_group_members(check_pid) == []


@pytest.mark.netns
@pytest.mark.usefixtures("no_two_holders")
def test_a_flapping_check_with_rise_and_fall_3_moves_nothing(lab):
    base = lab.lab.base_dir
    flap, failed = base / "flap", base / "failed-last"
    script = (
        f"[ -e {flap} ] || exit 0;"
        f" if [ -e {failed} ]; then rm {failed}; exit 0; else touch {failed}; exit 1; fi"
    )
    settings = shell_settings(script, check_rise=3, check_fall=3, retry_num=1)
    n1 = start_cluster(lab, settings)[0]
    before = lab.observer.holders()
    flap.touch()
    flapping_since = time.monotonic()
    rounds = 10
    assert unchanged_for(lab, before, flapping_since, rounds * INTERVAL / 1000) == []
    log = n1.log()
    assert log.count("check: unhealthy (sh -c") >= rounds // 2 - 1
    assert log.count("n1 is now unhealthy") == 0
