"""A Debian tree booted by its own systemd under systemd-nspawn, for the packaged unit's tests.

    tree = debian_tree(["python3", ...])  # debootstrapped once, cached in build/nspawn
    with Container(tree, base_dir) as box:  # booted: systemctl is-system-running answers
        box.run(["systemctl", "start", "yaim"])
        box.netns                           # its network namespace, by name

The tree comes from `debootstrap --variant=minbase --include=...`, fetched from the mirror
apt on this machine uses, and is kept in build/nspawn/ytsd-<suite>-<hash of the recipe>:
a changed package list or mirror makes another hash, so a new tree, and the old ones are
removed. It is built in a temporary directory and renamed when complete, so an interrupted
build leaves nothing that looks usable (and what a killed debootstrap left mounted in it
is unmounted before it is removed).

A container is `systemd-nspawn -D TREE -b --register=no --keep-unit --private-network
--volatile=overlay`: the tree stays read-only under a tmpfs overlay, so every boot starts
from the same tree and whatever a test installs vanishes with the container. PID 1 of the
test machines is not systemd, so there is no machined to register with (--register=no)
and no scope to move into (--keep-unit). Commands run inside through `nsenter -a` on the
container's PID 1; its network namespace is also attached under the container's name
(`ip netns attach`), so the lab's helpers that take a namespace name (EtcdCluster,
rtnl.read_link, `ip -n`) work on it from the host. A hand-written wrapper rather than
machinectl or a library: machinectl needs machined, and nothing packaged drives nspawn.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Union

from lab.util import Service, command_line, stop_processes, tail, wait_until

ROOT = Path(__file__).resolve().parents[1]
TREES = ROOT / "build" / "nspawn"
SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
PREFIX = "ytsd"
BUILD_TIMEOUT = 900.0
BOOT_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
# The environment of commands run inside: no virtualenv, pager or colours from the host.
INSIDE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}


class ContainerError(RuntimeError):
    """The tree could not be built, the container did not boot, or a command failed."""


def _stanzas(text: str) -> Iterator[Dict[str, List[str]]]:
    """The fields of each deb822 stanza (field -> words), comments and continuations left out."""
    for stanza in re.split(r"\n\s*\n", text):
        fields = (line.partition(":") for line in stanza.splitlines() if line[:1] not in "# ")
        yield {name.strip(): value.split() for name, _, value in fields}


def mirror(suite: str) -> str:
    """The URI apt on this machine fetches `suite` (main) from: deb822 .sources or
    sources.list; for a suite apt does not fetch (bullseye on a bookworm host), the URI of
    the host's own release, the Debian archive that serves the others too."""
    try:
        return _mirror(suite)
    except ContainerError:
        own = _os_release().get("VERSION_CODENAME")
        if not own or own == suite:
            raise
        return _mirror(own)


def _os_release() -> Dict[str, str]:
    path = Path("/etc/os-release")
    if not path.exists():
        return {}
    pairs = (line.partition("=") for line in path.read_text().splitlines())
    return {name: value.strip('"') for name, _, value in pairs if name}


def _mirror(suite: str) -> str:
    deb822, one_line = SOURCES
    if deb822.exists():
        for fields in _stanzas(deb822.read_text()):
            wanted = [("Types", "deb"), ("Suites", suite), ("Components", "main")]
            if all(word in fields.get(name, []) for name, word in wanted) and fields.get("URIs"):
                return fields["URIs"][0]
    if one_line.exists():
        for line in one_line.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", "", line).split()
            if words[:1] == ["deb"] and len(words) >= 4 and words[2] == suite and "main" in words:
                return words[1]
    raise ContainerError(f"apt has no mirror for {suite} main in {' or '.join(map(str, SOURCES))}")


def debian_tree(packages: Sequence[str], suite: str = "bookworm") -> Path:
    """A minimal `suite` tree with `packages` (and their dependencies), built when missing."""
    uri = mirror(suite)
    recipe = {"suite": suite, "variant": "minbase", "packages": sorted(packages), "mirror": uri}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    tree = TREES / f"{PREFIX}-{suite}-{digest}"
    if tree.is_dir():
        return tree
    TREES.mkdir(parents=True, exist_ok=True)
    partial = TREES / f".{tree.name}.{os.getpid()}"
    _remove(partial)
    argv = ["debootstrap", "--variant=minbase", "--include=" + ",".join(recipe["packages"])]
    argv += [suite, str(partial), uri]
    log = TREES / f"{tree.name}.log"
    try:
        with open(str(log), "w") as out:
            done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT)
        if done.returncode != 0:
            raise ContainerError(f"{command_line(argv)}: exit {done.returncode}\n{tail(log)}")
        for deb in (partial / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        try:
            partial.rename(tree)
        except OSError:
            if not tree.is_dir():
                raise
            # another run finished the same tree meanwhile: use that one
    finally:
        _remove(partial)
    for old in TREES.glob(f"{PREFIX}-{suite}-*"):  # trees of other recipes, and their logs
        if old.name == tree.name or old.name == log.name:
            continue
        if old.is_dir():
            shutil.rmtree(str(old), ignore_errors=True)
        else:
            old.unlink()
    return tree


def _remove(path: Path) -> None:
    """Remove the directory `path`, after unmounting whatever is mounted below it (deepest
    first), so that a /proc or /dev left there is never walked into."""
    below = str(path) + "/"
    with open("/proc/self/mountinfo") as mounts:
        points = [words[4] for words in map(str.split, mounts) if words[4].startswith(below)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)
    shutil.rmtree(str(path), ignore_errors=True)


class Container(Service):
    """The tree booted with its systemd; `name` is also the name of its network namespace."""

    def __init__(self, tree: Path, base_dir: Path) -> None:
        self.tree = tree
        self.base_dir = base_dir
        self.name = PREFIX + secrets.token_hex(3)
        self.log_path = base_dir / f"{self.name}.log"
        self.proc: Optional[subprocess.Popen] = None
        self.leader = 0  # the container's PID 1, as the host sees it
        self._attached = False

    @property
    def netns(self) -> str:
        return self.name

    def bring_up(self) -> None:
        self.boot()

    def teardown(self) -> None:
        self.stop()

    def boot(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Start nspawn, find its PID 1, attach its namespace, wait until systemd answers."""
        argv = ["systemd-nspawn", "-D", str(self.tree), "-M", self.name, "-b"]
        argv += ["--register=no", "--keep-unit", "--private-network", "--volatile=overlay"]
        argv += ["--console=passive"]
        self.base_dir.mkdir(parents=True, exist_ok=True)
        with open(str(self.log_path), "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self.leader = wait_until(self._find_leader, timeout, what=f"PID 1 of {self.name}")
        state = wait_until(self._booted, timeout, what=f"systemd of {self.name} to finish booting")
        self._attach()
        if state != "running":
            failed = self.run(["systemctl", "--failed", "--no-legend"], check=False).stdout
            print(f"{self.name} is {state}; failed units:\n{failed}")

    def _attach(self) -> None:
        """Name the container's network namespace (`ip netns attach`) once its systemd
        runs, and check that the name is that namespace: a CI run once found the name
        on another one (etcd and the test's sockets there, yaim in the container)."""
        done = subprocess.run(
            ["ip", "netns", "attach", self.netns, str(self.leader)], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise ContainerError(f"ip netns attach {self.netns}: {done.stderr.strip()}")
        self._attached = True
        named = os.stat(f"/run/netns/{self.netns}")
        own = os.stat(f"/proc/{self.leader}/ns/net")
        if (named.st_dev, named.st_ino) != (own.st_dev, own.st_ino):
            raise ContainerError(f"{self.netns} names another namespace than {self.leader}'s")

    def _find_leader(self) -> int:
        """The child of nspawn that is PID 1 of its own PID namespace (0 while there is none)."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise ContainerError(f"systemd-nspawn exited {self.proc.returncode}\n" + self.logs())
        for entry in Path("/proc").glob("[0-9]*"):
            fields = _status(int(entry.name))
            if fields.get("PPid") == str(self.proc.pid) and _is_init(fields):
                return int(entry.name)
        return 0

    def _booted(self) -> Optional[str]:
        """`running` or `degraded` once boot is over; None while starting (or not answering)."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise ContainerError(f"systemd-nspawn exited {self.proc.returncode}\n" + self.logs())
        state = self.run(["systemctl", "is-system-running"], check=False, timeout=10).stdout
        return state.strip() if state.strip() in ("running", "degraded") else None

    def run(
        self,
        argv: Sequence[str],
        check: bool = True,
        timeout: float = 60.0,
        input: Union[str, bytes, None] = None,
    ) -> subprocess.CompletedProcess:
        """Run `argv` inside (every namespace of the container's PID 1); stdout and stderr
        as text. ContainerError on a non-zero exit when `check`."""
        full = ["nsenter", "-t", str(self.leader), "-a", *argv]
        data = input.encode() if isinstance(input, str) else input
        try:
            done = subprocess.run(
                full,
                input=data,
                stdin=None if data is not None else subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                env=INSIDE_ENV,
            )
        except subprocess.TimeoutExpired as exc:
            raise ContainerError(f"{command_line(full)}: timed out after {timeout} s") from exc
        result = subprocess.CompletedProcess(
            full,
            done.returncode,
            done.stdout.decode(errors="replace"),
            done.stderr.decode(errors="replace"),
        )
        if check and done.returncode != 0:
            raise ContainerError(
                f"{command_line(full)}: exit {done.returncode}\n{result.stdout}{result.stderr}"
            )
        return result

    def write(self, path: str, data: Union[str, bytes]) -> None:
        """Create or replace the file `path` inside with `data`."""
        self.run(["sh", "-c", 'cat > "$1"', "sh", path], input=data)

    def install(self, debs: List[Path]) -> str:
        """`dpkg -i` the packages (their dependencies must be in the tree); dpkg's output."""
        inside = []
        for deb in debs:
            inside.append(f"/root/{deb.name}")
            self.write(inside[-1], deb.read_bytes())
        return self.run(["dpkg", "-i", *inside], timeout=120).stdout

    def logs(self) -> str:
        return tail(self.log_path)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM to nspawn (its systemd powers off), SIGKILL after `timeout`. A container
        outlives a killed nspawn: then its PID 1 is killed, which ends every process in it.
        Last the namespace name is detached (the namespace goes with its last process)."""
        if self.proc is not None:
            stop_processes([self.proc], timeout)
        if self.leader and _is_init(_status(self.leader)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.leader, signal.SIGKILL)
            wait_until(
                lambda: not _is_init(_status(self.leader)), timeout, what="the container to end"
            )
        self.leader = 0
        if self._attached:
            subprocess.run(["ip", "netns", "delete", self.netns], capture_output=True)
            self._attached = False


def status_fields(text: str) -> Dict[str, str]:
    """The fields of a /proc/PID/status text (name -> value)."""
    return {name: value.strip() for name, _, value in (x.partition(":") for x in text.splitlines())}


def _status(pid: int) -> Dict[str, str]:
    """/proc/PID/status of a host process as a dict; empty when the process is gone."""
    try:
        return status_fields(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return {}


def _is_init(fields: Dict[str, str]) -> bool:
    """Whether the status is of a live PID 1 of a PID namespace below ours."""
    pids = fields.get("NSpid", "").split()
    return len(pids) > 1 and pids[-1] == "1" and not fields.get("State", "Z").startswith("Z")
