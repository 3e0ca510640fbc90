"""The packages: the .deb built, installed with apt, run as its units say, purged; the .rpm built.

No systemd runs as PID 1 here, so ExecStart and ExecStopPost are read from the
installed unit file and run by hand, under the unit's User=, Group=,
AmbientCapabilities=, CapabilityBoundingSet= and NoNewPrivileges= (setpriv) and
with systemd's empty environment, in a lab node's namespace against the lab's
etcd. What runs is the installed /usr/bin/yaim: Debian's python3 with Debian's
python3-etcd and urllib3, and no pyroute2 (yaim's netlink is its own, on the
standard library). The SysV init script is driven the same way, in the namespace.

The tests share one installation (module fixture) and run in file order; the
last one purges it (the fixture purges too if a test failed before).
"""

from __future__ import annotations

import contextlib
import ctypes
import gzip
import ipaddress
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
import yaml

from lab.daemon import YaimNode
from lab.util import tail, wait_until
from tests.integration.conftest import TWO_CAPS, service_section
from yaim import __version__

ROOT = Path(__file__).resolve().parents[2]
UNIT_DIR = Path("/lib/systemd/system")
CONFIG = Path("/etc/yaim/yaim.yml")
DEFAULTS = Path("/etc/default/yaim")
INIT_SCRIPT = "/etc/init.d/yaim"
LOGROTATE = Path("/etc/logrotate.d/yaim")
# Made from the code (packaging/generate.py) or shared with the RPM (packaging/).
MADE = [
    "/usr/share/man/man8/yaim.8.gz",
    "/usr/share/man/man8/yaimctl.8.gz",
    "/usr/share/man/man5/yaim.yml.5.gz",
    "/usr/share/bash-completion/completions/yaimctl",
    "/usr/lib/sysusers.d/yaim.conf",
]
PIDFILE = Path("/run/yaim.pid")
LOG_DIR = Path("/var/log/yaim")
# systemd starts services with an empty environment and this PATH.
CLEAN_ENV = ["env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
POOL = [ipaddress.ip_address("198.51.100.101"), ipaddress.ip_address("198.51.100.102")]
ROOT_KEY = "/service/yaim"
PR_SET_CHILD_SUBREAPER = 36
# The installed actuator on netlink alone, which imports no pyroute2.
NETLINK_CHECK = """
import ipaddress, sys
from yaim.actuator import Actuator, netlink
from yaim.actuator.netlink import Netlink
actuator = Actuator("lan0", "yaim", 32, 128, [Netlink()])
address = ipaddress.ip_address("198.51.100.199")
actuator.add(address)
actuator.add(address)
held = sorted(map(str, actuator.scan().ours))
actuator.remove(address)
actuator.remove(address)
print(netlink.__file__, "pyroute2" in sys.modules, held, sorted(map(str, actuator.scan().ours)))
"""
TIMEOUT = 15


def run(argv: List[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Run a command; its result with stdout and stderr (as text) merged."""
    return subprocess.run(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, **kw
    )


def apt(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return run(["apt-get", "-y", "-q", *args], timeout=600, env=env)


def dpkg_installed() -> bool:
    done = run(["dpkg-query", "-W", "-f=${db:Status-Status}", "yaim"])
    return done.stdout.strip() == "installed"


@pytest.fixture(scope="module")
def installed(built_deb: Path) -> Iterator[None]:
    """`make deb`, then `apt-get install ./dist/yaim_*.deb` (Debian's dependencies come
    from the distribution); purged at the end unless a test purged it."""
    if dpkg_installed():
        assert apt("purge", "yaim").returncode == 0
    done = apt("install", str(built_deb))
    if done.returncode != 0:  # no package lists yet on a fresh machine
        assert apt("update").returncode == 0
        done = apt("install", str(built_deb))
    assert done.returncode == 0, done.stdout[-4000:]
    try:
        yield
    finally:
        if dpkg_installed():
            apt("purge", "yaim")


# --- the unit files -------------------------------------------------------------


def command(service: Dict[str, List[str]], name: str) -> List[str]:
    """The argv of the one `name=` command line (ExecStart, ExecStopPost, ...).

    A prefix such as "+" or "!" would run it with other privileges than the
    unit's User= and capabilities: there must be none."""
    [line] = service[name]
    assert line[0] not in "+!:@-", f"{name}={line} changes its privileges"
    return shlex.split(line)


def cap_list(names: str) -> str:
    """`CAP_NET_ADMIN CAP_NET_RAW` -> `-all,+net_admin,+net_raw` (setpriv's syntax)."""
    return ",".join(["-all"] + ["+" + cap[len("CAP_") :].lower() for cap in names.split()])


def as_unit(service: Dict[str, List[str]]) -> List[str]:
    """A command prefix that gives what follows the unit's user, capabilities and
    no_new_privs, and systemd's empty environment."""
    [user], [group] = service["User"], service["Group"]
    [ambient], [bounding] = service["AmbientCapabilities"], service["CapabilityBoundingSet"]
    argv = ["/usr/bin/setpriv", f"--reuid={user}", f"--regid={group}", "--init-groups"]
    argv += [f"--inh-caps={cap_list(ambient)}", f"--ambient-caps={cap_list(ambient)}"]
    argv += [f"--bounding-set={cap_list(bounding)}"]
    if service.get("NoNewPrivileges") == ["yes"]:
        argv.append("--no-new-privs")
    return CLEAN_ENV + argv


# --- the lab side ---------------------------------------------------------------


def write_lab_config(lab) -> None:
    """/etc/yaim/yaim.yml for node 1 of the lab (what the units and the init script use)."""
    config = YaimNode(lab.lab, 1, lab.etcd.endpoints).config
    CONFIG.write_text(yaml.safe_dump(config, default_flow_style=False))


def fill_pool(lab) -> None:
    for address in POOL:
        lab.etcd.put_dir(f"{ROOT_KEY}/ips/{address}")


def marks(lab) -> Dict[str, str]:
    """Address -> holder, from etcd."""
    tree = lab.etcd.get(f"{ROOT_KEY}/ips", recursive=True) or {}
    return {
        entry["key"].rsplit("/", 1)[1]: child["value"]
        for entry in tree.get("nodes", [])
        for child in entry.get("nodes", [])
        if child["key"].endswith("/marked")
    }


def node_keys(lab) -> List[str]:
    tree = lab.etcd.get(f"{ROOT_KEY}/nodes") or {}
    return [n["key"].rsplit("/", 1)[1] for n in tree.get("nodes", [])]


def holds_pool(holders) -> bool:
    return all(holders.get(address) == [1] for address in POOL)


def wait_for_pool(lab, what: str) -> None:
    lab.observer.wait_for(holds_pool, TIMEOUT, f"node 1 to take the pool ({what})")


def assert_runs_as_yaim_with_two_caps(pid: int) -> None:
    """The process runs as user yaim with exactly CAP_NET_ADMIN and CAP_NET_RAW."""
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    uid = pwd.getpwnam("yaim").pw_uid
    assert {int(u) for u in status["Uid"].split()} == {uid}
    for name in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
        assert int(status[name], 16) == TWO_CAPS, f"{name}: {status[name].strip()}"
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "yaim"


# --- tests ----------------------------------------------------------------------


@pytest.mark.netns
def test_installed_package_holds_its_files_and_a_valid_example(installed):
    version = run(["/usr/bin/yaim", "--version"], cwd="/")
    assert version.returncode == 0 and version.stdout.strip() == f"yaim {__version__}"
    checked = run(["/usr/bin/yaim", "--check-config", "-c", str(CONFIG)], cwd="/")
    assert checked.returncode == 0, checked.stdout
    where = run(
        [*CLEAN_ENV, "/usr/bin/python3", "-c", "import yaim, etcd; print(yaim.__file__)"],
        cwd="/",
    )
    assert where.stdout.startswith("/usr/lib/python3/dist-packages/yaim/"), where.stdout
    depends = run(["dpkg-query", "-W", "-f=${Depends}", "yaim"]).stdout
    recommends = run(["dpkg-query", "-W", "-f=${Recommends}", "yaim"]).stdout
    assert "python3-etcd" in recommends and "python3-etcd" not in depends, depends
    assert "python3-psycopg (>= 3) | python3-psycopg2" in recommends, recommends
    assert "pyroute2" not in depends and "python3-requests" not in depends, depends
    assert "systemd | systemd-standalone-sysusers" in depends and "adduser" not in depends
    conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", "yaim"]).stdout
    for path in (CONFIG, DEFAULTS, Path(INIT_SCRIPT), LOGROTATE):
        assert f" {path} " in conffiles
    assert [path for path in MADE if not os.path.exists(path)] == []
    assert "su yaim yaim" in LOGROTATE.read_text()
    with gzip.open("/usr/share/man/man5/yaim.yml.5.gz", "rt") as handle:
        page = handle.read()
    assert page.startswith(".") and "dcs\\-endpoints" in page
    etc = Path("/etc/yaim").stat()
    yaim = pwd.getpwnam("yaim")
    assert (etc.st_mode & 0o777, etc.st_uid, etc.st_gid) == (0o750, 0, yaim.pw_gid)
    assert yaim.pw_shell == "/usr/sbin/nologin"


@pytest.mark.netns
def test_units_keep_capabilities_and_the_template_differs_only_by_cluster(installed):
    service = service_section(UNIT_DIR / "yaim.service")
    assert service["User"] == ["yaim"]
    assert service["AmbientCapabilities"] == ["CAP_NET_ADMIN CAP_NET_RAW"]
    assert service["CapabilityBoundingSet"] == service["AmbientCapabilities"]
    assert command(service, "ExecStart") == ["/usr/bin/yaim", "-c", str(CONFIG)]
    cleanup = ["/usr/bin/yaim", "--cleanup", "-c", str(CONFIG)]
    assert command(service, "ExecStopPost") == cleanup
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["Restart"] == ["on-failure"]
    template = service_section(UNIT_DIR / "yaim@.service")
    instance = {
        name: [value.replace("/etc/yaim/%i.yml", str(CONFIG)) for value in values]
        for name, values in template.items()
    }
    assert instance == service
    assert command(template, "ExecStart")[-1] == "/etc/yaim/%i.yml"


@pytest.mark.netns
@pytest.mark.parametrize("lab", [1], indirect=True)
def test_unit_commands_take_the_pool_as_yaim_and_clean_up_after_sigkill(installed, lab):
    service = service_section(UNIT_DIR / "yaim.service")
    write_lab_config(lab)
    fill_pool(lab)
    ns = lab.lab.node_ns(1)
    netlink = run(
        ["ip", "netns", "exec", ns, *as_unit(service), "/usr/bin/python3", "-c", NETLINK_CHECK],
        cwd="/",  # python3 -c puts the working directory first: the checkout's yaim
    )
    assert netlink.returncode == 0, netlink.stdout
    assert netlink.stdout.split(" ", 1) == [
        "/usr/lib/python3/dist-packages/yaim/actuator/netlink.py",
        "False ['198.51.100.199'] []\n",
    ]
    log = lab.lab.base_dir / "unit.log"
    daemon = lab.lab.spawn(ns, as_unit(service) + command(service, "ExecStart"), log)
    try:
        wait_for_pool(lab, "ExecStart")
    finally:
        print(tail(log))
    assert_runs_as_yaim_with_two_caps(daemon.pid)
    assert marks(lab) == {str(a): "n1" for a in POOL}
    assert "with netlink failed" not in log.read_text()

    daemon.send_signal(signal.SIGKILL)
    assert daemon.wait(5) == -signal.SIGKILL
    assert lab.lab.addresses(1, label="lan0:yaim") == set(POOL), "kill -9 left them behind"

    stop_post = run(
        ["ip", "netns", "exec", ns, *as_unit(service), *command(service, "ExecStopPost")],
        timeout=30,
    )
    print(stop_post.stdout)
    assert stop_post.returncode == 0
    assert lab.lab.addresses(1) == set()
    assert marks(lab) == {}
    assert node_keys(lab) == []


class SysV:
    """/etc/init.d/yaim run in a namespace. The test process is the daemon's child
    subreaper (PID 1 here reaps no orphans) and reaps it in a thread, as init would."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    def __call__(self, action: str) -> subprocess.CompletedProcess:
        done = run(["ip", "netns", "exec", self.ns, INIT_SCRIPT, action], timeout=60)
        print(f"$ {INIT_SCRIPT} {action}: exit {done.returncode}\n{done.stdout}")
        if action in ("start", "restart") and PIDFILE.exists():
            pid = int(PIDFILE.read_text())
            threading.Thread(target=self._reap, args=(pid,), daemon=True).start()
        return done

    @staticmethod
    def _reap(pid: int) -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)

    def pid(self) -> int:
        return int(PIDFILE.read_text())

    def close(self) -> None:
        self._libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


@pytest.fixture
def sysv(lab) -> Iterator[SysV]:
    script = SysV(lab.lab.node_ns(1))
    try:
        yield script
    finally:
        script("stop")
        script.close()


def log_to_file(defaults: str) -> str:
    """/etc/default/yaim with the daemon's log in /var/log/yaim instead of syslog
    (there is no syslog daemon here)."""
    return defaults.replace("export YAIM_LOG_SYSLOG=", "#export YAIM_LOG_SYSLOG=").replace(
        "#export YAIM_LOG_FILE=", "export YAIM_LOG_FILE="
    )


@pytest.mark.netns
@pytest.mark.parametrize("lab", [1], indirect=True)
def test_sysv_script_starts_reloads_restarts_and_cleans_up_after_a_kill(installed, lab, sysv):
    write_lab_config(lab)
    DEFAULTS.write_text(log_to_file(DEFAULTS.read_text()))
    fill_pool(lab)
    assert sysv("status").returncode == 3
    assert sysv("start").returncode == 0
    wait_for_pool(lab, "init script start")
    first = sysv.pid()
    assert_runs_as_yaim_with_two_caps(first)
    assert sysv("status").returncode == 0
    assert sysv("reload").returncode == 0
    assert sysv("status").returncode == 0 and sysv.pid() == first
    assert sysv("restart").returncode == 0
    second = sysv.pid()
    assert second != first
    wait_for_pool(lab, "init script restart")
    log = LOG_DIR / "yaim.log"
    assert log.stat().st_uid == pwd.getpwnam("yaim").pw_uid
    print(tail(log))

    os.kill(second, signal.SIGKILL)
    wait_until(lambda: not Path(f"/proc/{second}").exists(), 5, what="the daemon to die")
    assert sysv("status").returncode == 1  # dead, pidfile left
    assert lab.lab.addresses(1, label="lan0:yaim") == set(POOL)
    assert sysv("stop").returncode == 0
    assert lab.lab.addresses(1) == set()
    assert marks(lab) == {}
    assert not PIDFILE.exists()
    assert sysv("status").returncode == 3


def leftovers() -> List[str]:
    """Paths of the package that still exist."""
    paths = [
        "/etc/yaim",
        str(DEFAULTS),
        INIT_SCRIPT,
        str(UNIT_DIR / "yaim.service"),
        str(UNIT_DIR / "yaim@.service"),
        "/usr/bin/yaim",
        "/usr/bin/yaimctl",
        "/usr/lib/python3/dist-packages/yaim",
        f"/usr/lib/python3/dist-packages/yaim-{__version__}.dist-info",
        "/usr/share/doc/yaim",
        str(LOGROTATE),
        *MADE,
        str(LOG_DIR),
        str(PIDFILE),
    ]
    paths += [str(p) for p in Path("/etc").glob("rc?.d/*yaim")]
    return [p for p in paths if os.path.lexists(p)]


@pytest.mark.netns
def test_purge_leaves_nothing_but_the_system_user(installed):
    done = apt("purge", "yaim")
    assert done.returncode == 0, done.stdout[-4000:]
    assert not dpkg_installed()
    assert leftovers() == []
    assert run(["dpkg-statoverride", "--list", "/etc/yaim"]).returncode == 1
    # Kept on purge, as Debian does with system users: locked out, owning nothing.
    yaim = pwd.getpwnam("yaim")
    assert yaim.pw_shell == "/usr/sbin/nologin" and yaim.pw_dir == "/nonexistent"
    owned = run(["find", "/etc", "/usr", "/var", "/run", "-xdev", "-uid", str(yaim.pw_uid)])
    assert owned.stdout == ""


def rpm_files(package: Path) -> List[str]:
    return run(["rpm", "-qlp", str(package)]).stdout.split()


def test_make_rpm_holds_units_config_and_package():
    if shutil.which("rpmbuild") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("rpmbuild is missing: `make deps` installs it")
        pytest.skip("rpmbuild is missing: `make deps` installs it")
    built = run(["make", "-C", str(ROOT), "rpm"], timeout=600)
    assert built.returncode == 0, built.stdout[-4000:]
    [package] = (ROOT / "dist").glob(f"yaim-{__version__}-*.noarch.rpm")
    files = rpm_files(package)
    sitelib = next(f for f in files if f.endswith("/site-packages/yaim"))
    for path in (
        "/usr/lib/systemd/system/yaim.service",
        "/usr/lib/systemd/system/yaim@.service",
        "/etc/yaim/yaim.yml",
        "/usr/bin/yaim",
        f"{sitelib}/cli.py",
        f"{sitelib}/actuator/netlink.py",
        "/usr/lib/sysusers.d/yaim.conf",
        "/usr/share/bash-completion/completions/yaimctl",
    ):
        assert path in files
    pages = {Path(f).name.split(".gz")[0] for f in files if "/man/man" in f}
    assert pages == {"yaim.8", "yaimctl.8", "yaim.yml.5"}
    assert any(f.endswith("/LICENSE") for f in files)
    config = run(["rpm", "-qp", "--configfiles", str(package)]).stdout.split()
    assert config == ["/etc/logrotate.d/yaim", "/etc/yaim/yaim.yml"]
    scripts = run(["rpm", "-qp", "--scripts", str(package)]).stdout
    assert "useradd" in scripts and "systemctl" in scripts
    lint = run(
        ["rpmlint", "-r", "packaging/rpm/yaim.rpmlintrc", "packaging/rpm/yaim.spec"], cwd=ROOT
    )
    assert lint.returncode == 0 and "0 errors, 0 warnings" in lint.stdout, lint.stdout
