"""Results on disk: one JSON file per part (raw figures), and RESULTS.md, every part's
tables under the date and the machine they were measured on."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
RESULTS_MD = HERE / "RESULTS.md"


def machine() -> Dict[str, object]:
    """What the figures were measured on."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "etcd": _version(["etcd", "--version"]),
        "yaim_commit": _version(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"]),
    }


def _version(argv: List[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.strip().splitlines()[0] if out.strip() else "unknown"


def save(part: str, result: Dict[str, object]) -> Path:
    """Write one part's result (title, tables, notes, data) with the date and machine."""
    RESULTS_DIR.mkdir(exist_ok=True)
    result = dict(
        result, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=machine()
    )
    path = RESULTS_DIR / f"{part}.json"
    path.write_text(json.dumps(result, indent=1, sort_keys=True, default=str) + "\n")
    return path


def render(parts: List[str]) -> str:
    """RESULTS.md from the saved results of `parts`, in that order (missing ones skipped)."""
    out = [
        "# yaim benchmark results",
        "",
        "Written by `make bench` (`python -m bench`); raw figures in",
    ]
    out += ["`bench/results/*.json`. Each part says when and where it was measured.", ""]
    for part in parts:
        path = RESULTS_DIR / f"{part}.json"
        if not path.exists():
            continue
        result = json.loads(path.read_text())
        m = result["machine"]
        out += [f"## {result['title']}", ""]
        out += [
            f"Measured {result['date']} on {m['cpus']} x {m['cpu'] or 'unknown CPU'}, kernel"
            f" {m['kernel']}, Python {m['python']}, {m['etcd']}, yaim {m['yaim_commit']}.",
            "",
        ]
        for text in result.get("tables", []):
            out += [text, ""]
        for note in result.get("notes", []):
            out += [f"- {note}"]
        out += [""]
    return "\n".join(out).rstrip() + "\n"


def write(parts: List[str]) -> Path:
    RESULTS_MD.write_text(render(parts))
    return RESULTS_MD
