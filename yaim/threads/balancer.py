"""The balancer thread: reads the cluster, plans with `yaim.balancer`, marks and unmarks.

Take = create the mark (atomically), then hold the address, which the actuator
adds and announces. Release = stop holding, wait until the actuator has removed
the address, then delete the mark. Never the other way round.

Before a free address is held, the link is asked whether a host already has it
(yaim.actuator.probe: raw sockets, no netlink, so it runs here). The mark is
ours meanwhile, so no yaim node can be the one answering. If a host answers,
the address is refused: a `conflicts` note goes into the DCS first, then the
mark is deleted, and every node skips the address until the note's TTL ends.

An address handed over needs no probe: its holder took it off its interface, then
wrote a `released` note naming its mark and deleted the mark. The note vouches only
for that mark, which a read sent less than HANDOVER_WINDOW x ttl ago must have shown;
every node holds an address only while its mark is sure to live that long, so a mark
made after that read cannot have come and expired unseen.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Set, Tuple

from yaim import balancer
from yaim.actuator.probe import is_local, own_mac, probe
from yaim.dcs import DCS
from yaim.state import SharedState
from yaim.threads.base import DCSWorker
from yaim.view import (
    ClusterView,
    Conflict,
    IPAddress,
    Rejected,
    Release,
    handed_over,
    in_order,
    parse_snapshot,
)

log = logging.getLogger(__name__)

# Share of the ttl: the previous read may be this old for a handover to skip the
# probe, and a node holds an address only while its mark has at least this long left.
HANDOVER_WINDOW = 0.5

# Why an address is taken or released: the metrics' label, then the log's words.
REASONS = {
    "free": "it was free",
    "handover": "its holder had released it",
    "resumed": "its mark was still ours",
    "removed": "removed from the pool",
    "unhealthy": "not healthy",
    "drained": "the node is drained",
    "rebalance": "over its share",
}


class BalancerThread(DCSWorker):
    """One round per interval, or at once when health changes or a mark is lost."""

    def __init__(
        self,
        dcs: DCS,
        state: SharedState,
        config,
        sync_actuator: Callable[..., bool],
        **kwargs,
    ) -> None:
        super().__init__("balancer", dcs, "balancer cannot reach the DCS", **kwargs)
        self.state = state
        self.config = config
        self.me = config.node_name
        self.sync_actuator = sync_actuator
        self.rejected: Set[Rejected] = set()
        self.drained = False
        # Conflicts this node saw and could not note in the DCS yet: address -> (MAC, until
        # when it skips the address), so that a failed note write cannot let it take the
        # address next round.
        self.conflicts: Dict[IPAddress, Tuple[str, float]] = {}
        self.reported: Dict[IPAddress, str] = {}  # conflicts logged: address -> MAC
        self.noted: Set[IPAddress] = set()  # other nodes' conflict notes already logged
        self.probe_failing = False
        # address -> (holder, mark number, send time of the last read that showed it)
        self.seen_marks: Dict[IPAddress, Tuple[str, int, float]] = {}
        self.handovers: FrozenSet[IPAddress] = frozenset()

    def dcs_round(self, messages: List[Any]) -> None:
        self._act(self._read_view())

    def _read_view(self) -> ClusterView:
        sent_at = time.monotonic()
        snapshot = self.dcs.read()
        view, rejected = parse_snapshot(snapshot, self.config.allowed_networks)
        self._note_handovers(view, sent_at)
        for entry in sorted(set(rejected) - self.rejected):
            log.warning("refused %s on node %s: %s", entry.label, self.me, entry.reason)
        self.rejected = set(rejected)
        self._note_drain(self.me in snapshot.drained)
        view = self._skip_conflicts(view)
        self.state.set_view(view)
        if not self.state.healthy:
            view = view._replace(nodes=view.nodes - {self.me})
        return view

    def _note_handovers(self, view: ClusterView, sent_at: float) -> None:
        """The addresses released since their marks were last seen, if recently enough;
        then remember the marks of this read."""
        now, window = time.monotonic(), HANDOVER_WINDOW * self.config.ttl_s
        self.seen_marks = {a: s for a, s in self.seen_marks.items() if now - s[2] < window}
        self.handovers = handed_over({a: s[:2] for a, s in self.seen_marks.items()}, view)
        for address, holder in view.holders.items():
            if address in view.marks:
                self.seen_marks[address] = (holder, view.marks[address], sent_at)

    def _skip_conflicts(self, view: ClusterView) -> ClusterView:
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
        self.conflicts = {a: c for a, c in self.conflicts.items() if c[1] > now}
        mine = {a: Conflict(mac, self.me) for a, (mac, _) in self.conflicts.items()}
        return view._replace(pool=view.pool.difference(mine), conflicts={**mine, **view.conflicts})

    def _note_drain(self, drained: bool) -> None:
        if drained == self.drained:
            return
        self.drained = drained
        self.metrics.drained.set(drained)
        held = ", ".join(map(str, in_order(self.state.held()))) or "no address"
        if drained:
            log.info(
                "drained node %s: releasing %s, taking none (operator's drain key)", self.me, held
            )
        else:
            log.info("undrained node %s: taking its share again (drain key removed)", self.me)

    def _act(self, view: ClusterView) -> None:
        held = self.state.held()
        self._release(held - view.pool, "removed")
        self._fence_lost({a for a in held & view.pool if view.holders.get(a) != self.me}, view)
        plan = balancer.plan(view, self.me)
        if self.drained:
            reason = "drained"
        else:
            reason = "unhealthy" if self.me not in view.nodes else "rebalance"
        self._release(plan.release, reason)
        for address in in_order(plan.keep - self.state.held()):
            self._resume(address, view)
        self._take_free(plan.take)
        self._clear_own_conflicts(view)

    def _clear_own_conflicts(self, view: ClusterView) -> None:
        """Delete the conflicts notes that name this node's own MAC for addresses it has not.

        While this node was frozen (SIGSTOP, a paused VM) past its marks' TTL, its
        kernel kept its addresses and answered the others' probes: they noted a conflict
        with this node's MAC, and would skip those addresses for conflict-backoff after
        this node dropped them. Once the actuator has removed them, the notes are wrong.
        An address still on this host without yaim (a real conflict) keeps its note.
        """
        if not view.conflicts:
            return
        try:
            mac = own_mac(self.config.interface)
        except OSError:
            return
        held = self.state.held()
        mine = [a for a, c in view.conflicts.items() if c.mac == mac and a not in held]
        if not mine or not self.sync_actuator(self.config.interval_s):
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

    def _mark(self, address: IPAddress, mark: Callable[[IPAddress], bool]) -> Optional[float]:
        """Get a live mark through `mark`; when its request was sent, None if not ours."""
        sent_at = time.monotonic()
        if not mark(address):
            log.debug("%s is not ours to take this round", address)
            return None
        return sent_at

    def _resume(self, address: IPAddress, view: ClusterView) -> None:
        """Hold again an address whose mark is still ours. A `released` note of this
        very mark goes first: it would vouch for an address that is back on."""
        note = view.released.get(address)
        if note is not None and note == Release(self.me, view.marks.get(address)):
            self.dcs.clear_note("released", address, note.text())
        sent_at = self._mark(address, self.dcs.refresh_mark)
        if sent_at is not None:
            self._hold(address, sent_at, "resumed")

    def _take_free(self, addresses: Iterable[IPAddress]) -> None:
        """Mark each address, probe the marked ones all at once (not those handed over by
        their holder), hold those nobody has."""
        marked = {}
        for address in in_order(addresses):
            sent_at = self._mark(address, self.dcs.create_mark)
            if sent_at is not None:
                marked[address] = sent_at
        answered = self._probe(set(marked) - self.handovers)
        for address, sent_at in marked.items():
            if address in answered:
                self._refuse(address, answered[address])
            else:
                self._hold(address, sent_at, "handover" if address in self.handovers else "free")

    def _probe(self, addresses: Iterable[IPAddress]) -> Dict[IPAddress, str]:
        """Who answers for the addresses on the link (address -> MAC); {} when probing is off.

        A probe that fails (no CAP_NET_RAW, interface down) is logged once and the
        addresses are taken anyway: a node that cannot ask must not stop taking over.
        """
        addresses = list(addresses)
        if not addresses or self.config.probe_timeout_s <= 0:
            return {}
        try:
            answered = probe(self.config.interface, addresses, self.config.probe_timeout_s)
        except OSError as exc:
            if not self.probe_failing:
                log.warning(
                    "cannot probe %s for conflicts on node %s, taking without asking: %s",
                    self.config.interface,
                    self.me,
                    exc,
                )
            self.probe_failing = True
            return {}
        if self.probe_failing:
            log.info(
                "probing %s for conflicts works again on node %s", self.config.interface, self.me
            )
        self.probe_failing = False
        return answered

    def _refuse(self, address: IPAddress, mac: str) -> None:
        """A host outside yaim has the address: note the conflict in the DCS, then unmark it."""
        self.conflicts[address] = (mac, time.monotonic() + self.config.conflict_backoff_s)
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
            self.dcs.note_conflict(address, Conflict(mac, self.me).text())
            # Written: every node, this one too, goes by the note now, which the host that
            # answered may delete if it was a yaim node that had been frozen.
            del self.conflicts[address]
        finally:
            self.dcs.delete_mark(address)

    def _hold(self, address: IPAddress, sent_at: float, reason: str) -> None:
        """Hold a freshly marked address (its mark's request sent at `sent_at`) and add it.

        Not unless its fence time is HANDOVER_WINDOW x ttl away at least: with v3 the mark
        lives as long as the lease, and a keep-alive that keeps failing leaves the
        lease's last renewal too old to count on. Holding it would add and fence it in
        the same breath, every round until a keep-alive gets through again; and the
        other nodes count on every held mark living that long (see the module's text).
        """
        least = HANDOVER_WINDOW * self.config.ttl_s
        fence_time = self.state.fence_time(self.dcs.ttl_start(sent_at))
        if fence_time - time.monotonic() < least:  # marked a while ago (the probe): renew it
            renewed = time.monotonic()
            if self.dcs.refresh_mark(address):
                fence_time = self.state.fence_time(self.dcs.ttl_start(renewed))
        if fence_time - time.monotonic() < least:
            log.debug(
                "not holding %s on node %s: its lease was not renewed in time", address, self.me
            )
            return
        if not self.state.hold(address, fence_time, reason):
            self.dcs.delete_mark(address)
            return
        self.sync_actuator(0.0)  # add it now, not at the actuator's next round
        self.metrics.takeovers.labels(reason).inc()
        log.info("took %s on node %s: %s", address, self.me, REASONS[reason])

    def _mark_of(self, address: IPAddress) -> Optional[int]:
        """The number of this node's mark of `address`, if a recent read showed it."""
        seen = self.seen_marks.get(address)
        return seen[1] if seen is not None and seen[0] == self.me else None

    def _fence_lost(self, addresses: Iterable[IPAddress], view: ClusterView) -> None:
        """Drop the held addresses whose mark is gone or someone else's: one actuator round."""
        dropped = [
            a for a in in_order(addresses) if self.state.drop(a, "fence", "mark-lost") is not None
        ]
        for address in dropped:
            holder = view.holders.get(address)
            self.metrics.fencing.labels("mark-lost").inc()
            log.warning(
                "fencing %s on node %s: its mark is %s",
                address,
                self.me,
                "held by " + holder if holder else "gone",
            )
        if dropped:
            self.sync_actuator(self.config.interval_s)

    def _release(self, addresses: Iterable[IPAddress], reason: str) -> None:
        """Remove the addresses from the interface first, in one actuator round for them
        all, then delete their marks."""
        dropped = {a: self.state.drop(a, "release", reason) for a in in_order(addresses)}
        if not dropped:
            return
        if not self.sync_actuator(self.config.interval_s):
            for address, fence_time in dropped.items():
                if fence_time is not None:
                    self.state.hold(address, fence_time, "resumed")
            log.error(
                "keeping %s on node %s: could not be removed yet",
                ", ".join(map(str, dropped)),
                self.me,
            )
            return
        for address, fence_time in dropped.items():
            self.dcs.release_mark(address, self._mark_of(address))
            if fence_time is None:  # marked but never held here: nothing was removed
                log.debug("unmarked %s on node %s: %s", address, self.me, REASONS[reason])
                continue
            self.metrics.releases.labels(reason).inc()
            log.info("released %s on node %s: %s", address, self.me, REASONS[reason])
