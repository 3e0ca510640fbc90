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
ranking of the nodes for an address as long as the node set is the same, and the
scores of the addresses held (a plan of 1,000 addresses over 100 nodes hashed 33,000
pairs and took 200 ms; the same answer from the remembered rankings takes a few).
"""

from __future__ import annotations

import functools
import hashlib
from typing import Dict, FrozenSet, Iterable, List, NamedTuple, Sequence, Set, Tuple

from yaim.view import ClusterView, IPAddress, in_order

Allotment = Dict[str, FrozenSet[IPAddress]]
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


@functools.lru_cache(maxsize=RANKINGS)
def _ranking(address: IPAddress, nodes: Tuple[str, ...]) -> Tuple[str, ...]:
    """`nodes` from the one that wants `address` most; among equal scores (never seen
    with sha256) in their given order, as max() would pick."""
    name = str(address)
    return tuple(sorted(nodes, key=lambda node: _score(node, name), reverse=True))


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
    base, extra = divmod(available, len(nodes))
    ranked = sorted(nodes, key=lambda node: (-counts[node], node))
    return {node: base + 1 if rank < extra else base for rank, node in enumerate(ranked)}


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
    wanting = {node for node in nodes if deficit[node] > 0}
    for address in in_order(view.pool.difference(view.holders)):
        if not wanting:
            break
        winner = _favourite(address, nodes, wanting)
        taken[winner].append(address)
        deficit[winner] -= 1
        if not deficit[winner]:
            wanting.discard(winner)
    return kept, {node: frozenset(addresses) for node, addresses in taken.items()}


def plan(view: ClusterView, me: str) -> Plan:
    """What node `me` does this round; a node that does not take part gives everything up."""
    mine = frozenset(_holdings(view).get(me, ()))
    if me not in view.nodes:
        return Plan(take=frozenset(), keep=frozenset(), release=mine)
    kept, taken = _settle(view)
    return Plan(take=taken[me], keep=kept[me], release=mine - kept[me])
