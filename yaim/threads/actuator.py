"""The only thread that changes the interface: it makes the kernel match the held claims.

It never talks to the DCS, so it can always fence on time: each round starts by
fencing the claims whose fence time has passed (yaim.claims), however long the DCS
keeps the other threads waiting. Its reconcile is harmless to repeat; it also puts
back an address that someone removed by hand while it is held, and at start it
removes marked leftovers of an earlier run. After adding an address it announces
it `announce-count` times, `announce-interval` apart, and with `announce-refresh`
every held address again once per period, spread over it (yaim.actuator.announce).
After each round it tells the ledger what is on the interface, which reports the
takes and ends that makes true.

It lists the interface's addresses only when an address event of the interface says
they moved (yaim.actuator.link, the same socket as the link's), after a lost event or a
failed round, and once every `resync`; in between the last listing, with its own
changes since, is what is on the interface: at steady state nothing is listed.

It also follows the service link (yaim.actuator.link: it owns that netlink socket
too, and a link event wakes it). When the link goes down (yaim.link's rules) it
suspends the ledger, which ends every claim, and takes the addresses off in the
same round; a link back up for `link-rise` resumes it. Either way it tells the
daemon (`on_link`), which has the node key withdrawn or put back and the balancer
hand the marks over or take the node's share again. A round that fails to change
the interface makes it look at the link at once: an add refused because the
interface went down or away counts as that link event.

The node's own address `own` (the failsafe's peer endpoint, when it is on the service
interface) is announced the same way whenever it appears on the interface (at start,
or put back on an interface made again) and whenever the node takes part again: an
interface made again, or replaced, has a new MAC, and the neighbours' caches keep the
old one for up to a minute (REACHABLE, then DELAY and PROBE), so the peers' asks
would be lost exactly when they matter (a chaos run: a whole-etcd outage 53 s after
a node's lan0 was made again, and two peers could not reach it).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import AbstractSet, Any, Callable, Dict, List, NamedTuple, Optional, Set, Tuple

from yaim.actuator import Actuator, AddressRefused
from yaim.actuator.announce import Refresh
from yaim.actuator.link import LinkWatch
from yaim.claims import Interface, Ledger
from yaim.errors import ActuatorError
from yaim.link import Change, Link, LinkTracker
from yaim.threads.base import Worker
from yaim.view import IPAddress, in_order

log = logging.getLogger(__name__)


class Sync:
    """A request to reconcile now; `ok` tells whether the kernel matches the held set."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False


class Announcement(NamedTuple):
    """The next announcement of an address just added: when, and how many are left."""

    due: float
    left: int


class ActuatorThread(Worker):
    """Owns the Actuator and the LinkWatch (and so the netlink sockets) for the daemon's
    whole life.

    `interface` is what the last round left on the interface; it is read by others
    only once this thread has ended (shutdown). `make_link` None: the link is not
    followed (tests of the addresses alone).
    """

    watches_fd = True

    def __init__(
        self,
        make_actuator,
        ledger: Ledger,
        node: str,
        announce_count: int = 3,
        announce_interval: float = 0.5,
        announce_refresh: float = 0.0,
        make_link: Optional[Callable[[], LinkWatch]] = None,
        link_rise: float = 1.0,
        on_link: Callable[[Link], None] = lambda link: None,
        own: Optional[IPAddress] = None,
        resync: float = 60.0,
        **kwargs,
    ) -> None:
        super().__init__("actuator", **kwargs)
        self.make_actuator = make_actuator
        self.actuator: Optional[Actuator] = None
        self.ledger = ledger
        self.node = node
        self.announce_count = announce_count
        self.announce_interval = announce_interval
        self.refresh = Refresh(announce_refresh)
        self.make_link = make_link
        self.link: Optional[LinkWatch] = None
        self.link_rise = link_rise
        self.tracker: Optional[LinkTracker] = None
        self.on_link = on_link
        self.own = own
        self.resync = resync
        self._listed_at: Optional[float] = None  # the last listing; None: list next round
        self.interface: Optional[Interface] = None
        self._foreign: Set[IPAddress] = set()
        self._announce: Dict[IPAddress, Announcement] = {}

    def sync(self, timeout: float) -> bool:
        """Ask for a reconcile and wait for it; False if it failed or took too long."""
        request = Sync()
        self.poke(request)
        return request.done.wait(timeout) and request.ok

    def next_timeout(self) -> float:
        due = [self.ledger.next_fence_time()] + [a.due for a in self._announce.values()]
        if self.tracker is not None:
            due.append(self.tracker.due())
        soonest = min((t for t in due if t is not None), default=None)
        if soonest is None:
            return self.period
        return min(self.period, soonest - time.monotonic())

    def watched_fd(self) -> Optional[int]:
        return None if self.link is None else self.link.fileno()

    def step(self, messages: List[Any]) -> None:
        if self.actuator is None:
            self.actuator = self.make_actuator()
            self._open_link()
        if self.link is not None:
            self._follow(self.link.changes())
        self.ledger.expired()
        ok = self.reconcile()
        if not ok and self.link is not None and self._follow([self.link.current()]):
            ok = self.reconcile()  # the link went down: now the addresses go off
        self._send_announcements()
        for request in messages:
            request.ok = ok
            request.done.set()

    def _open_link(self) -> None:
        """Start following the link; a link down at start keeps the node out until it rises."""
        if self.make_link is None:
            return
        self.link = self.make_link()
        link = self.link.open()
        self.tracker = LinkTracker(self.link_rise, link)
        if not link.up:
            self._apply(Change(False, link.cause))

    def _follow(self, links: List[Link]) -> bool:
        """Feed the kernel's words on the link to the tracker, in order, and act once on
        where they leave it (a deletion comes as "set down", then "gone": one line, the
        latest cause; if "gone" comes a round later, the cause is told again); True if the
        node stopped taking part."""
        now = time.monotonic()
        was, cause = self.tracker.taking_part, self.tracker.cause
        for link in links:
            self.tracker.observe(link, now)
        self.tracker.tick(now)
        if self.tracker.taking_part == was:
            if not was and self.tracker.cause != cause:
                self._still_out(self.tracker.cause)
            return False
        self._apply(Change(self.tracker.taking_part, self.tracker.cause))
        return was

    def _still_out(self, cause: str) -> None:
        """Out already, for another reason now (set down, then deleted in a later round):
        the daemon shows the current one. Not a decision: a debug line."""
        log.debug("node %s stays out: %s", self.node, cause)
        self.on_link(Link(False, cause))

    def _apply(self, change: Change) -> None:
        if change.taking_part:
            self.ledger.resume()
            self._announce_own()
            log.info("node %s takes part again: %s", self.node, change.cause)
        else:
            self.ledger.suspend()
            log.warning(
                "node %s stops taking part: %s; its addresses go off and over to the others",
                self.node,
                change.cause,
            )
        self.on_link(Link(change.taking_part, change.cause))

    def reconcile(self) -> bool:
        """Add what is held and missing, remove what is ours and not held; True if all worked.

        A held address that is on the interface already without yaim's mark is
        someone else's (see Actuator.adopt): left as it is, so never removed, and
        logged once. One outside allowed-networks is never added (the actuator
        logs it). Neither counts as a failure.
        """
        if self.tracker is not None and self.tracker.link.deleted:
            return self._deleted()
        wanted = self.ledger.held()
        try:
            present, owned = self._look()
        except ActuatorError as exc:
            log.error("cannot read the addresses of %s: %s", self.actuator.interface, exc)
            return False
        owned |= {a for a in wanted & present - owned if self.actuator.adopt(a)}
        self._note_foreign(wanted & present - owned)
        before = self.interface.on if self.interface is not None else frozenset()
        added, failed_adds = self._add(wanted - present, before)
        removed, failed_removes = self._remove(owned - wanted, before)
        was = self.interface.present if self.interface is not None else frozenset()
        self.interface = Interface(
            frozenset((owned - removed) | added), frozenset((present | added) - removed)
        )
        if self.own in self.interface.present - was:
            self._announce_own()
        self.ledger.confirm(self.interface)
        if failed_adds or failed_removes:
            self._listed_at = None
            return False
        return True

    def _look(self) -> Tuple[Set[IPAddress], Set[IPAddress]]:
        """(every address on the interface, yaim's): listed again only when they may have
        moved (an address or link event of the interface, a lost event, no event socket, a
        failed round) or once a resync period; else as the last round left them."""
        now = time.monotonic()
        last = self._listed_at
        quiet = self.link is not None and not self.link.addresses_moved
        if quiet and self.interface is not None and last is not None and now < last + self.resync:
            return set(self.interface.present), set(self.interface.on)
        if self.link is not None:
            self.link.addresses_moved = False  # an event during the listing sets it again
        self._listed_at = None
        present, ours = self.actuator.scan()
        self._listed_at = now
        return present, ours

    def _deleted(self) -> bool:
        """The interface was deleted, and every address on it with it (the ledger is
        suspended, so none is wanted): the ledger hears that nothing is on it, so that its
        releases end; nothing is scanned until the interface is back."""
        self.interface = Interface(frozenset(), frozenset())
        self.ledger.confirm(self.interface)
        return True

    def _add(
        self, addresses: Set[IPAddress], before: AbstractSet[IPAddress]
    ) -> Tuple[Set[IPAddress], Set[IPAddress]]:
        """Add the addresses; (those added, those that failed)."""
        added, failed = set(), set()
        for address in in_order(addresses):
            if address in before:
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
            self._schedule(address)
        return added, failed

    def _schedule(self, address: IPAddress) -> None:
        """Announce `address` `announce-count` times from the next round on."""
        if self.announce_count > 0:
            self._announce[address] = Announcement(time.monotonic(), self.announce_count)

    def _announce_own(self) -> None:
        if self.own is not None:
            self._schedule(self.own)

    def _remove(
        self, addresses: Set[IPAddress], before: AbstractSet[IPAddress]
    ) -> Tuple[Set[IPAddress], Set[IPAddress]]:
        """Remove the addresses; (those removed, those that failed)."""
        removed, failed = set(), set()
        for address in in_order(addresses):
            if address not in before:
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
        return removed, failed

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

    def _send_announcements(self) -> None:
        now = time.monotonic()
        held = self.ledger.held()
        for address in self.refresh.due(held, now):
            if address not in self._announce:  # else its first announcements are still going
                self.actuator.announce(address)
        here = held | self._own_here()
        for address, (due, left) in list(self._announce.items()):
            if address not in here:
                del self._announce[address]
            elif due <= now:
                self.actuator.announce(address)
                if left > 1:
                    self._announce[address] = Announcement(now + self.announce_interval, left - 1)
                else:
                    del self._announce[address]

    def _own_here(self) -> Set[IPAddress]:
        """The own address, if the last round found it on the interface (and the link up)."""
        present = self.interface.present if self.interface is not None else frozenset()
        up = self.tracker is None or self.tracker.taking_part
        return {self.own} if up and self.own in present else set()

    def finish(self, messages: List[Any]) -> None:
        """Shutdown: the ledger is closed and holds nothing, so this removes every address."""
        self.step(messages)
        if self.link is not None:
            self.link.close()
