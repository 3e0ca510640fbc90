"""sd_notify(3) on a real Unix datagram socket, the watchdog's pace, journald's prefixes."""

from __future__ import annotations

import logging
import os
import socket

import pytest

from yaim.sdnotify import JournalFormatter, ServiceManager, journal_stderr


@pytest.fixture
def listener(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


def received(sock) -> list:
    return sock.recv(4096).decode().split("\n")


def test_without_a_socket_every_message_is_a_no_op():
    manager = ServiceManager({})
    assert not manager.ready("x") and not manager.stopping() and not manager.watchdog(0.0)


def test_ready_reloading_and_stopping_reach_the_socket(listener):
    path, sock = listener
    manager = ServiceManager({"NOTIFY_SOCKET": path})
    assert manager.ready("node n1 running")
    assert received(sock) == ["READY=1", "STATUS=node n1 running"]
    assert manager.reloading()
    first, stamp = received(sock)
    assert first == "RELOADING=1" and int(stamp.split("=")[1]) > 0
    assert manager.stopping()
    assert received(sock)[0] == "STOPPING=1"


def test_the_abstract_namespace_is_spelled_with_an_at():
    name = f"yaim-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert ServiceManager({"NOTIFY_SOCKET": "@" + name}).ready("up")
        assert received(sock)[0] == "READY=1"


def test_the_watchdog_is_fed_at_half_its_period_and_only_for_this_process(listener):
    path, sock = listener
    environ = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    manager = ServiceManager(environ)
    assert manager.watchdog(100.0) and received(sock) == ["WATCHDOG=1"]
    assert not manager.watchdog(114.9)  # less than 15 s since
    assert manager.watchdog(115.0)
    other = ServiceManager(dict(environ, WATCHDOG_PID=str(os.getpid() + 1)))
    assert other.watchdog_s is None and not other.watchdog(0.0)


def test_a_socket_that_is_gone_is_logged_once_and_changes_nothing(tmp_path, caplog):
    manager = ServiceManager({"NOTIFY_SOCKET": str(tmp_path / "none")})
    with caplog.at_level(logging.WARNING):
        assert not manager.ready("x") and not manager.stopping()
    assert len([r for r in caplog.records if "cannot notify" in r.getMessage()]) == 1


def test_journal_lines_carry_their_priority_and_no_timestamp():
    formatter = JournalFormatter()

    def line(level: int, text: str) -> str:
        record = logging.LogRecord("yaim", level, __file__, 1, text, None, None)
        record.threadName = "balancer"
        return formatter.format(record)

    assert line(logging.WARNING, "fenced") == "<4>WARNING balancer: fenced"
    assert line(logging.ERROR, "x").startswith("<3>")
    assert line(logging.CRITICAL, "x").startswith("<2>")
    assert line(logging.INFO, "x").startswith("<6>")
    assert line(logging.DEBUG, "a\nb") == "<7>DEBUG balancer: a\n<7>b"


def test_journal_stderr_is_told_by_the_device_and_inode_journald_names(tmp_path):
    with open(tmp_path / "f", "w") as handle:
        stat = os.fstat(handle.fileno())
        assert journal_stderr({"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}, handle.fileno())
        assert not journal_stderr({"JOURNAL_STREAM": "1:2"}, handle.fileno())
        assert not journal_stderr({}, handle.fileno())
