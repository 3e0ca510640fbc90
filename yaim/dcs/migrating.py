"""A node moving from the v2 layout to the v3 one: `dcs-type: etcd3` with
`dcs-migrate-from: etcd` makes it a member of both layouts at once.

The cluster moves one node at a time (README, "Moving from v2 to v3"), so for a while
three kinds of node may run: v2 nodes (`dcs-type: etcd`), which see only the v2 keys;
migrating nodes (this module), which see both; and v3 nodes (`dcs-type: etcd3` alone),
which see only the v3 keys. The procedure never runs a v2 node and a v3 node at the
same time: every v2 node becomes a migrating one before any migrating one drops the key.
A migrating node that sees both kinds at once (node keys in one layout only, in two
reads in a row) says so in one ERROR line: it cannot stop them, as they share no layout.

Why no address is ever on two nodes:

- In each layout an address has at most one mark, made only by an atomic create (v2
  prevExist=false, v3 create_revision == 0 in a transaction) and refreshed and deleted
  only by its holder.
- A node holds an address only while it has a live mark in every layout it belongs to:
  a v2 node its v2 mark, a v3 node its v3 mark, a migrating node both. So a migrating
  node takes an address by creating the v2 mark and then the v3 one, and holds it only
  when both were made (a refused v3 create deletes the v2 mark it just made); it renews
  both, and its claim's fence time counts from the older of the two TTL starts (the v2
  create or refresh, or the lease's last keep-alive, whichever was sent first).
- Any two nodes that run at the same time share a layout (v2 and migrating: v2;
  migrating and v3: v3; two migrating nodes: both), and in that layout only one of the
  two can have the mark.

The rest keeps that true. A refresh that finds one of the two marks gone makes that one
again, by the same atomic create (its TTL counting from that create): it succeeds only
while no node of that layout has the mark, so the node then holds both again, as after
a take; one that finds either mark someone else's fails, and the claim is lost and
fenced as any lost mark is. (Were a half left alone instead, a v3 half on the node's
lease would never expire while the node lives, and no other node could ever take the
address.) A release deletes the v2 mark first and the v3 mark last, with the
`released` note in the same transaction: the v3 deletion is the event that every
migrating and v3 node's watch wakes on (this node's watch follows the v3 layout only),
and when it comes both marks are gone, so the takers find the address free at once and
handed over. The other order would be as safe, each mark guarding its own layout until
it goes; it would only leave the v3 watchers a read that still finds the v2 mark.

How a read merges the two layouts (`merge`): an address is in the pool when both
layouts list it; one listed by only one is refused (logged once by the balancer and
shown by yaimctl), since no migrating node can mark it in both: run `yaimctl migrate`,
and change the pool during the migration with a config that has the key (yaimctl then
writes both layouts). An address is held when either layout has a live mark; when both
do, for the same holder, with the v3 mark's number; a v2 mark alone has no number, as
the `released` notes read are the v3 ones (a v2 number names nothing there), so no
handover is inferred from it and the taker probes the link. Two marks naming different
holders are a conflict (logged once): the address is shown held by the other one, so
this node takes it in neither layout, fences a claim on it and deletes its own half
(`_drop_own_halves`). Nodes, drain flags,
`out` keys and `conflicts` notes come from both layouts (a node is the same node by
name; v3's values win), the `rebalance` key from either.

What it writes: node keys, `out` keys and the operator's changes (pool, drain,
rebalance) go to both layouts, so that v2 nodes and yaimctl see them; the `released`
note only to v3, the layout whose mark numbers it names. A `conflicts` note goes to the
layout the single-layout nodes of the last read use (v2 while v2 nodes run, v3 once v3
nodes do; v3 when every node is a migrating one; both before the first read, or when
both kinds run): there is one copy, so any node that sees it can clear it. Two copies
would not survive a clear: the frozen holder that answered clears the note when it
wakes, and a v2 node clears only the v2 copy, so the v3 one would keep every migrating
node off the address for the rest of `conflict-backoff` (a chaos run met it: a paused
v2 holder, an address planned for the migrating node, unheld 40 s and on). A node that
misses the note (a v2 node that had no node key at the write) only probes the address
itself and finds the same host: the note saves probes, the probe is what keeps the
address off a host that has it. It is not
CACHEABLE: the balancer reads both layouts in full every round, and the watch follows
the v3 layout (its wake-ups are only a shortcut; a change made by a v2 node is seen at
the next round, one interval later at most). A migration is a short affair: safety, not
speed.

Text names are compared as text: the pool names that are addresses at all are in
canonical form (yaim.view.parse_address refuses the others), so equal names are equal
addresses and different ones different.
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, FrozenSet, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from yaim.dcs import DCS, Incomplete, KeyState, Refreshed, etcd2, etcd3
from yaim.errors import DCSError
from yaim.view import IPAddress, Mark, Snapshot, parse_address

log = logging.getLogger(__name__)

ONLY_V2 = "in the v2 layout only: a migrating node cannot mark it in v3 (yaimctl migrate copies it)"
ONLY_V3 = (
    "in the v3 layout only: a migrating node cannot mark it in v2 (add it with a config that"
    " has dcs-migrate-from, which writes both layouts)"
)


# Nodes on the v2 layout only and nodes on the v3 layout only, seen at once (`_mixed`).
Mixed = Optional[Tuple[FrozenSet[str], FrozenSet[str]]]


class Merged(NamedTuple):
    """A read of both layouts as one, and the addresses (their pool names) whose two marks
    name different holders: name -> (v2 holder, v3 holder)."""

    snapshot: Snapshot
    conflicts: Dict[str, Tuple[str, str]]


def merge(new: Snapshot, old: Snapshot, node: str) -> Merged:
    """The cluster as `node`, a member of both layouts, plans from it: `new` read from the
    v3 layout, `old` from the v2 one (the rules: this module's docstring)."""
    malformed = {**old.malformed, **new.malformed}
    for name in old.pool - new.pool:
        malformed.setdefault(name, ONLY_V2)
    for name in new.pool - old.pool:
        malformed.setdefault(name, ONLY_V3)
    marks: Dict[str, Mark] = {}
    conflicts: Dict[str, Tuple[str, str]] = {}
    for name in set(new.marks) | set(old.marks):
        v3, v2 = new.marks.get(name), old.marks.get(name)
        if v3 is not None and v2 is not None and v3.holder != v2.holder:
            conflicts[name] = (v2.holder, v3.holder)
        marks[name] = _mark(v3, v2, node)
    return Merged(
        Snapshot(
            pool=new.pool | old.pool,
            marks=marks,
            nodes=new.nodes | old.nodes,
            drained=new.drained | old.drained,
            malformed=malformed,
            conflicts={**old.conflicts, **new.conflicts},
            released=new.released,
            odd={**old.odd, **new.odd},
            node_values={**old.node_values, **new.node_values},
            out={**old.out, **new.out},
            rebalance=new.rebalance if new.rebalance is not None else old.rebalance,
        ),
        conflicts,
    )


def _mark(v3: Optional[Mark], v2: Optional[Mark], node: str) -> Mark:
    """One address's mark from its marks in the two layouts (at least one of them)."""
    if v2 is None:
        return v3  # type: ignore[return-value]
    if v3 is None:
        return v2._replace(created=None)
    known = [ttl for ttl in (v3.ttl, v2.ttl) if ttl is not None]
    ttl = min(known) if known else None
    if v3.holder == v2.holder:
        return Mark(v3.holder, ttl, v3.created)
    return Mark(v2.holder if v3.holder == node else v3.holder, ttl, None)


def _answered(
    refresh: Callable[[List[IPAddress]], Dict[IPAddress, Refreshed]], addresses: List[IPAddress]
) -> Tuple[Dict[IPAddress, Refreshed], Optional[Incomplete]]:
    """A layout's refresh_marks: its answers, and how it failed if it did part way."""
    try:
        return refresh(addresses), None
    except Incomplete as exc:
        return exc.done, exc


class Backend:
    """Both layouts behind the one DCS interface: the v3 backend (`primary`) and the v2
    backend (`legacy`) on the same endpoints, config and node."""

    CACHEABLE = False  # two layouts, two revisions: no one cache follows them
    WATCH_INTERRUPTIBLE = True  # the watch is the v3 layout's stream

    def __init__(self, config, **kwargs) -> None:
        self._wire(etcd3.Backend(config, **kwargs), etcd2.Backend(config, **kwargs))

    @classmethod
    def of(cls, primary, legacy) -> Backend:
        """The two backends given (a handle's clone, a test's stand-ins)."""
        handle = cls.__new__(cls)
        handle._wire(primary, legacy)
        return handle

    def _wire(self, primary, legacy) -> None:
        self.primary, self.legacy = primary, legacy
        self.layouts = (legacy, primary)  # the order of every write: v2 first, v3 last
        # One endpoint for both (they share the members): a member that hangs costs one
        # timeout, not one per layout. Found so (v2 chaos, a follower frozen): the v3
        # keep-alive timed out on it, then the v2 node key write did too, and the v2 marks
        # expired before their refresh came.
        legacy.rotation = primary.rotation
        self.config, self.node, self.root = primary.config, primary.node, primary.root
        self.stop = primary.stop
        self._conflicts: Dict[str, Tuple[str, str]] = {}  # logged, and still seen
        self._last_mixed: Mixed = None  # v2-only and v3-only nodes of the last read
        self._said_mixed: Mixed = None
        self._note_layouts: Tuple[DCS, ...] = self.layouts  # where a conflicts note goes

    def clone(self) -> Backend:
        return Backend.of(self.primary.clone(), self.legacy.clone())

    # --- what the threads and the status ask of a handle ---

    @property
    def endpoint(self) -> str:
        return self.primary.endpoint

    @property
    def last_success(self) -> Optional[float]:
        """The older of the two layouts' last successes: the node needs both."""
        times = [layout.last_success for layout in self.layouts]
        return None if None in times else min(times)  # type: ignore[type-var]

    @property
    def last_failure(self) -> Optional[float]:
        times = [t for t in (layout.last_failure for layout in self.layouts) if t is not None]
        return max(times) if times else None

    @property
    def problem(self) -> Optional[str]:
        return self.primary.problem or self.legacy.problem

    def check_release(self) -> None:
        """Both APIs must be served: a server without v2 (etcd 3.6) says so through the v2
        backend's notice."""
        for layout in self.layouts:
            layout.check_release()

    def interrupt(self) -> None:
        self.primary.interrupt()

    def move_on(self) -> None:
        for layout in self.layouts:
            layout.move_on()

    def keep_alive(self) -> None:
        for layout in self.layouts:
            layout.keep_alive()

    def ttl_start(self, sent_at: float) -> float:
        """`sent_at` is the earlier send of the two layouts' requests (v2's TTL starts
        there); the v3 mark's TTL started at the lease's last keep-alive, if earlier."""
        return self.primary.ttl_start(sent_at)

    def wait_for_change(self, timeout: float) -> bool:
        return self.primary.wait_for_change(timeout)

    def follow_key(self, key: str, after: Optional[int], timeout: float) -> Optional[KeyState]:
        """Someone else's key is read where dcs-type says, the v3 API."""
        return self.primary.follow_key(key, after, timeout)

    @property
    def etcd_ttl(self) -> int:
        return self.primary.etcd_ttl

    def conflict_ttl(self) -> int:
        return self.primary.conflict_ttl()

    # --- reads ---

    def read(self) -> Snapshot:
        return self._merged(self.primary.read(), self.legacy.read())

    def read_with_ttls(self) -> Snapshot:
        return self._merged(self.primary.read_with_ttls(), self.legacy.read_with_ttls())

    def _merged(self, new: Snapshot, old: Snapshot) -> Snapshot:
        """`merge`, logging each conflict between the layouts once while it lasts."""
        merged = merge(new, old, self.node)
        for name, (v2, v3) in sorted(merged.conflicts.items()):
            if self._conflicts.get(name) != (v2, v3):
                log.warning(
                    "address %s is marked by %s in the v2 layout and by %s in the v3 layout:"
                    " node %s takes it in neither until one of the marks goes",
                    name,
                    v2,
                    v3,
                    self.node,
                )
        self._conflicts = merged.conflicts
        self._drop_own_halves(merged.conflicts)
        v2, v3 = frozenset(old.nodes - new.nodes), frozenset(new.nodes - old.nodes)
        self._mixed(v2, v3)
        used = tuple(layout for layout, nodes in zip(self.layouts, (v2, v3)) if nodes)
        self._note_layouts = used or (self.primary,)
        return merged.snapshot

    def _drop_own_halves(self, conflicts: Dict[str, Tuple[str, str]]) -> None:
        """Delete this node's mark where the other layout's mark is someone else's: the
        node holds an address only with both, so that half holds nothing, and left alone
        it would stand for ever (a v3 half rides the node's lease) and keep every node
        off the address in that layout once the other holder is gone. Found so (v2 chaos,
        a storm): a migrating holder fenced when its v2 mark lapsed, a v2 node took the
        v2 mark, and the v3 half stayed. The delete names this node (its own mark only)."""
        for name, holders in sorted(conflicts.items()):
            if self.node not in holders:
                continue
            address, _ = parse_address(name)
            if address is None:
                continue  # not a pool address: no mark of this node's can be under it
            mine = holders.index(self.node)  # 0: the v2 half, 1: the v3 half
            if self.layouts[mine].delete_mark(address):
                log.info(
                    "deleted the %s mark of %s on node %s: the other layout's mark is"
                    " %s's, and a node holds an address only with both",
                    ("v2", "v3")[mine],
                    address,
                    self.node,
                    holders[1 - mine],
                )

    def _mixed(self, v2: FrozenSet[str], v3: FrozenSet[str]) -> None:
        """Node keys in the v2 layout only (v2 nodes) beside node keys in the v3 layout
        only (v3 nodes): they share no layout, so neither sees the other's marks. One
        ERROR when two reads in a row show the same ones (a migrating node writes its
        two keys one after the other, so one read may catch it half written)."""
        shown = (v2, v3) if v2 and v3 else None
        if shown is not None and shown == self._last_mixed and shown != self._said_mixed:
            log.error(
                "node(s) %s are on the v2 layout only and node(s) %s on the v3 layout only:"
                " they do not see each other's marks and may take the same address; restart"
                " the v2 ones with dcs-type etcd3 and dcs-migrate-from etcd now",
                ", ".join(sorted(v2)),
                ", ".join(sorted(v3)),
            )
            self._said_mixed = shown
        self._last_mixed = shown

    # --- this node's keys ---

    def touch_node(self, weight: int = 1, joining: bool = False) -> None:
        for layout in self.layouts:
            layout.touch_node(weight, joining)

    def delete_node(self) -> None:
        for layout in self.layouts:
            layout.delete_node()

    def touch_out(self, reason: str) -> None:
        for layout in self.layouts:
            layout.touch_out(reason)

    def delete_out(self) -> None:
        for layout in self.layouts:
            layout.delete_out()

    # --- marks ---

    def create_mark(self, address: IPAddress) -> bool:
        return address in self.create_marks([address])

    def create_marks(self, addresses: Sequence[IPAddress]) -> Dict[IPAddress, float]:
        """The v2 marks, then the v3 marks of those made; a v2 mark whose v3 create was
        refused is deleted again. The send time is the v2 create's, the earlier TTL start.
        After a DCSError none counts as made: what etcd made all the same is this node's
        at the next read, resumed (and its missing half made) or released from there."""
        made = self.legacy.create_marks(addresses)
        both = self.primary.create_marks([address for address in addresses if address in made])
        for address in addresses:
            if address in made and address not in both:
                log.info(
                    "not taking %s on node %s: its v3 mark is someone else's (v2 mark undone)",
                    address,
                    self.node,
                )
                self.legacy.delete_mark(address)
        return {address: made[address] for address in addresses if address in both}

    def refresh_mark(self, address: IPAddress) -> bool:
        return self.refresh_marks([address])[address].ok

    def refresh_marks(self, addresses: Iterable[IPAddress]) -> Dict[IPAddress, Refreshed]:
        """Renew both marks of each address: renewed when both were, sent when the earlier
        request was. A mark found gone beside one renewed is made again (the module's
        text says why that is a take, and safe); one someone else's fails the address. A
        layout that fails part way answers for what it finished: an address counts only
        once both layouts answered for it, and the batch is Incomplete all the same."""
        addresses = list(addresses)
        old, failed = _answered(self.legacy.refresh_marks, addresses)
        new, failed_new = _answered(self.primary.refresh_marks, addresses)
        failed = failed or failed_new
        done: Dict[IPAddress, Refreshed] = {}
        halves: Dict[int, List[IPAddress]] = {0: [], 1: []}  # the layout (index) to mark again
        for address in addresses:
            if address not in old or address not in new:
                continue
            a, b = old[address], new[address]
            if a.ok == b.ok:
                done[address] = Refreshed(a.ok, min(a.sent_at, b.sent_at))
            else:
                halves[0 if b.ok else 1].append(address)
        for index, missing in halves.items():
            renewed = new if index == 0 else old
            try:
                made = self.layouts[index].create_marks(missing) if missing else {}
            except DCSError as exc:
                failed = failed or Incomplete(str(exc), {})
                continue
            for address in missing:
                sent_at = min(renewed[address].sent_at, made.get(address, renewed[address].sent_at))
                done[address] = Refreshed(address in made, sent_at)
                self._said_half(address, index, address in made)
        if failed is not None:
            raise Incomplete(str(failed), done)
        return done

    def _said_half(self, address: IPAddress, index: int, made: bool) -> None:
        """One line for a mark made again; one that could not be is a lost claim, which
        the ledger logs."""
        if made:
            layout = ("v2", "v3")[index]
            log.info(
                "made the %s mark of %s on node %s again: it was gone", layout, address, self.node
            )

    def delete_mark(self, address: IPAddress) -> bool:
        """Both marks, the v2 one first; True if either was this node's."""
        deleted = [layout.delete_mark(address) for layout in self.layouts]
        return any(deleted)

    def release_mark(self, address: IPAddress, mark: Optional[int]) -> bool:
        """The v2 mark, then the v3 one with its `released` note (`mark` is its number)."""
        old = self.legacy.delete_mark(address)
        return self.primary.release_mark(address, mark) or old

    # --- notes (the `released` note goes with release_mark) ---

    def note_conflict(self, address: IPAddress, note: str) -> None:
        """In the layout the single-layout nodes read (the module's text says why one)."""
        for layout in self._note_layouts:
            layout.note_conflict(address, note)

    def clear_conflict(self, address: IPAddress, note: str) -> bool:
        return any([layout.clear_conflict(address, note) for layout in self.layouts])

    def write_note(self, kind: str, address: IPAddress, note: str, ttl: int) -> None:
        for layout in self.layouts:
            layout.write_note(kind, address, note, ttl)

    def clear_note(self, kind: str, address: IPAddress, note: str) -> bool:
        return any([layout.clear_note(kind, address, note) for layout in self.layouts])

    # --- the operator's operations, in both layouts ---

    def ask_rebalance(self, note: str, ttl: int) -> None:
        for layout in self.layouts:
            layout.ask_rebalance(note, ttl)

    def end_rebalance(self, note: str) -> bool:
        return any([layout.end_rebalance(note) for layout in self.layouts])

    def add_address(self, address: IPAddress) -> bool:
        """True if either layout lacked it."""
        return any([layout.add_address(address) for layout in self.layouts])

    def remove_address(self, address: IPAddress) -> bool:
        return any([layout.remove_address(address) for layout in self.layouts])

    def drain(self, node: str) -> None:
        for layout in self.layouts:
            layout.drain(node)

    def undrain(self, node: str) -> bool:
        return any([layout.undrain(node) for layout in self.layouts])


DCS.register(Backend)  # the interface, by composition: not its retry policy or layout
