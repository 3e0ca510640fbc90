"""Decide which node should hold which pool address; pure, no I/O.

Every node runs the same computation on the same view, so the answer must be
deterministic (no dict or set order, no PYTHONHASHSEED) for nodes to agree on
who takes a free address without racing for it.  It must also move as few
addresses as possible: every move is a short outage for that address.

Addresses still marked by a node that does not take part (dead, its mark not
yet expired; or drained, still releasing) are left alone and left out of the
quotas; the participants split the rest by their weights (`weight`, published in
their node keys: each within one address of its exact share M x w / W, evenly when
the weights are equal), the odd ones going to the nodes that hold more than their
whole share already.  A node over its quota releases the addresses it wants least
(rendezvous hashing); free addresses go, in address order, to the node with room
that wants each one most.  From any view this settles in two rounds: one to release
and take, one to take what was released.

Two rules keep addresses where they are (each move cuts the connections through the
address): while a node is still `joining` (its node key says it has not yet taken part
for `rebalance-delay` without a break) the nodes that are not keep all they hold, so
the joining node takes free addresses by the usual rule (its quota counts for those)
but makes nobody release; and a node with `rebalance: manual` releases nothing it
holds while it takes part (`plan(..., rebalance=False)`) until an operator asks for a
rebalance. Only the nodes that are all joining at once (a cold start) split the pool
as if none were: there is no one else to keep it. The rule is not "keep what the
quotas without the joining nodes allow": those quotas and the ones the free
addresses go by disagree, and the two together release in a third round what the
second had kept (hypothesis found it).

Every node plans again at every change it sees, so the scores are remembered: the
ranking of the nodes for an address, worked from the last one when a few nodes came or
went (`_Rankings`), and the scores of the addresses held (a plan of 1,000 addresses over
100 nodes hashed 33,000 pairs and took 200 ms; the same answer from the remembered
rankings takes a few).

`heirs` tells the lookout (yaim.lookout) what a node would take were one holder gone,
for every holder at once.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from typing import (
    Callable,
    Dict,
    FrozenSet,
    Iterable,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
)

from yaim.view import ClusterView, IPAddress, in_order

Allotment = Dict[str, FrozenSet[IPAddress]]
# Which of the wanting nodes wants an address most: favourite(address, wanting=...).
Favourite = Callable[..., str]
# Remembered scores and rankings: enough for the addresses of a large pool, bounded so
# that a pool larger still only costs the hashing it always cost.
SCORES, RANKINGS = 16384, 4096


class Plan(NamedTuple):
    """What one node does this round."""

    take: FrozenSet[IPAddress]
    keep: FrozenSet[IPAddress]
    release: FrozenSet[IPAddress]


def score(node: str, address: IPAddress) -> int:
    """Rendezvous score: how much `node` wants `address`, the same on every host and run."""
    return _score(node, str(address))


def _score(node: str, name: str) -> int:
    digest = hashlib.sha256(f"{node}|{name}".encode()).digest()
    return int.from_bytes(digest, "big")


_remembered_score = functools.lru_cache(maxsize=SCORES)(score)


def _by_preference(node: str, addresses: Iterable[IPAddress]) -> List[IPAddress]:
    """`addresses` from the one `node` wants most to the one it wants least."""
    return sorted(addresses, key=lambda address: _remembered_score(node, address), reverse=True)


class _Rankings:
    """Per address, `nodes` (sorted by name) from the one that wants it most; among equal
    scores (never seen with sha256) by name, as max() over them would pick.

    Each address keeps its ranking for the last node set it was asked with. At a cold
    start every node plans again as each of the others comes (its node key), so the node
    set grows one or a few at a time: a ranking is then worked from the last one, those
    gone left out and each new node placed by bisection, scoring about log2(N) of the
    others instead of all N (a plan of 1,000 addresses over 100 nodes, one node more than
    the last: 110 ms of hashing scored afresh, 8 ms so). Bounded: the rankings of at most
    `size` addresses, the oldest forgotten first. Used from the balancer's and the
    lookout's threads: the lock guards the table, never a computation."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._known: Dict[IPAddress, _Ranked] = {}
        self._members: Tuple[Tuple[str, ...], FrozenSet[str]] = ((), frozenset())
        self._lock = threading.Lock()

    def get(self, address: IPAddress, nodes: Tuple[str, ...]) -> Tuple[str, ...]:
        with self._lock:
            last, members = self._known.get(address), self._members
        if last is not None and last.nodes == nodes:
            return last.ranking
        if members[0] != nodes:
            members = (nodes, frozenset(nodes))
        ranked = _ranked_again(address, nodes, members[1], last)
        with self._lock:
            self._members = members
            self._known.pop(address, None)
            while len(self._known) >= self.size:
                del self._known[next(iter(self._known))]
            self._known[address] = ranked
        return ranked.ranking


class _Ranked(NamedTuple):
    """An address's ranking of a node set, and the address's text its scores hash."""

    nodes: Tuple[str, ...]
    ranking: Tuple[str, ...]
    name: str


def _ranked_again(
    address: IPAddress, nodes: Tuple[str, ...], members: FrozenSet[str], last: Optional[_Ranked]
) -> _Ranked:
    """The ranking of `nodes` (the same as a set: `members`) for `address`, from its
    ranking `last` where that costs fewer scores than ranking them all."""
    if last is None:
        name, added = str(address), nodes
    else:
        name, added = last.name, sorted(members.difference(last.nodes))
    if last is None or len(added) * len(nodes).bit_length() >= len(nodes):
        ranking = sorted(nodes, key=lambda node: _score(node, name), reverse=True)
        return _Ranked(nodes, tuple(ranking), name)
    ranking = [node for node in last.ranking if node in members]
    scores: Dict[str, int] = {}

    def key(node: str) -> Tuple[int, str]:
        if node not in scores:
            scores[node] = _score(node, name)
        return -scores[node], node

    for node in added:  # bisect's key= is Python 3.10's: the same search by hand
        low, high, wanted = 0, len(ranking), key(node)
        while low < high:
            middle = (low + high) // 2
            if wanted < key(ranking[middle]):
                high = middle
            else:
                low = middle + 1
        ranking.insert(low, node)
    return _Ranked(nodes, tuple(ranking), name)


_RANKINGS = _Rankings(RANKINGS)


def _ranking(address: IPAddress, nodes: Tuple[str, ...]) -> Tuple[str, ...]:
    """`nodes` (sorted by name) from the one that wants `address` most (`_Rankings`)."""
    return _RANKINGS.get(address, nodes)


def _favourite(address: IPAddress, nodes: Tuple[str, ...], wanting: Set[str]) -> str:
    """The node among `wanting` (some of `nodes`) that wants `address` most."""
    return next(node for node in _ranking(address, nodes) if node in wanting)


def _holdings(view: ClusterView) -> Dict[str, Set[IPAddress]]:
    """Pool addresses per holder, including holders that do not take part."""
    held: Dict[str, Set[IPAddress]] = {}
    for address, holder in view.holders.items():
        if address in view.pool:
            held.setdefault(holder, set()).add(address)
    return held


def _weights(view: ClusterView, nodes: Iterable[str]) -> Dict[str, int]:
    """The weights the quotas of `nodes` follow: as published, 1 where none is; all 1
    when none is above 0 (weight 0 takes an address only when no one else can)."""
    weights = {node: view.weights.get(node, 1) for node in nodes}
    return weights if any(weights.values()) else dict.fromkeys(weights, 1)


def _quotas(
    nodes: Sequence[str],
    available: int,
    counts: Dict[str, int],
    weights: Dict[str, int],
    joining: FrozenSet[str] = frozenset(),
) -> Dict[str, int]:
    """Split `available` addresses by weight: each node gets the whole part of its exact
    share available x w / W, and the odd ones go one each to nodes whose exact share has
    a fraction: first those that hold more than the whole part already (of those, the
    nodes not `joining` first: they keep what they hold anyway), then the larger
    fraction, then whoever holds most, then by name.

    Giving the extra address to the nodes that already hold more is what keeps a join,
    a leave or a weight change from moving more addresses than it must. With equal
    weights this is an even split, the odd ones to whoever holds most.
    """
    total = sum(weights.values())
    whole = {node: available * weights[node] // total for node in nodes}
    fraction = {node: available * weights[node] % total for node in nodes}
    extra = available - sum(whole.values())
    lucky = sorted(
        (node for node in nodes if fraction[node]),
        key=lambda node: (
            counts[node] <= whole[node],
            node in joining,
            -fraction[node],
            -counts[node],
            node,
        ),
    )[:extra]
    return {node: whole[node] + (node in lucky) for node in nodes}


def _ranked(nodes: Iterable[str], counts: Dict[str, int]) -> List[str]:
    """The nodes in the order the odd addresses go to them with equal weights (`_quotas`)."""
    return sorted(nodes, key=lambda node: (-counts[node], node))


def _even_split(ranked: Sequence[str], available: int) -> Dict[str, int]:
    """`available` split over `ranked`, the odd ones to the first."""
    base, extra = divmod(available, len(ranked))
    return {node: _share(rank, base, extra) for rank, node in enumerate(ranked)}


def _share(rank: int, base: int, extra: int) -> int:
    return base + 1 if rank < extra else base


class Shares(NamedTuple):
    """The participants' quotas, and how many each may keep (`limits`: its quota; while
    some nodes are joining and others not, all that each of the others holds)."""

    quotas: Dict[str, int]
    limits: Dict[str, int]


def shares(view: ClusterView) -> Shares:
    """The participants' quotas and keep limits on `view` (the module's text)."""
    return _shares_of(view, tuple(sorted(view.nodes)), _holdings(view))


def _shares_of(
    view: ClusterView, nodes: Tuple[str, ...], held: Dict[str, Set[IPAddress]]
) -> Shares:
    """`shares`, for `_settle`, which has the nodes and the holdings already."""
    occupied = sum(len(addresses) for holder, addresses in held.items() if holder not in view.nodes)
    counts = {node: len(held.get(node, ())) for node in nodes}
    available = len(view.pool) - occupied
    quotas = _quotas(nodes, available, counts, _weights(view, nodes), view.joining)
    limits = dict(quotas)
    staying = [node for node in nodes if node not in view.joining]
    if staying and len(staying) < len(nodes):
        limits.update((node, max(quotas[node], counts[node])) for node in staying)
    return Shares(quotas, limits)


def _settle(view: ClusterView) -> Tuple[Allotment, Allotment]:
    """Return (kept, taken) per participant for this round; one pass serves every node."""
    nodes = tuple(sorted(view.nodes))
    if not nodes:
        return {}, {}
    held = _holdings(view)
    quotas, limits = _shares_of(view, nodes, held)
    kept = {
        node: frozenset(_by_preference(node, held.get(node, ()))[: limits[node]]) for node in nodes
    }
    deficit = {node: max(0, quotas[node] - len(kept[node])) for node in nodes}
    taken: Dict[str, List[IPAddress]] = {node: [] for node in nodes}
    free = view.pool.difference(view.holders)
    for address, winner in _hand_out(free, deficit, functools.partial(_favourite, nodes=nodes)):
        taken[winner].append(address)
    return kept, {node: frozenset(addresses) for node, addresses in taken.items()}


def _hand_out(
    free: Iterable[IPAddress], deficit: Dict[str, int], favourite: Favourite
) -> Iterator[Tuple[IPAddress, str]]:
    """The free addresses in address order, each to the node with room (`deficit`, used up
    as it goes) that wants it most, while any node has room."""
    wanting = {node for node, room in deficit.items() if room > 0}
    for address in in_order(free):
        if not wanting:
            return
        winner = favourite(address, wanting=wanting)
        yield address, winner
        deficit[winner] -= 1
        if not deficit[winner]:
            wanting.discard(winner)


def plan(view: ClusterView, me: str, rebalance: bool = True) -> Plan:
    """What node `me` does this round; a node that does not take part gives everything up.
    Without `rebalance` (`rebalance: manual`) it keeps all it holds while it takes part:
    it still takes what the others' plans leave it, so no address is taken twice."""
    mine = frozenset(_holdings(view).get(me, ()))
    if me not in view.nodes:
        return Plan(take=frozenset(), keep=frozenset(), release=mine)
    kept, taken = _settle(view)
    keep = kept[me] if rebalance else mine
    return Plan(take=taken[me], keep=keep, release=mine - keep)


def excess(view: ClusterView) -> Dict[str, int]:
    """Participant -> how many of its addresses a rebalance would move away now: what
    `rebalance: manual` leaves unsettled (yaimctl status and rebalance)."""
    if not view.nodes:
        return {}
    kept, _ = _settle(view)
    held = _holdings(view)
    return {node: len(held.get(node, ())) - len(kept[node]) for node in sorted(view.nodes)}


def heirs(view: ClusterView, me: str) -> Dict[str, FrozenSet[IPAddress]]:
    """Every other holder -> those of its addresses `me` would take were it gone (its marks
    and node key expired): `plan(view without it, me).take`, for the lookout, which
    watches the holders `me` is an heir of (yaim.lookout).

    Not by planning once per holder (N plans of M addresses at every change): the views
    without one holder differ only in its addresses, free there, and in the quotas,
    which depend on the holder only through whether it took part and where it ranked.
    So `me`'s room is worked out first, in a few steps; only for a holder it has room
    after are the quotas split and the addresses handed out, in `_settle`'s order, until
    `me`'s room or the holder's addresses run out. The favourite is scored afresh (those
    with room are few, at most the addresses free there, while the rankings and scores
    remembered are the plan's own). Cost: O(M + N) on a node that is nobody's heir;
    on an heir, O(N + a x w) more per holder, a its addresses and the free ones, w the
    nodes with room. On a settled view, for an heir: 50 ms at 10 x 1,000, 20 ms at
    100 x 1,000, 0.6 s at 1,000 x 10,000 (0.5 and 14 ms for the others); on one half
    free, seconds (the lookout asks on settled views only, once per change)."""
    if me not in view.nodes:
        return {}
    if view.joining & view.nodes or len(set(_weights(view, view.nodes).values())) > 1:
        return _heirs_by_planning(view, me)
    held = _holdings(view)
    counts = {node: len(held.get(node, ())) for node in view.nodes}
    ranked = _ranked(view.nodes, counts)
    rank = {node: index for index, node in enumerate(ranked)}
    occupied = sum(len(addresses) for holder, addresses in held.items() if holder not in view.nodes)
    free = view.pool.difference(view.holders)
    found: Dict[str, FrozenSet[IPAddress]] = {}
    for holder in sorted(held.keys() - {me}):
        theirs = held[holder]
        taking = holder in view.nodes
        available = len(view.pool) - occupied + (0 if taking else len(theirs))
        base, extra = divmod(available, len(ranked) - taking)
        quota = _share(rank[me] - (taking and rank[holder] < rank[me]), base, extra)
        if quota <= counts[me]:
            continue
        quotas = _even_split([node for node in ranked if node != holder], available)
        deficit = {node: share - min(counts[node], share) for node, share in quotas.items()}
        mine, left = set(), len(theirs)
        for address, winner in _hand_out(free | theirs, deficit, _scored_favourite):
            if address in theirs:
                left -= 1
                if winner == me:
                    mine.add(address)
            if not left or not deficit[me]:
                break
        if mine:
            found[holder] = frozenset(mine)
    return found


def _heirs_by_planning(view: ClusterView, me: str) -> Dict[str, FrozenSet[IPAddress]]:
    """`heirs` by planning the view without each holder: where weights differ or nodes
    are joining, the quotas without a holder are not the shortcut's. N plans on settled
    views (the lookout asks once per change): 16 ms at 10 x 1,000 and 160 ms at
    100 x 1,000 with one node of weight 2, against the shortcut's 26 and 20 ms."""
    found: Dict[str, FrozenSet[IPAddress]] = {}
    for holder, theirs in sorted(_holdings(view).items()):
        if holder == me:
            continue
        rest = {a: h for a, h in view.holders.items() if h != holder}
        without = view._replace(nodes=view.nodes - {holder}, holders=rest)
        mine = plan(without, me).take & theirs
        if mine:
            found[holder] = frozenset(mine)
    return found


def _scored_favourite(address: IPAddress, wanting: Set[str]) -> str:
    """`_favourite` of a few nodes, from their scores (among equal ones, never seen with
    sha256, the first by name, as there)."""
    return min(wanting, key=lambda node: (-score(node, address), node))


class Standing(NamedTuple):
    """One participant as the plan sees it for one address (yaimctl why)."""

    node: str
    rank: int  # 1: of the participants, the one that wants the address most
    weight: int
    quota: int
    holds: int
    joining: bool


class Why(NamedTuple):
    """Why an address is where it is: its holder, the node the plan keeps it on or gives
    it to this round (None: nobody, e.g. no one has room), and every participant."""

    address: IPAddress
    holder: Optional[str]
    planned: Optional[str]
    standings: Tuple[Standing, ...]


def why(view: ClusterView, address: IPAddress) -> Why:
    """The plan's reasons for `address` on `view`, for the operator (yaimctl why)."""
    nodes = tuple(sorted(view.nodes))
    planned = None
    if nodes and address in view.pool:
        kept, taken = _settle(view)
        planned = next((n for n in nodes if address in kept[n] | taken[n]), None)
    quotas = shares(view).quotas if nodes else {}
    weights = _weights(view, nodes)
    held = _holdings(view)
    ranking = _ranking(address, nodes) if nodes else ()
    standings = tuple(
        Standing(
            node, rank, weights[node], quotas[node], len(held.get(node, ())), node in view.joining
        )
        for rank, node in enumerate(ranking, 1)
    )
    return Why(address, view.holders.get(address), planned, standings)
