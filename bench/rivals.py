"""The failover tools under test, as adapters the scenario driver (bench.failover) drives
alike: keepalived and vip-manager here, yaim in bench.failover.

A `Tool` runs one set of processes per node of the lab and knows how to start them,
and how to crash, stop or sicken a node and bring it back. A tool lists the scenarios
it can do at all; the driver never fakes the others.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from lab.etcd import EtcdCluster
from lab.netns import Lab, lan_address
from lab.util import stop_processes

POOL_NET = "198.51.100.96/28"  # holds the whole pool and no base address of the lab
STOP_TIMEOUT = 10.0

# scenario -> the Tool method that causes it (restore undoes any of them)
ACTIONS = {"crash": "crash", "clean": "stop", "unhealthy": "unhealthy", "key-change": "key_change"}


@dataclass
class Env:
    """What every tool shares: the lab, its etcd, the pool and the health URL of every node."""

    lab: Lab
    etcd: EtcdCluster
    pool: List[str]
    health_url: str

    def node_name(self, i: int) -> str:
        return f"n{i}"


def preference(k: int, nodes: int) -> List[int]:
    """Nodes (1-based) in the order they should hold pool address number `k`: each node first
    for every `nodes`-th address, and a node's addresses go to different nodes when it
    fails (the second choice rotates with k // nodes)."""
    first = k % nodes
    second = (first + 1 + (k // nodes) % (nodes - 1)) % nodes
    rest = [n for n in range(nodes) if n not in (first, second)]
    return [n + 1 for n in [first, second, *rest]]


class Tool:
    """One failover tool on every node of the lab."""

    name = ""
    scenarios: Tuple[str, ...] = ("crash", "clean", "unhealthy")

    def __init__(self, env: Env) -> None:
        self.env = env
        self.lab = env.lab
        self.procs: Dict[int, List[subprocess.Popen]] = {}

    # to define per tool ----------------------------------------------------

    def setup(self) -> None:
        """Prepare shared state (DCS keys) before any node starts."""

    def start_node(self, i: int) -> List[subprocess.Popen]:
        """Start the tool's processes on node i."""
        raise NotImplementedError

    def log_paths(self) -> List[Path]:
        """The logs to show when something goes wrong."""
        return []

    def deletions(self) -> List[Tuple[float, str]]:
        """(time, address) of every mark deletion seen in the DCS, for tools that have marks."""
        return []

    # shared ------------------------------------------------------------------

    def start(self) -> None:
        self.setup()
        for i in self.lab.node_indexes:
            self.procs[i] = self.start_node(i)

    def crash(self, i: int) -> None:
        """The machine goes away: SIGKILL every process of the tool on node i (each one's
        process group, so children such as keepalived's VRRP process die with it, at
        once), then dcs0 and lan0 down. Its addresses stay on its dead lan0."""
        for proc in self.procs[i]:
            os.killpg(proc.pid, signal.SIGKILL)
        self.links(i, "down")

    def stop(self, i: int) -> None:
        """A clean stop: SIGTERM to the tool's processes on node i."""
        for proc in self.procs[i]:
            proc.send_signal(signal.SIGTERM)

    def unhealthy(self, i: int) -> None:
        """Node i's health endpoint starts answering 500."""
        self.lab.set_health(i, False)

    def restore(self, scenario: str, i: int) -> None:
        """Undo `scenario` on node i: health back; or the processes gone, a crashed node's
        addresses dropped (as a reboot would) and its links up, then the tool restarted."""
        if scenario == "unhealthy":
            self.lab.set_health(i, True)
            return
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in self.procs[i]:  # a clean stop is under way: let it end on its own
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
        stop_processes(self.procs[i], STOP_TIMEOUT)
        if scenario == "crash":
            self.flush(i)
            self.links(i, "up")
        self.procs[i] = self.start_node(i)

    def links(self, i: int, state: str) -> None:
        """Set node i's dcs0 and lan0 "up" or "down" together."""
        batch = f"link set dcs0 {state}\nlink set lan0 {state}\n"
        self.lab.ip(self.lab.node_ns(i), "-batch", "-", input=batch)

    def flush(self, i: int) -> None:
        """Remove every pool address from node i's lan0."""
        self.lab.ip(self.lab.node_ns(i), "addr", "flush", "dev", "lan0", "to", POOL_NET)

    def shutdown(self) -> None:
        """Stop the tool everywhere and leave no pool address behind."""
        stop_processes([p for procs in self.procs.values() for p in procs], STOP_TIMEOUT)
        self.procs = {}
        for i in self.lab.node_indexes:
            self.flush(i)


KEEPALIVED_GLOBAL = """\
global_defs {{
    router_id {name}
    script_user root
    enable_script_security
}}

vrrp_script health {{
    script "/usr/bin/curl -sf -o /dev/null --max-time 1 {url}"
    interval 1
    timeout 2
    fall 1
    rise 1
}}
"""

KEEPALIVED_INSTANCE = """
vrrp_instance a{k} {{
    state BACKUP
    interface lan0
    virtual_router_id {vrid}
    priority {priority}
    advert_int 1
    unicast_src_ip {src}
    unicast_peer {{
{peers}
    }}
    virtual_ipaddress {{
        {address}/32 dev lan0
    }}
    track_script {{
        health
    }}
}}
"""

# First, second, third choice (see `preference`). A backup takes over skew = (256 -
# priority) / 256 s after the master's priority-0 advert on a clean stop, and after
# 3 x advert_int + skew without adverts (RFC 3768 6.4.2): 251 makes the clean stop 0.02 s
# and a crash 2.0..3.0 s; 248 keeps the third choice's timer 12 ms behind the second's.
PRIORITIES = (254, 251, 248)
VRID_BASE = 50


class Keepalived(Tool):
    """keepalived (VRRP only) per node: one vrrp_instance per address, unicast to the other
    nodes, advert_int 1, preempting, each node first choice for its share of the pool
    (the priority scheme is how keepalived spreads), a track_script on the node's health
    URL (interval 1, fall 1, rise 1) so an unhealthy node goes to FAULT."""

    name = "keepalived"

    def __init__(self, env: Env, priorities: Sequence[int] = PRIORITIES) -> None:
        super().__init__(env)
        self.priorities = list(priorities)

    def config(self, i: int) -> str:
        n = self.lab.nodes
        peers = "\n".join(f"        {lan_address(j)}" for j in self.lab.node_indexes if j != i)
        text = KEEPALIVED_GLOBAL.format(name=self.env.node_name(i), url=self.env.health_url)
        for k, address in enumerate(self.env.pool):
            choice = preference(k, n).index(i)
            priority = self.priorities[min(choice, len(self.priorities) - 1)]
            text += KEEPALIVED_INSTANCE.format(
                k=k,
                vrid=VRID_BASE + k,
                priority=priority,
                src=lan_address(i),
                peers=peers,
                address=address,
            )
        return text

    def _path(self, i: int, suffix: str) -> Path:
        return self.lab.base_dir / f"keepalived-n{i}{suffix}"

    def start_node(self, i: int) -> List[subprocess.Popen]:
        conf = self._path(i, ".conf")
        conf.write_text(self.config(i))
        argv = ["keepalived", "--dont-fork", "--log-console", "--log-detail", "--no-syslog"]
        argv += ["--vrrp", "-f", str(conf), "-p", str(self._path(i, ".pid"))]
        argv += ["-r", str(self._path(i, "-vrrp.pid")), "-c", str(self._path(i, "-check.pid"))]
        return [self.lab.spawn(self.lab.node_ns(i), argv, self._path(i, ".log"))]

    def log_paths(self) -> List[Path]:
        return [self._path(i, ".log") for i in self.lab.node_indexes]


VIP_KEY_DIR = "/service/vipbench"
VIP_INTERVAL = 1000


class VipManager(Tool):
    """vip-manager per node and address (`interval 1000`), each watching the address's
    trigger key for the node's name. It has no failure detection of its own: whatever
    writes the key (Patroni) decides, so it only does "key-change": the bench rewrites
    the keys of one node's addresses to the next choice (`preference`)."""

    name = "vip-manager"
    scenarios = ("key-change",)

    def key(self, address: str) -> str:
        return f"{VIP_KEY_DIR}/{address}"

    def holder(self, k: int, choice: int = 0) -> str:
        return self.env.node_name(preference(k, self.lab.nodes)[choice])

    def setup(self) -> None:
        for k, address in enumerate(self.env.pool):
            self.env.etcd.put(self.key(address), self.holder(k))

    def start_node(self, i: int) -> List[subprocess.Popen]:
        procs = []
        for address in self.env.pool:
            argv = ["vip-manager", "--ip", address, "--netmask", "32", "--interface", "lan0"]
            argv += ["--trigger-key", self.key(address), "--trigger-value", self.env.node_name(i)]
            argv += ["--dcs-type", "etcd", "--dcs-endpoints", self.env.etcd.endpoints[0]]
            argv += ["--interval", str(VIP_INTERVAL)]
            log = self.lab.base_dir / f"vip-manager-n{i}-{address}.log"
            procs.append(self.lab.spawn(self.lab.node_ns(i), argv, log))
        return procs

    def _first_choice_of(self, i: int) -> Sequence[int]:
        return [k for k in range(len(self.env.pool)) if preference(k, self.lab.nodes)[0] == i]

    def key_change(self, i: int) -> None:
        """Hand node i's addresses to their second choices, one key write each."""
        for k in self._first_choice_of(i):
            self.env.etcd.put(self.key(self.env.pool[k]), self.holder(k, 1))

    def restore(self, scenario: str, i: int) -> None:
        for k in self._first_choice_of(i):
            self.env.etcd.put(self.key(self.env.pool[k]), self.holder(k))

    def log_paths(self) -> List[Path]:
        return sorted(self.lab.base_dir.glob("vip-manager-*.log"))
