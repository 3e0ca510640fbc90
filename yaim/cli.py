"""The `yaim` command: run the daemon, check a config, or clean up after a stop.

What only some runs need is imported where it is needed: the configuration and YAML
not for --version or --help, logging.handlers only for log-file and log-syslog, the
daemon not for --check-config (the chosen backend and checker are imported by
yaim.dcs and yaim.checks, so a library they lack is asked for here, before the start).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Callable, List, Optional, Tuple

from yaim import __version__, sdnotify
from yaim.errors import ConfigError, YaimError
from yaim.redact import Secrets

if TYPE_CHECKING:
    from yaim import config

log = logging.getLogger("yaim")

EXIT_OK, EXIT_FATAL, EXIT_CONFIG = 0, 1, 2

# Libraries that are chatty at DEBUG: their detail is not ours to show.
QUIET = ("urllib3", "asyncio")


def build_parser() -> argparse.ArgumentParser:
    """The command line (also the source of the manual page: packaging/generate.py)."""
    parser = argparse.ArgumentParser(
        prog="yaim",
        description="Keep a pool of virtual IP addresses on healthy nodes, coordinated in etcd.",
    )
    parser.add_argument(
        "-c",
        "--config",
        help="configuration file (default: $YAIM_CONFIG, else ./yaim.yml, in the directory"
        " yaim is started from)",
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
    return parser


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


LOG_FORMAT = "%(asctime)s %(levelname)s %(threadName)s: %(message)s"
# syslog stamps the time itself and wants the program's name and pid first.
SYSLOG_FORMAT = "yaim[%(process)d]: %(levelname)s %(threadName)s: %(message)s"


def log_handlers(cfg) -> List[logging.Handler]:
    """stderr, or the `log-file` and/or `log-syslog` the config names.

    On a stderr that journald reads (a systemd service's), each line starts with its
    syslog priority and has no timestamp of its own (yaim.sdnotify.JournalFormatter).
    The file handler reopens the file when logrotate moves it away, so neither
    copytruncate nor a signal is needed. ConfigError if one cannot be opened.
    """
    chosen: List[Tuple[str, Callable[[], logging.Handler], str]] = []
    if cfg.log_file:
        chosen.append(
            ("log-file", lambda: _handlers().WatchedFileHandler(cfg.log_file), LOG_FORMAT)
        )
    if cfg.log_syslog:
        facility = cfg.log_syslog.lower()
        chosen.append(
            (
                "log-syslog",
                lambda: _handlers().SysLogHandler("/dev/log", facility=facility),
                SYSLOG_FORMAT,
            )
        )
    if not chosen:
        chosen.append(("", lambda: logging.StreamHandler(sys.stderr), LOG_FORMAT))
    handlers = []
    for key, make, form in chosen:
        try:
            handler = make()
        except OSError as exc:
            raise ConfigError([f"{cfg.source}: {key}: cannot open it: {exc}"]) from None
        stderr_to_journal = not key and sdnotify.journal_stderr()
        handler.setFormatter(
            sdnotify.JournalFormatter() if stderr_to_journal else logging.Formatter(form)
        )
        handlers.append(handler)
    return handlers


def _handlers() -> ModuleType:
    """logging.handlers (pickle, sockets and more): only for log-file and log-syslog."""
    from logging import handlers

    return handlers


def _not_chatty(record: logging.LogRecord) -> bool:
    """Drop the QUIET libraries' records below WARNING.

    A filter on the handlers, not a logger level: a library may set its own logger's
    level when it is imported, which can happen after logging is set up.
    """
    quiet = any(record.name == name or record.name.startswith(name + ".") for name in QUIET)
    return record.levelno >= logging.WARNING or not quiet


class ScrubbingFormatter(logging.Formatter):
    """Another formatter's text with the config's secrets masked.

    It scrubs the finished line, not the record's message: the arguments, a
    traceback and whatever a library's exception says are all in it by then.
    """

    def __init__(self, inner: logging.Formatter, secrets: Secrets) -> None:
        super().__init__()
        self.inner = inner
        self.secrets: Tuple[Secrets, ...] = (secrets,)

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        for secrets in self.secrets:
            text = secrets.scrub(text)
        return text


def setup_logging(cfg, handlers: Optional[List[logging.Handler]] = None) -> None:
    """Log at the config's level to `handlers` (default stderr), its secrets masked."""
    handlers = handlers or [logging.StreamHandler(sys.stderr)]
    secrets = Secrets.of(cfg)
    for handler in handlers:
        handler.addFilter(_not_chatty)
        inner = handler.formatter or logging.Formatter(LOG_FORMAT)
        handler.setFormatter(ScrubbingFormatter(inner, secrets))
    logging.basicConfig(level=cfg.log_level, handlers=handlers, format=LOG_FORMAT)


def mask_in_logs(cfg) -> None:
    """Mask the secrets of `cfg` (a reloaded file) in every handler that masks; those of
    the file before it stay masked too, as a late line may still quote them."""
    secrets = Secrets.of(cfg)
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, ScrubbingFormatter):
            handler.formatter.secrets = (handler.formatter.secrets[-1], secrets)


def load_or_report(given: Optional[str], system_fallback: bool = False) -> Optional[config.Config]:
    """The configuration (`given` by -c, else found by yaim.config.config_path), or None
    after printing every problem, one per line, to stderr."""
    from yaim import config

    try:
        return config.load(config.config_path(given, os.environ, system_fallback))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def unavailable(cfg) -> List[str]:
    """A line per chosen part that cannot be loaded here (a library not installed), naming
    the file and the key: the backend and the checker are imported only once chosen."""
    from yaim import checks, dcs

    lacking = [("dcs-type", dcs.unavailable(cfg)), ("checker-type", checks.unavailable(cfg))]
    return [f"{cfg.source}: {key}: {problem}" for key, problem in lacking if problem]


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; the exit status follows the contract (0 ok, 1 fatal, 2 config)."""
    args = parse_args(argv)
    cfg = load_or_report(args.config)
    if cfg is None:
        return EXIT_CONFIG
    try:
        # --check-config answers the operator at the terminal, whatever the file names.
        setup_logging(cfg, None if args.check_config else log_handlers(cfg))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    for warning in cfg.warnings:
        log.warning("%s", warning)
    problems = [] if args.cleanup else unavailable(cfg)  # a cleanup needs neither
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return EXIT_CONFIG
    if args.check_config:
        import yaml

        shown = Secrets.of(cfg).scrub_value(cfg.as_dict())  # a last wall behind as_dict's masks
        yaml.safe_dump(shown, sys.stdout, default_flow_style=False, sort_keys=False)
        return EXIT_OK

    from yaim import daemon, shutdown

    if args.cleanup:
        shutdown.cleanup(cfg)
        return EXIT_OK
    if not daemon.interface_exists(cfg.interface):
        print(
            f"{cfg.source}: interface: no interface named {cfg.interface!r} on this host",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    try:
        return daemon.Daemon(cfg).run()
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    except YaimError as exc:
        log.critical("%s", exc)
        return EXIT_FATAL


def run() -> None:
    sys.exit(main())
