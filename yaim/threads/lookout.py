"""The lookout thread: sends the probes yaim.lookout asks for and hears the answers, on
sockets it keeps open (yaim.actuator.probe.Prober), and tells the balancer which of the
addresses it has just marked nobody has answered for (`silent`).

While a holder is suspected it sleeps on an epoll descriptor of its sockets, so an answer
is read as it comes; otherwise answers wait in the sockets until its next step (a probe
or a judgement, which reads them first): at 10 nodes that is two wake-ups an interval
instead of one per answer. The balancer's question reads whatever has come before it is
answered, under the same lock, so no answer waiting in a socket is overlooked; a socket
that overflowed meanwhile says so (its drops count) and no address is silent then.

It follows the balancer's latest read (yaim.state), and chooses whom to watch from it
outside that lock (the costly part, yaim.balancer.heirs: the balancer's question never
waits for that); it never talks to the DCS. When the link cannot be probed (no
CAP_NET_RAW, the interface down or gone) it says so once, makes its sockets again at its
next probe, and meanwhile no address is silent: the balancer probes after the mark, as
without it.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from typing import Any, FrozenSet, Iterable, List, Optional, Set

from yaim.actuator.probe import PROBES, Prober, mac_bytes
from yaim.lookout import EXPIRY_ROUND, Change, Lookout, Probe
from yaim.state import NodeState
from yaim.threads.base import Worker
from yaim.view import ClusterView, IPAddress, in_order

log = logging.getLogger(__name__)


class LookoutThread(Worker):
    """One step per due probe, per answer and per interval."""

    watches_fd = True

    def __init__(self, config, state: NodeState, **kwargs) -> None:
        super().__init__("lookout", config.interval_s, **kwargs)
        self.config = config
        self.state = state
        self.me = config.node_name
        ttl, interval = config.ttl_s, config.interval_s
        patience, linger = ttl + 2 * interval, interval + EXPIRY_ROUND
        window = config.probe_timeout_s
        self.lookout = Lookout(self.me, window, PROBES, interval, patience, linger)
        self._lock = threading.Lock()
        self._poller = select.epoll()
        self._registered: Set[int] = set()
        self._prober: Optional[Prober] = None
        self._view: Optional[ClusterView] = None  # the one the lookout follows
        self.failing = False

    def watched_fd(self) -> Optional[int]:
        return self._poller.fileno() if self.lookout.urgent() else None

    def next_timeout(self) -> float:
        return self.lookout.next_time() - time.monotonic()

    def step(self, messages: List[Any]) -> None:
        view = self._following()
        chosen = None if view is self._view else self.lookout.choose(view)  # outside the lock
        with self._lock:
            now = time.monotonic()
            self._hear(now)
            if view is not self._view:
                self._view = view
                self.lookout.adopt(view, chosen, now)
            self._log(self.lookout.tick(now))
            probes = self.lookout.due(now)
            if probes:
                self._send(probes)
            elif not self.lookout.watching:
                self._close()  # nothing to hear until there is something to watch

    def silent(self, addresses: Iterable[IPAddress]) -> FrozenSet[IPAddress]:
        """Those of `addresses` nobody has answered for long enough (yaim.lookout), as of
        now: every answer that has come is read first. From the balancer's thread."""
        with self._lock:
            now = time.monotonic()
            self._hear(now)
            return self.lookout.silent(addresses, now)

    def finish(self, messages: List[Any]) -> None:
        with self._lock:
            self._close()
            self._poller.close()

    def _following(self) -> Optional[ClusterView]:
        """The balancer's latest view, while this node takes part in it; else None."""
        view = self.state.view
        following = self.state.taking_part and view is not None and self.me in view.nodes
        return view if following else None

    def _hear(self, now: float) -> None:
        if self._prober is None:
            return
        try:
            answers, lost = self._prober.heard()
        except OSError as exc:
            self._fail(exc)
            return
        if lost:
            log.debug("node %s missed packets on %s", self.me, self.config.interface)
            self.lookout.deaf()
        for address, mac in answers:
            self._log(self.lookout.heard(address, mac, now))

    def _send(self, probes: List[Probe]) -> None:
        try:
            if self._prober is None:
                self._prober = Prober(self.config.interface)
            self._prober.send((a, None if mac is None else mac_bytes(mac)) for a, mac in probes)
            for fd in set(self._prober.fds()) - self._registered:
                self._poller.register(fd, select.EPOLLIN)
                self._registered.add(fd)
        except OSError as exc:
            self._fail(exc)
            return
        self.lookout.sent(probes, time.monotonic())
        if self.failing:
            log.info("node %s can probe %s ahead of expiries again", self.me, self.config.interface)
        self.failing = False

    def _fail(self, exc: OSError) -> None:
        """The link cannot be probed now: nothing is silent; the sockets are made again at
        the next probe."""
        self._close()
        self.lookout.deaf()
        if not self.failing:
            log.warning(
                "node %s cannot probe %s ahead of expiries, a crashed holder's address is"
                " probed after its mark as before: %s",
                self.me,
                self.config.interface,
                exc,
            )
        self.failing = True

    def _close(self) -> None:
        for fd in self._registered:
            self._poller.unregister(fd)
        self._registered.clear()
        if self._prober is not None:
            self._prober.close()
            self._prober = None

    def _log(self, changes: List[Change]) -> None:
        for change in changes:
            holder, sentinel = change.holder, change.sentinel
            if change.what == "suspected":
                probed = ", ".join(map(str, in_order(change.probed))) or "none of them"
                log.info(
                    "node %s: holder %s does not answer for %s on %s: probing the addresses of"
                    " it this node would take, ahead of their marks' expiry: %s",
                    self.me,
                    holder,
                    sentinel,
                    self.config.interface,
                    probed,
                )
            elif change.what == "answers":
                log.info(
                    "node %s: holder %s answers for %s again: not probing its addresses ahead",
                    self.me,
                    holder,
                    sentinel,
                )
            else:
                log.info(
                    "node %s: holder %s has not answered for %s for %.1f s, yet its marks"
                    " live: not probing its addresses ahead until it answers",
                    self.me,
                    holder,
                    sentinel,
                    self.lookout.patience,
                )
