"""The lookout: ask the link about a silent holder's addresses before its marks expire, so
that the node that takes them over holds them the moment the marks are gone.

Why. A mark that expired (crash, freeze, a node cut off) leaves no `released` note, so
its address is probed for `probe-timeout` after it is marked and before it is held
(yaim.conflicts). That probe sat on the critical path of every crash failover (bench:
mark gone -> new holder 0.29 s after a crash, 0.02 s after a release).

When to ask. The probe is worth something only close to the expiry: before the holder's
fence time (yaim.claims) a live holder may have the address, and an answer then proves
nothing. etcd tells nobody when a mark will expire: a v3 keep-alive and a v2
`refresh=true` notify no watcher. The ways to learn it that were weighed:

- a beacon: the node key on a second lease, TTL just under `ttl`, whose expiry every
  watcher hears for free. etcd keeps whole seconds and (v3) grants 2 s at least with
  its default timing, so at `ttl` 2 or 3 s there is no whole second between the fence
  margin and the ttl to put it in; and it costs one more keep-alive per node per
  interval, doubling the steady-state requests (the issue wants at most 1.1).
- polling the holder's remaining TTL (v3 LeaseTimeToLive, v2 a GET's ttl) for each
  holder one succeeds: one request per holder per interval, O(N) per node, and a
  reading in whole seconds.
- the link itself (this module): the question the probe asks, whether a host has the
  address, needs no etcd at all. Once per `interval` the node sends one probe to every
  holder it is an heir of (`watched`) for one of its addresses (the sentinel: its
  lowest; IPv4, once the holder's MAC is known, to that host alone, so the link's
  other hosts see nothing; IPv6 to the address's solicited-node group, as the probe
  does). A holder
  that answers is there, and nothing more is done: its marks expire, if ever, with it
  still answering (frozen, or its daemon killed while its host runs), and the conflict
  probe after the mark finds it as before. A holder whose sentinel goes unanswered
  for `probe-timeout` is suspected: the node works out which of its addresses it may
  take once that holder is gone (`successors`: the balancer's own plan, and those it
  is one of the two nodes wanting most) and probes those as the conflict probe does,
  `probes` times per `probe-timeout`, until they are taken, the sentinel answers again,
  or `patience` (a ttl and two intervals: a dead holder's marks expire by then) has
  passed.

Whom to watch, and the cost. The cost is packets, not requests: no request to etcd at
all. A node watches only the holders it is an heir of: those some of whose addresses
the balancer's plan of the view without them gives it (yaim.balancer.heirs), so every
holder is watched by the nodes that will take its addresses, and by no other. It
chooses them again from each view in which every pool address is held; while the
pool is still moving (free addresses: a start, a crash being taken over) it keeps
those chosen that still hold their sentinel (the plan is cheap to work out on a
settled view only, and what is free is about to be taken). With M addresses over N
nodes, settled, the plan gives a vanished holder's ~M/N addresses to the nodes with
room in the quotas without it, and the odd addresses go to the nodes that hold the
most, then by name (yaim.balancer): so the same ~M/N + 1 nodes are the heirs of
nearly every holder. Frames per node per interval: N - 1 sentinels (and as many
replies) on each of those min(N, ~M/N + 1) nodes, none on the others; on the link
about min(N, M/N + 1) x (N - 1), i.e. M + N, where every node probing every other
holder sent N x (N - 1): at 1,000 nodes x 10,000 addresses about 11,000 frames per
interval instead of a million; at 10 x 1,000 every node is an heir of the 9 others,
90. On top of that, while a holder is suspected, its addresses this node may take,
`probes` frames each per `probe-timeout`, until they are taken.

The rule (`Silence`). An address counts as silent at time t when it has been probed to
every host on the link without a break (no two probes more than MAX_GAP probe
intervals apart, the last one that recent) since s <= t - `probe-timeout`, at least
`probes` of those were sent `probe-timeout` / `probes` before t or earlier (each had
at least the time the conflict probe gives its last one to be answered), and nothing
answered for it from s to t: no reply, announcement or any ARP packet from it, no
neighbour advertisement, and no packet dropped by the kernel meanwhile (every run
starts again after a drop). A sentinel sent to one host's MAC asks nobody else and
does not count. The balancer asks right after its create of the mark worked, and
holds an address that is silent at once; any other is probed as before.

Why that is safe. The safety rule stays the ledger's: an address is on the interface
only while its mark lives, and this node's mark was created before it asks. What the
probe after the mark gave was evidence that no host has the address: `probe-timeout`
of silence, `probes` probes, ending when the address is held. A silent address has the
same evidence, ending when the balancer asks, after its mark is made:
- a frozen holder (SIGSTOP) keeps its addresses in its kernel, which answers; the
  address is not silent, and the probe after the mark finds it, as before;
- a holder that lost etcd removed the address by its fence time, before its mark
  could expire; had it still answered in the window, the address would not be silent;
- a SIGKILLed daemon's host keeps and answers for its addresses: not silent;
- a host outside yaim that has the address answers as it would to the probe;
- the live holder may add the address back during the window while its mark still
  lives (an address removed by hand): it announces it, and answers the next probe;
  after its fence time, `ttl` minus the fence margin, it adds nothing, and the margin
  (0.1 s at least) is longer than a probe interval at the default `probe-timeout`.
Where the probe after the mark could be fooled (a host that takes the address in the
last probe interval, lost frames, a paused VM that answers nothing and resumes), a
silent address can be fooled alike, and no more. An answer heard at any time before
the balancer asks proves nothing and falls back to the probe after the mark.

Pure: no I/O, the caller gives the times and the conflict probe's count of probes per
`probe-timeout` (`probes`, yaim.actuator.probe.PROBES: this module imports no actuator);
yaim.threads.lookout sends and hears.
"""

from __future__ import annotations

import heapq
from typing import Dict, FrozenSet, Iterable, List, NamedTuple, Optional, Set, Tuple

from yaim import balancer
from yaim.view import ClusterView, IPAddress, address_order, in_order

# No two probes of a run further apart than this many probe intervals (probe-timeout /
# probes): a thread that stalled longer left a gap in which nobody was asked.
MAX_GAP = 1.5
# The send times a run keeps beyond `probes`: enough to count `probes` probes older than
# one probe interval at any pace the thread keeps (fewer kept can only make an address
# not silent).
KEPT_MORE = 3

# A suspected holder's address is probed by the node the balancer's plan without the
# holder gives it to, and by the CANDIDATES nodes that want it most among the rest: a
# holder's keys may expire in pieces (v2 keeps a TTL per key, so its marks and its node
# key can go an expiry round apart), and the plan of that moment give it to another.
CANDIDATES = 2

# Seconds between etcd's expiry rounds (its lessor, and v2's leader sync): keys that
# should go together may go one round apart (a v2 holder's marks, then its node key).
EXPIRY_ROUND = 0.5

# A probe to send: the address, and the MAC of the one host it goes to (None: every host).
Probe = Tuple[IPAddress, Optional[str]]


class Run(NamedTuple):
    """An address probed without a break and without an answer since `start`."""

    start: float
    sent: Tuple[float, ...]  # send times of its last probes (KEPT_MORE more), oldest first


class Silence:
    """Since when each address has been probed without a break and without an answer
    (the module's rule)."""

    def __init__(self, window: float, probes: int) -> None:
        self.window = window
        self.probes = probes
        self.kept = probes + KEPT_MORE
        self.spacing = window / probes
        self.max_gap = MAX_GAP * self.spacing
        self.runs: Dict[IPAddress, Run] = {}

    def sent(self, addresses: Iterable[IPAddress], at: float) -> None:
        """A probe to every host for each of `addresses`, sent at `at`."""
        for address in addresses:
            run = self.runs.get(address)
            if run is None or at - run.sent[-1] > self.max_gap:
                self.runs[address] = Run(at, (at,))
            else:
                self.runs[address] = Run(run.start, (*run.sent, at)[-self.kept :])

    def heard(self, address: IPAddress) -> None:
        """Someone has the address: its silence ends (the next probe starts another)."""
        self.runs.pop(address, None)

    def deaf(self) -> None:
        """Packets may have been missed (dropped, or the sockets lost): every run ends."""
        self.runs.clear()

    def keep(self, addresses: Set[IPAddress]) -> None:
        """Forget the runs of the addresses no longer probed."""
        self.runs = {a: run for a, run in self.runs.items() if a in addresses}

    def silent(self, address: IPAddress, now: float) -> bool:
        run = self.runs.get(address)
        if run is None or now - run.sent[-1] > self.max_gap:
            return False
        answerable = sum(1 for at in run.sent if now - at >= self.spacing)
        return run.start <= now - self.window and answerable >= self.probes


def sentinels(view: ClusterView, me: str) -> Dict[str, IPAddress]:
    """Every holder `me` is an heir of (yaim.balancer.heirs) -> the address its liveness is
    probed by: its lowest."""
    watched = balancer.heirs(view, me)
    found: Dict[str, IPAddress] = {}
    for address, holder in view.holders.items():
        if holder in watched and (
            holder not in found or address_order(address) < address_order(found[holder])
        ):
            found[holder] = address
    return found


def settled(view: ClusterView) -> bool:
    """Whether every pool address is held: nothing is about to be taken."""
    return view.pool <= view.holders.keys()


def successors(view: ClusterView, me: str, gone: Set[str]) -> FrozenSet[IPAddress]:
    """The addresses of the holders `gone` that `me` may take once they are gone: those the
    balancer's plan on the view without them gives it, and those it is one of the
    CANDIDATES nodes wanting most among the rest."""
    theirs = {a for a, holder in view.holders.items() if holder in gone}
    if not theirs:
        return frozenset()
    holders = {a: holder for a, holder in view.holders.items() if holder not in gone}
    without = view._replace(nodes=view.nodes - gone, holders=holders)
    planned = balancer.plan(without, me).take & theirs
    rest = without.nodes
    wanting = {
        a
        for a in theirs
        if me in heapq.nlargest(CANDIDATES, rest, key=lambda n: balancer.score(n, a))
    }
    return frozenset(planned | wanting)


class Change(NamedTuple):
    """A holder suspected (`suspected`), cleared or given up on, for the log."""

    holder: str
    sentinel: IPAddress
    what: str  # "suspected", "answers", "patience"
    probed: FrozenSet[IPAddress] = frozenset()


class Lookout:
    """The lookout of node `me`: what to probe when, what was heard, and which addresses
    are silent (the module's text). `window` is probe-timeout, `probes` the conflict
    probe's count of probes in it, `period` the sentinels' interval, `patience` how long
    a suspected holder's addresses are probed at most; an address that stops being
    probed is probed `linger` longer (the balancer may be taking it just then, from the
    very read that showed its mark gone, or a moment later, once etcd's next expiry
    round has taken the holder's node key too)."""

    def __init__(
        self, me: str, window: float, probes: int, period: float, patience: float, linger: float
    ) -> None:
        self.me = me
        self.silence = Silence(window, probes)
        self.window = window
        self.period = period
        self.patience = patience
        self.linger = linger
        self.view: Optional[ClusterView] = None
        self.chosen_from: Optional[ClusterView] = None  # the settled view `sentinels` are of
        self.sentinels: Dict[str, IPAddress] = {}
        self.sentinel_of: Dict[IPAddress, str] = {}  # the other way round
        self.macs: Dict[str, str] = {}  # holder -> the MAC that last answered for its sentinel
        self.unanswered: Dict[str, float] = {}  # holder -> when its sentinel was first sent
        self.suspects: Dict[str, float] = {}  # holder -> since when
        self.given_up: Set[str] = set()  # suspected for `patience`: not again until it answers
        self.probed: Dict[IPAddress, float] = {}  # address probed for silence -> until when
        self.next_round = 0.0  # the sentinels' next round
        self.next_probe = 0.0  # the suspected holders' addresses' next probe

    def follow(self, view: Optional[ClusterView], now: float) -> None:
        """The latest view the balancer planned from, None when this node takes no part
        (it takes nothing: nothing to watch)."""
        self.adopt(view, self.choose(view), now)

    def choose(self, view: Optional[ClusterView]) -> Optional[Dict[str, IPAddress]]:
        """The holders to watch and their sentinels, chosen afresh from `view` if it is a
        settled one that differs from the last they were chosen from; None when that is not
        due. The costly part of `follow`, which changes nothing: a thread may ask it
        outside its lock (yaim.threads.lookout)."""
        if view is None or not settled(view):
            return None
        last = self.chosen_from
        if last is not None and (last.nodes, last.pool, last.holders) == (
            view.nodes,
            view.pool,
            view.holders,
        ):
            return None
        return sentinels(view, self.me)

    def adopt(
        self, view: Optional[ClusterView], chosen: Optional[Dict[str, IPAddress]], now: float
    ) -> None:
        """`follow`, with what `choose(view)` answered: those chosen, or else those chosen
        before that still hold their sentinel (the module's text)."""
        self.view = view
        if view is None:
            self.chosen_from, self.sentinels = None, {}
        elif chosen is not None:
            self.chosen_from, self.sentinels = view, chosen
        else:
            self.sentinels = {h: a for h, a in self.sentinels.items() if view.holders.get(a) == h}
        self.sentinel_of = {address: holder for holder, address in self.sentinels.items()}
        holders = set(self.sentinels)
        self.macs = {h: mac for h, mac in self.macs.items() if h in holders}
        self.unanswered = {h: t for h, t in self.unanswered.items() if h in holders}
        self.given_up &= holders
        gone = [h for h in self.suspects if h not in holders]
        for holder in gone:
            del self.suspects[holder]
        self._plan(now)

    def _plan(self, now: float) -> None:
        """Probe the addresses the suspects' departure would give this node; the others
        that were probed, `linger` longer."""
        wanted: FrozenSet[IPAddress] = frozenset()
        if self.view is not None and self.suspects:
            wanted = successors(self.view, self.me, set(self.suspects))
        for address in wanted:
            self.probed[address] = float("inf")
        for address, until in list(self.probed.items()):
            if address not in wanted and until == float("inf"):
                self.probed[address] = now + self.linger

    def heard(self, address: IPAddress, mac: str, now: float) -> List[Change]:
        """A host showed it has `address`."""
        self.silence.heard(address)
        holder = self.sentinel_of.get(address)
        if holder is None:
            return []
        self.macs[holder] = mac
        self.unanswered.pop(holder, None)
        self.given_up.discard(holder)
        if self.suspects.pop(holder, None) is None:
            return []
        self._plan(now)
        return [Change(holder, address, "answers")]

    def deaf(self) -> None:
        """Answers may have been missed: no address is silent until probed afresh."""
        self.silence.deaf()

    def tick(self, now: float) -> List[Change]:
        """Suspect the holders whose sentinel has gone unanswered for the window; give up on
        those suspected for `patience`; forget what no longer needs probing."""
        changes = []
        for holder, since in self.unanswered.items():
            if holder in self.suspects or holder in self.given_up or now < since + self.window:
                continue
            self.suspects[holder] = now
            changes.append(Change(holder, self.sentinels[holder], "suspected"))
        for holder, since in list(self.suspects.items()):
            if now - since >= self.patience:
                del self.suspects[holder]
                self.given_up.add(holder)
                changes.append(Change(holder, self.sentinels[holder], "patience"))
        if changes:
            self._plan(now)
        self.probed = {a: until for a, until in self.probed.items() if until > now}
        self.silence.keep(set(self.probed))
        return [
            c._replace(probed=self._theirs(c.holder)) if c.what == "suspected" else c
            for c in changes
        ]

    def _theirs(self, holder: str) -> FrozenSet[IPAddress]:
        """The addresses of `holder` this node probes."""
        holders = {} if self.view is None else self.view.holders
        return frozenset(a for a in self.probed if holders.get(a) == holder)

    def due(self, now: float) -> List[Probe]:
        """The probes to send now (the caller reports them sent: `sent`)."""
        probes: Dict[IPAddress, Optional[str]] = {}
        if now >= self.next_probe and self.probed:
            probes.update((address, None) for address in self.probed)
            self.next_probe = now + self.silence.spacing
        if now >= self.next_round:
            for holder, sentinel in self.sentinels.items():
                self.unanswered.setdefault(holder, now)
                # While it answers, to its MAC alone; else to everybody (it may have moved).
                mac = self.macs.get(holder) if self.unanswered[holder] == now else None
                probes.setdefault(sentinel, mac)
            self.next_round = now + self.period
        return [(address, probes[address]) for address in in_order(probes)]

    @property
    def watching(self) -> bool:
        """Whether there is any holder or address to probe."""
        return bool(self.sentinels or self.probed)

    def sent(self, probes: Iterable[Probe], at: float) -> None:
        """These probes went out at `at`; those to every host count for the silence."""
        self.silence.sent([address for address, mac in probes if mac is None], at)

    def silent(self, addresses: Iterable[IPAddress], now: float) -> FrozenSet[IPAddress]:
        """Those of `addresses` that nobody has answered for, by the module's rule."""
        return frozenset(a for a in addresses if self.silence.silent(a, now))

    def urgent(self) -> bool:
        """Whether an answer must be read as it comes: while a holder is suspected, its
        answer ends the probing of its addresses. Otherwise answers may wait in the socket
        until the next probe or judgement (`next_time`) or the balancer's question
        (`silent`), which read them first: the judgement and the question see every answer
        that has come, only later."""
        return bool(self.suspects)

    def next_time(self) -> float:
        """When the next probe or judgement is due (monotonic)."""
        times = [self.next_round]
        if self.probed:
            times.append(self.next_probe)
        times += [
            since + self.window
            for holder, since in self.unanswered.items()
            if holder not in self.suspects and holder not in self.given_up
        ]
        return min(times)
