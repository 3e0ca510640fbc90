"""Fixtures and helpers of the integration tests: for the DCS tests one etcd on loopback
per module, backends on it, a request counter; for the daemons in the lab their timing,
the pool and the steps many tests share; for the package tests the .deb and its unit;
for the netlink tests a namespace with a veth pair and Python run inside it.

The test modules import these helpers from here, never from each other.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import ipaddress
import json
import secrets
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Dict, List

import etcd as python_etcd
import pytest
import yaml

from lab.etcd import EtcdCluster, gateway_path
from lab.netns import HUB_DCS
from lab.observer import format_holders
from lab.util import wait_until
from yaim import __version__, config, dcs

TTL_MS = 2000  # etcd's smallest lease TTL with its default timing is 2 s


@pytest.fixture(scope="module")
def etcd():
    with EtcdCluster(size=1) as cluster:
        yield cluster


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# No proxy: the test's etcd is on this machine, whatever the environment says.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def v3(etcd, path, body):
    """One request to the gateway, as an operator's script would make it (the standard
    library's client: yaim's own is under test, and the venv has no other); `path` as
    etcd 3.4 serves it, sent to the prefix of the release under test."""
    request = urllib.request.Request(
        etcd.endpoints[0] + gateway_path(path),
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with DIRECT.open(request, timeout=5) as response:
        answer = json.loads(response.read())
    assert "error" not in answer, answer
    return answer


def key_of(etcd, key):
    """The raw v3 key-value of `key` (value decoded, lease as int), None if absent."""
    kvs = v3(etcd, "/v3/kv/range", {"key": b64(key)}).get("kvs", [])
    if not kvs:
        return None
    kv = kvs[0]
    return base64.b64decode(kv.get("value", "")).decode(), int(kv.get("lease", 0))


def write_outside(make, etcd, i: int) -> int:
    """A write outside the cluster directory, as another cluster's; the index it made."""
    if make.dcs_type == "etcd3":
        answer = v3(etcd, "/v3/kv/put", {"key": b64("/elsewhere/k"), "value": b64(str(i))})
        return int(answer["header"]["revision"])
    return etcd.put("/elsewhere/k", str(i))["node"]["modifiedIndex"]


def lose_history(make, etcd) -> None:
    """Make etcd drop the events after now: v3 compacts its history, v2 goes past the
    last 1000 events it keeps (whatever their keys)."""
    if make.dcs_type == "etcd3":
        v3(etcd, "/v3/kv/compaction", {"revision": str(write_outside(make, etcd, 0))})
        return
    raw = python_etcd.Client(host="127.0.0.1", port=etcd.members[0].client_port)
    for i in range(1010):
        raw.write("/elsewhere/k", str(i))


class CuttingRelay:
    """A TCP relay on loopback to one etcd member, whose connections a test can cut (the
    `relay` fixture's: etcd cut off, or gone)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        self.sockets = []
        self.sent = b""  # what the clients sent, for a test to see a request go by
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.port))
            with self.lock:
                self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if upstream:
                    with self.lock:
                        self.sent += data
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """End every connection through the relay; it goes on accepting new ones."""
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """No more connections either: etcd is gone."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.cut()


@pytest.fixture
def relay(etcd):
    relay = CuttingRelay(etcd.members[0].client_port)
    yield relay
    relay.close()


@pytest.fixture
def make(tmp_path, etcd, request):
    """Backends for one fresh cluster directory, one per node name; `dcs_type` etcd3
    unless the test is parametrised with it or its module sets `DCS_TYPE`."""
    cluster = "t" + str(abs(hash(request.node.name)) % 10**8)
    dcs_type = getattr(request, "param", getattr(request.module, "DCS_TYPE", "etcd3"))

    def backend(node="n1", endpoints=None, **settings):
        values = {
            "dcs-type": dcs_type,
            "dcs-endpoints": endpoints or etcd.endpoints,
            "dcs-clustername": cluster,
            "node-name": node,
            "interface": "lo",
            "checker-type": "none",
            "interval": 500,
            "ttl": TTL_MS,
            "retry-after": 50,
        }
        values.update(settings)
        path = tmp_path / f"{node}.yml"
        path.write_text(yaml.safe_dump(values))
        return dcs.connect(config.load(str(path), environ={}))

    backend.root = "/service/" + cluster
    backend.dcs_type = dcs_type

    def add_pool(address):
        if dcs_type == "etcd3":
            v3(etcd, "/v3/kv/put", {"key": b64(f"{backend.root}/ips/{address}")})
        else:
            etcd.put_dir(f"{backend.root}/ips/{address}")

    backend.add_pool = add_pool
    return backend


@pytest.fixture
def requests_made(monkeypatch):
    """Counts every HTTP request any client in this process sends (python-etcd through
    urllib3 and yaim.httpclient both start each one with http.client's putrequest)."""
    count = [0]
    putrequest = http.client.HTTPConnection.putrequest

    def counting(connection, *args, **kwargs):
        count[0] += 1
        return putrequest(connection, *args, **kwargs)

    monkeypatch.setattr(http.client.HTTPConnection, "putrequest", counting)
    return lambda: count[0]


STATUS = "http://127.0.0.1:9720"  # a lab node's status endpoint, in its namespace


def request(lab, i, path, method="GET"):
    """(status code, body) of one request to node i's endpoint."""
    argv = ["curl", "-s", "--max-time", "2", "-X", method, "-w", "\n%{http_code}", STATUS + path]
    out = lab.lab.run(lab.lab.node_ns(i), argv).stdout
    body, _, code = out.rpartition("\n")
    return int(code), body


def status(lab, i):
    code, body = request(lab, i, "/status")
    assert code == 200, body
    return json.loads(body)


# --- daemons in the lab: the timing of the end-to-end tests and their shared steps ---

# interval 500 ms, ttl 2000 ms (whole seconds, as etcd keeps TTLs). The contract's bounds:
# a crash is repaired within ttl + 2 x interval + 1 s, a clean stop, an unhealthy result or
# a new address within 2 x interval + 1 s.
INTERVAL, TTL = 500, 2000
CRASH_BOUND = (TTL + 2 * INTERVAL) / 1000 + 1
CLEAN_BOUND = 2 * INTERVAL / 1000 + 1
POOL = [ipaddress.ip_address(f"198.51.100.{100 + i}") for i in range(6)]


def put_address(lab, address, endpoint=HUB_DCS):
    """The operator's way to add an address to the pool (v2: the seed's curl)."""
    lab.keys(f"http://{endpoint}:2379").add(address)


def delete_address(lab, address):
    """The operator's way to remove an address from the pool (v2: the seed's curl)."""
    lab.keys().remove(address)


def counts(holders, addresses=POOL):
    """Node index -> number of `addresses` it holds; None if one is unheld or doubly held."""
    if any(len(holders.get(a, ())) != 1 for a in addresses):
        return None
    return Counter(holders[a][0] for a in addresses)


def settled(nodes, addresses=POOL):
    """A predicate: every address on exactly one of `nodes`, counts differing by at most 1."""

    def check(holders):
        per_node = counts(holders, addresses)
        if per_node is None or set(per_node) - set(nodes):
            return False
        spread = [per_node.get(n, 0) for n in nodes]
        return max(spread) - min(spread) <= 1

    return check


def failsafe_settings(lab) -> Dict[str, object]:
    """The settings of a node with the failsafe on: the cluster's one peer secret (written
    once per lab, readable by its owner only); peer-listen defaults to lan0's address."""
    path = lab.lab.base_dir / "peer.key"
    if not path.exists():
        path.write_bytes(b"the lab cluster's shared peer secret\n")
        path.chmod(0o600)
    return {"failsafe": True, "peer_secret_file": str(path)}


def start_cluster(lab, n=3, **settings):
    """n daemons on the pool written straight into etcd, settled."""
    settings.setdefault("interval", INTERVAL)
    settings.setdefault("ttl", TTL)
    for address in POOL:
        put_address(lab, address)
    nodes = [lab.node(i, **settings).start() for i in range(1, n + 1)]
    lab.observer.wait_for(settled(range(1, n + 1)), 15, "the pool to settle")
    return nodes


def cut_n1_from_etcd(lab):
    """Set n1's dcs0 down; (when it was cut, when n1 had fenced, when n2 and n3 had taken
    over) as monotonic times."""
    mine = {a for a, h in lab.observer.holders().items() if h == [1]}
    cut_at = time.monotonic()
    lab.lab.link(1, "dcs0", up=False)
    gone = lab.observer.wait_for(
        lambda h: not any(1 in h.get(a, ()) for a in mine), TTL / 1000 + 2, "n1 to fence\n"
    )
    taken = lab.observer.wait_for(settled([2, 3]), CRASH_BOUND + 5, "takeover")
    return cut_at, gone.time, taken.time


def unchanged_for(lab, before, since, seconds):
    """The holders seen from `since` on, for `seconds`, that differ from `before`."""
    wait_until(
        lambda: lab.observer.samples[-1].time >= since + seconds,
        seconds + 5,
        what=f"{seconds} s of observation",
    )
    window = [s for s in lab.observer.samples if since <= s.time <= since + seconds]
    return [format_holders(s.holders) for s in window if s.holders != before]


def holding(lab, i):
    """The addresses the observer sees on node i."""
    return {a for a, h in lab.observer.holders().items() if i in h}


def yaimctl(lab, *args: str, node: int = 1) -> subprocess.CompletedProcess:
    """`yaimctl -c <node's yaim.yml> ARGS` in that node's namespace."""
    config_path = lab.nodes[node - 1].config_path
    argv = [sys.executable, "-m", "yaim.ctl", "-c", str(config_path), *args]
    return lab.lab.run(lab.lab.node_ns(node), argv, check=False)


def ok(lab, *args: str, node: int = 1) -> str:
    """yaimctl's output, asserting it succeeded."""
    done = yaimctl(lab, *args, node=node)
    assert done.returncode == 0, done.stderr
    return done.stdout


def start(lab, n: int = 3, pool=POOL, **settings):
    """n daemons, then the pool added with `yaimctl ips add`, settled."""
    settings.setdefault("interval", INTERVAL)
    settings.setdefault("ttl", TTL)
    nodes = [lab.node(i, **settings).start() for i in range(1, n + 1)]
    added = ok(lab, "ips", "add", *map(str, pool))
    assert added.splitlines() == [f"{a}: added" for a in pool]
    lab.observer.wait_for(settled(range(1, n + 1), pool), 15, "the pool to settle")
    return nodes


# --- the packages (test_packaging, test_systemd) ---

DEB = Path(__file__).resolve().parents[2] / "dist" / f"yaim_{__version__}_all.deb"


@pytest.fixture(scope="session")
def built_deb() -> Path:
    """`make deb` of the working tree, once for every test that installs it (apt on this
    host, dpkg in the bookworm and bullseye trees)."""
    built = subprocess.run(
        ["make", "-C", str(DEB.parents[1]), "deb"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0 and DEB.is_file(), built.stdout[-4000:]
    return DEB


# CAP_NET_ADMIN (12) and CAP_NET_RAW (13), as /proc/PID/status shows capability sets.
TWO_CAPS = (1 << 12) | (1 << 13)


def service_section(path: Path) -> Dict[str, List[str]]:
    """The [Service] settings of a unit file: name -> every value given, in order."""
    settings: Dict[str, List[str]] = {}
    section = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            name, _, value = line.partition("=")
            settings.setdefault(name.strip(), []).append(value.strip())
    return settings


@pytest.fixture
def netns():
    """A namespace with a veth pair (lan0 <-> peer0), both up, 198.51.100.10/24 on lan0;
    deleted afterwards."""
    name = "yt" + secrets.token_hex(3) + "-nl"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for command in (
            "link add lan0 type veth peer name peer0",
            "link set lan0 up",
            "link set peer0 up",
            "addr add 198.51.100.10/24 dev lan0",
        ):
            subprocess.run(["ip", "-n", name, *command.split()], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def run_in(netns: str, body: str, prelude: str = ""):
    """Run `body` (Python, which sets `result`) inside the namespace after `prelude`; its
    result as JSON."""
    script = "import ipaddress, json\nresult = None\n" + prelude + textwrap.dedent(body)
    script += "\nprint(json.dumps(result))\n"
    done = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])
