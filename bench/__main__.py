"""`python -m bench [PART ...]`: run benchmark parts (all by default), save each part's
figures and rewrite bench/RESULTS.md. Needs root: the parts build network namespaces."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from typing import NoReturn

from bench import report

PARTS = ("failover", "scale", "profile", "startup")


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "parts", nargs="*", metavar="PART", help="failover, scale, profile, startup (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="few trials and sizes: a smoke run")
    modules = {part: importlib.import_module(f"bench.{part}") for part in PARTS}
    for module in modules.values():
        module.add_arguments(parser)
    args = parser.parse_args()
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}: choose from {', '.join(PARTS)}")
    if os.geteuid() != 0:
        print("bench: needs root (it builds network namespaces)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    for part in args.parts or PARTS:
        print(f"== {part}", flush=True)
        try:
            result = modules[part].run(args)
        except KeyboardInterrupt:
            print("interrupted; lab torn down", file=sys.stderr)
            return 130
        print(f"saved {report.save(part, result)}", flush=True)
        for text in result["tables"]:
            print("\n" + text, flush=True)
    print(f"wrote {report.write(list(PARTS))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
