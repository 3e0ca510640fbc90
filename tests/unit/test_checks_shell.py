"""The shell checker against real commands: exit codes, output, timeouts, missing commands."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import pytest

from lab.util import live_group_members, wait_until
from yaim import command
from yaim.checks import create, shell
from yaim.state import NodeState
from yaim.threads.health import HealthThread


def checker(argv: Sequence[str], timeout_ms: int = 2000) -> shell.Checker:
    config = SimpleNamespace(
        checker_type="shell",
        shell_command=tuple(argv),
        check_timeout=timeout_ms,
        check_timeout_s=timeout_ms / 1000,
        command_environment=(),
        command_capabilities="none",
    )
    made = create(config)
    assert isinstance(made, shell.Checker)
    return made


def sh(script: str, timeout_ms: int = 2000) -> shell.Checker:
    return checker(["sh", "-c", script], timeout_ms)


def test_exit_zero_is_healthy():
    result = checker(["true"]).check()
    assert result.healthy
    assert result.reason == "true: exit status 0"


def test_non_zero_exit_is_unhealthy_with_the_output_in_the_reason():
    result = sh("echo starting; echo 'replica lag: 12 s' >&2; exit 3").check()
    assert not result.healthy
    assert result.reason == (
        "sh -c 'echo starting; echo '\"'\"'replica lag: 12 s'\"'\"' >&2; exit 3':"
        " exit status 3: starting replica lag: 12 s"
    )


def test_long_output_keeps_its_end():
    result = sh("seq 1 5000; echo the-end; exit 1").check()
    output = result.reason.split("exit status 1: ", 1)[1]
    assert output.startswith("...") and output.endswith("4999 5000 the-end")
    assert len(output) <= command.OUTPUT_TAIL + 3


def test_death_by_signal_is_named():
    result = sh("kill -TERM $$").check()
    assert not result.healthy and "killed by SIGTERM" in result.reason


def test_timeout_kills_the_whole_process_group(tmp_path: Path):
    pids = tmp_path / "pids"
    script = f"echo $$ > {pids}; sleep 60 & echo $! >> {pids}; echo waiting; wait"
    started = time.monotonic()
    result = sh(script, timeout_ms=500).check()
    took = time.monotonic() - started
    leader, child = (int(pid) for pid in pids.read_text().split())
    assert not result.healthy
    assert "no exit within 500 ms, killed its process group: waiting" in result.reason
    assert 0.5 <= took < 1.5, took
    assert child != leader
    assert live_group_members(leader) == []  # the leader's pid is the group's id


def test_a_grandchild_that_leaves_the_group_cannot_hold_the_check(tmp_path: Path):
    """It escapes the kill (another session) but cannot keep the check waiting on output."""
    pid_file = tmp_path / "escaped"
    script = f"setsid sleep 60 & echo $! > {pid_file}; sleep 60"
    started = time.monotonic()
    try:
        result = sh(script, timeout_ms=300).check()
        assert time.monotonic() - started < 1.3
        assert not result.healthy and "no exit within 300 ms" in result.reason
    finally:
        escaped = wait_until(pid_file.read_text, 5, what="the escaped pid").strip()
        os.kill(int(escaped), signal.SIGKILL)


def test_a_missing_command_is_unhealthy_and_logged(caplog):
    with caplog.at_level(logging.ERROR, logger="yaim.command"):
        made = checker(["/nonexistent/check-service", "--quick"])
    assert "/nonexistent/check-service: command not found" in caplog.text
    for _ in range(2):  # and it keeps saying so, it does not raise
        result = made.check()
        assert not result.healthy
        assert result.reason == "/nonexistent/check-service --quick: command not found"


def test_a_command_not_in_path_is_not_found():
    result = checker(["yt-no-such-command"]).check()
    assert result.reason == "yt-no-such-command: command not found"


def test_a_file_that_is_not_executable_is_unhealthy(tmp_path: Path):
    script = tmp_path / "check.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    result = checker([str(script)]).check()
    assert not result.healthy
    assert result.reason == f"{script}: cannot run it: Permission denied"


def test_a_check_running_when_yaim_exits_is_killed(tmp_path: Path):
    pid_file = tmp_path / "pid"
    made = sh(f"echo $$ > {pid_file}; exec sleep 60", timeout_ms=60000)
    results = []
    thread = threading.Thread(target=lambda: results.append(made.check()))
    thread.start()
    pid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text(), 5, what="the pid"))
    command._kill_running()  # what atexit runs
    thread.join(5)
    assert not thread.is_alive()
    assert results[0].reason.endswith("killed by SIGKILL")
    assert live_group_members(pid) == []


@pytest.mark.parametrize("exit_status, healthy", [(0, True), (1, False), (2, False), (255, False)])
def test_exit_status(exit_status, healthy):
    assert sh(f"exit {exit_status}").check().healthy is healthy


def test_a_long_command_line_is_shortened_in_the_reason():
    result = checker(["sh", "-c", "exit 1", "x" * 200]).check()
    assert result.reason.startswith("sh -c 'exit 1' xxx")
    assert f"{'x' * 50}...: exit status 1" in result.reason
    assert len(result.reason) < 130


def test_each_state_is_logged_once_with_the_output_as_its_reason(tmp_path: Path, caplog):
    """Also the state of the first round, so a node that starts unhealthy says why."""
    ok = tmp_path / "ok"
    made = checker(["sh", "-c", f"[ -e {ok} ] && exit 0; echo 'db down'; exit 1"])
    config = SimpleNamespace(
        retry_num=1, retry_after_s=0.0, check_rise=1, check_fall=1, node_name="n1"
    )
    changes: list = []
    thread = HealthThread(
        made,
        NodeState(),
        config,
        changes.append,
        period=1.0,
        stop=threading.Event(),
        on_crash=print,
    )
    with caplog.at_level(logging.INFO, logger="yaim.threads.health"):
        for make_ok in (False, False, False, True, True):
            if make_ok:
                ok.touch()
            thread.step([])
    said = [record.getMessage() for record in caplog.records if record.levelno == logging.INFO]
    assert said == [
        f"node n1 is unhealthy: {made.shown}: exit status 1: db down",
        f"node n1 is now healthy: {made.shown}: exit status 0",
    ]
    assert changes == [True]
