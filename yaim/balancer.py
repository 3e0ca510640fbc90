"""Decide which node should hold which pool address; pure, no I/O.

Every node runs the same computation on the same view, so the answer must be
deterministic (no dict or set order, no PYTHONHASHSEED) for nodes to agree on
who takes a free address without racing for it.  It must also move as few
addresses as possible: every move is a short outage for that address.

Addresses still marked by a node that does not take part (dead, its mark not
yet expired; or drained, still releasing) are left alone and left out of the
quotas; the participants split the rest evenly, the odd ones going to the
nodes that hold the most already.  A node over its quota releases the
addresses it wants least (rendezvous hashing); free addresses go, in address
order, to the node with room that wants each one most.  From any view this
settles in two rounds: one to release and take, one to take what was released.

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


def _quotas(nodes: Sequence[str], available: int, counts: Dict[str, int]) -> Dict[str, int]:
    """Split `available` addresses evenly; the odd ones go to whoever holds most already.

    Giving the extra address to the nodes that already hold the most is what
    keeps a join or a leave from moving more addresses than it must.
    """
    return _shares(_ranked(nodes, counts), available)


def _ranked(nodes: Iterable[str], counts: Dict[str, int]) -> List[str]:
    """The nodes in the order the odd addresses go to them (`_quotas`)."""
    return sorted(nodes, key=lambda node: (-counts[node], node))


def _shares(ranked: Sequence[str], available: int) -> Dict[str, int]:
    """`available` split over `ranked`, the odd ones to the first."""
    base, extra = divmod(available, len(ranked))
    return {node: _share(rank, base, extra) for rank, node in enumerate(ranked)}


def _share(rank: int, base: int, extra: int) -> int:
    return base + 1 if rank < extra else base


def _settle(view: ClusterView) -> Tuple[Allotment, Allotment]:
    """Return (kept, taken) per participant for this round; one pass serves every node."""
    nodes = tuple(sorted(view.nodes))
    if not nodes:
        return {}, {}
    held = _holdings(view)
    occupied = sum(len(addresses) for holder, addresses in held.items() if holder not in view.nodes)
    counts = {node: len(held.get(node, ())) for node in nodes}
    quotas = _quotas(nodes, len(view.pool) - occupied, counts)
    kept = {
        node: frozenset(_by_preference(node, held.get(node, ()))[: quotas[node]]) for node in nodes
    }
    deficit = {node: quotas[node] - len(kept[node]) for node in nodes}
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


def plan(view: ClusterView, me: str) -> Plan:
    """What node `me` does this round; a node that does not take part gives everything up."""
    mine = frozenset(_holdings(view).get(me, ()))
    if me not in view.nodes:
        return Plan(take=frozenset(), keep=frozenset(), release=mine)
    kept, taken = _settle(view)
    return Plan(take=taken[me], keep=kept[me], release=mine - kept[me])


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
        quotas = _shares([node for node in ranked if node != holder], available)
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


def _scored_favourite(address: IPAddress, wanting: Set[str]) -> str:
    """`_favourite` of a few nodes, from their scores (among equal ones, never seen with
    sha256, the first by name, as there)."""
    return min(wanting, key=lambda node: (-score(node, address), node))
