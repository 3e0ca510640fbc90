"""Conflict probing for the balancer: which free addresses to ask the link about, and what
to do with the answers.

Before a free address it has just marked is held, the link is asked whether a host
already has it (yaim.actuator.probe: raw sockets, no netlink, so the balancer
thread may do it). The mark is ours meanwhile, so no yaim node can be the one
answering. If a host answers, the address is refused: a `conflicts` note goes into
the DCS first, then the mark is deleted, and every node skips the address until
the note's TTL ends.

An address handed over needs no probe: its holder took it off its interface, then
wrote a `released` note naming its mark, then deleted the mark. The note vouches
only for that mark, which a read sent less than HANDOVER_WINDOW x ttl ago must have
shown (why that is enough: yaim.claims). Nor does one the lookout has found silent:
probed for probe-timeout up to now, ahead of its mark's expiry, and nobody answered
(`probe-ahead`; why that is the probe's own evidence: yaim.lookout).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict, FrozenSet, Iterable, NamedTuple, Optional, Set, Tuple

from yaim.actuator.probe import is_local, own_mac, probe
from yaim.claims import HANDOVER_WINDOW
from yaim.dcs import DCS
from yaim.view import ClusterView, Conflict, IPAddress, handed_over, in_order

log = logging.getLogger(__name__)

# Which of these addresses nobody has answered for, probed ahead (yaim.threads.lookout).
Ahead = Callable[[Iterable[IPAddress]], FrozenSet[IPAddress]]


class Seen(NamedTuple):
    """A mark as the last read that showed it did."""

    holder: str
    mark: int  # Mark.created
    read_at: float  # when that read was sent


class Handovers:
    """The marks of the recent reads, and the free addresses released since one was seen."""

    def __init__(self, ttl: float) -> None:
        self.window = HANDOVER_WINDOW * ttl
        self.seen: Dict[IPAddress, Seen] = {}
        self.addresses: FrozenSet[IPAddress] = frozenset()
        # The last read noted (its view and send time), and whether `seen` holds nothing
        # but the marks it showed.
        self._last: Optional[Tuple[ClusterView, float]] = None
        self._only_last = False

    def note(
        self, view: ClusterView, sent_at: float, history: Optional[FrozenSet[str]] = None
    ) -> None:
        """The addresses handed over since their marks were last seen, if recently enough;
        then remember the marks of this read (sent at `sent_at`).

        history: the read is a cache that saw every change since the last one, and these
        addresses' marks were written meanwhile. For every other address the mark last
        seen is still the last one made, as of `sent_at`: it counts as seen then (a mark
        made after `sent_at` could not have come and expired unseen, yaim.claims).

        The same read noted again without a history (the balancer's quiet rounds, which
        look at the last sync's cache again) costs nothing while `seen` holds only that
        read's marks: the full work would find no address handed over (only a free
        address can be, and those have no mark in that view, so none in `seen`), and
        would leave `seen` as it is (those marks, aged out of the window or not, are put
        back as they were)."""
        last = self._last
        again = last is not None and last[0] is view and last[1] == sent_at
        if again and history is None and self._only_last:
            self.addresses = frozenset()
            return
        now = time.monotonic()
        if history is not None:
            self.seen = {
                a: s if str(a) in history else s._replace(read_at=max(s.read_at, sent_at))
                for a, s in self.seen.items()
            }
        self.seen = {a: s for a, s in self.seen.items() if now - s.read_at < self.window}
        self.addresses = handed_over(self._marks(), view)
        shown = 0
        for address, holder in view.holders.items():
            if address in view.marks:
                self.seen[address] = Seen(holder, view.marks[address], sent_at)
                shown += 1
        self._last, self._only_last = (view, sent_at), len(self.seen) == shown

    def _marks(self) -> Dict[IPAddress, Tuple[str, int]]:
        """The marks seen, as yaim.view.handed_over takes them: address -> (holder, mark)."""
        return {a: (s.holder, s.mark) for a, s in self.seen.items()}

    def unseen(self, view: ClusterView) -> bool:
        """Whether `view` shows a mark this node has not seen at a current look: it is to
        be seen at one (a sync), or its release could not count as a handover later."""
        known = self._marks()
        return any(
            known.get(address) != (holder, view.marks[address])
            for address, holder in view.holders.items()
            if address in view.marks
        )


class Pending(NamedTuple):
    """A conflict this node saw and could not note in the DCS yet: it skips the address
    until `until` all the same, so that a failed write cannot let it take it next round."""

    mac: str
    until: float


class Conflicts:
    """The balancer's side of conflicts: probe, refuse, skip, and clear its own notes."""

    def __init__(self, config, dcs: DCS, ahead: Optional[Ahead] = None) -> None:
        self.config = config
        self.dcs = dcs
        self.ahead = ahead
        self.me = config.node_name
        self.pending: Dict[IPAddress, Pending] = {}
        self.reported: Dict[IPAddress, str] = {}  # conflicts logged: address -> MAC
        self.noted: Set[IPAddress] = set()  # other nodes' conflict notes already logged
        self.failing = False  # the probe could not run last time

    def skip(self, view: ClusterView) -> ClusterView:
        """Log other nodes' new conflict notes once; leave out the conflicts this node saw."""
        for address in in_order(set(view.conflicts) - self.noted):
            conflict = view.conflicts[address]
            if conflict.node != self.me:
                log.info(
                    "skipping %s on node %s: node %s saw %s answer for it, a host outside yaim",
                    address,
                    self.me,
                    conflict.node,
                    conflict.mac,
                )
        self.noted = set(view.conflicts)
        now = time.monotonic()
        self.pending = {a: p for a, p in self.pending.items() if p.until > now}
        if not self.pending:
            return view  # as it is, not a copy of its pool: a quiet round stays O(1) here
        mine = {a: Conflict(p.mac, self.me) for a, p in self.pending.items()}
        return view._replace(pool=view.pool.difference(mine), conflicts={**mine, **view.conflicts})

    def probe(self, addresses: Iterable[IPAddress]) -> Dict[IPAddress, str]:
        """Who answers for the addresses on the link (address -> MAC); {} when probing is off.

        A probe that fails (no CAP_NET_RAW, interface down) is logged once and the
        addresses are taken anyway: a node that cannot ask must not stop taking over.
        Those the lookout found silent are not probed again (`ahead`).
        """
        addresses = set(addresses)
        if not addresses or self.config.probe_timeout_s <= 0:
            return {}
        interface = self.config.interface
        silent = self.ahead(addresses) if self.ahead is not None else frozenset()
        for address in in_order(silent):
            log.info(
                "not probing %s again on node %s: nobody answered for it on %s for the last"
                " %d ms, probed ahead of its mark's expiry",
                address,
                self.me,
                interface,
                round(self.config.probe_timeout_s * 1000),
            )
        addresses -= silent
        if not addresses:
            return {}
        try:
            answered = probe(interface, addresses, self.config.probe_timeout_s)
        except OSError as exc:
            if not self.failing:
                log.warning(
                    "cannot probe %s for conflicts on node %s, taking without asking: %s",
                    interface,
                    self.me,
                    exc,
                )
            self.failing = True
            return {}
        if self.failing:
            log.info("probing %s for conflicts works again on node %s", interface, self.me)
        self.failing = False
        return answered

    def refuse(self, address: IPAddress, mac: str) -> None:
        """A host outside yaim has the address: note the conflict in the DCS, then unmark it."""
        self.pending[address] = Pending(mac, time.monotonic() + self.config.conflict_backoff_s)
        level = logging.INFO if self.reported.get(address) == mac else logging.WARNING
        self.reported[address] = mac
        log.log(
            level,
            "not taking %s on node %s: %s already answers for it, a host outside yaim;"
            " every node skips it for %d s (conflicts note in the DCS), an operator should look",
            address,
            self.me,
            mac,
            self.dcs.conflict_ttl(),
        )
        try:
            until = int(time.time() + self.config.conflict_backoff_s)
            self.dcs.note_conflict(address, Conflict(mac, self.me, until).text())
            # Written: every node, this one too, goes by the note now, which the host that
            # answered may delete if it was a yaim node that had been frozen.
            del self.pending[address]
        finally:
            self.dcs.delete_mark(address)

    def clear_own(
        self, view: ClusterView, held: Set[IPAddress], removed: Callable[[], bool]
    ) -> None:
        """Delete the conflicts notes that name this node's own MAC for addresses it has not.

        While this node was frozen (SIGSTOP, a paused VM) past its marks' TTL, its
        kernel kept its addresses and answered the others' probes: they noted a conflict
        with this node's MAC, and would skip those addresses for conflict-backoff after
        this node dropped them. Once the actuator has removed them (`removed()` waits
        for that), the notes are wrong. An address still on this host without yaim (a
        real conflict) keeps its note.
        """
        if not view.conflicts:
            return
        try:
            mac = own_mac(self.config.interface)
        except OSError:
            return
        mine = [a for a, c in view.conflicts.items() if c.mac == mac and a not in held]
        if not mine or not removed():
            return
        for address in in_order(mine):
            if is_local(address):
                continue
            if self.dcs.clear_conflict(address, view.conflicts[address].text()):
                log.info(
                    "cleared the conflicts note of %s on node %s: the host that answered was"
                    " this node, frozen while its mark expired; the address is gone from here",
                    address,
                    self.me,
                )
