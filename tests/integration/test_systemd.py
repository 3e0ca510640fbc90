"""The packaged unit under a real systemd: Debian bookworm booted in systemd-nspawn.

What runs is the .deb of the working tree (`make deb`), installed with `dpkg -i` in a
container booted from a minimal bookworm tree that holds the package's dependencies
(lab/nspawn.py: debootstrapped once, cached in build/nspawn). The container's private
network namespace gets a veth pair: ytsd0, yaim's interface, and its peer ytsd1, where the
test hears the announcements. etcd is the host's binary, started by the lab's EtcdCluster
inside that namespace on its loopback: yaim reaches it at 127.0.0.1:2379 as on a node that
runs its own member, and nothing (no etcd in the tree, no bridge to the host, no route)
has to be added for it.

The tests share one container (module fixture) and run in file order: the unit's user,
capabilities and cleanup after SIGKILL; Type=notify (READY, RELOADING, the watchdog's kill
of a SIGSTOPped yaim, cleanup and restart) and journald's priorities; the sandbox. They take about
10 s with the tree cached, 80 s when debootstrap has to build it first. Without
systemd-nspawn or debootstrap (`make deps` installs both) they are skipped, as without
root, except under CI=true, where they fail.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import shutil
import socket
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set

import pytest
import yaml

from lab.etcd import EtcdCluster
from lab.nspawn import Container, debian_tree, status_fields
from lab.rtnl import IPAddress, read_link, socket_in
from lab.util import wait_until
from tests.integration.conftest import TWO_CAPS, service_section
from tests.needs import skip_or_fail

# A booting systemd, and the .deb's Depends and Recommends (psycopg, the postgres checker's)
# but nothing else, so that what the package forgets to depend on is missing here too.
PACKAGES = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "iproute2",
    "procps",
    "python3",
    "python3-etcd",
    "python3-requests",
    "python3-yaml",
    "python3-prometheus-client",
    "python3-psycopg",
]
UNIT = "/lib/systemd/system/yaim.service"
IFACE, PEER = "ytsd0", "ytsd1"
ADDRESS = ipaddress.ip_address("198.51.100.10")
NODE = "n1"
ROOT_KEY = "/service/yaim"
# `systemd-analyze security yaim.service` said 4.4 before the hardening (4.2 loaded), 1.9 after.
MAX_EXPOSURE = 2.0
TIMEOUT = 15.0
ETH_P_ARP = 0x0806
# What the unit's sandbox must let yaim do besides the daemon's own netlink and ARP: the
# `ip` fallback, the postgres checker's libpq through ctypes (psycopg's pure-Python binding
# makes ctypes callbacks) and syslog on /dev/log.
SANDBOX_CHECK = """
import ctypes, ipaddress, logging.handlers, sys
import psycopg
from yaim.actuator import Actuator
from yaim.actuator.iproute import IpCommand
actuator = Actuator("ytsd0", "ytsdsb", 32, 128, [IpCommand()])
address = ipaddress.ip_address("198.51.100.199")
actuator.add(address)
held = sorted(map(str, actuator.scan().ours))
actuator.remove(address)
called = ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 7)()
try:
    psycopg.connect("host=127.0.0.1 port=9 connect_timeout=2")
except psycopg.OperationalError as exc:
    libpq = "refused" if "refused" in str(exc) else str(exc)
syslog = logging.handlers.SysLogHandler("/dev/log")
syslog.emit(logging.makeLogRecord({"msg": "ytsd-sandbox: " + sys.argv[1]}))
print(held, sorted(map(str, actuator.scan().ours)), called, psycopg.pq.__impl__, libpq)
"""


def require_nspawn() -> None:
    """Skip without systemd-nspawn or debootstrap; fail instead under CI=true."""
    missing = [tool for tool in ("systemd-nspawn", "debootstrap") if shutil.which(tool) is None]
    skip_or_fail(" and ".join(missing) + " missing: `make deps` installs them" if missing else None)


@dataclass
class System:
    """The booted container with yaim installed and configured, and its etcd."""

    box: Container
    etcd: EtcdCluster

    def systemctl(self, *args: str) -> str:
        return self.box.run(["systemctl", *args], check=False).stdout.strip()

    def show(self, prop: str) -> str:
        return self.systemctl("show", "-p", prop, "--value", "yaim")

    def addresses(self) -> Set[IPAddress]:
        """ytsd0's addresses but the link-local ones."""
        found = read_link(self.box.netns, IFACE).addresses
        return {a for a in found if not a.is_link_local}

    def keys(self) -> Dict[str, List[str]]:
        """The address marks and node keys in etcd (key -> values)."""
        marked = self.etcd.get(f"{ROOT_KEY}/ips/{ADDRESS}/marked")
        nodes = self.etcd.get(f"{ROOT_KEY}/nodes") or {}
        return {
            "marked": [] if marked is None else [marked["value"]],
            "nodes": [n["key"].rsplit("/", 1)[1] for n in nodes.get("nodes", [])],
        }

    def warnings(self) -> List[str]:
        """What yaim's own processes logged at WARNING or worse: by the level in the line,
        and by journald's priority (for lines that carry one)."""
        own = ["journalctl", "_SYSTEMD_UNIT=yaim.service", "SYSLOG_IDENTIFIER=yaim", "-o", "cat"]
        lines = self.box.run(own).stdout.splitlines()
        found = [line for line in lines if re.search(r" (WARNING|ERROR|CRITICAL) ", line)]
        return found + self.box.run([*own, "-p", "warning"]).stdout.splitlines()

    def journal(self) -> str:
        return self.box.run(
            ["journalctl", "-u", "yaim", "--no-pager", "-o", "cat"], check=False
        ).stdout


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, built_deb: Path) -> Iterator[System]:
    require_nspawn()
    started = time.monotonic()
    tree = debian_tree(PACKAGES)
    print(f"make deb and the tree {tree.name}: {time.monotonic() - started:.1f} s")
    base = tmp_path_factory.mktemp("systemd")
    with ExitStack() as stack:
        box = stack.enter_context(Container(tree, base))
        print(f"booted {box.name} at {time.monotonic() - started:.1f} s")
        print(box.install([built_deb]))
        veth = f"link add {IFACE} type veth peer name {PEER}\nlink set {IFACE} up\n"
        box.run(["ip", "-batch", "-"], input=veth + f"link set {PEER} up\n")
        etcd = stack.enter_context(
            EtcdCluster(netns=box.netns, host="127.0.0.1", base_dir=base / "etcd")
        )
        stack.callback(box.stop)  # the container (yaim in it) stops while etcd still answers
        config = {
            "dcs-endpoints": etcd.endpoints,
            "interface": IFACE,
            "node-name": NODE,
            "checker-type": "none",
            "interval": 500,
            "ttl": 2000,
            "allowed-networks": ["198.51.100.0/24"],
        }
        box.write("/etc/yaim/yaim.yml", yaml.safe_dump(config))
        etcd.put_dir(f"{ROOT_KEY}/ips/{ADDRESS}")
        here = System(box, etcd)
        stack.callback(lambda: print(here.journal()))
        yield here


def arp_listener(netns: str) -> socket.socket:
    """A packet socket on ytsd1 that hears the ARP frames yaim sends on ytsd0."""
    sock = socket_in(netns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    sock.bind((PEER, ETH_P_ARP))
    return sock


def announced(sock: socket.socket, address: IPAddress, timeout: float) -> bool:
    """Whether a gratuitous ARP for `address` (sender = target = address) arrives in time;
    the RFC 5227 probes before a take (sender 0.0.0.0) do not count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            frame = sock.recv(2048)
        except socket.timeout:
            return False
        sender, target = frame[28:32], frame[38:42]
        if sender == target == address.packed:
            return True
    return False


def proc_status(system: System, pid: int) -> Dict[str, str]:
    """/proc/PID/status of a process of the container (PID as the container sees it)."""
    return status_fields(system.box.run(["cat", f"/proc/{pid}/status"]).stdout)


@pytest.mark.netns
def test_unit_runs_as_yaim_with_two_caps_and_cleans_up_after_sigkill(system: System) -> None:
    with arp_listener(system.box.netns) as arp:
        system.systemctl("start", "yaim")
        wait_until(lambda: system.addresses() == {ADDRESS}, TIMEOUT, what="the address on ytsd0")
        assert announced(arp, ADDRESS, TIMEOUT), "no gratuitous ARP heard on the peer"
    assert system.systemctl("is-active", "yaim") == "active"
    assert system.show("NRestarts") == "0"
    assert system.keys() == {"marked": [NODE], "nodes": [NODE]}

    pid = int(system.show("MainPID"))
    status = proc_status(system, pid)
    uid = system.box.run(["id", "-u", "yaim"]).stdout.strip()
    assert set(status["Uid"].split()) == {uid}
    for name in ("CapEff", "CapPrm", "CapAmb", "CapBnd"):
        assert int(status[name], 16) == TWO_CAPS, f"{name}: {status[name]}"
    assert "with netlink failed" not in system.journal()

    # Cleaned up by ExecStopPost before the restart (RestartSec=2) takes the address again.
    system.systemctl("kill", "-s", "SIGKILL", "yaim")
    wait_until(
        lambda: (
            not system.addresses()
            and system.keys() == {"marked": [], "nodes": []}
            and re.search(r"code=exited ; status=0\b", system.show("ExecStopPost"))
        ),
        TIMEOUT,
        what="ExecStopPost to remove the address, the mark and the node key",
    )
    wait_until(lambda: system.show("NRestarts") == "1", TIMEOUT, what="the restart")
    wait_until(lambda: system.addresses() == {ADDRESS}, TIMEOUT, what="the address again")
    assert int(system.show("MainPID")) != pid

    system.systemctl("stop", "yaim")
    assert system.systemctl("is-active", "yaim") == "inactive"
    assert system.addresses() == set()
    assert system.keys() == {"marked": [], "nodes": []}
    assert system.warnings() == []  # e.g. a netlink request the sandbox refused


WATCHDOG = 3  # s: the test's WatchdogSec (a drop-in), well above the ttl as the unit's 30


def journal_lines(system: System, *args: str) -> List[str]:
    """yaim's journal lines (its own and systemd's about it), with `args` (-p warning)."""
    argv = ["journalctl", "-u", "yaim", "--no-pager", "-o", "cat", *args]
    return system.box.run(argv, check=False).stdout.splitlines()


@pytest.mark.netns
def test_notify_ready_watchdog_reload_and_journal_priorities(system: System) -> None:
    """Type=notify: `systemctl start` returns once yaim said READY=1, and the unit is
    active then; journald gets each line's priority (`-p warning` filters) and no second
    timestamp; a reload goes through RELOADING=1 and READY=1; a SIGSTOPped yaim stops
    sending WATCHDOG=1, and systemd kills it, runs ExecStopPost and restarts it."""
    assert system.show("Type") == "notify"
    start = len(journal_lines(system))
    warnings_before = len(journal_lines(system, "-p", "warning"))
    system.systemctl("start", "yaim")
    assert system.systemctl("is-active", "yaim") == "active"  # READY=1 came first
    wait_until(lambda: system.addresses() == {ADDRESS}, TIMEOUT, what="the address on ytsd0")
    lines = journal_lines(system)[start:]
    assert any(line.startswith("INFO ") and " took " in line for line in lines), lines
    assert not [line for line in lines if re.match(r"\d{4}-\d\d-\d\d ", line)], lines

    # A warning: the address removed by hand, yaim puts it back.
    system.box.run(["ip", "addr", "del", f"{ADDRESS}/32", "dev", IFACE])
    wait_until(lambda: system.addresses() == {ADDRESS}, TIMEOUT, what="the address back")
    warned = wait_until(
        lambda: journal_lines(system, "-p", "warning")[warnings_before:],
        TIMEOUT,
        what="a warning",
    )
    assert all(line.startswith("WARNING ") for line in warned), warned
    assert any("re-adding" in line for line in warned), warned
    assert all(" took " not in line for line in warned), warned

    pid = int(system.show("MainPID"))
    assert system.box.run(["systemctl", "reload", "yaim"], check=False).returncode == 0
    assert system.systemctl("is-active", "yaim") == "active"
    assert int(system.show("MainPID")) == pid  # reloaded in place

    drop_in = "/etc/systemd/system/yaim.service.d/watchdog.conf"
    system.box.run(["mkdir", "-p", drop_in.rsplit("/", 1)[0]])
    system.box.write(drop_in, f"[Service]\nWatchdogSec={WATCHDOG}\n")
    system.systemctl("daemon-reload")
    system.systemctl("restart", "yaim")
    wait_until(lambda: system.addresses() == {ADDRESS}, TIMEOUT, what="the address again")
    restarts = int(system.show("NRestarts"))
    pid = int(system.show("MainPID"))
    hung = len(journal_lines(system))
    system.systemctl("kill", "-s", "SIGSTOP", "yaim")
    wait_until(
        lambda: int(system.show("NRestarts")) == restarts + 1,
        WATCHDOG + TIMEOUT,
        what="the watchdog's kill and the restart",
    )
    told = journal_lines(system)[hung:]
    assert any("Watchdog timeout" in line for line in told), told
    assert any(f"removing {ADDRESS} from {IFACE}" in line for line in told), told  # cleanup
    wait_until(lambda: system.addresses() == {ADDRESS}, TIMEOUT, what="the address after it")
    assert int(system.show("MainPID")) != pid
    system.box.run(["rm", drop_in])
    system.systemctl("daemon-reload")
    system.systemctl("stop", "yaim")
    assert system.addresses() == set()


def exposure(system: System) -> float:
    """`systemd-analyze security yaim.service`'s overall exposure (printed with its table)."""
    report = system.box.run(["systemd-analyze", "security", "yaim.service"], check=False).stdout
    print(report)
    found = re.search(r"Overall exposure level for yaim\.service: ([0-9.]+)", report)
    assert found, report
    return float(found.group(1))


def sandboxed(system: System, argv: List[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """`argv` run by systemd-run under every [Service] setting of the installed unit but its
    commands, type and restart policy: the same user, capabilities and sandbox."""
    unit_copy = tmp_path / "yaim.service"
    unit_copy.write_text(system.box.run(["cat", UNIT]).stdout)
    properties = [
        f"--property={name}={value}"
        for name, values in service_section(unit_copy).items()
        if not name.startswith(("Type", "Exec", "Restart"))
        for value in values
    ]
    run = ["systemd-run", "--wait", "--pipe", "--quiet", "--collect", *properties, *argv]
    return system.box.run(run, check=False)


def syslog_lines(system: System, tag: str) -> Optional[str]:
    return system.box.run(["journalctl", "-t", tag, "--no-pager", "-o", "cat"]).stdout or None


@pytest.mark.netns
def test_the_hardened_sandbox_lowers_the_exposure_and_keeps_what_yaim_uses(
    system: System, tmp_path: Path
) -> None:
    score = exposure(system)
    print(f"systemd-analyze security yaim.service: {score}")
    assert score <= MAX_EXPOSURE
    verify = system.box.run(["systemd-analyze", "verify", UNIT], check=False)
    assert "Unknown" not in verify.stderr and "ignoring" not in verify.stderr, verify.stderr

    marker = secrets.token_hex(4)
    done = sandboxed(system, ["/usr/bin/python3", "-c", SANDBOX_CHECK, marker], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == "['198.51.100.199'] [] 7 python refused\n", done.stderr
    logged = wait_until(lambda: syslog_lines(system, "ytsd-sandbox"), 5, what="the syslog line")
    assert marker in logged


@pytest.mark.netns
def test_a_purge_under_systemd_stops_yaim_and_leaves_only_the_user(system: System) -> None:
    system.systemctl("start", "yaim")
    assert system.systemctl("is-active", "yaim") == "active"
    system.box.run(["dpkg", "--purge", "yaim"], timeout=120)
    assert system.show("LoadState") == "not-found"
    assert system.addresses() == set(), "the stop cleaned the interface up"
    left = ["/etc/yaim", "/usr/bin/yaim", UNIT, "/usr/lib/sysusers.d/yaim.conf", "/var/log/yaim"]
    listing = 'for p; do [ ! -e "$p" ] || echo "$p"; done'
    present = system.box.run(["sh", "-c", listing, "sh", *left])
    assert present.stdout == ""
    assert system.box.run(["id", "-u", "yaim"], check=False).returncode == 0, "Debian keeps it"
