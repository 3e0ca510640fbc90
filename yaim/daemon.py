"""Wires the node together and runs its main loop; one thread per role:

    health     runs the checker, turns results into the node's health (rise/fall)
    heartbeat  keeps the node key and this node's marks alive in the DCS
    balancer   reads the cluster, plans, creates and deletes marks
    actuator   makes the interface match the held claims; fences on time; follows the link
    watch      wakes the balancer the moment the cluster changes in the DCS
    lookout    with `probe-ahead`: probes a silent holder's addresses before its marks expire
    notify     runs the operator's notify commands for the events of the others
    failsafe   with `failsafe` on: asks the peers to hold while etcd is silent, answers them

around the claims ledger (yaim.claims), which holds every address's claim, and the
node's health and latest read (yaim.state).

The main thread handles the signals, watches the actuator, and shuts down: on
SIGTERM/SIGINT, or when a thread crashes, it closes the ledger and has every
address removed, then this node's marks and node key deleted (yaim.shutdown), so
the others take over at once instead of waiting for the TTLs. A signal handler may
interrupt the main thread anywhere, even inside a write to the log or with a lock
held, so it only queues the signal and wakes the loop through a pipe, as gunicorn's
arbiter does; the loop logs and acts.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import signal
import socket
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from yaim import checks, dcs, shutdown
from yaim import config as config_module
from yaim.actuator import address_protocol, first_ipv4
from yaim.actuator.link import LinkWatch
from yaim.claims import Ledger
from yaim.errors import ConfigError, YaimError
from yaim.failsafe import Failsafe, Tries, etcd_answers
from yaim.link import Link
from yaim.metrics import CONTENT_TYPE, Metrics
from yaim.peers import DEFAULT_PORT, Seal, read_secret
from yaim.reload import reload
from yaim.report import Report
from yaim.sdnotify import ServiceManager
from yaim.state import NodeState, Placement
from yaim.status import Sources, StatusServer
from yaim.threads.actuator import ActuatorThread
from yaim.threads.balancer import BalancerThread
from yaim.threads.base import Wakeup, Worker
from yaim.threads.failsafe import FailsafeThread, Policy
from yaim.threads.health import HealthThread
from yaim.threads.heartbeat import HeartbeatThread
from yaim.threads.lookout import LookoutThread
from yaim.threads.notify import Notifier
from yaim.threads.watch import Feed, WatchThread

log = logging.getLogger(__name__)


class Daemon:
    """One node: built from a validated config, run until a signal or a crash."""

    def __init__(self, config) -> None:
        config, secret = prepare_failsafe(config)
        self.config = config
        self.stop = threading.Event()
        self.wakeup = Wakeup()
        self.service_manager = ServiceManager()  # systemd's Type=notify, else no-ops
        self.signals: List[int] = []  # queued by the handlers, handled by the main loop
        self.crashed: List[str] = []
        self.metrics = Metrics()
        self.state = NodeState(Placement.of(config))
        self.notifier = Notifier(
            config, lambda: self.state.taking_part, on_crash=self._on_crash, metrics=self.metrics
        )
        self.ledger = Ledger(config.node_name, config.ttl_s, self.notifier.submit, self.metrics)
        failsafe = Failsafe(config.node_name, config.ttl_s, time.monotonic())
        self.policy = Policy(failsafe if config.failsafe_on else None)
        self._make_threads(config, {"stop": self.stop, "on_crash": self._on_crash})
        if secret is not None:
            self._make_failsafe(config, secret)
        stores = (self.heartbeat.dcs, self.balancer.dcs)
        self.report = Report(
            lambda: self.config,
            self.state,
            self.ledger,
            stores,
            lambda: self.balancer.drained,
            self.policy.report,
        )
        self.metrics.failsafe.set_function(lambda: self.policy.holding())
        self.metrics.addresses_held.set_function(lambda: len(self.ledger.held()))
        self.metrics.healthy.set_function(lambda: self.state.healthy)
        self.metrics.link_up.set_function(lambda: self.state.link.up)
        self.metrics.dcs_last_success_age.set_function(self.report.dcs_age_or_nan)
        self.status_server: Optional[StatusServer] = None
        self.thawed = time.monotonic()  # start, or the end of the last freeze of the process

    def _make_threads(self, config, common: Dict[str, Any]) -> None:
        common = dict(common, metrics=self.metrics)
        period = config.interval_s
        self.actuator = ActuatorThread(
            lambda: shutdown.make_actuator(config),
            self.ledger,
            config.node_name,
            announce_count=config.announce_count,
            announce_interval=config.announce_interval_s,
            announce_refresh=config.announce_refresh_s,
            make_link=lambda: LinkWatch(config.interface),
            link_rise=config.link_rise_s,
            on_link=self._on_link_change,
            own=config.peer_endpoint.host if config.failsafe_on else None,  # peers ask it
            resync=config.resync_s,
            period=period,
            **common,
        )
        self.ledger.wake = self.actuator.poke
        # One DCS handle per thread, sharing the node's session (the v3 lease).
        store = self._connect(config)
        store.check_release()
        args = (self.ledger, self.state)
        guarded = dict(common, period=period, policy=self.policy)  # what the failsafe allows
        watching = store.clone()
        feed = Feed(watching.root, watching.POOL_DIRS) if watching.CACHEABLE else None
        lookout = LookoutThread(config, self.state, **common) if config.probe_ahead_on else None
        ahead = None if lookout is None else lookout.silent
        self.balancer = BalancerThread(
            store, *args, config, self.actuator.sync, feed=feed, ahead=ahead, **guarded
        )
        self.heartbeat = HeartbeatThread(store.clone(), *args, self.balancer.poke, **guarded)
        checker, on_change = self._make_checker(config), self._on_health_change
        self.health = HealthThread(
            checker, self.state, config, on_change, period=config.check_interval_s, **common
        )
        self.watch = WatchThread(
            watching, self.balancer.poke, period, feed=feed, resync=config.resync_s, **common
        )
        self.threads: List[Worker] = [self.notifier, self.actuator, self.health]
        self.threads += [self.heartbeat, self.balancer, self.watch]
        if lookout is not None:
            self.threads.append(lookout)

    def _make_checker(self, config) -> checks.BaseChecker:
        """The checker of `config`; one that reads the DCS gets a handle of its own."""
        return checks.create(config, functools.partial(self._connect, config))

    def _connect(self, config) -> dcs.DCS:
        return dcs.connect(config, stop=self.stop, observe=self.metrics.dcs_request)

    def _make_failsafe(self, config, secret: bytes) -> None:
        """The failsafe thread and its peer endpoint on `peer-listen`."""
        seal = Seal(config.node_name, secret, config.ttl_s)
        common = {"stop": self.stop, "on_crash": self._on_crash, "metrics": self.metrics}
        try:
            thread = FailsafeThread(
                self.policy,
                self.ledger,
                self.state,
                config,
                seal,
                self._reaches_etcd,
                period=config.interval_s,
                **common,
            )
        except OSError as exc:
            problem = f"peer-listen {config.peer_listen}: cannot listen there: {exc}"
            raise YaimError(problem) from exc
        self.threads.append(thread)

    def _reaches_etcd(self, now: float) -> bool:
        """By the tries of the heartbeat's and the balancer's requests (etcd_answers)."""
        tries = [
            Tries(s.last_success, s.last_failure) for s in (self.heartbeat.dcs, self.balancer.dcs)
        ]
        return etcd_answers(tries, now, self.config.ttl_s)

    def _on_crash(self, name: str) -> None:
        self.crashed.append(name)
        self._stop_now()

    def _stop_now(self) -> None:
        self.stop.set()
        self.wakeup.set()

    def _on_health_change(self, healthy: bool) -> None:
        self.notifier.submit("health", None, self.state.health_reason)  # before what it causes
        self.heartbeat.poke()
        self.balancer.poke()

    def _on_link_change(self, link: Link) -> None:
        """From the actuator thread, which has just suspended or resumed the ledger, or
        tells a new cause of the link being down (no new health: no notify)."""
        was, self.state.link = self.state.link, link
        if was.up == link.up:
            return
        self.notifier.submit("health", None, link.cause)
        self.heartbeat.poke()
        self.balancer.poke()

    def _on_signal(self, signum: int, _frame) -> None:
        """A signal handler: queue the signal, wake the loop, nothing else."""
        self.signals.append(signum)
        self.wakeup.set()

    def run(self) -> int:
        """Run until stopped; the exit status: 0 after a signal, 1 after a crash."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        self._log_start()
        self._start_status()
        for thread in self.threads:
            thread.start()
        self.service_manager.ready(f"node {self.config.node_name} running")
        while not self.stop.is_set():
            asleep = time.monotonic()
            self.wakeup.wait(self.config.interval_s)
            self._note_freeze(asleep, time.monotonic())
            self._handle_signals()
            self._watch()
            if not self.stop.is_set():  # alive: the loop runs and the actuator is not stuck
                self.service_manager.watchdog(time.monotonic())
        self.shutdown()
        if self.crashed:
            log.critical("stopped because thread(s) crashed: %s", ", ".join(self.crashed))
            return 1
        return 0

    def _log_start(self) -> None:
        config = self.config
        log.info(
            "yaim node %s starting: interface %s, DCS %s, cluster /%s/%s",
            config.node_name,
            config.interface,
            ",".join(config.dcs_endpoints),
            config.dcs_namespace,
            config.dcs_clustername,
        )
        if config.dcs_migrate_from:
            log.info(
                "node %s is a member of the v3 layout and of the v2 one it moves from"
                " (dcs-migrate-from: %s): it marks in both and holds only with both",
                config.node_name,
                config.dcs_migrate_from,
            )
        if config.failsafe_on:
            log.info(
                "node %s has the failsafe hold on, its peer endpoint on %s; it takes no address"
                " for its first %.1fs: a promise its earlier run gave may still stand",
                config.node_name,
                config.peer_listen,
                config.ttl_s,
            )
        label = f"{config.interface}:{config.label}"
        log.info(
            "node %s marks the addresses it adds with label %s (IPv4) and address protocol %#x",
            config.node_name,
            label,
            address_protocol(label),
        )

    def _handle_signals(self) -> None:
        """SIGHUP reloads the configuration; SIGTERM and SIGINT stop the node."""
        while self.signals:
            signum = self.signals.pop(0)
            if signum == signal.SIGHUP:
                self.service_manager.reloading()
                self.config = reload(
                    self.config,
                    self.health,
                    self.notifier,
                    lambda new: prepare_failsafe(new)[0],
                    self._make_checker,
                )
                self.service_manager.ready(f"node {self.config.node_name} running")
                self.state.placement = Placement.of(self.config)
                self.balancer.poke()  # a manual node's plan, a weight: plan with them now
            else:
                name = signal.Signals(signum).name
                log.info("received %s: releasing everything and stopping", name)
                self._stop_now()

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
        """Every address off the interface, then the marks and the node key (yaim.shutdown)."""
        self.service_manager.stopping()
        self.ledger.close()
        self.stop.set()
        for thread in self.threads:
            thread.poke()
        shutdown.stop(self.config, self.ledger, self.actuator, "actuator" in self.crashed)
        self.watch.interrupt()
        self.notifier.close_and_wait()
        if self.status_server is not None:
            self.status_server.stop()
        log.info("node %s stopped", self.config.node_name)

    def _start_status(self) -> None:
        """The read-only endpoint on `status-listen`, unless it is empty."""
        if not self.config.status_listen:
            return
        report = self.report
        sources = Sources(report.health, report.status, self.metrics.exposition, CONTENT_TYPE)
        address = config_module.listen_address(self.config.status_listen)
        self.status_server = StatusServer(address, sources).start()


def prepare_failsafe(config) -> Tuple[Any, Optional[bytes]]:
    """With the failsafe on: the peer secret, and `peer-listen` set to the interface's own
    address if it is not given. ConfigError (exit 2) when either cannot be had."""
    if not config.failsafe_on:
        return config, None
    try:
        secret = read_secret(config.peer_secret_file)
    except (OSError, ValueError) as exc:
        raise ConfigError([f"{config.source}: peer-secret-file: {exc}"]) from None
    if config.peer_listen is None:
        address = first_ipv4(config.interface)
        if address is None:
            problem = (
                f"{config.source}: peer-listen: not set, and interface {config.interface} has"
                " no IPv4 address of its own to publish: set it"
            )
            raise ConfigError([problem])
        config = dataclasses.replace(config, peer_listen=f"{address}:{DEFAULT_PORT}")
    return config, secret


def interface_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True
