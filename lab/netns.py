"""A throw-away network of namespaces: a hub with two bridges, N nodes and a client.

Layout for prefix P (all names unique to this lab):

    P-hub   bridge P-dcs 192.0.2.1/24 (+ .2, .3 for more etcd members)
            bridge P-lan (layer 2 only)
    P-nI    dcs0 192.0.2.(10+I)/24 -> P-dcs      (veth P-dI in the hub)
            lan0 198.51.100.(10+I)/24, 2001:db8::(10+I)/64 -> P-lan   (veth P-lI)
    P-cli   lan0 198.51.100.2/24, 2001:db8::2/64 -> P-lan            (veth P-lc)

Nothing in the root namespace is touched: every veth is created inside the hub
with its peer placed straight into the node's namespace.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set

from lab.rtnl import IPAddress, LinkState, NoInterface, read_link
from lab.util import command_line, netns_argv, spawn, stop_processes, wait_until

HUB_DCS = "192.0.2.1"
ETCD_HOSTS = ("192.0.2.1", "192.0.2.2", "192.0.2.3")
CLIENT_LAN = "198.51.100.2"
CLIENT_LAN6 = "2001:db8::2"
HEALTH_SCRIPT = Path(__file__).with_name("health.py")
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{1,7}$")
PREFIX_TRIES = 5
STOP_TIMEOUT = 3.0
MAX_NODES = 244  # node i's addresses .(10+i) stay below the /24's broadcast address
NFT_TABLE = "ytimpair"


class LabError(RuntimeError):
    """A lab command failed."""


def dcs_address(i: int) -> str:
    """Node i's base address on dcs0."""
    return f"192.0.2.{10 + i}"


def lan_address(i: int) -> str:
    """Node i's base IPv4 address on lan0."""
    return f"198.51.100.{10 + i}"


def lan_address6(i: int) -> str:
    """Node i's base IPv6 address on lan0."""
    return f"2001:db8::{10 + i}"


def list_netns() -> List[str]:
    """Names of all named network namespaces (`ip netns list`)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


class Lab:
    """Hub, `nodes` node namespaces and a client namespace; a context manager.

    Files (logs, configs, health state) go to `base_dir`, a temporary directory
    removed at teardown when not given. Nodes are numbered from 1.
    """

    def __init__(
        self, nodes: int = 3, prefix: Optional[str] = None, base_dir: Optional[Path] = None
    ) -> None:
        if not 1 <= nodes <= MAX_NODES:
            raise ValueError(f"nodes must be 1..{MAX_NODES}, got {nodes}")
        if prefix is not None and not PREFIX_RE.match(prefix):
            raise ValueError(f"prefix must match {PREFIX_RE.pattern}, got {prefix!r}")
        self.nodes = nodes
        self._fixed_prefix = prefix
        self.prefix = prefix or ""
        self._own_dir = base_dir is None
        self.base_dir = base_dir if base_dir is not None else Path(tempfile.mkdtemp(prefix="yt-"))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._namespaces: List[str] = []
        self._procs: List[subprocess.Popen] = []

    # names ---------------------------------------------------------------

    @property
    def hub(self) -> str:
        return self.prefix + "-hub"

    @property
    def cli(self) -> str:
        return self.prefix + "-cli"

    def node_ns(self, i: int) -> str:
        """Namespace of node i (1-based)."""
        if not 1 <= i <= self.nodes:
            raise IndexError(f"no node {i} in a lab of {self.nodes}")
        return f"{self.prefix}-n{i}"

    @property
    def node_indexes(self) -> range:
        return range(1, self.nodes + 1)

    # commands ------------------------------------------------------------

    def run(
        self,
        ns: str,
        argv: Sequence[str],
        check: bool = True,
        timeout: float = 10.0,
        input: Optional[str] = None,
    ) -> subprocess.CompletedProcess:
        """Run `argv` inside namespace `ns`; LabError on a non-zero exit when `check`."""
        return self._exec(netns_argv(ns, argv), check, timeout, input)

    def ip(self, ns: str, *args: str, input: Optional[str] = None) -> str:
        """`ip -n NS ARGS...`; its stdout."""
        return self._exec(["ip", "-n", ns, *args], True, 10.0, input).stdout

    @staticmethod
    def _exec(
        argv: Sequence[str], check: bool, timeout: float, input: Optional[str]
    ) -> subprocess.CompletedProcess:
        try:
            res = subprocess.run(
                list(argv), capture_output=True, text=True, timeout=timeout, input=input
            )
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"{command_line(argv)}: timed out after {timeout} s") from exc
        if check and res.returncode != 0:
            raise LabError(f"{command_line(argv)}: exit {res.returncode}\n{res.stdout}{res.stderr}")
        return res

    def _batch(self, ns: str, lines: Sequence[str]) -> None:
        self.ip(ns, "-batch", "-", input="\n".join(lines) + "\n")

    # building ------------------------------------------------------------

    def __enter__(self) -> Lab:
        return self.build()

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def build(self) -> Lab:
        """Create namespaces, bridges, veths and addresses; tear down on any failure."""
        try:
            self._add_hub()
            for ns in [self.cli, *map(self.node_ns, self.node_indexes)]:
                self._add_ns(ns)
            self._wire()
        except BaseException:
            self.teardown()
            raise
        return self

    def _add_ns(self, ns: str) -> None:
        self._exec(["ip", "netns", "add", ns], True, 10.0, None)
        self._namespaces.append(ns)

    def _add_hub(self) -> None:
        """Create the hub namespace; a random prefix is retried if its name exists
        (`ip netns add` fails then, so concurrent labs never share a prefix)."""
        for _ in range(PREFIX_TRIES):
            if self._fixed_prefix is None:
                self.prefix = "yt" + secrets.token_hex(2)
            try:
                self._add_ns(self.hub)
                return
            except LabError:
                if self._fixed_prefix is not None or self.hub not in list_netns():
                    raise
        raise LabError(f"no free lab prefix after {PREFIX_TRIES} tries")

    def _wire(self) -> None:
        p = self.prefix
        hub = [
            "link set lo up",
            f"link add {p}-dcs type bridge",
            f"link add {p}-lan type bridge",
            f"link set {p}-dcs up",
            f"link set {p}-lan up",
            *(f"addr add {a}/24 dev {p}-dcs" for a in ETCD_HOSTS),
            f"link add {p}-lc type veth peer name lan0 netns {self.cli}",
            f"link set {p}-lc master {p}-lan up",
        ]
        for i in self.node_indexes:
            ns = self.node_ns(i)
            hub += [
                f"link add {p}-d{i} type veth peer name dcs0 netns {ns}",
                f"link set {p}-d{i} master {p}-dcs up",
                *self._lan_veth(i),
            ]
        self._batch(self.hub, hub)
        lan = ["link set lo up", "link set lan0 up"]
        self._batch(
            self.cli,
            [
                *lan,
                f"addr add {CLIENT_LAN}/24 dev lan0",
                f"addr add {CLIENT_LAN6}/64 dev lan0 nodad",
            ],
        )
        for i in self.node_indexes:
            self._batch(
                self.node_ns(i),
                [
                    "link set lo up",
                    "link set dcs0 up",
                    f"addr add {dcs_address(i)}/24 dev dcs0",
                    *self._lan_setup(i),
                ],
            )

    def _lan_veth(self, i: int) -> List[str]:
        """The hub's commands that make node i's lan0 and plug it into the lan bridge."""
        p = self.prefix
        return [
            f"link add {p}-l{i} type veth peer name lan0 netns {self.node_ns(i)}",
            f"link set {p}-l{i} master {p}-lan up",
        ]

    @staticmethod
    def _lan_setup(i: int) -> List[str]:
        """Node i's commands that set its lan0 up with its base addresses."""
        return [
            "link set lan0 up",
            f"addr add {lan_address(i)}/24 dev lan0",
            f"addr add {lan_address6(i)}/64 dev lan0 nodad",
        ]

    # teardown ------------------------------------------------------------

    def teardown(self) -> None:
        """Stop the processes started here (by pid), kill any other process still in
        one of our namespaces (`ip netns pids`), delete the namespaces (which removes
        their bridges and veths) and the temporary directory if it is ours."""
        self.stop_processes()
        errors = []
        for ns in reversed(self._namespaces):
            for pid in self._exec(["ip", "netns", "pids", ns], False, 10.0, None).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            res = self._exec(["ip", "netns", "del", ns], False, 10.0, None)
            if res.returncode != 0:
                errors.append(f"{ns}: {res.stderr.strip()}")
        self._namespaces = []
        if self._own_dir:
            shutil.rmtree(str(self.base_dir), ignore_errors=True)
        if errors:
            raise LabError("teardown: " + "; ".join(errors))

    # processes -----------------------------------------------------------

    def spawn(
        self,
        ns: str,
        argv: Sequence[str],
        log_path: Path,
        env: Optional[Dict[str, str]] = None,
    ) -> subprocess.Popen:
        """Start `argv` in namespace `ns`, logging to `log_path`; teardown stops it."""
        proc = spawn(argv, log_path, ns, env)
        self._procs.append(proc)
        return proc

    def stop_processes(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop every process started with `spawn`: SIGTERM, SIGKILL after `timeout`."""
        stop_processes(reversed(self._procs), timeout)
        self._procs = []

    def start_health(self, i: int, port: int = 8008) -> str:
        """Start the health server (lab/health.py) in node i, healthy; its URL."""
        self.set_health(i, True)
        argv = [sys.executable, str(HEALTH_SCRIPT), "--port", str(port)]
        argv += ["--state", str(self._health_file(i))]
        self.spawn(self.node_ns(i), argv, self.base_dir / f"health-n{i}.log")
        url = f"http://127.0.0.1:{port}/health"
        probe = ["curl", "-s", "--max-time", "1", "-o", "/dev/null", "-w", "%{http_code}", url]
        wait_until(
            lambda: self.run(self.node_ns(i), probe, check=False).stdout == "200",
            10.0,
            what=f"health server of node {i} on {url}",
        )
        return url

    def set_health(self, i: int, ok: bool) -> None:
        """Make node i's health server answer 200 (`ok`) or 500."""
        path = self._health_file(i)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("ok" if ok else "fail")
        os.replace(str(tmp), str(path))

    def _health_file(self, i: int) -> Path:
        return self.base_dir / f"health-n{i}.state"

    # network state ---------------------------------------------------------

    def link(self, i: int, dev: str, up: bool) -> None:
        """Set node i's `dev` ("dcs0" or "lan0") up or down."""
        self.ip(self.node_ns(i), "link", "set", dev, "up" if up else "down")

    def lan_up(self, i: int) -> None:
        """Set node i's lan0 up again, with its base IPv6 address (the kernel flushes IPv6
        addresses from an interface set down)."""
        ns = self.node_ns(i)
        self.ip(ns, "link", "set", "lan0", "up")
        if f"{lan_address6(i)}/64" not in self.ip(ns, "-6", "addr", "show", "dev", "lan0"):
            self.ip(ns, "addr", "add", f"{lan_address6(i)}/64", "dev", "lan0", "nodad")

    def reboot(self, i: int, label: str = "lan0:yaim") -> None:
        """Node i comes back as a crashed machine does from its reboot: no address of
        yaim's on lan0 (a kernel keeps none across one), dcs0 and lan0 up again."""
        self.ip(self.node_ns(i), "addr", "flush", "dev", "lan0", "label", label)
        self.link(i, "dcs0", up=True)
        self.lan_up(i)

    def carrier(self, i: int, up: bool) -> None:
        """Set the hub's end of node i's lan0 veth up or down: lan0 loses or gets back its
        carrier while it stays up itself."""
        self.ip(self.hub, "link", "set", f"{self.prefix}-l{i}", "up" if up else "down")

    def delete_lan(self, i: int) -> None:
        """Delete node i's lan0 (and so its veth pair)."""
        self.ip(self.node_ns(i), "link", "del", "lan0")

    def create_lan(self, i: int) -> None:
        """Make node i's lan0 again as `build` did: veth to the lan bridge, base addresses."""
        self._batch(self.hub, self._lan_veth(i))
        self._batch(self.node_ns(i), self._lan_setup(i))

    def impair(self, i: int, loss: int = 30, delay_ms: int = 100) -> str:
        """Lose `loss` % of the packets node i sends on dcs0 and lan0, and delay them by
        `delay_ms`, with `tc ... netem`; where the kernel lacks sch_netem, lose them
        with an nftables `numgen random` rule instead (no delay). Returns what was
        applied; LabError when neither works. `clear_impairment` undoes it."""
        ns = self.node_ns(i)
        netem = ["netem", "loss", f"{loss}%", "delay", f"{delay_ms}ms"]
        res = self.run(ns, ["tc", "qdisc", "replace", "dev", "dcs0", "root", *netem], check=False)
        if res.returncode == 0:
            self.run(ns, ["tc", "qdisc", "replace", "dev", "lan0", "root", *netem])
            return f"netem loss {loss}% delay {delay_ms}ms"
        if shutil.which("nft") is None:
            raise LabError(f"tc netem: {res.stderr.strip()}; and no nft for a fallback")
        rule = f'oifname {{ "dcs0", "lan0" }} numgen random mod 100 < {loss} drop'
        chain = f"chain out {{\ntype filter hook output priority 0;\n{rule}\n}}"
        self.run(ns, ["nft", "-f", "-"], input=f"table inet {NFT_TABLE} {{\n{chain}\n}}\n")
        return f"nftables loss {loss}% without delay (tc netem: {res.stderr.strip()})"

    def clear_impairment(self, i: int) -> None:
        """Undo `impair` on node i (whatever of it is there)."""
        ns = self.node_ns(i)
        for dev in ("dcs0", "lan0"):
            self.run(ns, ["tc", "qdisc", "del", "dev", dev, "root"], check=False)
        if shutil.which("nft") is not None:
            self.run(ns, ["nft", "delete", "table", "inet", NFT_TABLE], check=False)

    def lan_state(self, i: int) -> LinkState:
        """Node i's lan0: whether it is up, and its addresses besides the base and
        link-local ones, with their labels (IPv6 addresses have none). A deleted lan0
        is down with no address."""
        try:
            state = read_link(self.node_ns(i), "lan0")
        except NoInterface:
            return LinkState(False, {})
        base = {ipaddress.ip_address(lan_address(i)), ipaddress.ip_address(lan_address6(i))}
        extra = {
            a: lab for a, lab in state.addresses.items() if a not in base and not a.is_link_local
        }
        return LinkState(state.up, extra)

    def address_labels(self, i: int) -> Dict[IPAddress, Optional[str]]:
        """`lan_state(i).addresses`: address -> label."""
        return self.lan_state(i).addresses

    def addresses(self, i: int, label: Optional[str] = None) -> Set[IPAddress]:
        """Node i's lan0 addresses besides the base and link-local ones; only those
        labelled `label` (e.g. "lan0:yaim") when given."""
        return {a for a, lab in self.address_labels(i).items() if label is None or lab == label}

    def neigh(self, ns: str) -> Dict[IPAddress, str]:
        """The neighbour (ARP/NDP) cache of namespace `ns`: address -> MAC, for entries
        that have one."""
        entries = json.loads(self.ip(ns, "-j", "neigh", "show"))
        return {ipaddress.ip_address(e["dst"]): e["lladdr"] for e in entries if "lladdr" in e}

    def mac(self, ns: str, dev: str = "lan0") -> str:
        """MAC address of `dev` in namespace `ns`."""
        return json.loads(self.ip(ns, "-j", "link", "show", "dev", dev))[0]["address"]

    def curl(self, *args: str) -> str:
        """Run curl with `args` in the hub namespace (where etcd listens); its stdout."""
        return self.run(self.hub, ["curl", "--max-time", "5", *args]).stdout
