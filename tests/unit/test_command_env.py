"""What an operator's command gets from yaim: a minimal environment and no ambient capabilities.

The shell check and the notify commands both run through `yaim.command`. Every
config key can come from a YAIM_<KEY> variable, so a secret planted in yaim's
environment must reach neither. The capability tests start a helper as user
65534 holding CAP_NET_RAW as an ambient capability, as the packaged unit starts
yaim; they need root and are skipped without it, except under CI=true, where
they fail instead.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, Optional, Sequence

import pytest

from tests.needs import skip_or_fail
from yaim import command, config
from yaim.checks import shell
from yaim.errors import ConfigError
from yaim.metrics import Metrics
from yaim.threads.notify import EVENTS, Notifier

SECRET = "planted-S3cret-9f2c"
NOTIFY_VARIABLES = {"YAIM_EVENT", "YAIM_ADDRESS", "YAIM_NODE", "YAIM_REASON", "YAIM_HEALTHY"}
SHELL_ADDS = {"PWD"}  # what sh itself exports, whatever it was given
CAP_SETGID, CAP_SETUID, CAP_NET_RAW = 6, 7, 13


@pytest.fixture(autouse=True)
def planted(monkeypatch) -> None:
    """yaim's environment as a careless deployment has it: a password and other things."""
    monkeypatch.setenv("YAIM_ETCD_PASSWORD", SECRET)
    monkeypatch.setenv("YT_ARBITRARY", "not for commands")
    monkeypatch.setenv("PGPASSFILE", "/etc/yaim/pgpass")
    monkeypatch.setenv("HOME", "/var/lib/yaim")
    monkeypatch.setenv("LANG", "C.UTF-8")


def settings(passed: Sequence[str] = (), capabilities: str = "none", **more) -> SimpleNamespace:
    """The keys that the check, the notifier and `command.run` read."""
    values = {f"notify_{event}": None for event in EVENTS}
    values.update(more)
    return SimpleNamespace(
        checker_type="shell",
        check_timeout_s=5.0,
        node_name="n1",
        notify_timeout_s=5.0,
        command_environment=tuple(passed),
        command_capabilities=capabilities,
        **values,
    )


def dump(path: Path) -> Sequence[str]:
    """A command that writes its environment to `path`."""
    return ["sh", "-c", 'exec env > "$0"', str(path)]


def read(path: Path) -> Dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def through_the_check(tmp_path: Path, passed: Sequence[str] = ()) -> Dict[str, str]:
    out = tmp_path / "env"
    made = shell.Checker(settings(passed, shell_command=tuple(dump(out))))
    assert made.check().healthy
    return read(out)


def test_the_check_gets_a_minimal_environment(tmp_path):
    env = through_the_check(tmp_path)
    assert SECRET not in "".join(env.values())
    assert "YAIM_ETCD_PASSWORD" not in env and "YT_ARBITRARY" not in env
    assert "PGPASSFILE" not in env  # not named in command-environment
    assert env["PATH"] == os.environ["PATH"]
    assert (env["HOME"], env["LANG"]) == ("/var/lib/yaim", "C.UTF-8")
    assert set(env) - SHELL_ADDS <= set(command.PASSED)


def test_notify_commands_get_the_event_and_nothing_else(tmp_path):
    out = tmp_path / "env"
    notifier = Notifier(
        settings(notify_take=tuple(dump(out))), lambda: True, on_crash=print, metrics=Metrics()
    )
    notifier.submit("take", ipaddress.ip_address("198.51.100.7"), "free")
    notifier.step([])  # runs the queue here, in the test's thread
    env = read(out)
    assert SECRET not in "".join(env.values())
    assert "YAIM_ETCD_PASSWORD" not in env and "YT_ARBITRARY" not in env
    assert {name for name in env if name.startswith("YAIM_")} == NOTIFY_VARIABLES
    assert [env[name] for name in ("YAIM_EVENT", "YAIM_ADDRESS", "YAIM_NODE")] == [
        "take",
        "198.51.100.7",
        "n1",
    ]
    assert (env["YAIM_REASON"], env["YAIM_HEALTHY"], env["PATH"]) == (
        "free",
        "1",
        os.environ["PATH"],
    )
    assert set(env) - SHELL_ADDS - NOTIFY_VARIABLES <= set(command.PASSED)


def test_command_environment_passes_the_variables_it_names(tmp_path):
    env = through_the_check(tmp_path, passed=("PGPASSFILE", "YT_NOT_SET"))
    assert env["PGPASSFILE"] == "/etc/yaim/pgpass"
    assert "YT_NOT_SET" not in env and "YAIM_ETCD_PASSWORD" not in env


def test_without_a_path_commands_get_a_safe_one(monkeypatch, tmp_path):
    monkeypatch.delenv("PATH")
    assert command.environment()["PATH"] == command.SAFE_PATH
    assert through_the_check(tmp_path)["PATH"] == command.SAFE_PATH  # and sh is found in it


def test_the_event_variables_win_over_passed_names(monkeypatch):
    monkeypatch.setenv("YAIM_EVENT", "forged")
    env = command.environment(("YAIM_EVENT",), {"YAIM_EVENT": "take"})
    assert env["YAIM_EVENT"] == "take"


def test_the_keys_parse_from_the_file_and_the_environment(tmp_path):
    path = tmp_path / "yaim.yml"
    path.write_text(
        "interface: eth0\nchecker-type: none\n"
        "command-environment: [PGPASSFILE, AWS_DEFAULT_REGION]\ncommand-capabilities: Inherit\n"
    )
    loaded = config.load(str(path), {})
    assert loaded.command_environment == ("PGPASSFILE", "AWS_DEFAULT_REGION")
    assert loaded.command_capabilities == "inherit"
    loaded = config.load(str(path), {"YAIM_COMMAND_ENVIRONMENT": "PGSERVICEFILE, TZ"})
    assert loaded.command_environment == ("PGSERVICEFILE", "TZ")
    with pytest.raises(ConfigError, match="command-capabilities: must be one of none, inherit"):
        config.load(str(path), {"YAIM_COMMAND_CAPABILITIES": "all"})


# --- capabilities ---


def test_a_command_whose_capabilities_cannot_be_cleared_is_not_run(monkeypatch, tmp_path):
    """Fail closed: a child that still has them does not exec the command."""
    marker = tmp_path / "ran"

    def cannot() -> None:
        raise OSError(1, "prctl(PR_CAP_AMBIENT_CLEAR_ALL) failed")

    monkeypatch.setattr(command, "_ambient_clearer", lambda: cannot)
    outcome = command.run(["touch", str(marker)], 5, settings())
    assert outcome == ("error", "cannot clear its ambient capabilities, not run", "")
    assert not marker.exists()
    assert command.run(["touch", str(marker)], 5, settings(capabilities="inherit")).ok
    assert marker.exists()  # `inherit` does not try


def capabilities(text: str) -> Dict[str, int]:
    """The Cap* lines of a /proc/PID/status, as numbers."""
    return {name: int(bits, 16) for name, bits in re.findall(r"(Cap\w+):\s*([0-9a-f]+)", text)}


def test_without_ambient_capabilities_no_preexec_fn_is_installed():
    if capabilities(Path("/proc/self/status").read_text()).get("CapAmb"):
        pytest.skip("this test process has ambient capabilities")
    assert command._ambient_clearer() is None


@functools.lru_cache(maxsize=None)
def _capability_problem() -> Optional[str]:
    """Why an ambient capability cannot be set up for the helper here, or None."""
    if os.geteuid() != 0:
        return "needs root to give a helper an ambient capability"
    mine = capabilities(Path("/proc/self/status").read_text())
    if "CapAmb" not in mine:
        return "the kernel has no ambient capabilities"
    needed = (1 << CAP_SETGID) | (1 << CAP_SETUID) | (1 << CAP_NET_RAW)
    if mine["CapEff"] & needed != needed:
        return "needs CAP_SETUID, CAP_SETGID and CAP_NET_RAW"
    return None


def require_capabilities() -> None:
    """Skip unless the helper can be set up; fail instead under CI=true."""
    skip_or_fail(_capability_problem())


# Becomes user 65534 with CAP_NET_RAW permitted, inheritable and ambient (what systemd's
# User= with AmbientCapabilities= gives yaim), then runs a command through yaim.command.
HELPER = r"""
import ctypes, os, sys
from types import SimpleNamespace

from yaim import command  # before setuid: the interpreter's library may be root's only

libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = (ctypes.c_int,) + (ctypes.c_ulong,) * 4

class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

class Data(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in ("effective", "permitted", "inheritable")]

def check(result):
    if result != 0:
        raise OSError(ctypes.get_errno(), "helper setup failed")

NET_RAW = 13
check(libc.prctl(8, 1, 0, 0, 0))  # PR_SET_KEEPCAPS: the permitted set survives setuid
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
version_3 = Header(0x20080522, 0)
check(libc.capset(ctypes.byref(version_3), (Data * 2)(Data(0, 1 << NET_RAW, 1 << NET_RAW))))
check(libc.prctl(47, 2, NET_RAW, 0, 0))  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE
print(open("/proc/self/status").read())

settings = SimpleNamespace(command_environment=(), command_capabilities=sys.argv[1])
outcome = command.run(["grep", "^Cap", "/proc/self/status"], 10, settings)
print("COMMAND", outcome.result, outcome.output)
"""


def through_the_helper(keep: str) -> Dict[str, int]:
    """The capabilities of a command run by an unprivileged yaim with an ambient CAP_NET_RAW."""
    require_capabilities()
    done = subprocess.run(
        [sys.executable, "-c", HELPER, keep],
        env={"PATH": command.SAFE_PATH},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    helper, said = done.stdout.split("COMMAND ", 1)
    assert capabilities(helper)["CapAmb"] == 1 << CAP_NET_RAW, helper  # the setup worked
    result, output = said.split(" ", 1)
    assert result == "ok", said
    return capabilities(output)


def test_commands_do_not_get_yaims_ambient_capabilities():
    caps = through_the_helper("none")
    assert (caps["CapAmb"], caps["CapEff"], caps["CapPrm"]) == (0, 0, 0), caps


def test_command_capabilities_inherit_keeps_them():
    caps = through_the_helper("inherit")
    net_raw = 1 << CAP_NET_RAW
    assert (caps["CapAmb"], caps["CapEff"], caps["CapPrm"]) == (net_raw,) * 3, caps
