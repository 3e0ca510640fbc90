"""Wires the roles together: config, DCS, checker and actuator, one thread each.

    health     runs the checker, turns results into the node's health (rise/fall)
    heartbeat  keeps the node key and this node's marks alive in the DCS
    balancer   reads the cluster, plans, creates and deletes marks
    actuator   makes the interface match the held addresses; fences on time
    watch      wakes the balancer the moment the cluster changes in the DCS
    notify     runs the operator's notify commands for the others' events

The main thread owns the signals and the shutdown: on SIGTERM/SIGINT, or when a
thread crashes, it removes every address, then deletes this node's marks and
node key, so the others take over at once instead of waiting for the TTLs.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import socket
import threading
import time
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from yaim import __version__, checks, dcs
from yaim import config as config_module
from yaim.actuator import Actuator, address_protocol
from yaim.actuator.iproute import IpCommand
from yaim.cli import mask_in_logs
from yaim.errors import ActuatorError, ConfigError, DCSError, YaimError
from yaim.metrics import CONTENT_TYPE, Metrics
from yaim.redact import Secrets, mask_url
from yaim.state import SharedState
from yaim.status import Sources, StatusServer
from yaim.threads.actuator import ActuatorThread
from yaim.threads.balancer import BalancerThread
from yaim.threads.base import Worker
from yaim.threads.health import HealthThread
from yaim.threads.heartbeat import HeartbeatThread
from yaim.threads.notify import Notifier
from yaim.threads.watch import WatchThread
from yaim.view import IPAddress, in_order, parse_snapshot

log = logging.getLogger(__name__)

# A shutdown talks to the DCS once, briefly: a dead DCS must not hold up the exit.
SHUTDOWN_DCS_TIMEOUT = 0.5
# How long the main thread waits for the actuator to remove the addresses at shutdown.
SHUTDOWN_ACTUATOR_TIMEOUT = 2.0
# Beyond notify-timeout, how long shutdown waits for the notifier: a killed command's reaping.
SHUTDOWN_NOTIFY_SLACK = 1.5

# Keys a SIGHUP applies at once (by name, or by prefix); any other change needs a restart.
LIVE_KEYS = ("log-level",)
CHECK_PREFIXES = ("check-", "checker-", "http-", "postgres-", "shell-")
LIVE_PREFIXES = (*CHECK_PREFIXES, "notify-")


def is_live(key: str) -> bool:
    """Whether a SIGHUP applies a change of this key without a restart."""
    return key in LIVE_KEYS or key.startswith(LIVE_PREFIXES)


def fence_margin(config) -> float:
    """Seconds before a mark can expire at which its address must already be gone.

    The fence time counts from when the refresh was sent, before etcd starts the
    TTL, so the margin only has to cover the actuator's reaction and clock skew.
    """
    return max(0.1, 0.1 * config.ttl_s)


def make_actuator(config, tools=None) -> Actuator:
    return Actuator(
        config.interface,
        config.label,
        config.netmask,
        config.netmask6,
        tools,
        config.allowed_networks,
    )


class Daemon:
    """One node: built from a validated config, run until a signal or a crash."""

    def __init__(self, config) -> None:
        self.config = config
        self.stop = threading.Event()
        self.wake_main = threading.Event()
        self.reload_requested = False
        self.crashed: List[str] = []
        self.state = SharedState(config.ttl_s, fence_margin(config))
        self.metrics = Metrics()
        self.notifier = Notifier(
            config, lambda: self.state.healthy, on_crash=self._on_crash, metrics=self.metrics
        )
        common = {"stop": self.stop, "on_crash": self._on_crash, "metrics": self.metrics}
        self.actuator = ActuatorThread(
            lambda: make_actuator(config),
            self.state,
            config.node_name,
            self.notifier.submit,
            announce_count=config.announce_count,
            announce_interval=config.announce_interval_s,
            period=config.interval_s,
            **common,
        )
        # One DCS handle per thread, sharing the node's session (the v3 lease).
        store = dcs.connect(config, stop=self.stop, observe=self.metrics.dcs_request)
        self.balancer = BalancerThread(
            store,
            self.state,
            config,
            self.actuator.sync,
            period=config.interval_s,
            **common,
        )
        self.heartbeat = HeartbeatThread(
            store.clone(),
            self.state,
            self.balancer.poke,
            self.actuator.sync,
            period=config.interval_s,
            **common,
        )
        self.health = HealthThread(
            checks.create(config),
            self.state,
            config,
            self._on_health_change,
            period=config.check_interval_s,
            **common,
        )
        self.watch = WatchThread(store.clone(), self.balancer.poke, config.interval_s, **common)
        self.threads: List[Worker] = [
            self.notifier,
            self.actuator,
            self.health,
            self.heartbeat,
            self.balancer,
            self.watch,
        ]
        self.metrics.addresses_held.set_function(lambda: len(self.state.held()))
        self.metrics.healthy.set_function(lambda: self.state.healthy)
        self.metrics.dcs_last_success_age.set_function(self._dcs_age_or_nan)
        self.status_server: Optional[StatusServer] = None
        self.thawed = time.monotonic()  # start, or the end of the last freeze of the process

    def _on_crash(self, name: str) -> None:
        self.crashed.append(name)
        self._stop_now()

    def _stop_now(self) -> None:
        self.stop.set()
        self.wake_main.set()

    def _on_health_change(self, healthy: bool) -> None:
        self.notifier.submit("health", None, self.state.health_reason)  # before what it causes
        self.heartbeat.poke()
        self.balancer.poke()

    def _on_signal(self, signum: int, _frame) -> None:
        log.info("received %s: releasing everything and stopping", signal.Signals(signum).name)
        self._stop_now()

    def _on_reload(self, _signum: int, _frame) -> None:
        self.reload_requested = True
        self.wake_main.set()

    def reload(self) -> None:
        """SIGHUP: read the file again and apply what can change live; a bad file is refused.

        Log level and check settings take effect at once (a new checker from the
        next round on, the health state kept, so no address is dropped); any other
        change is reported as needing a restart and the running value is kept.
        """
        try:
            new = config_module.load(self.config.source)
        except ConfigError as exc:
            log.error(
                "reload refused, keeping the running configuration: %s", "; ".join(exc.problems)
            )
            return
        mask_in_logs(new)  # before a line can quote the new file's passwords
        running, wanted = self.config.as_dict(False), new.as_dict(False)
        changed = [key for key in wanted if wanted[key] != running[key]]
        live = [key for key in changed if is_live(key)]
        pending = [key for key in changed if not is_live(key)]
        applied = dataclasses.replace(
            self.config,
            **{key.replace("-", "_"): getattr(new, key.replace("-", "_")) for key in live},
        )
        if any(key.startswith(CHECK_PREFIXES) for key in live):
            try:
                checker = checks.create(applied)
            except YaimError as exc:
                log.error("reload refused, keeping the running configuration: %s", exc)
                return
            self.health.reconfigure(applied, checker)
        self.notifier.reconfigure(applied)
        self.config = applied
        logging.getLogger().setLevel(applied.log_level)
        log.info(
            "reloaded %s: %s",
            new.source,
            ", ".join(live) + " applied" if live else "no live change",
        )
        if pending:
            log.warning(
                "reload: %s changed in %s but needs a restart; running with the old value",
                ", ".join(pending),
                new.source,
            )

    def run(self) -> int:
        """Run until stopped; the exit status: 0 after a signal, 1 after a crash."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_reload)
        log.info(
            "yaim node %s starting: interface %s, DCS %s, cluster /%s/%s",
            self.config.node_name,
            self.config.interface,
            ",".join(self.config.dcs_endpoints),
            self.config.dcs_namespace,
            self.config.dcs_clustername,
        )
        label = f"{self.config.interface}:{self.config.label}"
        log.info(
            "node %s marks the addresses it adds with label %s (IPv4) and address protocol %#x",
            self.config.node_name,
            label,
            address_protocol(label),
        )
        self._start_status()
        for thread in self.threads:
            thread.start()
        while not self.stop.is_set():
            asleep = time.monotonic()
            self.wake_main.wait(self.config.interval_s)
            self.wake_main.clear()
            self._note_freeze(asleep, time.monotonic())
            if self.reload_requested:
                self.reload_requested = False
                self.reload()
            self._watch()
        self.shutdown()
        if self.crashed:
            log.critical("stopped because thread(s) crashed: %s", ", ".join(self.crashed))
            return 1
        return 0

    def _note_freeze(self, asleep: float, awake: float) -> None:
        """A wait that overran by more than an interval means the whole process was not
        running (SIGSTOP, a paused VM, a starved host), so no thread ran either: from
        then on the actuator is judged from `awake`, not from its last round."""
        if awake - asleep > 2 * self.config.interval_s:
            self.thawed = awake

    def _watch(self, now: Optional[float] = None) -> None:
        """Notice a stuck actuator: it is the thread that fences, so that is fatal.

        The other threads may legitimately wait long on a slow DCS or check, and
        while they do the fence times still protect the addresses. After a freeze
        the actuator gets a whole ttl to finish a round, as at start.
        """
        now = time.monotonic() if now is None else now
        stuck = min(self.actuator.stuck_for(now), now - self.thawed)
        if stuck > self.config.ttl_s:
            log.critical("actuator thread has not finished a round for %.1fs: stopping", stuck)
            self.crashed.append("actuator (stuck)")
            self._stop_now()

    def shutdown(self) -> None:
        """Remove the addresses, then the marks and the node key (never the other way)."""
        held = self.state.close()
        self.stop.set()
        for thread in self.threads:
            thread.poke()
        self.actuator.join(SHUTDOWN_ACTUATOR_TIMEOUT)
        if self.actuator.is_alive() or "actuator" in self.crashed:
            log.error("actuator thread did not finish: removing addresses with the ip command")
            failed = remove_addresses(self.config, tools=[IpCommand()])
            self._notify_last(set(self.actuator.notified) - set(failed))
        release_in_dcs(self.config, held)
        self._close_notifier()
        if self.status_server is not None:
            self.status_server.stop()
        log.info("node %s stopped", self.config.node_name)

    def _notify_last(self, released: Set[IPAddress]) -> None:
        """The releases of the shutdown that the actuator thread could not notify: it
        did not finish, and these addresses went with the ip command."""
        for address in in_order(released):
            self.notifier.submit("release", address, "stopping")

    def _close_notifier(self) -> None:
        """A bounded wait for the queued notifications."""
        if not self.notifier.is_alive():
            return
        self.notifier.close()
        self.notifier.join(self.config.notify_timeout_s + SHUTDOWN_NOTIFY_SLACK)
        if self.notifier.is_alive():
            log.warning("a notify command is still running at exit: it is killed")

    def _start_status(self) -> None:
        """The read-only endpoint on `status-listen`, unless it is empty."""
        if not self.config.status_listen:
            return
        sources = Sources(self.health_probe, self.status, self.metrics.exposition, CONTENT_TYPE)
        address = config_module.listen_address(self.config.status_listen)
        self.status_server = StatusServer(address, sources).start()

    def _dcs_age(self) -> Tuple[str, Optional[float]]:
        """The endpoint of the most recent successful DCS request and its age (None: never)."""
        stores = (self.heartbeat.dcs, self.balancer.dcs)
        latest = max(stores, key=lambda store: store.last_success or float("-inf"))
        if latest.last_success is None:
            return latest.endpoint, None
        return latest.endpoint, time.monotonic() - latest.last_success

    def _dcs_age_or_nan(self) -> float:
        """The age for the metric: NaN until the first success, as Prometheus expects."""
        age = self._dcs_age()[1]
        return float("nan") if age is None else age

    def _fresh(self, age: Optional[float]) -> bool:
        """A DCS session is fresh while its last success is younger than the TTL."""
        return age is not None and age < self.config.ttl_s

    def health_probe(self) -> Tuple[bool, str]:
        """GET /health: healthy, and the DCS answered within the last ttl. The checker
        masks its reason; the config's secrets are scrubbed from it all the same."""
        _, age = self._dcs_age()
        reason = Secrets.of(self.config).scrub(self.state.health_reason)
        if not self.state.healthy:
            return False, "unhealthy: " + reason
        if not self._fresh(age):
            since = "never" if age is None else f"{age:.1f} s ago"
            return False, f"DCS session stale: last successful request {since}"
        return True, "healthy: " + reason

    def status(self) -> Dict[str, Any]:
        """GET /status: this node and its view of the cluster, as plain JSON values, with
        the config's secrets scrubbed from every string (a last wall, as in /health)."""
        endpoint, age = self._dcs_age()
        view = self.state.view
        cluster = None
        if view is not None:
            cluster = {
                "nodes": sorted(view.nodes),
                "pool": [
                    {"address": str(address), "holder": view.holders.get(address)}
                    for address in in_order(view.pool)
                ],
                "conflicts": [
                    {
                        "address": str(address),
                        "mac": view.conflicts[address].mac,
                        "seen_by": view.conflicts[address].node,
                    }
                    for address in in_order(view.conflicts)
                ],
            }
        shown = {
            "node": self.config.node_name,
            "version": __version__,
            "healthy": self.state.healthy,
            "health_reason": self.state.health_reason,
            "drained": self.balancer.drained,
            "dcs": {
                "endpoint": mask_url(endpoint),
                "last_success_age": None if age is None else round(age, 3),
                "fresh": self._fresh(age),
            },
            "addresses": [str(a) for a in in_order(self.state.held())],
            "cluster": cluster,
        }
        return Secrets.of(self.config).scrub_value(shown)


def remove_addresses(config, tools=None, marked: Iterable[IPAddress] = ()) -> List:
    """Remove every address yaim marked from the interface; returns the ones that failed.

    `marked`: addresses this node has marks for in the DCS. Where IPv6 addresses
    can carry no mark of their own, those marks are what tells yaim's apart.
    """
    actuator = make_actuator(config, tools)
    scanned = listed(actuator)
    if scanned is None:
        return []
    present, owned = scanned
    owned |= {address for address in present.intersection(marked) if actuator.adopt(address)}
    for address in in_order(owned):
        log.info("removing %s from %s", address, config.interface)
    return actuator.remove_all(in_order(owned))


def release_in_dcs(config, held=()) -> bool:
    """Delete this node's marks and node key, one quick try each; False if the DCS failed.

    A mark whose address is off the interface (listed with `ip`) goes with a
    `released` note, so that the next holder need not probe for it.
    """
    store = dcs.connect(config, tries=1, timeout=SHUTDOWN_DCS_TIMEOUT)
    marks = marked_here(store)
    marks.update((address, marks.get(address)) for address in held)
    present = addresses_present(config) if marks else None
    try:
        for address in in_order(marks):
            mark = marks[address] if present is not None and address not in present else None
            if store.release_mark(address, mark):
                log.info("released %s on node %s: stopping", address, store.node)
        store.delete_node()
    except DCSError as exc:
        log.warning("giving up on the DCS, the marks will expire: %s", exc)
        return False
    return True


def marked_here(store: dcs.DCS) -> Dict[IPAddress, Optional[int]]:
    """The pool addresses this node has marks for, with the marks' numbers where known;
    one quick read, none if the DCS fails."""
    try:
        view, _ = parse_snapshot(store.read())
    except DCSError as exc:
        log.warning("cannot read the DCS for the marks of node %s: %s", store.node, exc)
        return {}
    return {
        address: view.marks.get(address)
        for address, holder in view.holders.items()
        if holder == store.node
    }


def addresses_present(config) -> Optional[Set[IPAddress]]:
    """Every address on the interface, listed with `ip` (no netlink socket in this
    thread); None if it cannot be listed."""
    scanned = listed(make_actuator(config, [IpCommand()]))
    return None if scanned is None else scanned[0]


def listed(actuator: Actuator) -> Optional[Tuple[Set[IPAddress], Set[IPAddress]]]:
    """The actuator's scan: (every address on the interface, yaim's); None, logged,
    if the interface cannot be listed."""
    try:
        return actuator.scan()
    except ActuatorError as exc:
        log.error("cannot list the addresses of %s: %s", actuator.interface, exc)
        return None


def interface_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def cleanup(config) -> None:
    """--cleanup: nothing of this node left on the interface or (if reachable) in the DCS."""
    store = dcs.connect(config, tries=1, timeout=SHUTDOWN_DCS_TIMEOUT)
    failed = remove_addresses(config, marked=marked_here(store))
    if failed:
        log.error("could not remove: %s", ", ".join(map(str, failed)))
    release_in_dcs(config)
