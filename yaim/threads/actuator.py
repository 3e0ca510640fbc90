"""The only thread that changes the interface: it makes the kernel match the held addresses.

It never talks to the DCS, so it can always fence on time: an address whose
mark was not refreshed by its fence time is removed here, however long the
DCS keeps the other threads waiting. Its reconcile is harmless to repeat; it
also puts back an address that someone removed by hand while it is held, and
at start it removes labelled leftovers of an earlier run.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, List, Optional, Set, Tuple

from yaim.actuator import Actuator
from yaim.errors import ActuatorError
from yaim.state import SharedState
from yaim.threads.base import Worker
from yaim.view import IPAddress, in_order

log = logging.getLogger(__name__)

ANNOUNCE_COUNT = 3
ANNOUNCE_SPACING = 0.5


class Sync:
    """A request to reconcile now; `ok` tells whether the kernel matches the held set."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False


class ActuatorThread(Worker):
    """Owns the Actuator (and so the netlink socket) for the daemon's whole life."""

    def __init__(self, make_actuator, state: SharedState, node: str, **kwargs) -> None:
        super().__init__("actuator", **kwargs)
        self.make_actuator = make_actuator
        self.actuator: Optional[Actuator] = None
        self.state = state
        self.node = node
        self._on_interface: Set[IPAddress] = set()
        self._announce: Dict[IPAddress, Tuple[float, int]] = {}

    def sync(self, timeout: float) -> bool:
        """Ask for a reconcile and wait for it; False if it failed or took too long."""
        request = Sync()
        self.poke(request)
        return request.done.wait(timeout) and request.ok

    def next_timeout(self) -> float:
        due = [self.state.next_fence_time()] + [t for t, _ in self._announce.values()]
        soonest = min((t for t in due if t is not None), default=None)
        if soonest is None:
            return self.period
        return min(self.period, soonest - time.monotonic())

    def step(self, messages: List[Any]) -> None:
        if self.actuator is None:
            self.actuator = self.make_actuator()
        for address, late in self.state.fence_expired():
            self.metrics.fencing.labels("deadline").inc()
            log.warning(
                "fenced %s on node %s: its mark could not be refreshed in time (%.2fs late)",
                address,
                self.node,
                late,
            )
        ok = self.reconcile()
        self._send_announcements()
        for request in messages:
            request.ok = ok
            request.done.set()

    def reconcile(self) -> bool:
        """Add what is held and missing, remove what is ours and not held; True if all worked."""
        wanted = self.state.held()
        try:
            owned = self.actuator.owned()
        except ActuatorError as exc:
            log.error("cannot read the addresses of %s: %s", self.actuator.interface, exc)
            return False
        failed = set()
        for address in in_order(wanted - owned):
            if address in self._on_interface:
                log.warning(
                    "re-adding %s on node %s: it was removed from %s by someone else",
                    address,
                    self.node,
                    self.actuator.interface,
                )
            try:
                self.actuator.add(address)
            except ActuatorError as exc:
                log.error("could not add %s: %s", address, exc)
                failed.add(address)
                continue
            self._announce[address] = (time.monotonic(), ANNOUNCE_COUNT)
        for address in in_order(owned - wanted):
            if address not in self._on_interface:
                log.info(
                    "removing leftover %s from %s: no mark held for it",
                    address,
                    self.actuator.interface,
                )
            try:
                self.actuator.remove(address)
            except ActuatorError as exc:
                log.error("could not remove %s: %s", address, exc)
                failed.add(address)
        self._on_interface = wanted - failed
        return not failed

    def _send_announcements(self) -> None:
        now = time.monotonic()
        held = self.state.held()
        for address, (due, left) in list(self._announce.items()):
            if address not in held:
                del self._announce[address]
            elif due <= now:
                self.actuator.announce(address)
                if left > 1:
                    self._announce[address] = (now + ANNOUNCE_SPACING, left - 1)
                else:
                    del self._announce[address]

    def finish(self, messages: List[Any]) -> None:
        """Shutdown: the state is closed and holds nothing, so this removes every address."""
        self.step(messages)
