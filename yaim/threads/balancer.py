"""The balancer thread: reads the cluster, plans with `yaim.balancer`, tells the ledger.

Take = create the mark (atomically), ask the link about it unless it was handed
over or the lookout found it silent (yaim.conflicts, `ahead`), then claim it in the
ledger, which has the actuator add it.
Release = end the claim, wait for the actuator to take the address off, then delete
the mark. The rules a claim lives by are the ledger's (yaim.claims); in the failsafe
hold, and while this node's promises to others last, the failsafe policy says what
may be taken and released (yaim.failsafe).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, NamedTuple, Optional, Set, Tuple

from yaim import balancer
from yaim.claims import Ledger
from yaim.conflicts import Ahead, Conflicts, Handovers
from yaim.dcs import DCS
from yaim.events import RELEASE, words
from yaim.failsafe import Tries
from yaim.state import NodeState, Reading
from yaim.threads.base import DCSWorker
from yaim.threads.failsafe import Policy
from yaim.threads.watch import Behind, Feed, Synced
from yaim.view import (
    ClusterView,
    IPAddress,
    Rejected,
    Release,
    Snapshot,
    in_order,
    parse_address,
    parse_snapshot,
)

log = logging.getLogger(__name__)


class Work(NamedTuple):
    """What a round does from one view, decided before any of it is done."""

    removed: FrozenSet[IPAddress]  # held, gone from the pool: released
    remark: Tuple[IPAddress, ...]  # kept through an etcd outage, no mark yet: marked again
    lost: Dict[IPAddress, str]  # held, the mark gone or someone else's: fenced, and why
    release: FrozenSet[IPAddress]
    reason: str  # of the release
    resume: FrozenSet[IPAddress]  # marked by this node, not held: held again
    take: FrozenSet[IPAddress]

    def empty(self) -> bool:
        return not any((self.removed, self.remark, self.lost, self.release, self.resume, self.take))


class BalancerThread(DCSWorker):
    """One round per interval, or at once when health changes or a mark is lost.

    `sync_actuator(timeout)` asks the actuator thread for a round and waits for it;
    False if it failed or took longer.
    """

    def __init__(
        self,
        dcs: DCS,
        ledger: Ledger,
        state: NodeState,
        config,
        sync_actuator: Callable[[float], bool],
        policy: Optional[Policy] = None,
        feed: Optional[Feed] = None,
        ahead: Optional[Ahead] = None,
        **kwargs,
    ) -> None:
        super().__init__("balancer", dcs, "balancer cannot reach the DCS", **kwargs)
        self.ledger = ledger
        self.state = state
        self.policy = Policy(None) if policy is None else policy
        self.config = config
        self.me = config.node_name
        self.sync_actuator = sync_actuator
        self.rejected: Set[Rejected] = set()
        self.drained = False
        self.conflicts = Conflicts(config, dcs, ahead)
        self.handovers = Handovers(config.ttl_s)
        self.feed = feed
        self.synced: Optional[Synced] = None  # the last look through the cache
        # The last parse and plan: a quiet round looks at the same snapshot again, and
        # parsing and planning 1,000 addresses costs about 10 ms a round.
        self._parsed: Optional[Tuple[Snapshot, ClusterView, List[Rejected]]] = None
        self._planned: Optional[Tuple[Tuple[ClusterView, bool], balancer.Plan]] = None
        self._mine: Optional[Tuple[ClusterView, Dict[IPAddress, int]]] = None
        self._declared_in: Optional[Snapshot] = None  # the last snapshot `ip` was looked for in

    def dcs_round(self, messages: List[Any]) -> None:
        behind = [m.why for m in messages if isinstance(m, Behind)]
        if behind:
            log.info("balancer of node %s reads the whole cluster: %s", self.dcs.node, behind[0])
            self._act(self._read_view(trust_cache=False))
        elif not self._idle():
            self._act(self._read_view())

    def _idle(self) -> bool:
        """Whether the cache, changed since the last look, asks nothing of this node as it
        is: then it makes no sync write, for every node receives every sync write's event
        (made by every node at each change, N writes sent N times over). Nothing is done
        from such a look (it is of no known freshness): a round that would act looks
        through a sync as before; one that finds nothing to do only shows the cluster
        (status) and logs what it refuses. What a node so lets pass are deletions (a
        release, an expiry, a node gone) that ask nothing of it: a mark it has not seen at
        a current look (another node's take) is seen at one, or its release could not
        count as a handover later (yaim.conflicts). Only while this node has written
        nothing since its last look, as the quiet path, and while the cache saw every
        change since (after a listing the next look is current, so that the handover rule
        can count the marks it shows as seen again)."""
        feed, last = self.feed, self.synced
        if feed is None or last is None or not self._unwritten(last):
            return False
        peek = feed.peek()
        if peek is None or feed.quiet_since(last) or not feed.continued:
            return False
        view = self._see(peek, last.sent_at)
        if view.conflicts or self.handovers.unseen(view):
            return False
        return self._work(view).empty()

    def _unwritten(self, last: Synced) -> bool:
        """Nothing written through this thread's handle since `last`, its latest try did not
        fail, and no read wanted (yaim.failsafe.Membership): a look older than a write of
        its own would miss it, and after a failed try only a request that works tells the
        failsafe that etcd answers again (yaim.failsafe.etcd_answers). Found so (v2 chaos):
        one sync write timed out in an etcd leader's election, the cache then stayed quiet,
        the rounds looked at it without a request, and the node had no failsafe view for
        17 s: it refused every peer's hold, and an address went when etcd did."""
        now = time.monotonic()
        if (self.dcs.last_success or 0.0) > last.seen_at:
            return False
        if Tries(self.dcs.last_success, self.dcs.last_failure).failing:
            return False
        return not self.policy.membership.wants_read(last.sent_at, now)

    def _look(self, trust_cache: bool = True) -> Synced:
        """The cluster as of a known moment. From the cache when it follows the store: as of
        the last sync while nothing changed since and this thread wrote nothing since (no
        request at all; a look older than its own last write would miss it), else made
        current by a sync write now; without a live cache, one that does not catch up
        within the interval, or one known to be behind (`trust_cache` False), a full read."""
        feed = self.feed
        if feed is not None and feed.live and trust_cache:
            sent_at = time.monotonic()
            last = self.synced
            if last is not None and feed.quiet_since(last) and self._unwritten(last):
                return last._replace(continued=False)
            revision = self.dcs.sync()
            found = feed.synced(revision, sent_at, self.config.interval_s)
            if found is not None:
                self.synced = found._replace(seen_at=self.dcs.last_success)
                return found
        self.synced = None
        sent_at = time.monotonic()
        return Synced(self.dcs.read(), sent_at)

    def _read_view(self, trust_cache: bool = True) -> ClusterView:
        look = self._look(trust_cache)
        return self._see(look.snapshot, look.sent_at, look)

    def _see(
        self, snapshot: Snapshot, sent_at: float, look: Optional[Synced] = None
    ) -> ClusterView:
        """The view of a snapshot sent at `sent_at` (or, unsynced, at least as new), as this
        node plans from it; `look`: a current one, whose marks count as seen (yaim.conflicts)."""
        view, rejected = self._parse(snapshot)
        if look is not None:
            self.handovers.note(view, sent_at, look.marked if look.continued else None)
            self.ledger.saw(self._own_marks(view))
        for entry in sorted(set(rejected) - self.rejected):
            log.warning("refused %s on node %s: %s", entry.label, self.me, entry.reason)
        self.rejected = set(rejected)
        self._note_drain(self.me in snapshot.drained)
        view = self.conflicts.skip(view)
        self.state.latest = Reading(snapshot, view, rejected, sent_at)
        if not self.state.taking_part:
            view = view._replace(nodes=view.nodes - {self.me})
        return view

    def _own_marks(self, view: ClusterView) -> Dict[IPAddress, int]:
        """This node's marks in `view` (address -> number), found once per view: a quiet
        round looks at the same one again."""
        last = self._mine
        if last is None or last[0] is not view:
            mine = {a: n for a, n in view.marks.items() if view.holders.get(a) == self.me}
            last = self._mine = (view, mine)
        return last[1]

    def _note_drain(self, drained: bool) -> None:
        if drained == self.drained:
            return
        self.drained = drained
        self.metrics.drained.set(drained)
        held = ", ".join(map(str, in_order(self.ledger.held()))) or "no address"
        if drained:
            log.info(
                "drained node %s: releasing %s, taking none (operator's drain key)", self.me, held
            )
        else:
            log.info("undrained node %s: taking its share again (drain key removed)", self.me)

    def _parse(self, snapshot: Snapshot) -> Tuple[ClusterView, List[Rejected]]:
        """parse_snapshot, but once per snapshot without conflicts notes (which end by the
        clock, so those are parsed every time)."""
        last = self._parsed
        if last is not None and last[0] is snapshot and not snapshot.conflicts:
            return last[1], last[2]
        view, rejected = parse_snapshot(snapshot, self.config.allowed_networks, time.time())
        self._parsed = (snapshot, view, rejected)
        return view, rejected

    def _plan(self, view: ClusterView) -> balancer.Plan:
        """balancer.plan (pure), computed again only for a view that differs. With
        `rebalance: manual` the node keeps what it holds, unless an operator's `rebalance`
        key asks for the automatic plan (yaimctl rebalance)."""
        rebalance = self.state.placement.rebalance == "auto" or view.rebalance
        last = self._planned
        if last is None or last[0] != (view, rebalance):
            last = self._planned = ((view, rebalance), balancer.plan(view, self.me, rebalance))
        return last[1]

    def _work(self, view: ClusterView) -> Work:
        held = self.ledger.held()
        remark, lost = [], {}
        for address in in_order(held & view.pool):
            holder = view.holders.get(address)
            if holder is None and self.policy.covers(address):
                remark.append(address)
            elif holder != self.me:
                lost[address] = "held by " + holder if holder else "gone"
        plan = self._plan(view)
        if self.drained:
            reason = "drained"
        elif self.me in view.nodes:
            reason = "rebalance"
        elif self.state.taking_part:
            # Its node key is not there yet (expired in an outage the failsafe held through,
            # or at start): the heartbeat writes it again; meanwhile it keeps what it holds.
            reason = ""
        else:
            reason = "unhealthy" if self.state.link.up else "link-down"
        may_release = bool(reason) and self.policy.may_release(reason)
        return Work(
            removed=frozenset(held - view.pool),
            remark=tuple(remark),
            lost=lost,
            release=frozenset(plan.release) if may_release else frozenset(),
            reason=reason,
            resume=frozenset(plan.keep - held),
            take=frozenset(a for a in plan.take if self.policy.may_take(a)),
        )

    def _act(self, view: ClusterView) -> None:
        self._declare_ip()
        work = self._work(view)
        self._release(work.removed, "removed", view)
        for address in work.remark:
            self._remark(address)
        for address, why in work.lost.items():
            self.ledger.lost(address, why)
            self.policy.remarked(address)  # a hold of it ends with the claim
        self._release(work.release, work.reason, view)
        for address in in_order(work.resume):
            self._resume(address, view)
        self._take_free(work.take)
        removed = functools.partial(self.sync_actuator, self.config.interval_s)
        self.conflicts.clear_own(view, self.ledger.held(), removed)

    def _declare_ip(self) -> None:
        """A vip-manager file's `ip` is its cluster's pool: put it there where it is not
        (an operator's `yaimctl ips remove` of it lasts until the next round); looked for
        once per snapshot. Others' addresses in the pool are served as well."""
        ip, latest = self.config.ip, self.state.latest
        if ip is None or latest is None or latest.snapshot is self._declared_in:
            return
        self._declared_in = latest.snapshot
        if any(parse_address(name)[0] == ip for name in latest.snapshot.pool):
            return
        if self.dcs.add_address(ip):
            log.info(
                "added %s to the pool of node %s's cluster: the configuration's ip", ip, self.me
            )

    def _remark(self, address: IPAddress) -> None:
        """Make the mark of an address kept through a whole-etcd outage again, first thing
        when etcd answers (atomically: only if nobody has marked it since, else it is
        fenced as a lost mark is); the hold of it ends either way."""
        sent_at = self._mark(address, self.dcs.create_mark)
        if sent_at is not None:
            self.ledger.renewed(address, self.dcs.ttl_start(sent_at))
            log.info(
                "made the mark of %s on node %s again: kept through the etcd outage",
                address,
                self.me,
            )
        else:
            self.ledger.lost(address, "someone else's since the etcd outage")
        self.policy.remarked(address)

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
            self._hold(address, sent_at, "resumed", view.marks.get(address))

    def _take_free(self, addresses: Iterable[IPAddress]) -> None:
        """Mark the addresses (DCS.create_marks: v3 in one request, v2 a few at once),
        probe the marked ones all at once (not those handed over by their holder), hold
        those nobody has."""
        wanted = in_order(addresses)
        marked = self.dcs.create_marks(wanted)
        for address in wanted:
            if address not in marked:
                log.debug("%s is not ours to take this round", address)
        handovers = self.handovers.addresses
        answered = self.conflicts.probe(set(marked) - handovers)
        for address, sent_at in marked.items():
            if address in answered:
                self.conflicts.refuse(address, answered[address])
            else:
                self._hold(address, sent_at, "handover" if address in handovers else "free")

    def _hold(
        self, address: IPAddress, sent_at: float, reason: str, mark: Optional[int] = None
    ) -> None:
        """Claim a freshly marked address, its mark's request sent at `sent_at`. A mark
        marked a while ago (the probe took time) is renewed first if it would not last
        (the ledger's rule); one the ledger refuses for now (closed, or suspended while the
        link is down) is given back."""
        ttl_start = self.dcs.ttl_start(sent_at)
        if not self.ledger.lasts(ttl_start):
            renewed = time.monotonic()
            if self.dcs.refresh_mark(address):
                ttl_start = self.dcs.ttl_start(renewed)
        if not self.ledger.hold(address, ttl_start, reason, mark) and self.ledger.refusing:
            self.dcs.delete_mark(address)

    def _release(self, addresses: Iterable[IPAddress], reason: str, view: ClusterView) -> None:
        """End the claims, wait for one actuator round that takes every address off, then
        delete the marks of those that are off; also of those the actuator released itself
        when the link went down (Ledger.suspend). A mark never claimed here goes after that
        round too (a leftover of an earlier run is removed in it); one whose claim is still
        ending (fenced, not off yet) is left for a later round."""
        addresses = set(addresses)
        if not addresses:
            return
        self.ledger.release(addresses, reason)
        removed = self.sync_actuator(self.config.interval_s)
        marks: Dict[IPAddress, Optional[int]] = self.ledger.finish(addresses)
        unclaimed = addresses - set(marks) - self.ledger.claimed() if removed else set()
        for address in in_order(unclaimed):
            log.debug("unmarked %s on node %s: %s", address, self.me, words(RELEASE, reason))
            mine = view.holders.get(address) == self.me
            marks[address] = view.marks.get(address) if mine else None
        for address in in_order(marks):
            self.dcs.release_mark(address, marks[address])
