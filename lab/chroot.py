"""A Debian tree of another release entered with chroot, to run yaim and its tests on that
release's own Python and libraries (bullseye's 3.9: tests/integration/test_bullseye.py).

    tree = debian_tree(PACKAGES, suite="bullseye")      # lab.nspawn: debootstrapped, cached
    root = Chroot(tree, base_dir, binds={"/src": checkout})
    root.run(["python3", "-m", "pytest", "tests/unit"], cwd="/src")

Every command runs in a mount namespace of its own (`unshare --mount`), where the tree is
the lower layer of an overlay whose upper layer lies in base_dir: the cached tree stays
as debootstrap left it, while what one command writes (an installed package) is there
for the next one. /proc, /sys and /dev are the host's, /run and /tmp fresh tmpfs, and each
bind (read-only) shows a host directory inside. The mounts, and the network namespaces a
lab test makes under /run/netns, end with the command's last process. A chroot, not a
container: the tests inside need the host's root (network namespaces, raw sockets), and
nothing of the other release has to boot.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

from lab.util import command_line

INSIDE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ChrootError(RuntimeError):
    """A command inside failed (or could not be started)."""


class Chroot:
    """`tree` under an overlay in `base_dir`, with `binds` (inside path -> host dir)."""

    def __init__(self, tree: Path, base_dir: Path, binds: Optional[Mapping[str, Path]] = None):
        self.tree = tree
        self.base_dir = base_dir
        self.binds: Dict[str, Path] = dict(binds or {})
        for sub in ("upper", "work", "merged"):
            (base_dir / sub).mkdir(parents=True, exist_ok=True)

    def _script(self) -> str:
        """The shell that mounts the view and execs chroot with the command's words."""
        merged = self.base_dir / "merged"
        q = shlex.quote
        upper, work = self.base_dir / "upper", self.base_dir / "work"
        layers = f"lowerdir={self.tree},upperdir={upper},workdir={work}"
        lines = [
            "set -e",
            f"mount -t overlay overlay -o {q(layers)} {q(str(merged))}",
            f"mount -t proc proc {q(str(merged / 'proc'))}",
            f"mount --rbind /sys {q(str(merged / 'sys'))}",
            f"mount --rbind /dev {q(str(merged / 'dev'))}",
            f"mount -t tmpfs tmpfs {q(str(merged / 'run'))}",
            f"mount -t tmpfs tmpfs {q(str(merged / 'tmp'))}",
        ]
        for inside, host in sorted(self.binds.items()):
            target = q(str(merged / inside.lstrip("/")))
            lines += [
                f"mkdir -p {target}",
                f"mount --bind {q(str(host))} {target}",
                f"mount -o remount,bind,ro {target}",
            ]
        lines.append(f'cd {q(str(merged))} && exec chroot . /usr/bin/env -i "$@"')
        return "\n".join(lines)

    def run(
        self,
        argv: Sequence[str],
        cwd: str = "/",
        env: Optional[Mapping[str, str]] = None,
        check: bool = True,
        timeout: float = 600.0,
    ) -> subprocess.CompletedProcess:
        """`argv` inside, from `cwd`, with only PATH, LANG, HOME and `env` set; its output
        (stdout and stderr together) as text. ChrootError on a non-zero exit when `check`."""
        variables = {"PATH": INSIDE_PATH, "LANG": "C.UTF-8", "HOME": "/root", **(env or {})}
        words = [f"{name}={value}" for name, value in variables.items()]
        words += ["sh", "-c", 'cd "$0" && exec "$@"', cwd, *argv]
        full = ["unshare", "--mount", "--propagation", "private", "sh", "-c", self._script()]
        full += ["sh", *words]
        proc = subprocess.Popen(
            full,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # a timeout ends every process it started
        )
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            raise ChrootError(
                f"{command_line(argv)} in {self.tree.name}: timed out\n{output[-4000:]}"
            ) from exc
        done = subprocess.CompletedProcess(argv, proc.returncode, output, "")
        if check and done.returncode != 0:
            raise ChrootError(
                f"{command_line(argv)} in {self.tree.name}: exit {done.returncode}\n{output}"
            )
        return done
