"""SIGHUP: read the configuration file again and give each part of the node what it
may change live.

The log level, the check settings (to the health thread, with a checker built from
them: it checks with both from its next round on and keeps the health state, so a
reload by itself never drops an address), the notify commands (to the notifier) and
the placement keys (`weight`, `rebalance`, `rebalance-delay`: the daemon hands them to
the heartbeat and the balancer through yaim.state) take effect at once. A change to
any other key is reported as needing a restart and the running value kept. A file with
errors, or check settings no checker can be made of, is refused whole before anything
changes.
"""

from __future__ import annotations

import logging
from typing import List

from yaim import checks
from yaim import config as config_module
from yaim.cli import mask_in_logs
from yaim.errors import ConfigError, YaimError
from yaim.threads.health import HealthThread
from yaim.threads.notify import Notifier

log = logging.getLogger(__name__)

# Keys a SIGHUP applies at once (by name, or by prefix); any other change needs a restart.
LIVE_KEYS = ("log-level", "weight", "rebalance", "rebalance-delay")
CHECK_PREFIXES = ("check-", "checker-", "http-", "postgres-", "shell-", "trigger-")
LIVE_PREFIXES = (*CHECK_PREFIXES, "notify-")


def is_live(key: str) -> bool:
    """Whether a SIGHUP applies a change of this key without a restart."""
    return key in LIVE_KEYS or key.startswith(LIVE_PREFIXES)


def changed(running, new) -> List[str]:
    """The contract's keys whose values differ between two configurations, in file order."""
    before, after = running.as_dict(False), new.as_dict(False)
    return [key for key in after if after[key] != before[key]]


def reload(
    running,
    health: HealthThread,
    notifier: Notifier,
    resolve=lambda config: config,
    make_checker=checks.create,
):
    """Read `running.source` again and apply what can change live; the configuration
    the node runs with from now on (`running` itself when the file is refused).
    `resolve` fills in what the start found (the failsafe's `peer-listen`), so that it
    does not count as a change; `make_checker` builds a checker of a configuration."""
    try:
        new = resolve(config_module.load(running.source))
    except ConfigError as exc:
        log.error("reload refused, keeping the running configuration: %s", "; ".join(exc.problems))
        return running
    mask_in_logs(new)  # before a line can quote the new file's passwords
    keys = changed(running, new)
    live = [key for key in keys if is_live(key)]
    applied = running.taking(new, live)
    if any(key.startswith(CHECK_PREFIXES) for key in live):
        try:
            checker = make_checker(applied)
        except YaimError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            return running
        health.reconfigure(applied, checker)
    notifier.reconfigure(applied)
    logging.getLogger().setLevel(applied.log_level)
    log.info(
        "reloaded %s: %s", new.source, ", ".join(live) + " applied" if live else "no live change"
    )
    pending = [key for key in keys if not is_live(key)]
    if pending:
        log.warning(
            "reload: %s changed in %s but needs a restart; running with the old value",
            ", ".join(pending),
            new.source,
        )
    return applied
