"""`yaimctl migrate`'s plans: what of a cluster's v2 layout to copy into its v3 layout,
and, once no node uses v2, which of its v2 keys to delete, or why not.

Only the pool and the drain flags are copied: marks, node keys and the notes live
with a node's TTL or lease, and every daemon makes its own. A pool entry or drain key
the daemon would skip (not an address in canonical form, outside allowed-networks, not
a node name) is skipped by the daemon's own checks (yaim.view.parse_address,
yaim.names.is_name): reported, never copied. Addresses are compared parsed, so a v3
key counts only where the daemon would take it for the same address.

The deletion reaches only yaim's keys: what the layout names below the cluster
directory (yaim.dcs.LAYOUT), then the directories it leaves empty, up to the namespace
directory; those go by etcd's delete of an empty directory, which keeps anything
written there meanwhile. Anything else there, or beside the cluster directory, is
kept and named.

Pure module: no I/O. yaim.ctl reads, prints and carries the plans out.
"""

from __future__ import annotations

from typing import FrozenSet, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

from yaim.dcs import LAYOUT, Entry
from yaim.names import is_name, shown
from yaim.view import IPAddress, IPNetwork, Rejected, Snapshot, in_order, parse_address

LISTED = 10  # names a refusal lists of each kind before "and N more"


class Copy(NamedTuple):
    """What `yaimctl migrate` writes into v3: the pool addresses and drained nodes of v2
    that v3 lacks; `present` how many of v2's v3 has already; `skipped` the v2 entries
    the daemon would skip, so they are never copied."""

    pool: Tuple[IPAddress, ...]
    drained: Tuple[str, ...]
    present: int
    skipped: Tuple[Rejected, ...]

    @property
    def empty(self) -> bool:
        return not self.pool and not self.drained


def plan_copy(v2: Snapshot, v3: Snapshot, allowed: Iterable[IPNetwork] = ()) -> Copy:
    """The keys to copy from the v2 read `v2` to the v3 layout as `v3` read it."""
    allowed = tuple(allowed)
    pool, skipped = _addresses(v2, allowed)
    have, _ = _addresses(v3, allowed)
    drained = {name for name in v2.drained if is_name(name)}
    skipped += [
        Rejected(f"drain/{name}", "not a node name", "key") for name in sorted(v2.drained - drained)
    ]
    present = len(pool & have) + len(drained & v3.drained)
    return Copy(
        tuple(in_order(pool - have)), tuple(sorted(drained - v3.drained)), present, tuple(skipped)
    )


def _addresses(
    snapshot: Snapshot, allowed: Tuple[IPNetwork, ...]
) -> Tuple[Set[IPAddress], List[Rejected]]:
    """The pool addresses of a read as the daemon parses them, and the entries it skips."""
    rejected = [Rejected(name, reason) for name, reason in sorted(snapshot.malformed.items())]
    addresses = set()
    for name in sorted(snapshot.pool.difference(snapshot.malformed)):
        address, reason = parse_address(name, allowed)
        if address is None:
            rejected.append(Rejected(name, reason))
        else:
            addresses.add(address)
    return addresses, rejected


class V2Keys(NamedTuple):
    """The v2 keys `--remove-v2` looks at: every key below the cluster directory (its
    path below it -> whether it is a directory), and the names in the namespace
    directory (None: there is none, or it may not be read: it is left alone)."""

    below: Mapping[str, bool]
    namespace: Optional[FrozenSet[str]]


def v2_keys(root: str, entries: Iterable[Entry], namespace: Optional[Iterable[str]]) -> V2Keys:
    """V2Keys of a listing of the cluster directory `root` and of its namespace's names."""
    below = {entry.key[len(root) :].strip("/"): entry.is_dir for entry in entries}
    below.pop("", None)
    return V2Keys(below, None if namespace is None else frozenset(namespace))


class Deletion(NamedTuple):
    """One v2 delete: `key`, what it is, whether it is a directory; `recursive`: with
    everything below it (else a directory goes only if it is empty)."""

    key: str
    what: str
    directory: bool = False
    recursive: bool = False

    @property
    def text(self) -> str:
        """The key as an operator reads it: a directory's with a trailing `/`."""
        return shown(self.key, len(self.key)) + ("/" if self.directory else "")


class Removal(NamedTuple):
    """What `--remove-v2` deletes, in order, and what it keeps (key, why); `live` and
    `missing` say why it must not delete anything yet (empty: it may)."""

    deletions: Tuple[Deletion, ...]
    kept: Tuple[Tuple[str, str], ...]
    live: Tuple[str, ...]
    missing: Tuple[str, ...]

    @property
    def refused(self) -> bool:
        return bool(self.live or self.missing)


def plan_removal(
    root: str, keys: V2Keys, v2: Snapshot, v3: Snapshot, allowed: Iterable[IPNetwork] = ()
) -> Removal:
    """The deletion of yaim's v2 keys of the cluster directory `root` (`keys` and `v2`
    from one listing of it), refused while a node key, a mark or an out key says that a
    node runs on v2, or while `v3` lacks a pool address or a drain flag of v2."""
    live = []
    if v2.nodes:
        live.append("node keys " + _listed(sorted(v2.nodes)))
    if v2.marks:
        marks = [f"{name} (held by {mark.holder})" for name, mark in sorted(v2.marks.items())]
        live.append("marks of " + _listed(marks))
    if v2.out:
        live.append("out keys (nodes running, taking no part) " + _listed(sorted(v2.out)))
    copy = plan_copy(v2, v3, allowed)
    missing = []
    if copy.pool:
        missing.append("pool addresses " + _listed([str(a) for a in copy.pool]))
    if copy.drained:
        missing.append("drain keys " + _listed(list(copy.drained)))
    never = {f"{root}/ips/{r.name}": r.reason for r in copy.skipped if r.what == "pool entry"}
    deletions, kept = _deletions(root, keys)
    deletions = [
        d._replace(what=f"{d.what}, never copied: {never[d.key]}") if d.key in never else d
        for d in deletions
    ]
    return Removal(tuple(deletions), tuple(kept), tuple(live), tuple(missing))


def _deletions(root: str, keys: V2Keys) -> Tuple[List[Deletion], List[Tuple[str, str]]]:
    """The deletes of yaim's keys below `root`, the directories they leave empty after
    them, and the keys kept."""
    deletions: List[Deletion] = []
    kept: List[Tuple[str, str]] = []
    namespace, cluster = root.rsplit("/", 1)
    names = keys.namespace
    if names is None:  # the cluster directory is there if it has keys; nothing beside it
        names = frozenset({cluster} if keys.below else ())
    for top in sorted(path for path in keys.below if "/" not in path):
        is_dir = keys.below[top]
        if top not in LAYOUT:
            kept.append((_text(f"{root}/{top}", is_dir), "not a key of yaim's layout"))
            continue
        if is_dir:
            for path in sorted(p for p in keys.below if p.rpartition("/")[0] == top):
                inner = keys.below[path]
                deletions.append(Deletion(f"{root}/{path}", _what(top, inner), inner, inner))
        what = "directory" if is_dir else f"{top} key"
        deletions.append(Deletion(f"{root}/{top}", what, is_dir))
    gone = cluster not in names or not kept
    if cluster in names and not kept:
        deletions.append(Deletion(root, "cluster directory", True))
    others = sorted(names - {cluster})
    kept += [(_text(f"{namespace}/{name}", False), "not this cluster's") for name in others]
    if gone and not others and keys.namespace is not None:
        deletions.append(Deletion(namespace, "namespace directory", True))
    return deletions, kept


def _what(top: str, is_dir: bool) -> str:
    """What a key of the layout below `top` is, for the operator."""
    if top == "ips":
        return "pool directory" if is_dir else "pool entry"
    return f"{top} {'directory' if is_dir else 'key'}"


def _text(key: str, is_dir: bool) -> str:
    return Deletion(key, "", is_dir).text


def _listed(names: Sequence[str]) -> str:
    """Names for one line: the first LISTED, escaped, and how many more."""
    shown_names = ", ".join(shown(name) for name in names[:LISTED])
    more = len(names) - LISTED
    return shown_names + (f" and {more} more" if more > 0 else "")
