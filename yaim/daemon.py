"""Wires the roles together: config, DCS, checker and actuator, one thread each.

    health     runs the checker, turns results into the node's health (rise/fall)
    heartbeat  keeps the node key and this node's marks alive in the DCS
    balancer   reads the cluster, plans, creates and deletes marks
    actuator   makes the interface match the held addresses; fences on time

The main thread owns the signals and the shutdown: on SIGTERM/SIGINT, or when a
thread crashes, it removes every address, then deletes this node's marks and
node key, so the others take over at once instead of waiting for the TTLs.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from typing import List

from yaim import checks, dcs
from yaim import config as config_module
from yaim.actuator import Actuator
from yaim.actuator.iproute import IpCommand
from yaim.errors import ActuatorError, ConfigError, DCSError
from yaim.state import SharedState
from yaim.threads.actuator import ActuatorThread
from yaim.threads.balancer import BalancerThread
from yaim.threads.base import Worker
from yaim.threads.health import HealthThread
from yaim.threads.heartbeat import HeartbeatThread
from yaim.view import parse_snapshot

log = logging.getLogger(__name__)

# A shutdown talks to the DCS once, briefly: a dead DCS must not hold up the exit.
SHUTDOWN_DCS_TIMEOUT = 0.5
# How long the main thread waits for the actuator to remove the addresses at shutdown.
SHUTDOWN_ACTUATOR_TIMEOUT = 2.0


def fence_margin(config) -> float:
    """Seconds before a mark can expire at which its address must already be gone.

    The fence time counts from when the refresh was sent, before etcd starts the
    TTL, so the margin only has to cover the actuator's reaction and clock skew.
    """
    return max(0.1, 0.1 * config.ttl_s)


def make_actuator(config, tools=None) -> Actuator:
    return Actuator(config.interface, config.label, config.netmask, config.netmask6, tools)


class Daemon:
    """One node: built from a validated config, run until a signal or a crash."""

    def __init__(self, config) -> None:
        self.config = config
        self.stop = threading.Event()
        self.wake_main = threading.Event()
        self.reload_requested = False
        self.crashed: List[str] = []
        self.state = SharedState(config.ttl_s, fence_margin(config))
        common = {"stop": self.stop, "on_crash": self._on_crash}
        self.actuator = ActuatorThread(
            lambda: make_actuator(config),
            self.state,
            config.node_name,
            period=config.interval_s,
            **common,
        )
        self.balancer = BalancerThread(
            dcs.connect(config, stop=self.stop),
            self.state,
            config,
            self.actuator.sync,
            period=config.interval_s,
            **common,
        )
        self.heartbeat = HeartbeatThread(
            dcs.connect(config, stop=self.stop),
            self.state,
            self.balancer.poke,
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
        self.threads: List[Worker] = [self.actuator, self.health, self.heartbeat, self.balancer]

    def _on_crash(self, name: str) -> None:
        self.crashed.append(name)
        self._stop_now()

    def _stop_now(self) -> None:
        self.stop.set()
        self.wake_main.set()

    def _on_health_change(self, healthy: bool) -> None:
        self.heartbeat.poke()
        self.balancer.poke()

    def _on_signal(self, signum: int, _frame) -> None:
        log.info("received %s: releasing everything and stopping", signal.Signals(signum).name)
        self._stop_now()

    def _on_reload(self, _signum: int, _frame) -> None:
        self.reload_requested = True
        self.wake_main.set()

    def reload(self) -> None:
        """SIGHUP: read the file again; a bad file is reported and the running config kept."""
        try:
            new = config_module.load(self.config.source)
        except ConfigError as exc:
            log.error(
                "reload refused, keeping the running configuration: %s", "; ".join(exc.problems)
            )
            return
        logging.getLogger().setLevel(new.log_level)
        log.info(
            "reloaded %s: log-level %s (other changes take effect at restart)",
            new.source,
            new.log_level,
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
        for thread in self.threads:
            thread.start()
        while not self.stop.is_set():
            self.wake_main.wait(self.config.interval_s)
            self.wake_main.clear()
            if self.reload_requested:
                self.reload_requested = False
                self.reload()
            self._watch()
        self.shutdown()
        if self.crashed:
            log.critical("stopped because thread(s) crashed: %s", ", ".join(self.crashed))
            return 1
        return 0

    def _watch(self) -> None:
        """Notice a stuck thread. Only a stuck actuator is fatal: it is the one that fences.

        The others may wait on a slow DCS or check for long; fencing covers them.
        """
        for thread in self.threads:
            stuck = thread.stuck_for()
            if stuck <= self.config.ttl_s:
                continue
            log.warning("thread %s has not finished a round for %.1fs", thread.name, stuck)
            if thread is self.actuator:
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
            remove_addresses(self.config, tools=[IpCommand()])
        release_in_dcs(self.config, held)
        log.info("node %s stopped", self.config.node_name)


def remove_addresses(config, tools=None) -> List:
    """Remove every labelled address from the interface; returns the ones that failed."""
    actuator = make_actuator(config, tools)
    try:
        owned = actuator.owned()
    except ActuatorError as exc:
        log.error("cannot list the addresses of %s: %s", config.interface, exc)
        return []
    for address in sorted(owned):
        log.info("removing %s from %s", address, config.interface)
    return actuator.remove_all(sorted(owned))


def release_in_dcs(config, held=()) -> bool:
    """Delete this node's marks and node key, one quick try each; False if the DCS failed."""
    store = dcs.connect(config, tries=1, timeout=SHUTDOWN_DCS_TIMEOUT)
    mine = set(held)
    try:
        snapshot = store.read()
        view, _ = parse_snapshot(snapshot)
        mine |= {address for address, holder in view.holders.items() if holder == store.node}
    except DCSError as exc:
        log.warning("cannot read the DCS to release marks: %s", exc)
    try:
        for address in sorted(mine):
            if store.delete_mark(address):
                log.info("released %s on node %s: stopping", address, store.node)
        store.delete_node()
    except DCSError as exc:
        log.warning("giving up on the DCS, the marks will expire: %s", exc)
        return False
    return True


def interface_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def cleanup(config) -> None:
    """--cleanup: nothing of this node left on the interface or (if reachable) in the DCS."""
    failed = remove_addresses(config)
    if failed:
        log.error("could not remove: %s", ", ".join(map(str, failed)))
    release_in_dcs(config)
