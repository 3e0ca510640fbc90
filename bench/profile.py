"""Profile: where a daemon of a settled mid-size cluster spends its CPU at steady state.

The scale part's lab (bench/scale.py) with N nodes and M addresses settles, then
py-spy samples one daemon for a while (`record --format raw`: collapsed stacks;
idle threads left out, so the samples are the time it runs). Functions are ranked
by own samples (the frame on top) and by inclusive samples (anywhere in the stack).
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterable, List, Sequence, Tuple

from bench import scale, stats
from lab.util import spawn, stop_processes, tail
from yaim.dcs import BACKENDS

NODES, ADDRESSES, DCS_TYPES = 10, 1000, ("etcd3", "etcd")
QUICK_DCS = ("etcd3",)
DURATION, QUICK_DURATION, RATE = 20, 10, 250
TOP = 15
GRACE = 30  # seconds py-spy may overrun its duration
WAITS = {  # frames py-spy counts as running that are waits
    "Condition.wait (threading.py)",
    "SocketIO.readinto (socket.py)",
    "_PollLikeSelector.select (selectors.py)",
    "EpollSelector.select (selectors.py)",
}
LOOP = "(yaim/threads/base.py)"  # Worker.run and its step: every thread's loop
FRAME_RE = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
# Where a file's path is cut so that it names the module: the repository or site-packages.
PATH_ROOTS = ("/site-packages/", "/lib/python3", str(Path(__file__).resolve().parents[1]) + "/")


# --- pure parts ---


def short_path(path: str) -> str:
    """A source path without the part that says where Python or the checkout lives."""
    for root in PATH_ROOTS:
        if root in path:
            tail = path.split(root, 1)[1]
            return tail.split("/", 1)[1] if root == "/lib/python3" else tail
    return path


def frame_name(frame: str) -> str:
    """'function (file)' of one py-spy frame 'function (path:line)', the line dropped."""
    match = FRAME_RE.match(frame)
    if match is None:
        return frame
    return f"{match['function']} ({short_path(match['file'])})"


def parse_collapsed(lines: Iterable[str]) -> List[Tuple[List[str], int]]:
    """py-spy's raw output ('frame;frame;... count', outermost first) as (frames, count)."""
    stacks = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        stacks.append(([frame_name(f) for f in stack.split(";")], int(count)))
    return stacks


def tally(stacks: Sequence[Tuple[List[str], int]]) -> Tuple[Counter, Counter, int]:
    """(own samples, inclusive samples, total samples) per function."""
    own: Counter = Counter()
    inclusive: Counter = Counter()
    total = 0
    for frames, count in stacks:
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    return own, inclusive, total


def top_table(counts: Counter, total: int, heading: str, top: int = TOP) -> str:
    rows = [
        [rank, f"`{name}`", n, f"{100 * n / total:.1f}"]
        for rank, (name, n) in enumerate(counts.most_common(top), 1)
    ]
    return stats.table(["#", heading, "samples", "%"], rows)


def yaim_only(counts: Counter) -> Counter:
    """The counts of yaim's own functions, without the thread loop every sample runs in."""
    return Counter({name: n for name, n in counts.items() if "(yaim/" in name and LOOP not in name})


# --- the part ---


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise RuntimeError("py-spy not found: pip install -e '.[bench]'")
    return found


def record(pid: int, seconds: int, rate: int, out: Path) -> List[str]:
    """Sample process `pid` with py-spy (without pausing it); the collapsed stacks.

    On a starved machine py-spy can overrun its duration by minutes: past a grace time
    it gets SIGINT, on which it writes what it has sampled so far.
    """
    argv = [py_spy(), "record", "--pid", str(pid), "--duration", str(seconds)]
    argv += ["--rate", str(rate), "--format", "raw", "--output", str(out), "--nonblocking"]
    log = out.with_suffix(".log")
    proc = spawn(argv, log)
    try:
        proc.wait(seconds + GRACE)
    except subprocess.TimeoutExpired:
        stop_processes([proc], GRACE, signal.SIGINT)
    if not out.exists():
        raise RuntimeError(f"py-spy wrote nothing (exit {proc.returncode}):\n{tail(log)}")
    return out.read_text().splitlines()


def profile(nodes: int, addresses: int, dcs_type: str, seconds: int, rate: int) -> Dict[str, Any]:
    """Settle a cluster, then profile its first daemon; the tallies and its CPU meanwhile.
    A cluster that does not settle is profiled all the same, and says so."""
    figures: Dict[str, Any] = {}
    with scale.ScaleLab(nodes, addresses, dcs_type) as lab:
        try:
            lab.cold_start(figures)
        except TimeoutError as exc:
            figures["error"] = str(exc).splitlines()[0]
        node = lab.nodes[0]
        before = lab.reading(node)
        lines = record(node.proc.pid, seconds, rate, lab.base_dir / "profile.txt")
        rates = scale.rates(before, lab.reading(node))
        rss = scale.peak_rss_mb(Path(f"/proc/{node.proc.pid}/status").read_text())
    own, inclusive, total = tally(parse_collapsed(lines))
    return {
        "nodes": nodes,
        "addresses": addresses,
        "dcs": dcs_type,
        **figures,
        "seconds": seconds,
        "rate": rate,
        "samples": total,
        "cpu_pct": rates.cpu,
        "req_s": rates.requests,
        "rss_mb": rss,
        "imports_mb": import_rss(dcs_type),
        "own": dict(own.most_common()),
        "inclusive": dict(inclusive.most_common()),
    }


def import_rss(dcs_type: str) -> List[Tuple[str, float]]:
    """(module, RSS in MB) of a fresh Python after importing each of what a daemon with the
    http checker and `dcs_type` loads, one after the other: where its memory goes."""
    steps = ["yaim.daemon", BACKENDS[dcs_type], "yaim.checks.http", "yaim.actuator.netlink"]
    code = (
        "import importlib, sys\n"
        "def rss(): return open('/proc/self/status').read().split('VmRSS:')[1].split()[0]\n"
        "print(rss())\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name); print(rss())\n"
    )
    out = subprocess.run([sys.executable, "-c", code, *steps], capture_output=True, text=True)
    sizes = [int(kb) / 1024 for kb in out.stdout.split()]
    return list(zip(["Python alone", *steps], sizes))


def memory_table(steps: Sequence[Tuple[str, float]], peak: float) -> str:
    rows = [
        [f"`{name}`" if i else name, f"{mb:.1f}", f"+{mb - steps[i - 1][1]:.1f}" if i else "-"]
        for i, (name, mb) in enumerate(steps)
    ]
    rows.append(["the running daemon (VmHWM)", f"{peak:.1f}", f"+{peak - steps[-1][1]:.1f}"])
    return stats.table(["after importing", "RSS MB", "added MB"], rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("profile")
    for flag, what, default, quick in (
        ("--profile-nodes", "nodes", NODES, NODES),
        ("--profile-addresses", "pool size", ADDRESSES, ADDRESSES),
        ("--profile-dcs", "etcd, etcd3 or both", DCS_TYPES, QUICK_DCS),
        ("--profile-seconds", "py-spy's sampling time", DURATION, QUICK_DURATION),
        ("--profile-rate", "py-spy's samples per second", RATE, RATE),
    ):
        kind = scale.names if flag == "--profile-dcs" else int
        help_text = f"{what} (default {scale.listed(default)}, --quick {scale.listed(quick)})"
        group.add_argument(flag, type=kind, help=help_text)


def summary(result: Dict[str, Any]) -> Tuple[List[str], List[str]]:
    """(tables, notes) of one profiled daemon."""
    own, inclusive, total = Counter(result["own"]), Counter(result["inclusive"]), result["samples"]
    where = f"{result['dcs']}, N={result['nodes']}, M={result['addresses']}"
    if not total:
        return [], [f"{where}: py-spy took no sample: the daemon never ran"]
    mine = yaim_only(inclusive)
    tables = [
        f"{where}: top functions by own samples\n\n" + top_table(own, total, "function"),
        f"{where}: top yaim functions by inclusive samples\n\n"
        + top_table(mine, total, "yaim function"),
        f"{where}: resident memory, import by import\n\n"
        + memory_table(result["imports_mb"], result["rss_mb"]),
    ]
    per_tick = total / (result["rate"] * result["seconds"])
    if "error" in result:
        notes = [f"{where}: NOT steady, profiled all the same: {result['error']}"]
    else:
        notes = [f"{where}: settled {result['settle_s']:.1f} s after the checks turned healthy."]
    notes += [
        f"{where}: {total} samples in {result['seconds']} s at {result['rate']}/s"
        f" ({per_tick:.2f} busy threads per tick); the daemon used"
        f" {result['cpu_pct']:.2f} % of one core and made {result['req_s']:.1f} DCS requests/s"
        " meanwhile."
    ]
    working = [(name, n) for name, n in own.most_common() if name not in WAITS]
    if working:
        name, n = working[0]
        notes.append(f"{where}: most own samples, waits aside: `{name}` ({100 * n / total:.1f} %).")
    if mine:
        name, n = mine.most_common(1)[0]
        notes.append(
            f"{where}: the yaim function with the most inclusive samples (below the thread"
            f" loops): `{name}` ({100 * n / total:.1f} %)."
        )
    return tables, notes


def run(args: argparse.Namespace) -> Dict[str, Any]:
    dcs_types = args.profile_dcs or (QUICK_DCS if args.quick else DCS_TYPES)
    seconds = args.profile_seconds or (QUICK_DURATION if args.quick else DURATION)
    results, tables, notes = [], [], []
    nodes = args.profile_nodes or NODES
    addresses = args.profile_addresses or ADDRESSES
    for dcs_type in dcs_types:
        print(f"profile: {nodes} nodes x {addresses} addresses, {dcs_type}", flush=True)
        result = profile(nodes, addresses, dcs_type, seconds, args.profile_rate or RATE)
        results.append(result)
        more_tables, more_notes = summary(result)
        tables += more_tables
        notes += more_notes
    notes.append(
        "py-spy record --format raw --nonblocking on daemon n1, one ttl after the cluster"
        " settled; idle threads are not sampled, so the samples are the time the daemon runs."
        " Function = name and module, every line of it together; own = the function on top"
        " of the stack, inclusive = anywhere on it. py-spy takes some waits for running:"
        " a lock wait with a timeout (Condition.wait), a read from a socket (SocketIO.readinto:"
        " waiting for etcd). Memory: a fresh Python importing"
        " the daemon's modules in turn, then the daemon's own peak."
    )
    return {
        "title": "Profile: one daemon at steady state (py-spy)",
        "tables": tables,
        "notes": notes,
        "data": {"runs": results},
    }
