"""A yaim daemon running in a lab node namespace, with its own yaim.yml and log."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import yaml

from lab.netns import Lab
from lab.util import tail

ALLOWED_NETWORKS = ["198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"]


class YaimNode:
    """Node i of `lab` as a yaim daemon named "n<i>" on lan0.

    The config uses the contract's keys; `health_url` selects the http checker
    (else `checker-type: none`). Further `config` keys are given with underscores
    for dashes (`check_fall=2` -> `check-fall: 2`); a value None drops the key.
    """

    def __init__(
        self,
        lab: Lab,
        i: int,
        etcd_endpoints: Sequence[str],
        interval: int = 500,
        ttl: int = 1500,
        health_url: Optional[str] = None,
        **config: object,
    ) -> None:
        self.lab = lab
        self.i = i
        self.name = f"n{i}"
        self.ns = lab.node_ns(i)
        self.config_path = lab.base_dir / f"yaim-{self.name}.yml"
        self.log_path = lab.base_dir / f"yaim-{self.name}.log"
        self.proc: Optional[subprocess.Popen] = None
        self.config: Dict[str, object] = {
            "dcs-endpoints": list(etcd_endpoints),
            "node-name": self.name,
            "interface": "lan0",
            "interval": interval,
            "ttl": ttl,
            "checker-type": "none" if health_url is None else "http",
            "allowed-networks": ALLOWED_NETWORKS,
            "log-level": "DEBUG",
        }
        if health_url is not None:
            self.config["http-url"] = health_url
        for key, value in config.items():
            key = key.replace("_", "-")
            if value is None:
                self.config.pop(key, None)
            else:
                self.config[key] = value

    def write_config(self) -> Path:
        """Write `config` to `config_path` (also to apply changes before a SIGHUP)."""
        self.config_path.write_text(yaml.safe_dump(self.config, default_flow_style=False))
        return self.config_path

    def start(self) -> YaimNode:
        """Write the config and start `python -m yaim -c CFG` in the node namespace."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        argv = [sys.executable, "-m", "yaim", "-c", str(self.write_config())]
        self.proc = self.lab.spawn(self.ns, argv, self.log_path, {"PYTHONUNBUFFERED": "1"})
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _proc(self) -> subprocess.Popen:
        if self.proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.proc

    def signal(self, sig: int) -> None:
        """Send `sig` to the daemon (by pid)."""
        self._proc().send_signal(sig)

    def crash(self) -> None:
        """The machine goes away: SIGKILL the daemon and set dcs0 and lan0 down at once.
        Its addresses stay on its (down) lan0, as on a dead machine."""
        self._proc().send_signal(signal.SIGKILL)
        self.lab.ip(self.ns, "-batch", "-", input="link set dcs0 down\nlink set lan0 down\n")

    def wait_exit(self, timeout: float) -> int:
        """Wait for the daemon to exit; its return code (TimeoutError with log if not)."""
        try:
            return self._proc().wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise TimeoutError(
                f"{self.name} still running after {timeout} s\n{self.log()}"
            ) from exc

    def log(self) -> str:
        """The daemon's whole log."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc is not None else None
        return f"YaimNode({self.name}, pid={pid})"


def dump_logs(nodes: Iterable[YaimNode], lines: int = 60) -> str:
    """The tails of the logs of `nodes`, for assertion messages."""
    return "".join(tail(n.log_path, lines) for n in nodes)


def start_nodes(
    lab: Lab, etcd_endpoints: Sequence[str], indexes: Optional[Iterable[int]] = None, **kw: object
) -> List[YaimNode]:
    """Start a YaimNode on each of `indexes` (default: all nodes) with the same settings."""
    chosen = lab.node_indexes if indexes is None else indexes
    return [YaimNode(lab, i, etcd_endpoints, **kw).start() for i in chosen]
