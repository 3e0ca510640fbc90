"""Read-only snapshots of the cluster, passed between threads.

`Snapshot` is what a DCS backend reads: raw key names, nothing parsed.
`ClusterView` is what the balancer plans from: parsed, validated addresses.
Neither touches the network; both are immutable so they can be shared freely.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from typing import Dict, FrozenSet, Iterable, List, Mapping, NamedTuple, Optional, Tuple, Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def address_order(address: IPAddress) -> Tuple[int, int]:
    """Sort key for addresses of both families (IPv4 and IPv6 objects do not compare)."""
    return address.version, int(address)


def in_order(addresses: Iterable[IPAddress]) -> List[IPAddress]:
    """The addresses sorted, IPv4 first; for logs and for a stable order of actions."""
    return sorted(addresses, key=address_order)


class Mark(NamedTuple):
    """A `marked` key: who holds an address, the seconds it has left (None: unknown), and
    the DCS's index of the key's creation, which names this one mark among all the
    marks the address ever had (v2 createdIndex, v3 create_revision; None: unknown)."""

    holder: str
    ttl: Optional[float] = None
    created: Optional[int] = None


class Snapshot(NamedTuple):
    """The cluster directory as one backend read it, key names verbatim.

    malformed: pool entries the backend could not use at all (name -> reason),
    e.g. a plain key where the layout wants a directory.
    conflicts: the `conflicts` notes, address name -> the note's text.
    released: the `released` notes, address name -> the note's text.
    """

    pool: FrozenSet[str]
    marks: Mapping[str, Mark]
    nodes: FrozenSet[str]
    drained: FrozenSet[str] = frozenset()
    malformed: Mapping[str, str] = {}
    conflicts: Mapping[str, str] = {}
    released: Mapping[str, str] = {}


class Conflict(NamedTuple):
    """A `conflicts` note: `node` saw a host yaim does not control (`mac`) answer for it."""

    mac: str
    node: str

    def text(self) -> str:
        """The note's value in the DCS."""
        return json.dumps({"mac": self.mac, "node": self.node}, sort_keys=True)

    @classmethod
    def parse(cls, text: str) -> Conflict:
        """A note's value; one that cannot be read still counts, as from an unknown host."""
        try:
            note = json.loads(text)
            return cls(str(note["mac"]), str(note["node"]))
        except (ValueError, TypeError, KeyError):
            return cls("?", "?")


class Release(NamedTuple):
    """A `released` note: `node` took the address off its interface, then deleted its
    mark number `mark` (`Mark.created`). Whoever takes the address next knows that no
    yaim node has it, and need not ask the link first."""

    node: str
    mark: int

    def text(self) -> str:
        """The note's value in the DCS."""
        return json.dumps({"mark": self.mark, "node": self.node}, sort_keys=True)

    @classmethod
    def parse(cls, text: str) -> Optional[Release]:
        """A note's value; None for one that cannot be read (it vouches for nothing)."""
        try:
            note = json.loads(text)
            return cls(str(note["node"]), int(note["mark"]))
        except (ValueError, TypeError, KeyError):
            return None


class Rejected(NamedTuple):
    """A pool entry that is skipped, and why."""

    name: str
    reason: str


class ClusterView(NamedTuple):
    """What the balancer plans from.

    nodes: the healthy nodes that take part (node key present, not drained).
    pool: the valid pool addresses, less those in conflict.
    holders: address -> node named in its `marked` key (only pool addresses).
    conflicts: unmarked pool addresses that a host outside yaim answered for
    (a `conflicts` note, until its TTL ends): nobody takes them meanwhile.
    marks: address -> `Mark.created` of its mark, where the backend tells it.
    released: pool addresses with a readable `released` note.
    """

    nodes: FrozenSet[str]
    pool: FrozenSet[IPAddress]
    holders: Mapping[IPAddress, str]
    conflicts: Mapping[IPAddress, Conflict] = {}
    marks: Mapping[IPAddress, int] = {}
    released: Mapping[IPAddress, Release] = {}


def is_allowed(address: IPAddress, allowed: Iterable[IPNetwork]) -> bool:
    """Whether `allowed-networks` admit the address; an empty list admits every address."""
    allowed = tuple(allowed)
    return not allowed or any(address in net for net in allowed if net.version == address.version)


def parse_address(name: str, allowed: Iterable[IPNetwork] = ()) -> Tuple[Optional[IPAddress], str]:
    """Parse one pool key name; return (address, "") or (None, reason)."""
    return _parse_address(name, tuple(allowed))


@functools.lru_cache(maxsize=4096)
def _parse_address(name: str, allowed: Tuple[IPNetwork, ...]) -> Tuple[Optional[IPAddress], str]:
    """parse_address, remembered: every node parses the same pool every interval."""
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return None, "not an IP address"
    if str(address) != name:
        return None, f"not in canonical form (expected {address})"
    if not is_allowed(address, allowed):
        return None, "outside allowed-networks"
    return address, ""


def parse_snapshot(
    snapshot: Snapshot, allowed: Iterable[IPNetwork] = ()
) -> Tuple[ClusterView, Tuple[Rejected, ...]]:
    """Turn raw key names into a view; entries that are not usable come back as rejected."""
    allowed = tuple(allowed)
    named: Dict[str, IPAddress] = {}  # pool key name -> address; marks and notes use the name
    rejected = [Rejected(name, reason) for name, reason in sorted(snapshot.malformed.items())]
    for name in sorted(snapshot.pool):
        address, reason = parse_address(name, allowed)
        if address is None:
            rejected.append(Rejected(name, reason))
        else:
            named[name] = address
    pool = set(named.values())
    holders, marks = {}, {}
    for name, mark in snapshot.marks.items():
        address = named.get(name)
        if address is not None:
            holders[address] = mark.holder
            if mark.created is not None:
                marks[address] = mark.created
    conflicts = {}
    for address, text in _notes(snapshot.conflicts, named):
        if address not in holders:
            conflicts[address] = Conflict.parse(text)
    released = {}
    for address, text in _notes(snapshot.released, named):
        release = Release.parse(text)
        if release is not None:
            released[address] = release
    view = ClusterView(
        nodes=frozenset(snapshot.nodes - snapshot.drained),
        pool=frozenset(pool.difference(conflicts)),
        holders=holders,
        conflicts=conflicts,
        marks=marks,
        released=released,
    )
    return view, tuple(rejected)


def _notes(
    notes: Mapping[str, str], named: Mapping[str, IPAddress]
) -> Iterable[Tuple[IPAddress, str]]:
    """The notes about pool addresses (`named`: pool key name -> address): (address, text)."""
    for name, text in notes.items():
        if name in named:
            yield named[name], text


def handed_over(
    seen: Mapping[IPAddress, Tuple[str, int]], now: ClusterView
) -> FrozenSet[IPAddress]:
    """The free addresses whose mark last seen (`seen`: address -> holder, `Mark.created`)
    its holder has released since: off its interface first, then the mark deleted,
    with a `released` note naming that very mark.

    No yaim node has them, provided that mark was seen recently enough that no mark
    made after it can have come and expired unseen (the caller's part: see
    BalancerThread). An expired mark leaves no note, so its address is still probed.
    """
    return frozenset(
        address
        for address, release in now.released.items()
        if address not in now.holders and seen.get(address) == tuple(release)
    )
