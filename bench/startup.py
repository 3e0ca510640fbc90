"""Start-up: import time and resident memory of `yaim` commands and of a daemon's build.

Each figure comes from a fresh interpreter (`python -X importtime`) started in a tree
of yaim: this checkout, and a baseline commit exported with `git archive`, run in
turn, so that both see the same machine and the same load. A probe reports after
each step the resident set (VmRSS) and the modules loaded; the import time of a step
is the sum of the top-level imports' cumulative times it made. Steps of a daemon's
build: `yaim.cli` imported, the configuration loaded, `yaim.daemon` imported, the
Daemon built (the chosen backend and checker), the actuator made (its netlink tool).
Times are the least of the runs (the one the rest of the machine disturbed least),
memory that of the same run. No root, no etcd: the daemon is built, never started.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Sequence, Tuple

from bench import stats

HERE = Path(__file__).resolve().parents[1]
BASELINE = "22844ea"  # the last commit before the lazy imports of issue 18
RUNS, QUICK_RUNS = 7, 2
DCS_TYPES = ("etcd3", "etcd")
# Libraries a daemon loads, each on top of the standard modules it needs anyway.
LIBRARIES = ("requests", "etcd", "prometheus_client", "yaml", "psycopg")
BASE_MODULES = "socket, ssl, json, subprocess, threading, logging, ipaddress, http.server"

IMPORT_RE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)$")
STEP_RE = re.compile(r"^step (.+)\t([\d.]+)\t(\d+)$")

# Runs in the tree under test; reports each step on stderr, among -X importtime's lines.
PROBE = r"""
import atexit, sys
def step(name):
    rss = open("/proc/self/status").read().split("VmRSS:")[1].split()[0]
    sys.stderr.write(f"step {name}\t{int(rss) / 1024:.2f}\t{len(sys.modules)}\n")
    sys.stderr.flush()
mode, args = sys.argv[1], sys.argv[2:]
step("Python alone")
if mode == "command":
    import runpy
    atexit.register(step, "yaim " + " ".join(a for a in args if not a.startswith("/")))
    sys.argv = ["yaim", *args]
    runpy.run_module("yaim", run_name="__main__", alter_sys=True)
elif mode == "daemon":
    import yaim.cli
    step("`yaim.cli` imported")
    from yaim import config
    cfg = config.load(args[0], {})
    step("configuration loaded")
    from yaim import daemon
    step("`yaim.daemon` imported")
    daemon.Daemon(cfg)
    step(f"Daemon built ({cfg.dcs_type}, {cfg.checker_type})")
    from yaim import shutdown
    shutdown.make_actuator(cfg)
    step("actuator made (netlink)")
else:
    exec("import " + args[0])
    step(args[0])
"""


class Step(NamedTuple):
    """One step of a probe: its name, RSS after it, modules loaded, its imports' time."""

    name: str
    rss_mb: float
    modules: int
    import_ms: float


def parse(stderr: str) -> List[Step]:
    """The probe's steps from its stderr, each with the top-level imports made since the
    step before (those of the interpreter's own start-up go to the first)."""
    steps: List[Step] = []
    pending = 0
    for line in stderr.splitlines():
        imported = IMPORT_RE.match(line)
        if imported is not None and not imported.group(3):
            pending += int(imported.group(2))
            continue
        marked = STEP_RE.match(line)
        if marked is not None:
            name, rss, modules = marked.groups()
            steps.append(Step(name, float(rss), int(modules), pending / 1000))
            pending = 0
    return steps


def best(runs: Sequence[List[Step]]) -> List[Step]:
    """The run whose imports took least in all: the least disturbed one."""
    return min(runs, key=lambda steps: sum(step.import_ms for step in steps))


def export(commit: str, into: Path) -> Path:
    """The tree of `commit` of this checkout, unpacked below `into`."""
    tree, archive = into / commit, into / f"{commit}.tar"
    subprocess.run(["git", "-C", str(HERE), "archive", "-o", str(archive), commit], check=True)
    tree.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(tree)], check=True)
    return tree


def probe(tree: Path, mode: str, *args: str) -> Tuple[List[Step], float]:
    """One fresh interpreter in `tree`: its steps, and its wall time in seconds."""
    env = dict(os.environ, PYTHONPATH=str(tree))  # this tree's yaim, whatever is installed
    argv = [sys.executable, "-X", "importtime", "-c", PROBE, mode, *args]
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True, timeout=120)
    took = time.perf_counter() - started
    steps = parse(done.stderr)
    if not steps:
        raise RuntimeError(f"the probe in {tree} failed: {done.stderr[-2000:]}")
    return steps, took


def config_file(directory: Path, dcs_type: str) -> Path:
    """A node's configuration as the lab's: the http checker, the status endpoint on."""
    path = directory / f"{dcs_type}.yml"
    path.write_text(
        f"interface: lo\ndcs-type: {dcs_type}\nchecker-type: http\n"
        "http-url: http://127.0.0.1:8008/health\nallowed-networks: [198.51.100.0/24]\n"
    )
    return path


def cases(directory: Path) -> List[Tuple[str, Tuple[str, ...]]]:
    """(what, probe arguments) of every measured case."""
    listed: List[Tuple[str, Tuple[str, ...]]] = [("yaim --version", ("command", "--version"))]
    check = str(config_file(directory, "etcd3"))
    listed.append(("yaim --check-config", ("command", "--check-config", "-c", check)))
    for dcs_type in DCS_TYPES:
        listed.append((f"daemon, {dcs_type}", ("daemon", str(config_file(directory, dcs_type)))))
    return listed


def measure(trees: Dict[str, Path], runs: int, directory: Path) -> Dict[str, Any]:
    """Every case in every tree, `runs` times, the trees in turn: the best run of each."""
    results: Dict[str, Any] = {}
    for what, args in cases(directory):
        tries: Dict[str, List[Tuple[List[Step], float]]] = {label: [] for label in trees}
        for _ in range(runs):
            for label, tree in trees.items():
                tries[label].append(probe(tree, *args))
        results[what] = {
            label: {
                "steps": [step._asdict() for step in best([steps for steps, _ in measured])],
                "wall_s": min(took for _, took in measured),
            }
            for label, measured in tries.items()
        }
    return results


def libraries(runs: int) -> List[Dict[str, Any]]:
    """What each library adds on top of the standard modules a daemon loads anyway."""
    rows = []
    for library in LIBRARIES:
        code = f"import {BASE_MODULES}\n" + PROBE
        argv = [sys.executable, "-X", "importtime", "-c", code, "import", library]
        measured = []
        for _ in range(runs):
            done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
            steps = parse(done.stderr)
            if len(steps) == 2:
                measured.append(steps)
        if measured:
            base, after = best(measured)
            rows.append(
                {"library": library, "mb": after.rss_mb - base.rss_mb, "ms": after.import_ms}
            )
    return rows


def totals(result: Dict[str, Any]) -> List[List[str]]:
    """Rows: case, then per tree the import ms, wall ms, RSS MB and modules at its end."""
    rows = []
    for what, by_tree in result["cases"].items():
        row = [what]
        for label in ("before", "after"):
            steps = [Step(**step) for step in by_tree[label]["steps"]]
            row += [
                f"{sum(step.import_ms for step in steps):.0f}",
                f"{1000 * by_tree[label]['wall_s']:.0f}",
                f"{steps[-1].rss_mb:.1f}",
                str(steps[-1].modules),
            ]
        rows.append(row)
    return rows


def step_rows(by_tree: Dict[str, Any]) -> List[List[str]]:
    """Rows of one daemon's build, step by step, before and after."""
    before = [Step(**step) for step in by_tree["before"]["steps"]]
    after = [Step(**step) for step in by_tree["after"]["steps"]]
    rows = []
    for i, step in enumerate(after):
        was = before[i] if i < len(before) and before[i].name == step.name else None
        added = step.rss_mb - after[i - 1].rss_mb if i else 0.0
        rows.append(
            [
                step.name,
                "-" if was is None else f"{was.rss_mb:.1f}",
                f"{step.rss_mb:.1f}",
                f"+{added:.1f}" if i else "-",
                "-" if was is None else f"{was.import_ms:.0f}",
                f"{step.import_ms:.0f}",
            ]
        )
    return rows


def summary(result: Dict[str, Any]) -> Tuple[List[str], List[str]]:
    header = ["case"]
    for label in ("before", "after"):
        header += [f"{label}: imports ms", "wall ms", "RSS MB", "modules"]
    tables = [stats.table(header, totals(result))]
    for what, by_tree in result["cases"].items():
        if what.startswith("daemon"):
            columns = ["step", "RSS MB before", "RSS MB after", "added", "imports ms before"]
            columns.append("imports ms after")
            tables.append(f"{what}: step by step\n\n" + stats.table(columns, step_rows(by_tree)))
    rows = [[f"`{r['library']}`", f"+{r['mb']:.1f}", f"{r['ms']:.0f}"] for r in result["libraries"]]
    tables.append(
        "What each library adds to a Python that has "
        + BASE_MODULES
        + " already\n\n"
        + stats.table(["library", "RSS MB", "imports ms"], rows)
    )
    notes = [
        f"before = yaim {result['baseline']}, after = this checkout; the best of"
        f" {result['runs']} runs of each, the trees in turn. imports ms: the top-level"
        " imports' cumulative time (-X importtime), the interpreter's own start-up"
        " included; wall ms: the whole process, started to ended.",
        "daemon: the node's configuration loaded, the Daemon built (its threads made, not"
        " started: the chosen backend and checker imported) and the actuator made (its"
        " netlink tool, yaim's own on the standard library's socket: no pyroute2, which"
        " alone was +14.7 MB and 82 ms), so a daemon's import set; what it allocates"
        " running is not in it.",
        "--check-config imports the chosen backend and checker: a library they lack is"
        " reported there (exit 2, naming the key), not at the daemon's start only.",
        "The daemon's set is its libraries' (last table): the backends and checkers not"
        " chosen were not imported before either, and a library's package __init__ loads"
        " all of it (prometheus_client its exposition servers and collectors), which no"
        " laziness in yaim can leave out. psycopg comes only with checker-type"
        " postgres; python-etcd brings dnspython (for a DNS discovery yaim does not use),"
        " only with dcs-type etcd.",
    ]
    return tables, notes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("startup")
    group.add_argument(
        "--startup-baseline", default=BASELINE, help=f"the commit before (default {BASELINE})"
    )
    help_text = f"fresh interpreters per case and tree (default {RUNS}, --quick {QUICK_RUNS})"
    group.add_argument("--startup-runs", type=int, help=help_text)


def run(args: argparse.Namespace) -> Dict[str, Any]:
    runs = args.startup_runs or (QUICK_RUNS if args.quick else RUNS)
    with tempfile.TemporaryDirectory(prefix="yaim-startup-") as scratch:
        directory = Path(scratch)
        trees = {"before": export(args.startup_baseline, directory), "after": HERE}
        print(f"startup: {runs} runs per case, before = {args.startup_baseline}", flush=True)
        result = {
            "baseline": args.startup_baseline,
            "runs": runs,
            "cases": measure(trees, runs, directory),
            "libraries": libraries(runs),
        }
    tables, notes = summary(result)
    return {
        "title": "Start-up: import time and memory of yaim's commands and a daemon's build",
        "tables": tables,
        "notes": notes,
        "data": result,
    }
