"""The `yaim` command: run the daemon, check a config, or clean up after a stop."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

import yaml

from yaim import __version__, config
from yaim.errors import ConfigError, YaimError

log = logging.getLogger("yaim")

EXIT_OK, EXIT_FATAL, EXIT_CONFIG = 0, 1, 2

# Libraries that are chatty at DEBUG: their detail is not ours to show.
QUIET = ("pyroute2", "urllib3", "asyncio")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="yaim",
        description="Keep a pool of virtual IP addresses on healthy nodes, coordinated in etcd.",
    )
    parser.add_argument(
        "-c",
        "--config",
        default="yaim.yml",
        help="configuration file (default: ./yaim.yml, in the directory yaim is started from)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check-config",
        action="store_true",
        help="validate the configuration, print it with secrets masked, exit",
    )
    mode.add_argument(
        "--cleanup",
        action="store_true",
        help="remove every labelled address and this node's marks, exit 0",
    )
    parser.add_argument("--version", action="version", version="yaim " + __version__)
    return parser.parse_args(argv)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(threadName)s: %(message)s",
        stream=sys.stderr,
    )
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; the exit status follows the contract (0 ok, 1 fatal, 2 config)."""
    args = parse_args(argv)
    try:
        cfg = config.load(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(cfg.log_level)
    for warning in cfg.warnings:
        log.warning("%s", warning)
    if args.check_config:
        yaml.safe_dump(cfg.as_dict(), sys.stdout, default_flow_style=False, sort_keys=False)
        return EXIT_OK

    from yaim import daemon

    if args.cleanup:
        daemon.cleanup(cfg)
        return EXIT_OK
    if not daemon.interface_exists(cfg.interface):
        print(
            f"{cfg.source}: interface: no interface named {cfg.interface!r} on this host",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    try:
        return daemon.Daemon(cfg).run()
    except YaimError as exc:
        log.critical("%s", exc)
        return EXIT_FATAL


def run() -> None:
    sys.exit(main())
