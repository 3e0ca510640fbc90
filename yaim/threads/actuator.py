"""The only thread that changes the interface: it makes the kernel match the held addresses.

It never talks to the DCS, so it can always fence on time: an address whose
mark was not refreshed by its fence time is removed here, however long the
DCS keeps the other threads waiting. Its reconcile is harmless to repeat; it
also puts back an address that someone removed by hand while it is held, and
at start it removes marked leftovers of an earlier run. After adding an
address it announces it `announce-count` times, `announce-interval` apart.

It also notifies what it did: `take` once a held address is on the interface,
and once one is off again the event of whoever dropped it (release or fence,
see yaim.state). Only this thread sees both, so the events of an address come
in order and in pairs: an address dropped before it ever got on has neither.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from yaim.actuator import Actuator, AddressRefused
from yaim.errors import ActuatorError
from yaim.state import SharedState
from yaim.threads.base import Worker
from yaim.view import IPAddress, in_order

log = logging.getLogger(__name__)


# How the actuator reports an event: (event, address or None, the reason); the
# notifier's `submit`, which only queues it, so it never blocks this thread.
Notify = Callable[[str, Optional[IPAddress], str], None]


class Sync:
    """A request to reconcile now; `ok` tells whether the kernel matches the held set."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False


class ActuatorThread(Worker):
    """Owns the Actuator (and so the netlink socket) for the daemon's whole life."""

    def __init__(
        self,
        make_actuator,
        state: SharedState,
        node: str,
        notify: Notify,
        announce_count: int = 3,
        announce_interval: float = 0.5,
        **kwargs,
    ) -> None:
        super().__init__("actuator", **kwargs)
        self.notify = notify
        self.make_actuator = make_actuator
        self.actuator: Optional[Actuator] = None
        self.state = state
        self.node = node
        self.announce_count = announce_count
        self.announce_interval = announce_interval
        self._on_interface: Set[IPAddress] = set()
        self._foreign: Set[IPAddress] = set()
        self._announce: Dict[IPAddress, Tuple[float, int]] = {}
        self.notified: Set[IPAddress] = set()  # `take` notified, its end not yet

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
        fenced = self.state.fence_expired()
        for address, late in fenced:
            self.metrics.fencing.labels("deadline").inc()
            log.warning(
                "fenced %s on node %s: its mark could not be refreshed in time (%.2fs late)",
                address,
                self.node,
                late,
            )
        ok = self.reconcile()
        self._notify_changes()
        self._send_announcements()
        for request in messages:
            request.ok = ok
            request.done.set()

    def reconcile(self) -> bool:
        """Add what is held and missing, remove what is ours and not held; True if all worked.

        A held address that is on the interface already without yaim's mark is
        someone else's (see Actuator.adopt): left as it is, so never removed, and
        logged once. One outside allowed-networks is never added (the actuator
        logs it). Neither counts as a failure.
        """
        wanted = self.state.held()
        try:
            present, owned = self.actuator.scan()
        except ActuatorError as exc:
            log.error("cannot read the addresses of %s: %s", self.actuator.interface, exc)
            return False
        owned |= {a for a in wanted & present - owned if self.actuator.adopt(a)}
        self._note_foreign(wanted & present - owned)
        failed = set()
        added = set()
        removed = set()
        for address in in_order(wanted - present):
            if address in self._on_interface:
                log.warning(
                    "re-adding %s on node %s: it was removed from %s by someone else",
                    address,
                    self.node,
                    self.actuator.interface,
                )
            try:
                self.actuator.add(address)
            except AddressRefused:
                continue
            except ActuatorError as exc:
                log.error("could not add %s: %s", address, exc)
                failed.add(address)
                continue
            added.add(address)
            if self.announce_count > 0:
                self._announce[address] = (time.monotonic(), self.announce_count)
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
                continue
            removed.add(address)
        self._on_interface = (owned - removed) | added
        return not failed

    def _note_foreign(self, foreign: Set[IPAddress]) -> None:
        """Log once each held address that is on the interface but not yaim's."""
        for address in in_order(foreign - self._foreign):
            log.warning(
                "leaving %s on %s as it is: it was there without yaim's mark before node %s"
                " took it, so yaim will not remove it either",
                address,
                self.actuator.interface,
                self.node,
            )
        self._foreign = foreign

    def _notify_changes(self) -> None:
        """The end (release or fence) of each notified address now off the interface and
        no longer held, then `take` for each held address now on it."""
        held = self.state.held()
        for address in in_order(self.notified - self._on_interface - held):
            event, reason = self.state.ended_by(address)
            self.notify(event, address, reason)
            self.notified.discard(address)
        for address in in_order(self._on_interface & held - self.notified):
            self.notify("take", address, self.state.taken_for(address))
            self.notified.add(address)

    def _send_announcements(self) -> None:
        now = time.monotonic()
        held = self.state.held()
        for address, (due, left) in list(self._announce.items()):
            if address not in held:
                del self._announce[address]
            elif due <= now:
                self.actuator.announce(address)
                if left > 1:
                    self._announce[address] = (now + self.announce_interval, left - 1)
                else:
                    del self._announce[address]

    def finish(self, messages: List[Any]) -> None:
        """Shutdown: the state is closed and holds nothing, so this removes every address."""
        self.step(messages)
