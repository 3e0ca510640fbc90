"""Failover as the client sees it: yaim (etcd v2 and v3) side by side with keepalived and
vip-manager, on one namespace lab, in one run.

The client namespace runs bench/probe.py: an ARP request for every pool address every
10 ms, every reply logged with its time and the MAC that gave it (which names the node).
Per moved address, `gap` = first answer from the new holder - last answer from the old
one (the issue's failover time), `from_fault` = first answer from the new holder - the
moment the fault was caused. When a node turns unhealthy its service is down at once
while ARP still answers, so there the client's outage is `from_fault`. Per trial also:
the time addresses had no answer at all (silent stretches longer than 3 probe periods,
summed over addresses) and any overlap (two MACs answering one request round).

For yaim, deletions of `marked` keys are watched in etcd (etcdctl in the hub namespace,
timestamped on receipt), giving the reaction to a mark disappearing: first answer from
the new holder - the mark's deletion.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Set, Tuple

import yaml

from bench import stats
from bench.rivals import ACTIONS, PRIORITIES, Env, Keepalived, Tool, VipManager
from lab.daemon import YaimNode
from lab.etcd import ClusterKeys, EtcdCluster
from lab.netns import CLIENT_LAN, HUB_DCS, Lab
from lab.util import netns_argv, stop_processes, tail, wait_until

PERIOD = 0.01
SILENT_PERIODS = 3
POOL = [f"198.51.100.{100 + k}" for k in range(6)]
NODES = 3
TOOLS = ("yaim-v2", "yaim-v3", "keepalived", "vip-manager")
PROBE_SCRIPT = Path(__file__).with_name("probe.py")
RECENT = 0.1  # seconds of answers that tell who holds an address now
QUIET = 1.0  # a layout must hold this long to count as settled after a restore
PRE_FAULT = 0.5  # seconds of answers kept from before the fault
PHASE = 1.0  # the fault comes at a random moment this long: at random phases of every tool's timers
SETTLE_TIMEOUT = 30.0
RESTORE_TIMEOUT = 60.0
YAIM_CONFIG: Dict[str, object] = {
    "interval": 500,
    "ttl": 2000,
    "check-interval": 1000,
    "check-fall": 1,
    "log-level": "INFO",
}


# pure figures ------------------------------------------------------------------


class Answer(NamedTuple):
    """One ARP reply: when, for which address, from which MAC."""

    t: float
    address: str
    mac: str


def parse_answers(lines: Iterable[str]) -> List[Answer]:
    """Probe lines "TIME ADDRESS MAC" as Answers (blank or broken lines skipped)."""
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) == 3:
            found.append(Answer(float(fields[0]), fields[1], fields[2]))
    return found


def holders(answers: Sequence[Answer], since: float) -> Dict[str, Set[str]]:
    """Address -> the MACs that answered for it at or after `since` (`answers` in time
    order: read from the end, so a long list costs nothing)."""
    held: Dict[str, Set[str]] = {}
    for a in reversed(answers):
        if a.t < since:
            break
        held.setdefault(a.address, set()).add(a.mac)
    return held


def single(held: Dict[str, Set[str]], pool: Sequence[str]) -> Optional[Dict[str, str]]:
    """Address -> MAC when every pool address has exactly one MAC answering, else None."""
    if any(len(held.get(a, ())) != 1 for a in pool):
        return None
    return {a: next(iter(held[a])) for a in pool}


def balanced(held: Dict[str, Set[str]], pool: Sequence[str], macs: Sequence[str]) -> bool:
    """Every address answered by exactly one of `macs`, their counts differing by at most one."""
    layout = single(held, pool)
    if layout is None or not set(layout.values()) <= set(macs):
        return False
    counts = Counter(layout.values())
    spread = [counts.get(m, 0) for m in macs]
    return max(spread) - min(spread) <= 1


def moved(answers: Sequence[Answer], address: str, old: str, fault: float) -> Dict[str, object]:
    """How `address` moved away from MAC `old` after `fault`: the new MAC, the time of its
    first answer, gap (since the old holder's last answer before it) and from_fault.
    Figures are None when no new holder answered (gap also when the old one never did)."""
    mine = [a for a in answers if a.address == address]
    first = next((a for a in mine if a.t >= fault and a.mac != old), None)
    if first is None:
        return {"address": address, "new": None, "first": None, "gap": None, "from_fault": None}
    last_old = max((a.t for a in mine if a.mac == old and a.t <= first.t), default=None)
    return {
        "address": address,
        "new": first.mac,
        "first": first.t,
        "gap": None if last_old is None else first.t - last_old,
        "from_fault": first.t - fault,
    }


def silence(
    answers: Sequence[Answer], pool: Sequence[str], start: float, end: float, period: float = PERIOD
) -> float:
    """Seconds without any answer, summed over addresses: every stretch between answers
    (or the window's edges) longer than SILENT_PERIODS probe periods, counted whole."""
    total = 0.0
    for address in pool:
        times = sorted(a.t for a in answers if a.address == address and start <= a.t <= end)
        edges = [start, *times, end]
        total += sum(b - a for a, b in zip(edges, edges[1:]) if b - a > SILENT_PERIODS * period)
    return total


def overlap(answers: Sequence[Answer], pool: Sequence[str], period: float = PERIOD) -> float:
    """Seconds during which two MACs answered one address, summed over addresses: a period
    for every request round answered by two (replies less than half a period apart)."""
    rounds = 0
    for address in pool:
        mine = sorted((a for a in answers if a.address == address), key=lambda a: a.t)
        rounds += sum(
            1 for a, b in zip(mine, mine[1:]) if a.mac != b.mac and b.t - a.t < period / 2
        )
    return rounds * period


def mark_reaction(
    figures: Dict[str, object], deletions: Sequence[Tuple[float, str]], fault: float
) -> Optional[float]:
    """First answer from the new holder - the first deletion of the address's mark after the
    fault; None without either."""
    deleted = [t for t, a in deletions if a == figures["address"] and t >= fault]
    first = figures["first"]
    if not deleted or not isinstance(first, float):
        return None
    return first - min(deleted)


def deleted_marks(line: str, v3: bool) -> List[str]:
    """Addresses whose `marked` key one line of `etcdctl watch` output reports deleted or
    expired (v2: "[action] KEY" lines; v3: a JSON watch response)."""
    if v3:
        try:
            events = json.loads(line).get("Events") or []
        except ValueError:
            return []
        keys = [base64.b64decode(e["kv"]["key"]).decode() for e in events if e.get("type") == 1]
    else:
        match = re.match(r"^\[(delete|compareAndDelete|expire)\] (\S+)$", line.strip())
        keys = [match.group(2)] if match else []
    return [k.split("/")[-2] for k in keys if k.endswith("/marked")]


def trial_figures(
    answers: Sequence[Answer],
    layout: Dict[str, str],
    victim: str,
    fault: float,
    end: float,
    deletions: Sequence[Tuple[float, str]] = (),
) -> Dict[str, object]:
    """Figures of one trial: every address `layout` gave to MAC `victim` before the fault,
    and the pool's silence and overlap from PRE_FAULT before the fault to `end`."""
    pool = sorted(layout)
    figures = []
    for address in pool:
        if layout[address] == victim:
            one = moved(answers, address, victim, fault)
            one["mark"] = mark_reaction(one, deletions, fault)
            figures.append(one)
    return {
        "moved": figures,
        "silent": silence(answers, pool, fault - PRE_FAULT, end),
        "overlap": overlap([a for a in answers if fault - PRE_FAULT <= a.t <= end], pool),
    }


def _measured(values: Iterable[object]) -> List[float]:
    return [v for v in values if isinstance(v, float)]


def summarize(trials: Sequence[Dict[str, object]]) -> Dict[str, object]:
    """One scenario's trials: summaries of gap, from_fault and mark reaction; silence,
    overlap and failed trials in total."""
    done = [t for t in trials if not t.get("failed")]
    each = [m for t in done for m in t["moved"]]
    return {
        "trials": len(trials),
        "failed": len(trials) - len(done),
        "gap": stats.summary(_measured(m["gap"] for m in each)),
        "from_fault": stats.summary(_measured(m["from_fault"] for m in each)),
        "mark": stats.summary(_measured(m["mark"] for m in each)),
        "silent": sum(t["silent"] for t in done),
        "overlap": sum(t["overlap"] for t in done),
    }


# the lab's instruments --------------------------------------------------------


class Probe:
    """bench/probe.py in the client namespace, and its log read as it grows."""

    def __init__(self, lab: Lab, pool: Sequence[str]) -> None:
        self.lab = lab
        self.pool = list(pool)
        self.path = lab.base_dir / "probe.out"
        self.path.write_text("")
        self._offset = 0
        self._partial = ""
        self.answers: List[Answer] = []
        self.keep_from: Optional[float] = None  # a trial's start: keep every answer since
        argv = [sys.executable, str(PROBE_SCRIPT), "--interface", "lan0", "--source", CLIENT_LAN]
        argv += ["--out", str(self.path), "--period", str(PERIOD), *self.pool]
        self.proc = lab.spawn(lab.cli, argv, lab.base_dir / "probe.log")

    def poll(self) -> List[Answer]:
        """Read what the prober wrote since; keep the answers since `keep_from`, or the
        last 2 x PRE_FAULT seconds between trials."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"the prober exited\n{tail(self.lab.base_dir / 'probe.log')}")
        with open(str(self.path)) as f:
            f.seek(self._offset)
            text = self._partial + f.read()
            self._offset = f.tell()
        lines = text.split("\n")
        self._partial = lines.pop()
        self.answers += parse_answers(lines)
        keep_from = time.monotonic() - 2 * PRE_FAULT if self.keep_from is None else self.keep_from
        if self.answers and self.answers[0].t < keep_from:
            self.answers = [a for a in self.answers if a.t >= keep_from]
        return self.answers

    def now(self) -> Dict[str, Set[str]]:
        """Address -> MACs that answered in the last RECENT seconds."""
        self.poll()
        return holders(self.answers, time.monotonic() - RECENT)


class MarkWatch:
    """Deletions of a yaim cluster's `marked` keys, from `etcdctl watch` in the hub
    namespace, each timestamped (monotonic) when its line arrives here."""

    def __init__(self, lab: Lab, endpoint: str, ips_dir: str, v3: bool) -> None:
        self.v3 = v3
        self.deletions: List[Tuple[float, str]] = []
        what = ["--prefix", "-w", "json", ips_dir + "/"] if v3 else ["--forever", "-r", ips_dir]
        argv = ["etcdctl", "--endpoints", endpoint, "watch", *what]
        env = {"ETCDCTL_API": "3" if v3 else "2", "PATH": "/usr/bin:/bin"}
        self.proc = subprocess.Popen(
            netns_argv(lab.hub, argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, name="mark-watch", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            t = time.monotonic()
            self.deletions += [(t, address) for address in deleted_marks(line, self.v3)]

    def close(self) -> None:
        stop_processes([self.proc])


# yaim --------------------------------------------------------------------------


class Yaim(Tool):
    """yaim on every node (`dcs_type` etcd or etcd3), its own cluster directory, the http
    checker on the node's health URL; `overrides` are extra yaim.yml keys."""

    def __init__(self, env: Env, dcs_type: str, overrides: Dict[str, object]) -> None:
        super().__init__(env)
        self.dcs_type = dcs_type
        self.name = "yaim-v3" if dcs_type == "etcd3" else "yaim-v2"
        self.cluster = self.name.replace("-", "")
        self.config = dict(YAIM_CONFIG, **overrides)
        self.nodes: Dict[int, YaimNode] = {}
        self.watch: Optional[MarkWatch] = None

    @property
    def ips_dir(self) -> str:
        return f"/service/{self.cluster}/ips"

    def setup(self) -> None:
        keys = ClusterKeys(self.env.etcd, self.dcs_type, root=f"/service/{self.cluster}")
        for address in self.env.pool:
            keys.add(address)
        endpoint = self.env.etcd.endpoints[0]
        self.watch = MarkWatch(self.lab, endpoint, self.ips_dir, self.dcs_type == "etcd3")

    def start_node(self, i: int) -> List[subprocess.Popen]:
        if i not in self.nodes:
            config = {k.replace("-", "_"): v for k, v in self.config.items()}
            config.update(dcs_type=self.dcs_type, dcs_clustername=self.cluster)
            node = YaimNode(
                self.lab, i, self.env.etcd.endpoints, health_url=self.env.health_url, **config
            )
            node.config_path = self.lab.base_dir / f"{self.name}-n{i}.yml"
            node.log_path = self.lab.base_dir / f"{self.name}-n{i}.log"
            self.nodes[i] = node
        proc = self.nodes[i].start().proc
        assert proc is not None
        return [proc]

    def deletions(self) -> List[Tuple[float, str]]:
        return [] if self.watch is None else list(self.watch.deletions)

    def shutdown(self) -> None:
        super().shutdown()
        if self.watch is not None:
            self.watch.close()

    def log_paths(self) -> List[Path]:
        return [n.log_path for n in self.nodes.values()]


# the driver ---------------------------------------------------------------------


class Driver:
    """Runs the trials of every scenario of one tool on the lab, all alike."""

    def __init__(self, env: Env, probe: Probe, macs: Dict[int, str]) -> None:
        self.env = env
        self.probe = probe
        self.macs = macs

    def _logs(self, tool: Tool) -> str:
        return "".join(tail(p, 20) for p in tool.log_paths())

    def wait_balanced(self, tool: Tool, timeout: float, what: str) -> Dict[str, str]:
        """Wait until the pool is balanced over all nodes and stays so for QUIET seconds;
        the layout (address -> MAC)."""
        macs = list(self.macs.values())
        since: List[float] = []

        def quiet() -> Optional[Dict[str, str]]:
            held = self.probe.now()
            layout = single(held, self.env.pool)
            if not balanced(held, self.env.pool, macs):
                since.clear()
                return None
            if not since or since[0] != layout:
                since[:] = [layout, time.monotonic()]
            return layout if time.monotonic() - since[1] >= QUIET else None

        try:
            return wait_until(quiet, timeout, interval=0.05, what=f"{tool.name}: {what}")
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}\n{self._logs(tool)}") from exc

    def trial(self, tool: Tool, scenario: str, i: int) -> Dict[str, object]:
        """Fault node i, wait until no address is answered by it and each by one node,
        take the figures, restore and wait until balanced again."""
        victim = self.macs[i]
        layout = self.wait_balanced(tool, RESTORE_TIMEOUT, f"balanced before {scenario} of n{i}")
        time.sleep(random.uniform(0, PHASE))
        self.probe.poll()
        fault = time.monotonic()
        self.probe.keep_from = fault - PRE_FAULT
        getattr(tool, ACTIONS[scenario])(i)

        def settled() -> bool:
            layout_now = single(self.probe.now(), self.env.pool)
            return layout_now is not None and victim not in layout_now.values()

        failed = None
        try:
            wait_until(settled, SETTLE_TIMEOUT, interval=0.02, what=f"n{i}'s addresses moved")
        except TimeoutError as exc:
            failed = str(exc).splitlines()[0]
        end = time.monotonic()
        answers = self.probe.poll()
        self.probe.keep_from = None
        figures = trial_figures(answers, layout, victim, fault, end, tool.deletions())
        tool.restore(scenario, i)
        return dict(figures, tool=tool.name, scenario=scenario, victim=f"n{i}", failed=failed)

    def run(self, tool: Tool, scenarios: Sequence[str], trials: int) -> Dict[str, List[dict]]:
        """Every scenario of `scenarios` the tool can do, `trials` times, victims round-robin."""
        results: Dict[str, List[dict]] = {}
        try:
            tool.start()
            for scenario in [s for s in scenarios if s in tool.scenarios]:
                results[scenario] = []
                for n in range(trials):
                    i = n % len(self.macs) + 1
                    one = self.trial(tool, scenario, i)
                    results[scenario].append(one)
                    shown = ", ".join(stats.seconds(m["from_fault"]) for m in one["moved"])
                    print(
                        f"  {tool.name} {scenario} n{i}: from fault {shown} s",
                        one["failed"] or "",
                        flush=True,
                    )
        finally:
            tool.shutdown()
        return results


# tables -----------------------------------------------------------------------

QUANTILES = ("p50", "p95", "max")
GAP_HEADER = ["tool", "scenario", "trials", "moved", *(f"gap {q}" for q in QUANTILES)]
GAP_HEADER += [*(f"from fault {q}" for q in QUANTILES), "silent s", "overlap s", "failed"]
CANNOT = {
    "keepalived": {"key-change": "no DCS key to follow"},
    "vip-manager": {
        s: "no failure detection of its own: whatever writes its trigger key (Patroni) decides"
        for s in ("crash", "clean", "unhealthy")
    },
}


def _quantiles(s: Dict[str, float]) -> List[str]:
    return [stats.seconds(s[q]) for q in QUANTILES]


def _ratios(a: Optional[dict], b: Optional[dict]) -> List[str]:
    """a/b of p50 and of p95, '-' where either is missing."""
    out = []
    for q in ("p50", "p95"):
        r = None if a is None or b is None else stats.ratio(a[q], b[q])
        out.append("-" if r is None else f"{r:.2f}")
    return out


def outage(summaries: Dict[str, Dict[str, dict]], tool: str, scenario: str) -> Optional[dict]:
    """The figure a client feels: from_fault when unhealthy (the service is down while ARP
    still answers), else the gap."""
    s = summaries.get(tool, {}).get(scenario)
    if s is None:
        return None
    return s["from_fault"] if scenario == "unhealthy" else s["gap"]


def tables(summaries: Dict[str, Dict[str, dict]]) -> List[str]:
    """The failover table (with a row saying so where a tool cannot do a scenario), the
    yaim/keepalived ratios, and yaim's reaction to a mark disappearing against
    vip-manager's to its trigger key changing."""
    yaims = [t for t in summaries if t.startswith("yaim")]
    rows = []
    for tool, by in summaries.items():
        for scenario, s in by.items():
            rows.append([tool, scenario, s["trials"], s["gap"]["n"], *_quantiles(s["gap"])])
            rows[-1] += [*_quantiles(s["from_fault"]), stats.seconds(s["silent"], 2)]
            rows[-1] += [stats.seconds(s["overlap"], 2), s["failed"]]
        for scenario in sorted(set(CANNOT.get(tool, {})) - set(by) - {"key-change"}):
            rows.append([tool, scenario, "cannot (see notes)", *["-"] * (len(GAP_HEADER) - 3)])
    out = [stats.table(GAP_HEADER, rows)]
    rows = []
    for scenario in ("crash", "clean", "unhealthy") if "keepalived" in summaries else ():
        keepalived = outage(summaries, "keepalived", scenario)
        measure = "from fault" if scenario == "unhealthy" else "gap"
        for y in yaims:
            ratios = _ratios(outage(summaries, y, scenario), keepalived)
            rows.append([scenario, measure, f"{y}/keepalived", *ratios])
    if rows:
        out.append(stats.table(["scenario", "measure", "ratio", "p50", "p95"], rows))
    vip = summaries.get("vip-manager", {}).get("key-change")
    vip_ff = None if vip is None else vip["from_fault"]
    rows = []
    for y in yaims:
        for scenario, s in summaries[y].items():
            mark = s["mark"]
            what = f"{y}: mark gone -> new holder ({scenario})"
            rows.append([what, mark["n"], *_quantiles(mark), *_ratios(mark, vip_ff)])
    if vip_ff is not None:
        rows.append(["vip-manager: key changed -> new holder", vip_ff["n"], *_quantiles(vip_ff)])
    if rows:
        header = ["reaction", "n", *QUANTILES, "/vip-manager p50", "/vip-manager p95"]
        out.append(stats.table(header, [[*r, *["-"] * (len(header) - len(r))] for r in rows]))
    return out


# the part ---------------------------------------------------------------------


def _key_value(text: str) -> Tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def _names(text: str) -> List[str]:
    return [t for t in text.split(",") if t]


def _choices(allowed: Sequence[str]) -> Callable[[str], List[str]]:
    """An argparse type: a comma-separated list of some of `allowed`."""

    def parse(text: str) -> List[str]:
        names = _names(text)
        unknown = sorted(set(names) - set(allowed))
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)}, got {text!r}")
        return names

    return parse


def _priorities(text: str) -> List[int]:
    try:
        values = [int(t) for t in _names(text)]
    except ValueError:
        values = []
    if not values or not all(1 <= v <= 254 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected priorities 1..254 like 254,251,248, got {text!r}"
        )
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("failover")
    group.add_argument(
        "--failover-trials",
        type=int,
        default=None,
        metavar="N",
        help="trials per scenario (default 20, 2 with --quick)",
    )
    group.add_argument(
        "--failover-tools",
        type=_choices(TOOLS),
        default=list(TOOLS),
        metavar="LIST",
        help="comma-separated, of " + ",".join(TOOLS) + " (default all)",
    )
    group.add_argument(
        "--failover-scenarios",
        type=_choices(list(ACTIONS)),
        default=list(ACTIONS),
        metavar="LIST",
        help="comma-separated, of " + ",".join(ACTIONS) + " (default all a tool can do)",
    )
    group.add_argument(
        "--failover-yaim-set",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a yaim.yml key for both yaim runs (repeatable), e.g. probe-timeout=0",
    )
    group.add_argument(
        "--failover-logs",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the lab's files (tool logs and configs, probe output) in DIR",
    )
    group.add_argument(
        "--failover-keepalived-priorities",
        type=_priorities,
        default=list(PRIORITIES),
        metavar="P1,P2,P3",
        help="keepalived priorities of an address's first, second, third choice"
        f" (default {','.join(map(str, PRIORITIES))})",
    )


def make_tool(name: str, env: Env, args: argparse.Namespace) -> Tool:
    if name in ("yaim-v2", "yaim-v3"):
        return Yaim(env, "etcd3" if name == "yaim-v3" else "etcd", dict(args.failover_yaim_set))
    if name == "keepalived":
        return Keepalived(env, args.failover_keepalived_priorities)
    if name == "vip-manager":
        return VipManager(env)
    raise ValueError(f"unknown tool {name!r}: choose from {', '.join(TOOLS)}")


def run(args: argparse.Namespace) -> Dict[str, object]:
    trials = args.failover_trials or (2 if args.quick else 20)
    overrides = dict(args.failover_yaim_set)
    with ExitStack() as stack:
        lab = stack.enter_context(Lab(nodes=NODES, base_dir=args.failover_logs))
        etcd = stack.enter_context(
            EtcdCluster(netns=lab.hub, host=HUB_DCS, base_dir=lab.base_dir / "etcd")
        )
        stack.callback(lab.stop_processes)
        urls = {lab.start_health(i) for i in lab.node_indexes}
        env = Env(lab, etcd, POOL, urls.pop())
        probe = Probe(lab, POOL)
        driver = Driver(env, probe, {i: lab.mac(lab.node_ns(i)) for i in lab.node_indexes})
        raw: Dict[str, Dict[str, List[dict]]] = {}
        for name in args.failover_tools:
            tool = make_tool(name, env, args)
            print(f"-- {name}", flush=True)
            raw[name] = driver.run(tool, args.failover_scenarios, trials)
    summaries = {tool: {s: summarize(t) for s, t in by.items()} for tool, by in raw.items()}
    return {
        "title": "Failover: yaim, keepalived and vip-manager",
        "tables": tables(summaries),
        "notes": notes(summaries, args),
        "data": {
            "config": {
                "yaim": dict(YAIM_CONFIG, **overrides),
                "keepalived_priorities": args.failover_keepalived_priorities,
                "trials": trials,
                "period": PERIOD,
            },
            "summaries": summaries,
            "trials": raw,
        },
    }


def goals(summaries: Dict[str, Dict[str, dict]], yaim: Dict[str, object]) -> List[str]:
    """Issue 8's goals for the failover figures, each with the measured value and whether
    it is met."""
    check = float(yaim["check-interval"]) / 1000
    ttl = float(yaim["ttl"]) / 1000
    limits = [  # scenario, figure, what, limit
        ("clean", "gap", "clean stop gap p95 < 0.1 s", 0.1),
        ("clean", "mark", "mark gone -> new holder p95 < 0.05 s", 0.05),
        (
            "unhealthy",
            "from_fault",
            f"unhealthy p95 < check-interval + 0.2 s = {check + 0.2:g} s",
            check + 0.2,
        ),
        ("crash", "from_fault", f"crash p95 < ttl + 0.6 s = {ttl + 0.6:g} s", ttl + 0.6),
    ]
    out = []
    for y in [t for t in summaries if t.startswith("yaim")]:
        for scenario, figure, what, limit in limits:
            s = summaries[y].get(scenario)
            if s is not None and s[figure]["n"]:
                value = s[figure]["p95"]
                verdict = "met" if value < limit else "NOT met"
                out.append(f"goal {y}: {what}: {stats.seconds(value)} s, {verdict}.")
        mine, theirs = outage(summaries, y, "crash"), outage(summaries, "keepalived", "crash")
        if mine and theirs and mine["n"] and theirs["n"]:
            verdict = "met" if mine["p50"] < theirs["p50"] else "NOT met"
            out.append(
                f"goal {y}: crash gap median below keepalived's: {stats.seconds(mine['p50'])} s"
                f" against {stats.seconds(theirs['p50'])} s, {verdict}."
            )
    return out


def notes(summaries: Dict[str, Dict[str, dict]], args: argparse.Namespace) -> List[str]:
    yaim = dict(YAIM_CONFIG, **dict(args.failover_yaim_set))
    trials = args.failover_trials or (2 if args.quick else 20)
    priorities = "/".join(map(str, args.failover_keepalived_priorities))
    out = [
        f"3 nodes, 6 IPv4 addresses, {trials} trials per scenario, victims round-robin; the client"
        f" sends an ARP request per address every {PERIOD * 1000:.0f} ms (bench/probe.py).",
        "gap = first answer from the new holder - last answer from the old one; from fault ="
        " first answer from the new holder - the fault. Unhealthy: the service is down from the"
        " fault on while ARP still answers, so the client's outage is `from fault`.",
        f"silent s: time addresses had no answer (stretches over {SILENT_PERIODS} probe periods,"
        " summed over addresses and trials); overlap s: two nodes answering one request round.",
        "yaim: "
        + ", ".join(f"{k} {v}" for k, v in yaim.items())
        + "; http checker on the node's health server.",
        f"keepalived: one vrrp_instance per address, unicast, advert_int 1, priorities {priorities}"
        " rotated so each node is first choice for 2 addresses, preempt, track_script curl"
        " interval 1 fall 1 rise 1. A backup takes over (256 - priority) / 256 s after a"
        " priority-0 advert (clean stop), 3 s + that after the last advert (crash).",
        "vip-manager: one instance per address per node, interval 1000, etcd v2; key-change ="
        " the bench rewrites the trigger keys of one node's addresses to other nodes.",
        "Crash = SIGKILL of the tool's processes (keepalived: its VRRP child too) and dcs0,"
        " lan0 down. Each fault comes at a random moment (0..1 s) after the layout settled.",
        "yaim's unhealthy reaction includes the check's retries: up to check-interval, plus"
        " (retry-num - 1) x retry-after (0.5 s by default) before a failing check counts.",
    ]
    for tool, by in summaries.items():
        for why in sorted({why for s, why in CANNOT.get(tool, {}).items() if s not in by}):
            scenarios = [s for s, w in CANNOT[tool].items() if w == why]
            out.append(f"{tool} cannot do {', '.join(scenarios)}: {why}.")
    return out + goals(summaries, yaim)
