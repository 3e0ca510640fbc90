"""Read-only snapshots of the cluster, passed between threads.

`Snapshot` is what a DCS backend reads: raw key names, nothing parsed.
`ClusterView` is what the balancer plans from: parsed, validated addresses.
Neither touches the network; both are immutable so they can be shared freely.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from typing import (
    Any,
    Callable,
    Dict,
    FrozenSet,
    Iterable,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Tuple,
    TypeVar,
    Union,
)

from yaim.names import is_name, shown

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
T = TypeVar("T")

# The longest value of a note yaim writes is well under this; a longer one is not
# parsed at all, so that no value (1 MB, 100,000 nested brackets) costs more than this.
NOTE_LIMIT = 1024
# The longest text form of an address (IPv6 with an IPv4 tail).
ADDRESS_LIMIT = 45
MARK_LIMIT = 2**63  # marks are etcd indexes and revisions: int64
WEIGHT_LIMIT = 1000  # the largest weight: shares stay small numbers to work out
OUT_LIMIT = 300  # characters of an `out` key's reason kept: one line of a table or a log


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
    odd: other keys that are not what the layout says (key below the cluster
    directory -> reason), e.g. a directory where a node key belongs.
    conflicts: the `conflicts` notes, address name -> the note's text.
    released: the `released` notes, address name -> the note's text.
    node_values: the node keys' values, node name -> value (NodeInfo).
    out: the `out` keys, node name -> why that node, running, takes no part.
    rebalance: the operator's `rebalance` key's value while it is there (yaimctl rebalance).
    """

    pool: FrozenSet[str]
    marks: Mapping[str, Mark]
    nodes: FrozenSet[str]
    drained: FrozenSet[str] = frozenset()
    malformed: Mapping[str, str] = {}
    conflicts: Mapping[str, str] = {}
    released: Mapping[str, str] = {}
    odd: Mapping[str, str] = {}
    node_values: Mapping[str, str] = {}
    out: Mapping[str, str] = {}
    rebalance: Optional[str] = None


class Endpoint(NamedTuple):
    """Where a node's peer endpoint listens (`peer-listen`): an IP address and a port,
    published in its node key so that the others can ask it (yaim.failsafe)."""

    host: IPAddress
    port: int

    def text(self) -> str:
        host = f"[{self.host}]" if self.host.version == 6 else str(self.host)
        return f"{host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Optional[Endpoint]:
        """HOST:PORT ([HOST]:PORT for IPv6) with HOST an address another host can reach;
        None for anything else."""
        if not isinstance(text, str) or len(text) > ADDRESS_LIMIT + 8:
            return None
        host, _, port = text.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return None
        if not port.isdigit() or not 0 < int(port) < 65536 or address.is_unspecified:
            return None
        if address.is_multicast:
            return None
        return cls(address, int(port))


class NodeInfo(NamedTuple):
    """What a node key's value publishes: the peer endpoint (`failsafe`), the node's
    `weight`, and whether it is still `joining` (waiting out `rebalance-delay`, so it takes
    nothing away from others: yaim.balancer). A node with none of these to say writes
    "healthy", as every node did before they existed."""

    peer: Optional[Endpoint] = None
    weight: int = 1
    joining: bool = False

    def value(self) -> str:
        fields: Dict[str, Any] = {}
        if self.peer is not None:
            fields["peer"] = self.peer.text()
        if self.weight != 1:
            fields["weight"] = self.weight
        if self.joining:
            fields["joining"] = True
        return json.dumps(fields) if fields else "healthy"

    @classmethod
    def parse(cls, text: str) -> Optional[NodeInfo]:
        """A node key's value; None for one that is not one (the node counts with the
        defaults). A peer that is no endpoint is none: the failsafe does without it."""
        return cls() if text == "healthy" else _read_note(text, cls._of)

    @classmethod
    def _of(cls, note: Dict[str, Any]) -> NodeInfo:
        peer = note.get("peer")
        weight, joining = note.get("weight", 1), note.get("joining", False)
        if type(weight) is not int or not 0 <= weight <= WEIGHT_LIMIT:  # bool is an int
            raise ValueError("not a weight")
        if type(joining) is not bool:
            raise ValueError("not a yes or no")
        return cls(None if peer is None else Endpoint.parse(peer), weight, joining)


class Conflict(NamedTuple):
    """A `conflicts` note: `node` saw a host yaim does not control (`mac`) answer for it;
    every node skips the address until `until` (wall time, seconds; None: as long as the
    note lives).

    The note's TTL alone is not enough with v3: a new etcd leader renews every lease to
    its whole TTL, so leader changes closer than `conflict-backoff` keep a note alive
    for ever (a 30-minute chaos run met one blocking its address 25 minutes on).
    """

    mac: str
    node: str
    until: Optional[int] = None

    def text(self) -> str:
        """The note's value in the DCS."""
        note: Dict[str, Any] = {"mac": self.mac, "node": self.node}
        if self.until is not None:
            note["until"] = self.until
        return json.dumps(note, sort_keys=True)

    @classmethod
    def parse(cls, text: str) -> Conflict:
        """A note's value; one that cannot be read still counts, as from an unknown host,
        and one with an `until` that is no time counts as long as the note lives."""
        note = _read_note(text, cls._of)
        return cls("?", "?") if note is None else note

    @classmethod
    def _of(cls, note: Dict[str, Any]) -> Conflict:
        until = note.get("until")
        if type(until) is not int or not 0 < until < MARK_LIMIT:  # bool is an int
            until = None
        return cls(_field(note, "mac"), _field(note, "node"), until)

    def over(self, now: Optional[float]) -> bool:
        """Whether the backoff has ended by `now` (wall time; None: not known)."""
        return now is not None and self.until is not None and self.until <= now


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
        return _read_note(text, cls._of)

    @classmethod
    def _of(cls, note: Dict[str, Any]) -> Release:
        node, mark = note["node"], note["mark"]
        if not isinstance(node, str) or not is_name(node):
            raise ValueError("not a node name")
        # bool is an int, and a float (1e999) is not a mark number
        if type(mark) is not int or not 0 < mark < MARK_LIMIT:
            raise ValueError("not a mark number")
        return cls(node, mark)


def _read_note(text: str, read: Callable[[Dict[str, Any]], T]) -> Optional[T]:
    """A note's JSON object as `read` makes it; None for anything else: too long, not
    JSON, not an object, a field missing or of the wrong kind. Anybody who may write
    the cluster's keys can put any value there, and no value may stop a node."""
    if not isinstance(text, str) or len(text) > NOTE_LIMIT:
        return None
    try:
        note = json.loads(text)
        return read(note) if isinstance(note, dict) else None
    except (ValueError, TypeError, KeyError, RecursionError, OverflowError):
        return None


def _field(note: Dict[str, Any], name: str) -> str:
    """A text field of a note, safe to print."""
    value = note[name]
    if not isinstance(value, str):
        raise TypeError(name)
    return shown(value, 64)


class Rejected(NamedTuple):
    """An entry of the cluster directory that is skipped, and why: a pool entry (by its
    name), or another key (by its path below the cluster directory)."""

    name: str
    reason: str
    what: str = "pool entry"

    @property
    def label(self) -> str:
        """What and which, safe to print: "pool entry 'bogus'"."""
        return f"{self.what} '{shown(self.name)}'"


class ClusterView(NamedTuple):
    """What the balancer plans from.

    nodes: the healthy nodes that take part (node key present, not drained).
    pool: the valid pool addresses, less those in conflict.
    holders: address -> node named in its `marked` key (only pool addresses).
    conflicts: unmarked pool addresses that a host outside yaim answered for
    (a `conflicts` note, until its TTL ends): nobody takes them meanwhile.
    marks: address -> `Mark.created` of its mark, where the backend tells it.
    released: pool addresses with a readable `released` note.
    members: every node with a node key, drained ones included (the failsafe's view).
    peers: node -> the peer endpoint its node key publishes, where it publishes one.
    out: node -> why it takes no part, as its `out` key says (nodes without a node key).
    weights: node -> the `weight` its node key publishes, where it publishes one (else 1).
    joining: the nodes whose node key says they are still waiting out `rebalance-delay`.
    rebalance: an operator asks for a rebalance (yaimctl rebalance): `rebalance: manual`
    nodes plan as `auto` ones while the `rebalance` key is there.
    """

    nodes: FrozenSet[str]
    pool: FrozenSet[IPAddress]
    holders: Mapping[IPAddress, str]
    conflicts: Mapping[IPAddress, Conflict] = {}
    marks: Mapping[IPAddress, int] = {}
    released: Mapping[IPAddress, Release] = {}
    members: FrozenSet[str] = frozenset()
    peers: Mapping[str, Endpoint] = {}
    out: Mapping[str, str] = {}
    weights: Mapping[str, int] = {}
    joining: FrozenSet[str] = frozenset()
    rebalance: bool = False


def is_allowed(address: IPAddress, allowed: Iterable[IPNetwork]) -> bool:
    """Whether `allowed-networks` admit the address; an empty list admits every address."""
    allowed = tuple(allowed)
    return not allowed or any(address in net for net in allowed if net.version == address.version)


def parse_address(name: str, allowed: Iterable[IPNetwork] = ()) -> Tuple[Optional[IPAddress], str]:
    """Parse one pool key name; return (address, "") or (None, reason)."""
    return _parse_address(name, tuple(allowed))


_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")


def special_kind(address: IPAddress) -> Optional[str]:
    """What makes an address unfit to be moved between hosts as a service address
    (None: nothing): no host can own it on a link the way yaim moves addresses."""
    if address.version == 6 and address.ipv4_mapped is not None:
        return "an IPv4-mapped IPv6 address"
    if address.is_unspecified or (address.version == 4 and address in _THIS_NETWORK):
        return "an unspecified address"
    for kind in ("loopback", "multicast", "link-local", "reserved"):
        if getattr(address, "is_" + kind.replace("-", "_")):
            return f"a {kind} address"
    return None


@functools.lru_cache(maxsize=4096)
def _parse_address(name: str, allowed: Tuple[IPNetwork, ...]) -> Tuple[Optional[IPAddress], str]:
    """parse_address, remembered: every node parses the same pool every interval."""
    if "%" in name:  # Python 3.9 on parses a zone; an address with one is no pool address
        try:
            ipaddress.IPv6Address(name.split("%", 1)[0])
        except ValueError:
            return None, "not an IP address"
        return None, "a scoped IPv6 address (with a zone), which cannot be a pool address"
    try:
        address = ipaddress.ip_address(name) if len(name) <= ADDRESS_LIMIT else None
    except ValueError:
        address = None
    if address is None:
        return None, "not an IP address"
    if str(address) != name:
        return None, f"not in canonical form (expected {address})"
    if not is_allowed(address, allowed):
        return None, "outside allowed-networks"
    special = special_kind(address)
    if special is not None and not allowed:
        return None, f"{special}, taken only when allowed-networks names its network"
    return address, ""


def parse_snapshot(
    snapshot: Snapshot, allowed: Iterable[IPNetwork] = (), now: Optional[float] = None
) -> Tuple[ClusterView, Tuple[Rejected, ...]]:
    """Turn raw key names into a view; entries that are not usable come back as rejected.
    `now` (wall time) ends the conflicts notes whose backoff is over."""
    allowed = tuple(allowed)
    named: Dict[str, IPAddress] = {}  # pool key name -> address; marks and notes use the name
    rejected = [Rejected(name, reason) for name, reason in sorted(snapshot.malformed.items())]
    for name in sorted(snapshot.pool.difference(snapshot.malformed)):
        address, reason = parse_address(name, allowed)
        if address is None:
            rejected.append(Rejected(name, reason))
        else:
            named[name] = address
    rejected += [Rejected(key, reason, "key") for key, reason in sorted(snapshot.odd.items())]
    pool = set(named.values())
    holders, marks = {}, {}
    for name, mark in snapshot.marks.items():
        address = named.get(name)
        if address is not None:
            # A holder that is no node name is nobody's; it still holds the address.
            holders[address] = mark.holder if is_name(mark.holder) else shown(mark.holder)
            if mark.created is not None:
                marks[address] = mark.created
    conflicts = {}
    for address, text in _notes(snapshot.conflicts, named):
        conflict = Conflict.parse(text)
        if address not in holders and not conflict.over(now):
            conflicts[address] = conflict
    released = {}
    for address, text in _notes(snapshot.released, named):
        release = Release.parse(text)
        if release is None:
            rejected.append(Rejected(f"released/{address}", "not a released note", "key"))
        else:
            released[address] = release
    members = _names(snapshot.nodes, "nodes", rejected)
    nodes = members - _names(snapshot.drained, "drain", rejected)
    peers, weights, joining = {}, {}, set()
    for name in sorted(members):
        info = NodeInfo.parse(snapshot.node_values.get(name, "healthy"))
        if info is None:
            rejected.append(Rejected(f"nodes/{name}", "not a node key's value", "key"))
            continue
        if info.peer is not None:
            peers[name] = info.peer
        if info.weight != 1:
            weights[name] = info.weight
        if info.joining:
            joining.add(name)
    # The out key of a node that takes part again may outlive its node key's return by a
    # late write: the node key says more.
    out = {
        name: snapshot.out[name][:OUT_LIMIT]
        for name in _names(snapshot.out, "out", rejected) - members
        if isinstance(snapshot.out[name], str)
    }
    view = ClusterView(
        nodes=frozenset(nodes),
        pool=frozenset(pool.difference(conflicts)),
        holders=holders,
        conflicts=conflicts,
        marks=marks,
        released=released,
        members=members,
        peers=peers,
        out=out,
        weights=weights,
        joining=frozenset(joining),
        rebalance=snapshot.rebalance is not None,
    )
    return view, tuple(rejected)


def _names(names: Iterable[str], kind: str, rejected: List[Rejected]) -> FrozenSet[str]:
    """The node names among the names of `kind` keys; the others join `rejected`."""
    good = frozenset(name for name in names if is_name(name))
    for name in sorted(set(names) - good):
        rejected.append(Rejected(f"{kind}/{name}", "not a node name", "key"))
    return good


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
    yaim.claims and yaim.conflicts). An expired mark leaves no note, so its address is
    still probed.
    """
    return frozenset(
        address
        for address, release in now.released.items()
        if address not in now.holders and seen.get(address) == tuple(release)
    )
