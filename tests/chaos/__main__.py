"""`python -m tests.chaos`: a chaos run of a given length; exit status 1 on any violation.

    python -m tests.chaos [--seed S] [--duration SECONDS | --rounds N]
                          [--dcs etcd|etcd3|both] [--kinds K,K...] [--workdir DIR]

Needs root (network namespaces) and etcd. The seed is printed first and last, so
a failing run can be replayed. The logs of a failing run are kept in the work
directory; a passing run's are removed unless --workdir was given.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

from tests.chaos.runner import run, summary


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    parser.add_argument(
        "--duration",
        type=float,
        default=600.0,
        help="seconds of faults (shared by the two APIs with --dcs both)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds of every fault kind")
    parser.add_argument("--dcs", choices=("etcd", "etcd3", "both"), default="etcd")
    parser.add_argument("--kinds", default="", help="only these fault kinds, comma-separated")
    parser.add_argument("--workdir", type=Path, default=None)
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    # SIGTERM, or SIGINT also where a background start ignored it: tear the lab down.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    seed = args.seed if args.seed is not None else secrets.randbelow(10**6)
    types = ["etcd", "etcd3"] if args.dcs == "both" else [args.dcs]
    print(f"yaim chaos: seed {seed}, dcs-type {', '.join(types)}", flush=True)
    failed = False
    for dcs_type in types:
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="yt-chaos-"))
        workdir = workdir / dcs_type
        duration = args.duration / len(types)
        only = [k for k in args.kinds.split(",") if k]
        result = run(seed, dcs_type, workdir, duration, args.rounds, _print, only)
        print(summary(result), flush=True)
        failed = failed or not result.ok
        if result.ok and args.workdir is None:
            shutil.rmtree(str(workdir.parent), ignore_errors=True)
    return 1 if failed else 0


def _print(line: str) -> None:
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
