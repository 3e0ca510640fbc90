"""Scale: one etcd and N yaim daemons sharing M addresses, for growing N and M.

The namespace lab of the tests (lab.netns.Lab): etcd (data on tmpfs, so
fsync does not dominate) and one health server in the hub, and N node namespaces,
each with one daemon whose addresses go on its lan0. Per configuration: the
daemons' start-up, the cold-start settle, a steady window (CPU, peak RSS, DCS
requests from each daemon's /metrics) and the resettle after 10 % of the nodes crash.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import math
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import AbstractSet, Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from bench import projection, stats
from lab.daemon import YaimNode, dump_logs
from lab.etcd import EtcdCluster
from lab.netns import HEALTH_SCRIPT, HUB_DCS, Lab
from lab.rtnl import IPAddress, LinkState, socket_in
from lab.util import stop_processes, wait_until

NODES, ADDRESSES, DCS_TYPES = (3, 10, 30, 100), (10, 100, 1000), ("etcd", "etcd3")
QUICK_NODES, QUICK_ADDRESSES, QUICK_DCS = (3, 10), (10, 100), ("etcd3",)
WINDOW, QUICK_WINDOW = 20.0, 10.0
INTERVAL, TTL = 1000, 3000  # yaim's defaults
STATUS_PORT, HEALTH_PORT, ETCD_PORT = 9720, 8008, 2379
POOL_BASE = ipaddress.IPv6Address("2001:db8:5ca1::1")
CRASH_SHARE = 0.1
POLL = 0.1  # seconds between two looks at the interfaces
SETTLE_TIMEOUT = 60.0  # a configuration that has not settled by then is reported as such
# The settle's `released` notes live ttl from their release plus etcd's expiry tick (0.5 s),
# so the last can outlive the pause of one ttl after the settle; every one that expires is
# a watch event to every node, which a v3 daemon counts as a request. Seconds to wait for
# them beyond that pause.
NOTES_TIMEOUT = 5.0
ROOT = "/service/yaim"  # yaim's default dcs namespace and clustername
# Daemons started at once: 100 at once on 2 cores starve the first actuator rounds beyond
# the ttl, and yaim's watchdog stops such a daemon ("actuator thread has not finished a round").
START_BATCH = 10
TMPFS = Path("/dev/shm")
# etcd's own request counters, to cross-check the daemons' count: v3 requests reach
# etcd through its JSON gateway as gRPC calls, v2 requests are counted as they arrive.
ETCD_COUNTERS = {"etcd3": "grpc_server_started_total", "etcd": "etcd_http_received_total"}
# What etcd stored and sent on: writes (expiries included) and events sent to watchers
# (v2 has no event counter; each of its watch requests ends with at most one event).
ETCD_TRAFFIC = {
    "etcd3": {
        "writes": ("etcd_debugging_mvcc_put_total", "etcd_debugging_mvcc_delete_total"),
        "events": ("etcd_debugging_mvcc_events_total",),
    },
    "etcd": {
        "writes": ("etcd_debugging_store_writes_total", "etcd_debugging_store_expires_total"),
        "events": ("etcd_debugging_store_watch_requests_total",),
    },
}
# The sync key's write is the operation a daemon's counter calls "write" (the node key is
# written once, at start and when health returns; neither happens to a survivor).
SYNC_OPERATION = "write"
COLUMNS = (  # (table heading, row key, decimals; None: as it is)
    ("N", "nodes", None),
    ("M", "addresses", None),
    ("DCS", "dcs", None),
    ("start-up s", "startup_s", 1),
    ("settle s", "settle_s", 1),
    ("spread", "spread", None),
    ("resettle s", "resettle_s", 1),
    ("req/s", "req_s", 1),
    ("req/node/interval", "req_node_interval", 2),
    ("CPU % mean", "cpu_mean", 2),
    ("CPU % max", "cpu_max", 2),
    ("RSS MB max", "rss_max", 1),
    ("etcd CPU %", "etcd_cpu", 1),
    ("longest round ms", "round_max_ms", 0),
    ("fenced", "fenced", None),
)
FIGURES = (  # (row key, table heading) of the figures whose growth is fitted
    ("startup_s", "start-up s"),
    ("settle_s", "settle s"),
    ("resettle_s", "resettle s"),
    ("req_s", "DCS req/s"),
    ("req_node_interval", "req/node/interval"),
    ("cpu_mean", "CPU % per daemon"),
    ("rss_max", "peak RSS MB"),
    ("etcd_cpu", "etcd CPU %"),
)


# --- pure parts ---


def pool(m: int) -> List[ipaddress.IPv6Address]:
    """The M pool addresses (IPv6 documentation range: M goes beyond IPv4's)."""
    return [POOL_BASE + i for i in range(m)]


def holders(
    links: Mapping[int, LinkState], wanted: AbstractSet[IPAddress]
) -> Dict[IPAddress, List[int]]:
    """Address of `wanted` -> the nodes whose interface (node -> its state) is up and has it."""
    found: Dict[IPAddress, List[int]] = {}
    for node, link in sorted(links.items()):
        if link.up:
            for address in wanted.intersection(link.addresses):
                found.setdefault(address, []).append(node)
    return found


def spread(held: Mapping[IPAddress, List[int]], nodes: Sequence[int]) -> int:
    """Most minus fewest addresses on one of `nodes` (an address on two counts twice)."""
    counts = Counter(node for owners in held.values() for node in owners)
    values = [counts.get(node, 0) for node in nodes]
    return max(values) - min(values)


def settled(
    held: Mapping[IPAddress, List[int]], wanted: AbstractSet[IPAddress], nodes: Sequence[int]
) -> bool:
    """Every wanted address on exactly one of `nodes`, and their counts within one."""
    chosen = set(nodes)
    if any(len(held.get(a, ())) != 1 or held[a][0] not in chosen for a in wanted):
        return False
    return spread(held, nodes) <= 1


def describe(
    held: Mapping[IPAddress, List[int]], wanted: AbstractSet[IPAddress], nodes: Sequence[int]
) -> str:
    """How far from settled: addresses held by none, by two or more, and the counts."""
    counts = Counter(node for owners in held.values() for node in owners)
    unheld = sum(1 for a in wanted if not held.get(a))
    double = sum(1 for a in wanted if len(held.get(a, ())) > 1)
    fewest, most = min(counts.get(n, 0) for n in nodes), max(counts.get(n, 0) for n in nodes)
    return f"{unheld} held by none, {double} by several, {fewest} to {most} per node"


def victims(held: Mapping[IPAddress, List[int]], nodes: Sequence[int], count: int) -> List[int]:
    """The `count` nodes to crash: those holding the most addresses (then the last ones),
    so that a crash always moves addresses, also with fewer addresses than nodes."""
    counts = Counter(node for owners in held.values() for node in owners)
    return sorted(sorted(nodes, key=lambda n: (counts.get(n, 0), n), reverse=True)[:count])


def slope(xs: Sequence[float], ys: Sequence[Optional[float]]) -> Optional[float]:
    """The least-squares slope of log y against log x: k in y ~ x^k. Points without a
    positive y are left out; None without two distinct x left."""
    points = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if y is not None and y > 0]
    if len({x for x, _ in points}) < 2:
        return None
    mx = statistics.mean(x for x, _ in points)
    my = statistics.mean(y for _, y in points)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def order(exponents: Mapping[str, Optional[float]]) -> str:
    """Big-O text from fitted exponents per variable: under 0.3 counts as constant,
    0.7 to 1.3 as linear; '-' when nothing could be fitted."""
    known = {var: k for var, k in exponents.items() if k is not None}
    if not known:
        return "-"
    terms = [var if abs(k - 1) <= 0.3 else f"{var}^{k:.1f}" for var, k in known.items() if k >= 0.3]
    return "O(" + ("·".join(terms) or "1") + ")"


def exponents(
    rows: Sequence[Mapping[str, Any]], figure: str, var: str, fixed: str
) -> Dict[Any, Optional[float]]:
    """The slope of `figure` against `var` within each group of rows sharing `fixed`."""
    groups: Dict[Any, List[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row[fixed], []).append(row)
    return {
        key: slope([r[var] for r in group], [r.get(figure) for r in group])
        for key, group in sorted(groups.items())
    }


def growth(rows: Sequence[Mapping[str, Any]], figure: str) -> Tuple[Optional[float], ...]:
    """(exponent against N, against M): the median over the groups that could be fitted."""

    def median(fits: Dict[Any, Optional[float]]) -> Optional[float]:
        known = [k for k in fits.values() if k is not None]
        return statistics.median(known) if known else None

    return (
        median(exponents(rows, figure, "nodes", "addresses")),
        median(exponents(rows, figure, "addresses", "nodes")),
    )


def samples(text: str, name: str) -> Dict[str, float]:
    """The samples of metric `name` in Prometheus text: label set ('' for none) -> value."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            head, value = line.rsplit(None, 1)
            found[head[len(name) :]] = float(value)
    return found


def cpu_seconds(stat: str) -> float:
    """utime + stime of a /proc/PID/stat line, in seconds."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(status: str) -> float:
    """VmHWM of a /proc/PID/status text, in MB."""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


class Reading(NamedTuple):
    """One daemon at one moment: when, CPU seconds used, DCS requests by operation, per
    thread the seconds its rounds took and their number, and its fencing events so far."""

    time: float
    cpu: float
    requests: Dict[str, float]
    loops: Dict[str, Tuple[float, float]]
    fenced: float = 0.0


class Rates(NamedTuple):
    """One daemon between two readings."""

    cpu: float  # % of one core
    requests: float  # DCS requests/s
    ops: Dict[str, float]  # DCS requests/s by operation
    round_ms: Dict[str, float]  # mean round time by thread (threads that had a round)


def rates(before: Reading, after: Reading) -> Rates:
    seconds = after.time - before.time
    ops = {op: (n - before.requests.get(op, 0.0)) / seconds for op, n in after.requests.items()}
    round_ms = {}
    for thread, (total, count) in after.loops.items():
        total0, count0 = before.loops.get(thread, (0.0, 0.0))
        if count > count0:
            round_ms[thread] = 1000 * (total - total0) / (count - count0)
    return Rates(100 * (after.cpu - before.cpu) / seconds, sum(ops.values()), ops, round_ms)


def by_label(text: str, name: str) -> Dict[str, float]:
    """`samples` of a metric with one label, by that label's value."""
    return {labels.split('"')[1]: value for labels, value in samples(text, name).items()}


# --- the lab ---


def http_get(
    netns: str,
    port: int,
    path: str,
    host: str = "127.0.0.1",
    timeout: float = 5.0,
    body: Optional[bytes] = None,
) -> Tuple[int, str]:
    """GET http://HOST:PORT/PATH (POST `body` if given) from inside `netns`, without
    forking: (status, body). HTTP/1.0, so the server closes after its answer. Raises OSError."""
    if body is None:
        request = f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode()
    else:
        head = f"POST {path} HTTP/1.0\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n\r\n"
        request = head.encode() + body
    with socket_in(netns, socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.sendall(request)
        data = b"".join(iter(lambda: sock.recv(65536), b""))
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        return int(head.split(None, 2)[1]), body.decode(errors="replace")
    except (IndexError, ValueError) as exc:
        raise OSError(f"{host}:{port}{path}: not an HTTP answer: {head[:80]!r}") from exc


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def notes_left(dcs_type: str, text: str) -> int:
    """The keys in etcd's answer to a count of one notes directory: v3 a `count_only`
    range (no count when none), v2 the directory (an error when there is none)."""
    answer = json.loads(text)
    if dcs_type == "etcd3":
        return int(answer.get("count", 0))
    return len(answer.get("node", {}).get("nodes", []))


def answers(netns: str, port: int, host: str = "127.0.0.1") -> bool:
    """Whether something answers HTTP on the port, whatever the status."""
    try:
        http_get(netns, port, "/health", host)
    except OSError:
        return False
    return True


class ScaleLab:
    """lab.netns.Lab with `nodes` yaim daemons sharing `addresses` pool addresses, one
    etcd and one health server in the hub; a context manager that tears it all down.

    Everything but the daemons is up after entering: etcd (data on tmpfs), the health
    server (answering 500 until `set_health(True)`), the pool, the daemons' configs.
    """

    def __init__(
        self, nodes: int, addresses: int, dcs_type: str, interval: int = INTERVAL, ttl: int = TTL
    ) -> None:
        self.pool = frozenset(pool(addresses))
        self.dcs_type = dcs_type
        self.interval, self.ttl = interval, ttl
        self.base_dir = Path(tempfile.mkdtemp(prefix="yt-scale-", dir=str(TMPFS)))
        self.lab = Lab(nodes, base_dir=self.base_dir)
        self.etcd: Optional[EtcdCluster] = None
        self.nodes: List[YaimNode] = []
        self._stack = ExitStack()

    def __enter__(self) -> ScaleLab:
        with ExitStack() as stack:
            stack.callback(shutil.rmtree, str(self.base_dir), ignore_errors=True)
            lab = stack.enter_context(self.lab)
            self.etcd = EtcdCluster(netns=lab.hub, host=HUB_DCS, base_dir=self.base_dir / "etcd")
            stack.enter_context(self.etcd)
            stack.callback(self._kill_daemons)
            self.set_health(False)
            argv = [sys.executable, str(HEALTH_SCRIPT), "--host", HUB_DCS]
            argv += ["--port", str(HEALTH_PORT), "--state", str(self.health_file)]
            lab.spawn(lab.hub, argv, self.base_dir / "health.log")
            wait_until(lambda: answers(lab.hub, HEALTH_PORT, HUB_DCS), 10.0, what="health server")
            self.nodes = [self._node(i) for i in lab.node_indexes]
            self._fill_pool()
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _kill_daemons(self) -> None:
        """SIGKILL: a clean stop of N daemons at once only costs time, the lab goes anyway."""
        stop_processes([n.proc for n in self.nodes if n.proc is not None], 2.0, signal.SIGKILL)

    def _node(self, i: int) -> YaimNode:
        return YaimNode(
            self.lab,
            i,
            self.etcd.endpoints,
            interval=self.interval,
            ttl=self.ttl,
            health_url=f"http://{HUB_DCS}:{HEALTH_PORT}/health",
            dcs_type=self.dcs_type,
            status_listen=f"127.0.0.1:{STATUS_PORT}",
            log_level="INFO",
        )

    def _fill_pool(self) -> None:
        """Put the pool in with yaimctl (one process, the contract's own tool)."""
        node = self.nodes[0]
        argv = [sys.executable, "-m", "yaim.ctl", "-c", str(node.write_config()), "ips", "add"]
        self.lab.run(node.ns, argv + [str(a) for a in sorted(self.pool)], timeout=300)

    @property
    def health_file(self) -> Path:
        return self.base_dir / "health.state"

    def set_health(self, ok: bool) -> None:
        """Every daemon's check answers 200 (`ok`) or 500 from now on."""
        tmp = self.health_file.with_suffix(".tmp")
        tmp.write_text("ok" if ok else "fail")
        os.replace(str(tmp), str(self.health_file))

    # running and watching ------------------------------------------------

    def start(self, timeout: float) -> float:
        """Start the daemons, START_BATCH at a time, each batch once the one before is ready
        (its first actuator round done); seconds until all are ready."""
        started = time.monotonic()
        for first in range(0, len(self.nodes), START_BATCH):
            left = timeout - (time.monotonic() - started)
            self._start_batch(self.nodes[first : first + START_BATCH], left)
        return time.monotonic() - started

    def _start_batch(self, nodes: Sequence[YaimNode], timeout: float) -> None:
        waiting = list(nodes)
        for node in waiting:
            node.start()

        def all_ready() -> bool:
            self.check_alive(waiting)
            waiting[:] = [n for n in waiting if not self.ready(n)]
            return not waiting

        wait_until(all_ready, timeout, interval=POLL, what="the daemons' first rounds")

    def ready(self, node: YaimNode) -> bool:
        """Whether the node's actuator thread has finished a round (its /metrics says so)."""
        try:
            _, text = http_get(node.ns, STATUS_PORT, "/metrics")
        except OSError:
            return False
        return by_label(text, "yaim_loop_duration_seconds_count").get("actuator", 0) >= 1

    def cold_start(self, figures: Dict[str, Any]) -> None:
        """Start the daemons unhealthy, then turn every check healthy at once; puts the
        start-up and settle seconds into `figures` as they are measured. Returns one ttl
        after the settle, the announcements over, and once its released notes are gone."""
        figures["startup_s"] = self.start(timeout=60 + 2 * len(self.nodes))
        self.set_health(True)
        figures["settle_s"], _ = self.settle(self.nodes, time.monotonic(), SETTLE_TIMEOUT)
        time.sleep(self.ttl / 1000)  # a pause before measuring, not a wait for a condition
        wait_until(lambda: not self.released(), NOTES_TIMEOUT, interval=POLL, what="released notes")

    def check_alive(self, nodes: Sequence[YaimNode]) -> None:
        dead = [n for n in nodes if not n.running]
        if dead:
            names = ", ".join(n.name for n in dead)
            raise RuntimeError(f"yaim exited on {names}\n{dump_logs(dead, 20)}")

    def held(self) -> Dict[IPAddress, List[int]]:
        """Pool address -> the nodes that have it on their lan0, which is up, now."""
        return holders({i: self.lab.lan_state(i) for i in self.lab.node_indexes}, self.pool)

    def settle(self, nodes: Sequence[YaimNode], since: float, timeout: float) -> Tuple[float, int]:
        """Wait until `nodes` hold the pool evenly; (seconds since `since`, spread then)."""
        indexes = [n.i for n in nodes]

        def done() -> Optional[Dict[IPAddress, List[int]]]:
            self.check_alive(nodes)
            held = self.held()
            return held if settled(held, self.pool, indexes) else None

        try:
            held = wait_until(done, timeout, interval=POLL, what=f"{len(nodes)} nodes to settle")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}: {describe(self.held(), self.pool, indexes)}") from None
        return time.monotonic() - since, spread(held, indexes)

    def reading(self, node: YaimNode) -> Reading:
        """The node's CPU time and DCS request counters (from its /metrics), now."""
        _, text = http_get(node.ns, STATUS_PORT, "/metrics")
        loops = by_label(text, "yaim_loop_duration_seconds_sum")
        counts = by_label(text, "yaim_loop_duration_seconds_count")
        return Reading(
            time.monotonic(),
            cpu_seconds(Path(f"/proc/{node.proc.pid}/stat").read_text()),
            by_label(text, "yaim_dcs_requests_total"),
            {thread: (seconds, counts.get(thread, 0.0)) for thread, seconds in loops.items()},
            sum(samples(text, "yaim_fencing_events_total").values()),
        )

    def etcd_cpu(self) -> float:
        """CPU seconds etcd has used so far."""
        return cpu_seconds(Path(f"/proc/{self.etcd.members[0].proc.pid}/stat").read_text())

    def etcd_counts(self) -> Dict[str, float]:
        """etcd's own counts so far: requests served, writes applied, events sent on."""
        _, text = http_get(self.lab.hub, ETCD_PORT, "/metrics", HUB_DCS)
        counts = {"requests": sum(samples(text, ETCD_COUNTERS[self.dcs_type]).values())}
        for what, names in ETCD_TRAFFIC[self.dcs_type].items():
            counts[what] = sum(sum(samples(text, name).values()) for name in names)
        return counts

    def released(self) -> int:
        """How many `released` notes etcd holds now."""
        prefix = f"{ROOT}/released/"
        if self.dcs_type == "etcd3":
            ends = (prefix[:-1] + "0").encode()
            query = {"key": b64(prefix.encode()), "range_end": b64(ends), "count_only": True}
            _, text = http_get(
                self.lab.hub, ETCD_PORT, "/v3/kv/range", HUB_DCS, body=json.dumps(query).encode()
            )
            return notes_left("etcd3", text)
        _, text = http_get(self.lab.hub, ETCD_PORT, "/v2/keys" + prefix, HUB_DCS)
        return notes_left("etcd", text)

    def dcs_bytes(self, nodes: Sequence[YaimNode]) -> List[float]:
        """The bytes each node's dcs0 has received and sent so far (wire bytes: its DCS
        traffic, and its health check's, one small HTTP exchange per check-interval)."""
        out = []
        for node in nodes:
            link = json.loads(self.lab.ip(node.ns, "-j", "-s", "link", "show", "dev", "dcs0"))
            counters = link[0]["stats64"]
            out.append(float(counters["rx"]["bytes"] + counters["tx"]["bytes"]))
        return out

    def listing(self) -> Tuple[int, int]:
        """One listing of everything in etcd, as a resync asks for it: (bytes of the
        answer's body, entries in it)."""
        if self.dcs_type == "etcd3":
            everything = b64(b"\0")
            query = json.dumps({"key": everything, "range_end": everything}).encode()
            _, text = http_get(self.lab.hub, ETCD_PORT, "/v3/kv/range", HUB_DCS, body=query)
            return len(text), int(json.loads(text).get("count", 0))
        _, text = http_get(self.lab.hub, ETCD_PORT, "/v2/keys/?recursive=true", HUB_DCS)

        def leaves(node: Mapping[str, Any]) -> int:
            children = node.get("nodes")
            return 1 if children is None else sum(leaves(c) for c in children)

        return len(text), leaves(json.loads(text)["node"])


# --- one configuration ---


def steady(lab: ScaleLab, window: float) -> Dict[str, Any]:
    """CPU, peak RSS and DCS requests of every daemon over `window` seconds."""
    etcd_before = (lab.etcd_counts(), lab.etcd_cpu())
    bytes_before = lab.dcs_bytes(lab.nodes)
    before = [lab.reading(n) for n in lab.nodes]
    time.sleep(window)  # the measuring window itself, not a wait for a condition
    after = [lab.reading(n) for n in lab.nodes]
    bytes_after = lab.dcs_bytes(lab.nodes)
    seconds = after[-1].time - before[0].time
    etcd_after = lab.etcd_counts()
    etcd_rate = {k: (etcd_after[k] - etcd_before[0][k]) / seconds for k in etcd_after}
    etcd_cpu = 100 * (lab.etcd_cpu() - etcd_before[1]) / seconds
    per_node = [rates(b, a) for b, a in zip(before, after)]
    cpu = [r.cpu for r in per_node]
    requests = [r.requests for r in per_node]
    rss = [peak_rss_mb(Path(f"/proc/{n.proc.pid}/status").read_text()) for n in lab.nodes]
    ops: Counter = Counter()
    round_ms: Dict[str, float] = {}
    for r in per_node:
        ops.update(r.ops)
        for thread, ms in r.round_ms.items():
            round_ms[thread] = max(ms, round_ms.get(thread, 0.0))
    return {
        "cpu_mean": statistics.mean(cpu),
        "cpu_max": max(cpu),
        "rss_max": max(rss),
        "req_s": sum(requests),
        "req_node_interval": statistics.mean(requests) * lab.interval / 1000,
        "etcd_req_s": etcd_rate["requests"],
        "etcd_writes_s": etcd_rate["writes"],
        "etcd_events_s": etcd_rate["events"],
        "dcs_bytes_node_s": (sum(bytes_after) - sum(bytes_before)) / seconds / len(lab.nodes),
        "etcd_cpu": etcd_cpu,
        "ops_s": {op: round(rate, 2) for op, rate in sorted(ops.items()) if rate},
        "round_ms": round_ms,  # by thread: the slowest node's mean round
        "round_max_ms": max(round_ms.values(), default=None),
        "per_node": {"cpu": cpu, "req_s": requests, "rss_mb": rss},
        "fenced_by": {n.i: r.fenced for n, r in zip(lab.nodes, after)},
    }


def churn(
    lab: ScaleLab,
    survivors: Sequence[YaimNode],
    moved: int,
    before: Tuple[Dict[str, float], List[float]],
    requests_before: Sequence[Mapping[str, float]],
    requests_after: Sequence[Mapping[str, float]],
) -> Dict[str, float]:
    """What a resettle cost etcd and the survivors' links, per address moved (the
    projection's per-operation costs, bench.projection)."""
    counts = lab.etcd_counts()
    wire = sum(lab.dcs_bytes(survivors)) - sum(before[1])
    syncs = sum(
        after.get(SYNC_OPERATION, 0.0) - ahead.get(SYNC_OPERATION, 0.0)
        for ahead, after in zip(requests_before, requests_after)
    )
    writes = counts["writes"] - before[0]["writes"]
    events = counts["events"] - before[0]["events"]
    return {
        "moved": moved,
        "writes": writes,
        "events": events,
        "syncs": syncs,
        "wire_bytes": wire,
        "writes_per_moved": max(writes - syncs, 0.0) / max(moved, 1),
        "syncs_per_survivor": syncs / len(survivors),
        "events_per_write_watcher": events / max(writes * len(survivors), 1.0),
        "bytes_per_event": wire / max(events, 1.0),
    }


def measure(nodes: int, addresses: int, dcs_type: str, window: float) -> Dict[str, Any]:
    """Start-up, settle, steady cost and resettle of one configuration."""
    row: Dict[str, Any] = {"nodes": nodes, "addresses": addresses, "dcs": dcs_type}
    with ScaleLab(nodes, addresses, dcs_type) as lab:
        try:
            lab.cold_start(row)
            row.update(steady(lab, window))
            row["listing_bytes"], row["listing_entries"] = lab.listing()
            held = lab.held()
            row["spread"] = spread(held, [n.i for n in lab.nodes])
            chosen = victims(held, [n.i for n in lab.nodes], max(1, round(CRASH_SHARE * nodes)))
            row["crashed"] = chosen
            survivors = [n for n in lab.nodes if n.i not in chosen]
            moved = sum(1 for nodes_of in held.values() if set(nodes_of) & set(chosen))
            before = (lab.etcd_counts(), lab.dcs_bytes(survivors))
            requests_before = [lab.reading(n).requests for n in survivors]
            since = time.monotonic()
            for node in lab.nodes:
                if node.i in chosen:
                    node.crash()
            row["resettle_s"], row["resettle_spread"] = lab.settle(survivors, since, SETTLE_TIMEOUT)
            row["churn"] = churn(
                lab,
                survivors,
                moved,
                before,
                requests_before,
                [lab.reading(n).requests for n in survivors],
            )
            row["fenced_by"].update((n.i, lab.reading(n).fenced) for n in survivors)
        except (TimeoutError, RuntimeError, OSError) as exc:
            row["error"] = str(exc).splitlines()[0]
            print(f"  {nodes} x {addresses} {dcs_type}: {row['error']}", file=sys.stderr)
    if "fenced_by" in row:
        row["fenced"] = int(sum(row["fenced_by"].values()))
    return row


# --- the part ---


def _ints(text: str) -> Tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def names(text: str) -> Tuple[str, ...]:
    return tuple(x.strip() for x in text.split(","))


def listed(value: object) -> str:
    """A default for a help text: a tuple comma-separated."""
    return ",".join(map(str, value)) if isinstance(value, tuple) else f"{value:g}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scale")
    for flag, kind, what, default, quick in (
        ("--scale-nodes", _ints, "node counts", NODES, QUICK_NODES),
        ("--scale-addresses", _ints, "pool sizes", ADDRESSES, QUICK_ADDRESSES),
        ("--scale-dcs", names, "etcd, etcd3 or both", DCS_TYPES, QUICK_DCS),
        ("--scale-window", float, "seconds of steady state measured", WINDOW, QUICK_WINDOW),
    ):
        help_text = f"{what} (default {listed(default)}, --quick {listed(quick)})"
        group.add_argument(flag, type=kind, help=help_text)


def _fig(value: Optional[float], digits: int = 1) -> str:
    return stats.seconds(value, digits)


def _cell(row: Mapping[str, Any], key: str, digits: Optional[int]) -> object:
    value = row.get(key)
    if digits is None:
        return "-" if value is None else value
    return _fig(value, digits)


def results_table(rows: Sequence[Mapping[str, Any]]) -> str:
    header = [heading for heading, _, _ in COLUMNS]
    return stats.table(header, [[_cell(r, key, d) for _, key, d in COLUMNS] for r in rows])


def growth_table(rows: Sequence[Mapping[str, Any]]) -> Tuple[str, Dict[str, Any]]:
    """Fitted exponents per backend and figure, and their big-O reading."""
    fits: Dict[str, Any] = {}
    body = []
    for dcs_type in sorted({r["dcs"] for r in rows}):
        mine = [r for r in rows if r["dcs"] == dcs_type and "error" not in r]
        for key, heading in FIGURES:
            n_exp, m_exp = growth(mine, key)
            fits[f"{dcs_type}/{key}"] = {"N": n_exp, "M": m_exp}
            body.append(
                [dcs_type, heading, _fig(n_exp, 2), _fig(m_exp, 2), order({"N": n_exp, "M": m_exp})]
            )
    header = ["DCS", "figure", "exponent in N", "exponent in M", "growth"]
    return stats.table(header, body), fits


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def goals(rows: Sequence[Mapping[str, Any]], fits: Mapping[str, Any]) -> List[str]:
    """The issue's scale goals, each met, not met or not measured."""

    def row(nodes: int, dcs_type: str) -> Optional[Mapping[str, Any]]:
        found = [
            r for r in rows if (r["nodes"], r["addresses"], r["dcs"]) == (nodes, 1000, dcs_type)
        ]
        return found[0] if found else None

    out = []
    big = row(100, "etcd3")
    if big is None:
        out.append("100 nodes x 1000 addresses (etcd3): not measured in this run.")
    else:
        ok = big.get("settle_s") is not None and big["settle_s"] < 10 and big.get("spread", 9) <= 1
        out.append(
            f"100 nodes x 1000 addresses (etcd3) settle in under 10 s with spread <= 1:"
            f" {_verdict(ok)} (settle {_fig(big.get('settle_s'))} s,"
            f" spread {big.get('spread', '-')})."
        )
    v2 = row(30, "etcd")
    if v2 is None:
        out.append("30 nodes x 1000 addresses (etcd v2): not measured in this run.")
    else:
        ok = v2.get("settle_s") is not None
        out.append(
            f"30 nodes x 1000 addresses (etcd v2) settle: {_verdict(ok)}"
            f" (settle {_fig(v2.get('settle_s'))} s, within {SETTLE_TIMEOUT:g} s or not at all)."
        )
    steady = row(10, "etcd3")
    if steady is None or "cpu_mean" not in steady:
        out.append("10 nodes x 1000 addresses (etcd3) at steady state: not measured in this run.")
    else:
        for what, key, limit, unit in (
            ("CPU per daemon under 0.5 % of one core", "cpu_mean", 0.5, " %"),
            ("DCS requests per node per interval at most 1.1", "req_node_interval", 1.1, ""),
            ("peak RSS per daemon at most 40 MB", "rss_max", 40.0, " MB"),
        ):
            value = steady[key]
            out.append(
                f"10 nodes x 1000 addresses (etcd3), {what}: {_verdict(value <= limit)}"
                f" ({value:.2f}{unit})."
            )
    fit = fits.get("etcd3/req_node_interval")
    if fit is not None:
        known = [k for k in fit.values() if k is not None]
        verdict = "not measured" if not known else _verdict(max(known) < 0.3)
        out.append(
            f"etcd3: O(1) DCS requests per node per interval: {verdict}"
            f" ({order(fit)}, exponents N {_fig(fit['N'], 2)}, M {_fig(fit['M'], 2)})."
        )
    return out


def method_notes(window: float) -> List[str]:
    return [
        "Setup: the test lab's namespaces: etcd (one member, data directory on tmpfs so that"
        " fsync does not dominate) and one health server in the hub, one namespace per node"
        " with its daemon (a namespace each, so that a daemon's interface holds only its own"
        " addresses, as on a real host: in one shared namespace every daemon's netlink scan"
        f" would read all M addresses). Interval {INTERVAL} ms and ttl {TTL} ms (the"
        " defaults), http checker, IPv6 addresses from 2001:db8::/32 as /128 on lan0.",
        "start-up: from spawning the first daemon (unhealthy) until every daemon's actuator"
        f" thread has finished a round; they start {START_BATCH} at a time, each batch once"
        " the one before is ready: the Python start-up of N processes on"
        f" {os.cpu_count()} cores. All 100 at once starve the first actuator rounds beyond"
        " the ttl, and yaim's watchdog then stops those daemons (\"actuator thread has not"
        ' finished a round for 3.5s").',
        "settle: from turning every health check on at once until every pool address is on"
        " exactly one node's lan0 (while up) and the counts differ by at most one; resettle:"
        f" the same over the survivors after crashing {CRASH_SHARE:.0%} of the nodes (at"
        " least one; those holding the most addresses: SIGKILL, dcs0 and lan0 down). Sampled every"
        f" {POLL:g} s plus the time one look at all nodes takes.",
        f"steady: a {window:g} s window starting one ttl after settling, once etcd holds no"
        " released note (each that expires is a watch event per node). CPU % of one core"
        " from /proc/PID/stat (etcd's too: the DCS side of the cost); RSS is VmHWM (the peak"
        " over the daemon's life); DCS requests"
        " from each daemon's yaim_dcs_requests_total (every try counted), with etcd's own"
        " count of requests served in the raw data (etcd_req_s) as a cross-check. Longest"
        " round: the mean time one round of a daemon thread took (yaim_loop_duration_seconds),"
        " for the slowest thread on the slowest node; near the interval, a node falls behind."
        " fenced: addresses dropped because their mark could not be kept"
        " (yaim_fencing_events_total, all nodes, from the start to the end of the resettle):"
        " anything but 0 means yaim did not keep up.",
        "spread: after the steady window. Exponents: the least-squares slope of log(figure)"
        " against log(N) at each fixed M (the median over the M values), and likewise against"
        " log(M); under 0.3 reads as constant, 0.7 to 1.3 as linear.",
    ]


PROJECTION_NOTE = (
    "Last table: a projection to 1,000 nodes x 10,000 addresses (interval 1 s, resync 60 s)"
    " from the largest configuration measured, by the model in bench/projection.py: the"
    " measured requests per node per interval, bytes per request and per listed entry (wire"
    " bytes on the nodes' dcs0), and per crash the writes per moved address, the sync writes"
    " per survivor and the bytes per event of the resettle; every write goes to every node's"
    " watch. A model, not a measurement: no lab here runs 1,000 daemons."
)


def run(args: argparse.Namespace) -> Dict[str, Any]:
    nodes = args.scale_nodes or (QUICK_NODES if args.quick else NODES)
    addresses = args.scale_addresses or (QUICK_ADDRESSES if args.quick else ADDRESSES)
    dcs_types = args.scale_dcs or (QUICK_DCS if args.quick else DCS_TYPES)
    window = args.scale_window or (QUICK_WINDOW if args.quick else WINDOW)
    rows = []
    for dcs_type in dcs_types:
        for m in addresses:
            for n in nodes:
                print(f"scale: {n} nodes x {m} addresses, {dcs_type}", flush=True)
                rows.append(measure(n, m, dcs_type, window))
    growth_text, fits = growth_table(rows)
    notes = goals(rows, fits)
    notes += [
        f"failed: N={r['nodes']} M={r['addresses']} {r['dcs']}: {r['error']}"
        for r in rows
        if "error" in r
    ]
    notes += method_notes(window)
    tables = [results_table(rows), growth_text]
    projected = projection.table(rows)
    if projected is not None:
        tables.append(projected)
        notes += [*projection.limits(rows), PROJECTION_NOTE]
    return {
        "title": "Scale: settle, resettle and steady-state cost by nodes and addresses",
        "tables": tables,
        "notes": notes,
        "data": {"rows": rows, "fits": fits, "window_s": window},
    }
