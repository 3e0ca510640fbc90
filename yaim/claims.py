"""The claims ledger: the whole life of every address this node claims, in one place.

A claim is this node's hold on a pool address whose mark it has in the DCS. The
threads tell the ledger what they did or found: the balancer holds and releases,
the heartbeat renews, a refresh or a read finds a mark lost, the actuator thread
says what is on the interface after each of its rounds (`confirm`). The ledger
keeps, under one lock, each claim's fence time, reason, mark number and phase:

    hold ──> held ─────────── release ──> releasing ── off ──> released: unmark
              │ (on the interface:            │ (not off in time: held again,
              │  `take` reported)             │  the release retried next round)
              └─── lost, deadline ──> fenced <┘
                                        └─ off ──> gone

The safety rule, stated here and nowhere else: an address is on the interface
only while this node's mark for it is sure to live, or, in the failsafe hold
(yaim.failsafe, `extend`), while every other node's promise to keep off it does.
Every claim has a fence
time, by which its mark must have been refreshed again: when the request that
last started the mark's TTL was sent (`DCS.ttl_start`), plus the TTL, minus a
margin for the actuator's reaction and clock skew (`fence_margin`). The actuator
thread, which never waits on the DCS, fences every claim whose time has passed
(`expired`) and removes its address; a refresh that worked moves the time on
(`renewed`); a refresh or a read that finds the mark gone or someone else's
fences the claim at once (`lost`). And an address is claimed only while its mark
has HANDOVER_WINDOW x ttl to live at least (`hold`): so a node that saw a mark
less than that long ago, and now finds the address free with a `released` note
naming that very mark, knows that no mark made after its read can have come and
expired unseen, hence that no yaim node has the address (yaim.conflicts).

A release ends the claim; the actuator takes the address off and confirms it;
only then does the balancer delete the mark, with a `released` note where the
address is on this interface in no form. Never the other way round.

While the service link is down the ledger is suspended (`suspend`, by the actuator
thread, yaim.link): every claim ends, released `link-down`, and none is made until
`resume`; the releases end as any other.

Each event is reported exactly once, to the notifier from under the lock, so an
address's events come in order and in pairs whichever threads act on it: `take`
once the actuator confirms the address on the interface, then the end (release
or fence, with the reason of whoever ended the claim first) once it confirms it
off. A claim ended before its address ever got on reports neither. The log line
and the metric come with the hold (take), the fence, and the finished release.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Callable, Dict, FrozenSet, Iterable, List, Mapping, NamedTuple, Optional, Set

from yaim.events import FENCE, RELEASE, TAKE, words
from yaim.metrics import Metrics
from yaim.view import IPAddress, in_order

log = logging.getLogger(__name__)

# Share of the ttl: a node claims an address only while its mark has at least this
# long to live, and trusts a `released` note only of a mark it saw this recently.
HANDOVER_WINDOW = 0.5

# How the ledger reports an event: (event, address or None, reason); the notifier's
# `submit`, which only queues it, so it is safe to call under the ledger's lock.
Notify = Callable[[str, Optional[IPAddress], str], None]


def fence_margin(ttl: float) -> float:
    """Seconds before a mark can expire at which its address must be gone already.

    The fence time counts from when the refresh was sent, before etcd starts the
    TTL, so the margin only has to cover the actuator's reaction and clock skew.
    """
    return max(0.1, 0.1 * ttl)


def _ignore(event: str, address: Optional[IPAddress], reason: str) -> None:
    """The default Notify: a ledger without a notifier (tests, tools)."""


class End(NamedTuple):
    """What ended a claim: release or fence, and why (yaim.events)."""

    event: str
    reason: str


@dataclasses.dataclass
class Claim:
    """One address's claim; changed only under the ledger's lock."""

    fence: float  # monotonic time by which its mark must have been refreshed again
    reason: str  # why it was taken
    mark: Optional[int] = None  # the mark's number (Mark.created), once a read showed it
    end: Optional[End] = None  # None while held
    on: bool = False  # the actuator confirmed it on the interface: `take` reported
    off: bool = False  # ended and confirmed off the interface
    vouched: bool = False  # off, and on the interface in no form: a note may say so

    @property
    def alive(self) -> bool:
        """Its mark is ours and its address may be on: the fence time applies."""
        return self.end is None or (self.end.event == RELEASE and not self.off)


class Fenced(NamedTuple):
    """A claim fenced at its deadline, and how late the fence came."""

    address: IPAddress
    late: float


class Interface(NamedTuple):
    """The interface after an actuator round: yaim's addresses on it, every address on it."""

    on: FrozenSet[IPAddress]
    present: FrozenSet[IPAddress]


class Ledger:
    """This node's claims, behind one lock; see the module's text for the rules."""

    def __init__(
        self,
        node: str,
        ttl: float,
        notify: Notify = _ignore,
        metrics: Optional[Metrics] = None,
        wake: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self.ttl = ttl
        self.lifetime = ttl - fence_margin(ttl)
        self.notify = notify
        self.metrics = Metrics() if metrics is None else metrics
        # Asks the actuator thread for a round now, what it must do having changed; the
        # daemon sets it once that thread exists.
        self.wake = wake
        self.clock = clock
        self._lock = threading.Lock()
        self._claims: Dict[IPAddress, Claim] = {}
        self._closed = False
        self._suspended = False

    def fence_time(self, ttl_start: float) -> float:
        """When a claim must be fenced whose mark's TTL started at `ttl_start`."""
        return ttl_start + self.lifetime

    def lasts(self, ttl_start: float) -> bool:
        """Whether a mark whose TTL started at `ttl_start` has HANDOVER_WINDOW x ttl left."""
        return self.fence_time(ttl_start) - self.clock() >= HANDOVER_WINDOW * self.ttl

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def refusing(self) -> bool:
        """Closed, or suspended (see `suspend`): no address is claimed now."""
        return self._closed or self._suspended

    def hold(
        self, address: IPAddress, ttl_start: float, reason: str, mark: Optional[int] = None
    ) -> bool:
        """Claim an address this node has just marked or renewed, taken for `reason`.

        Refused (False) while closed or suspended, and while the mark is not sure to live long
        enough (see the module's text): with v3 a keep-alive that keeps failing
        leaves the lease's last renewal too old, and the claim would be fenced in
        the same breath, every round until one gets through again. An address whose
        claim is still ending keeps its `take`: it never left the interface.
        """
        with self._lock:
            if self._closed or self._suspended:
                return False
            if not self.lasts(ttl_start):
                why = "its lease was not renewed in time"
                log.debug("not holding %s on node %s: %s", address, self.node, why)
                return False
            before = self._claims.get(address)
            on = before is not None and before.on
            self._claims[address] = Claim(self.fence_time(ttl_start), reason, mark, on=on)
            self.metrics.takeovers.labels(reason).inc()
            log.info("took %s on node %s: %s", address, self.node, words(TAKE, reason))
        self.wake()
        return True

    def saw(self, marks: Mapping[IPAddress, int]) -> None:
        """The numbers of this node's marks as a read showed them (a `released` note names one)."""
        with self._lock:
            for address, mark in marks.items():
                claim = self._claims.get(address)
                if claim is not None:
                    claim.mark = mark

    def claim(self, address: IPAddress) -> Optional[Claim]:
        """A copy of the address's claim, None if it has none."""
        with self._lock:
            claim = self._claims.get(address)
            return None if claim is None else dataclasses.replace(claim)

    def held(self) -> Set[IPAddress]:
        """The addresses claimed and not ended: the ones to have on the interface."""
        with self._lock:
            return {a for a, claim in self._claims.items() if claim.end is None}

    def claimed(self) -> Set[IPAddress]:
        """Every address with a claim, ended ones not yet done included."""
        with self._lock:
            return set(self._claims)

    def renewable(self) -> List[IPAddress]:
        """The addresses whose marks the heartbeat keeps alive, in order."""
        with self._lock:
            return in_order(a for a, claim in self._claims.items() if claim.alive)

    def renewed(self, address: IPAddress, ttl_start: float) -> None:
        """A refresh of the mark worked, its TTL restarted at `ttl_start`: the fence time moves
        on (never back)."""
        with self._lock:
            claim = self._claims.get(address)
            if claim is not None and claim.alive:
                claim.fence = max(claim.fence, self.fence_time(ttl_start))

    def extend(self, addresses: Iterable[IPAddress], until: float) -> List[IPAddress]:
        """The failsafe hold (yaim.failsafe): every other node promised to keep off these
        addresses, so their live claims may outlast their marks until `until` (never
        less than their marks give). Returns those extended, in order."""
        with self._lock:
            kept = [a for a in in_order(addresses) if a in self._claims and self._claims[a].alive]
            for address in kept:
                claim = self._claims[address]
                claim.fence = max(claim.fence, until)
        return kept

    def lost(self, address: IPAddress, detail: str) -> bool:
        """The mark was found gone or someone else's ("its mark is `detail`"): fence the claim
        now and have the address removed at once, another node may be taking it over.
        False if there was no live claim to fence."""
        with self._lock:
            claim = self._claims.get(address)
            if claim is None or not claim.alive:
                if claim is not None and claim.end is not None and claim.end.event == RELEASE:
                    claim.vouched = False  # off already, but no note for a mark not ours
                return False
            self._fence(claim, "mark-lost")
            log.warning("fencing %s on node %s: its mark is %s", address, self.node, detail)
        self.wake()
        return True

    def expired(self) -> List[Fenced]:
        """Fence every live claim whose fence time has passed: the actuator's first duty."""
        now = self.clock()
        with self._lock:
            claims = self._claims
            due = [a for a in in_order(claims) if claims[a].alive and claims[a].fence <= now]
            late = [Fenced(address, now - claims[address].fence) for address in due]
            for address, late_by in late:
                self._fence(claims[address], "deadline")
                why = words(FENCE, "deadline")
                log.warning(
                    "fenced %s on node %s: %s (%.2fs late)", address, self.node, why, late_by
                )
        return late

    def _fence(self, claim: Claim, cause: str) -> None:
        """End a live claim by a fence (lock held)."""
        claim.end = End(FENCE, cause)
        self.metrics.fencing.labels(cause).inc()

    def next_fence_time(self) -> Optional[float]:
        with self._lock:
            return min((c.fence for c in self._claims.values() if c.alive), default=None)

    def release(self, addresses: Iterable[IPAddress], reason: str) -> List[IPAddress]:
        """End the claims of those `addresses` that are held, for `reason`; the actuator takes
        them off. Returns those, in order; the balancer then waits for a round and `finish`es."""
        with self._lock:
            claims = self._claims
            ended = [a for a in in_order(addresses) if a in claims and claims[a].end is None]
            for address in ended:
                self._claims[address].end = End(RELEASE, reason)
        if ended:
            self.wake()
        return ended

    def finish(self, addresses: Iterable[IPAddress]) -> Dict[IPAddress, Optional[int]]:
        """The releases among `addresses` that are done, the address confirmed off: logged,
        counted and forgotten; address -> the mark number its `released` note may name
        (None: no note). One not off yet is held again with its old reason (unless the
        ledger is closed or suspended), and the balancer's next round retries its release."""
        done: Dict[IPAddress, Optional[int]] = {}
        kept = []
        with self._lock:
            for address in in_order(addresses):
                claim = self._claims.get(address)
                if claim is None or claim.end is None or claim.end.event != RELEASE:
                    continue
                if claim.off:
                    del self._claims[address]
                    done[address] = claim.mark if claim.vouched else None
                    self.metrics.releases.labels(claim.end.reason).inc()
                    why = words(RELEASE, claim.end.reason)
                    log.info("released %s on node %s: %s", address, self.node, why)
                elif not (self._closed or self._suspended):
                    claim.end = None
                    kept.append(address)
        if kept:
            shown = ", ".join(map(str, kept))
            log.error("keeping %s on node %s: could not be removed yet", shown, self.node)
        return done

    def confirm(self, interface: Interface) -> None:
        """The actuator's word after a round: report the takes and ends it makes true."""
        with self._lock:
            for address in in_order(self._claims):
                claim = self._claims[address]
                if claim.end is None:
                    if address in interface.on and not claim.on:
                        claim.on = True
                        self.notify(TAKE, address, claim.reason)
                elif not claim.off and address not in interface.on:
                    if claim.on:
                        self.notify(claim.end.event, address, claim.end.reason)
                    claim.on, claim.off = False, True
                    claim.vouched = address not in interface.present
                    if claim.end.event == FENCE:  # nothing left to do for it
                        del self._claims[address]

    def close(self) -> None:
        """Shutdown: claim nothing from now on; every held claim ends, released 'stopping'."""
        with self._lock:
            self._closed = True
            self._end_all("stopping")
        self.wake()

    def suspend(self) -> None:
        """The node stops taking part (its service link is down): every held claim ends,
        released 'link-down', and nothing is claimed until `resume`. The actuator, which
        calls it, takes the addresses off in the same round; the balancer then deletes
        their marks with `released` notes, as after any release."""
        with self._lock:
            self._suspended = True
            self._end_all("link-down")

    def resume(self) -> None:
        """The node takes part again: claims may be made."""
        with self._lock:
            self._suspended = False

    def _end_all(self, reason: str) -> None:
        """Release every held claim for `reason` (lock held)."""
        for claim in self._claims.values():
            if claim.end is None:
                claim.end = End(RELEASE, reason)
