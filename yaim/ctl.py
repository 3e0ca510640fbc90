"""`yaimctl`: the operator's view of and hands on the pool, through the daemon's own DCS.

It reads the same yaim.yml as the daemon (-c, default ./yaim.yml) and talks to
the same cluster directory; it never touches an interface. Every command
prints an aligned table, or JSON after `--json`. Exit status: 0 done, 2 input
refused (nothing changed), 1 the DCS could not be reached (or a rebalance did not
settle in time).
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import math
import sys
import time
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
)

from yaim import __version__, balancer, config, dcs, migration
from yaim.cli import load_or_report
from yaim.errors import DCSError, YaimError
from yaim.names import BadName, check_name, is_name, shown
from yaim.redact import Secrets
from yaim.view import (
    ClusterView,
    Conflict,
    IPAddress,
    Rejected,
    Snapshot,
    in_order,
    parse_address,
    parse_snapshot,
)

if TYPE_CHECKING:
    from yaim.dcs import etcd2  # loaded only when a command asks for the v2 backend

EXIT_OK, EXIT_DCS, EXIT_REFUSED = 0, 1, 2
OUT_SHOWN = 100  # characters of an out key's reason in a table


class Refused(YaimError):
    """The operator's input cannot be used; nothing was changed."""


class Unfinished(YaimError):
    """A change was asked for but did not complete in time (exit 1, as the DCS's)."""


REBALANCE_POLL = 0.2  # seconds between the reads of `yaimctl rebalance`


# --- the cluster as yaimctl shows it (pure) ---


class Entry(NamedTuple):
    """One pool address: its holder (None: nobody) and the seconds its mark has left."""

    address: IPAddress
    holder: Optional[str]
    ttl: Optional[float]

    def as_json(self) -> Dict[str, Any]:
        return {"address": str(self.address), "holder": self.holder, "ttl": self.ttl}


class Node(NamedTuple):
    """A node the DCS knows of: healthy = its node key is there; peer = the failsafe's
    peer endpoint its node key publishes (None: the failsafe is off there, or no key);
    out = why it takes no part, as its `out` key says while it runs without a node key
    (None: it takes part, or says nothing: stopped, crashed, or an older yaim)."""

    name: str
    healthy: bool
    drained: bool
    addresses: Tuple[IPAddress, ...]
    peer: Optional[str] = None
    out: Optional[str] = None
    weight: int = 1
    joining: bool = False

    def as_json(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "healthy": self.healthy,
            "drained": self.drained,
            "addresses": [str(a) for a in self.addresses],
            "peer": self.peer,
            "out": self.out,
            "weight": self.weight,
            "joining": self.joining,
        }


class Cluster(NamedTuple):
    """unsettled: how many addresses a rebalance would move now (yaim.balancer.excess)."""

    entries: Tuple[Entry, ...]
    nodes: Tuple[Node, ...]
    refused: Tuple[Rejected, ...]
    conflicts: Mapping[IPAddress, Conflict] = {}
    unsettled: int = 0


def summarize(snapshot: Snapshot, allowed: Sequence[Any] = ()) -> Cluster:
    """The pool with holders and TTLs, and every node named by a key or a mark."""
    view, refused = parse_snapshot(snapshot, allowed, time.time())
    return summary(snapshot, view, refused)


def summary(snapshot: Snapshot, view: ClusterView, refused: Sequence[Rejected]) -> Cluster:
    """summarize() of a snapshot parsed already: `view` and `refused` are its parse (the
    daemon's view also leaves out the addresses in a conflict it has not noted yet)."""
    entries = []
    for address in in_order(view.pool.union(view.conflicts)):
        holder = view.holders.get(address)
        ttl = snapshot.marks[str(address)].ttl if holder is not None else None
        entries.append(Entry(address, holder, ttl))
    named = {name for name in snapshot.nodes | snapshot.drained if is_name(name)}
    named.update(view.out)
    nodes = tuple(
        Node(
            name,
            name in snapshot.nodes,
            name in snapshot.drained,
            tuple(e.address for e in entries if e.holder == name),
            view.peers[name].text() if name in view.peers else None,
            view.out.get(name),
            view.weights.get(name, 1),
            name in view.joining,
        )
        for name in sorted(named.union(view.holders.values()))
    )
    unsettled = sum(balancer.excess(view).values())
    return Cluster(tuple(entries), nodes, tuple(refused), view.conflicts, unsettled)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart."""
    rows = [list(headers)] + [list(row) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _ttl(ttl: Optional[float]) -> str:
    return "-" if ttl is None else f"{ttl:g}s"


def ips_table(cluster: Cluster) -> str:
    rows = [(str(e.address), e.holder or "-", _ttl(e.ttl)) for e in cluster.entries]
    return table(("ADDRESS", "HOLDER", "TTL"), rows)


def nodes_table(cluster: Cluster) -> str:
    rows = [
        (
            n.name,
            _yes(n.healthy),
            _yes(n.drained),
            ", ".join(map(str, n.addresses)) or "-",
            "-" if n.out is None else shown(n.out, OUT_SHOWN),
        )
        for n in cluster.nodes
    ]
    return table(("NODE", "HEALTHY", "DRAINED", "ADDRESSES", "OUT"), rows)


def problems(cluster: Cluster) -> List[str]:
    """What an operator should look at: free addresses, odd holders, refused entries."""
    lines = [f"refused {r.label}: {r.reason}" for r in cluster.refused]
    for address in in_order(cluster.conflicts):
        note = cluster.conflicts[address]
        lines.append(
            f"conflict on {address}: {note.mac} answers for it, a host outside yaim"
            f" (seen by {note.node}); nobody takes it until the note expires"
        )
    free = [str(e.address) for e in cluster.entries if e.holder is None]
    if free:
        lines.append("not held by any node: " + ", ".join(free))
    keyed = [n for n in cluster.nodes if n.healthy]
    off = [n.name for n in keyed if n.peer is None]
    if off and len(off) < len(keyed):
        lines.append(
            f"failsafe off on {', '.join(off)}: a whole-etcd outage drops every address, as"
            " the hold needs every node's promise"
        )
    for node in cluster.nodes:
        if node.addresses and not node.healthy:
            why = "gone or unhealthy" if node.out is None else shown(node.out, OUT_SHOWN)
            lines.append(f"{node.name} holds addresses but has no node key ({why})")
    return lines


def failsafe_text(cluster: Cluster) -> str:
    """Which nodes with a node key have the failsafe hold on (they publish a peer endpoint)."""
    keyed = [n for n in cluster.nodes if n.healthy]
    on = [n.name for n in keyed if n.peer is not None]
    if not on:
        return "off"
    if len(on) == len(keyed):
        return "on (every node)"
    return f"on for {', '.join(on)} only"


def spread_text(cluster: Cluster) -> str:
    """How far the spread is from settled: what a rebalance would move (with `rebalance:
    manual` only `yaimctl rebalance` moves it; else the nodes do, at once)."""
    if not cluster.unsettled:
        return "none over its holder's share"
    many = "es" if cluster.unsettled > 1 else ""
    return f"{cluster.unsettled} address{many} over their holders' shares (a rebalance moves them)"


def status_text(cluster: Cluster, where: str) -> str:
    held = sum(1 for e in cluster.entries if e.holder is not None)
    healthy = [n.name for n in cluster.nodes if n.healthy and not n.drained]
    drained = [n.name for n in cluster.nodes if n.drained]
    out = [n for n in cluster.nodes if n.out is not None]
    head = [
        ("cluster", where),
        ("pool", f"{len(cluster.entries)} addresses, {held} held, {spread_text(cluster)}"),
        ("nodes", f"{len(healthy)} taking part: {', '.join(healthy) or '-'}"),
        ("drained", ", ".join(drained) or "-"),
        ("out", "; ".join(f"{n.name}: {shown(n.out, OUT_SHOWN)}" for n in out) or "-"),
        ("failsafe", failsafe_text(cluster)),
    ]
    parts = [
        "\n".join(f"{key:<8} {value}" for key, value in head),
        nodes_table(cluster),
        ips_table(cluster),
    ]
    trouble = problems(cluster)
    parts.append("\n".join("! " + line for line in trouble) if trouble else "no problems seen")
    return "\n\n".join(parts)


# --- input ---


def parse_addresses(names: Sequence[str], allowed: Sequence[Any]) -> List[IPAddress]:
    """Every name as a pool address (any spelling, stored canonical); Refused if one is not."""
    addresses, bad = [], []
    for name in names:
        try:
            canonical = str(ipaddress.ip_address(name))
        except ValueError:
            bad.append(f"{shown(name)}: not an IP address")
            continue
        address, reason = parse_address(canonical, allowed)
        if address is None:
            bad.append(f"{shown(name)}: {reason}")
        else:
            addresses.append(address)
    if bad:
        raise Refused("refused, nothing changed: " + "; ".join(bad))
    return addresses


def node_name(name: str) -> str:
    """The name, if it can be a node's: anything else could change another key (v2 URLs)."""
    try:
        return check_name(name)
    except BadName as exc:
        raise Refused(
            f"refused, nothing changed: '{shown(name)}' is not a node name: {exc}"
        ) from None


# --- commands: each returns (text, json value) ---

Output = Tuple[str, Any]


def cmd_ips(store: dcs.DCS, cfg: config.Config, args: argparse.Namespace) -> Output:
    action = getattr(args, "action", None)
    if action is None:
        cluster = summarize(store.read_with_ttls(), cfg.allowed_networks)
        return ips_table(cluster), [e.as_json() for e in cluster.entries]
    addresses = parse_addresses(args.addresses, cfg.allowed_networks)
    change = store.add_address if action == "add" else store.remove_address
    done, noop = ("added", "present") if action == "add" else ("removed", "absent")
    result: Dict[str, List[str]] = {done: [], noop: []}
    for address in addresses:
        result[done if change(address) else noop].append(str(address))
    lines = [f"{a}: {done}" for a in result[done]]
    lines += [
        f"{a}: {'already in' if action == 'add' else 'not in'} the pool" for a in result[noop]
    ]
    return "\n".join(lines), result


def cmd_nodes(store: dcs.DCS, cfg: config.Config, args: argparse.Namespace) -> Output:
    cluster = summarize(store.read(), cfg.allowed_networks)
    return nodes_table(cluster), [n.as_json() for n in cluster.nodes]


def cmd_drain(store: dcs.DCS, cfg: config.Config, args: argparse.Namespace) -> Output:
    name = node_name(args.node)
    known = {n.name for n in summarize(store.read(), cfg.allowed_networks).nodes}
    if args.command == "drain":
        store.drain(name)
        text = f"{name}: drained; it releases its addresses and takes none until undrained"
        changed = True
    else:
        changed = store.undrain(name)
        text = f"{name}: {'undrained' if changed else 'was not drained'}"
    if name not in known:
        text += f"\nnote: no node {name} is in the DCS now"
    return text, {"node": name, "drained": args.command == "drain", "changed": changed}


def status_value(cluster: Cluster, root: str, endpoint: str) -> Dict[str, Any]:
    """The cluster as `yaimctl status --json` and the daemon's GET /status show it: one
    shape for both, the daemon's adding what it knows of itself."""
    return {
        "cluster": root,
        "endpoint": endpoint,
        "ips": [e.as_json() for e in cluster.entries],
        "nodes": [n.as_json() for n in cluster.nodes],
        "conflicts": [
            {
                "address": str(a),
                "mac": cluster.conflicts[a].mac,
                "seen_by": cluster.conflicts[a].node,
            }
            for a in in_order(cluster.conflicts)
        ],
        "problems": problems(cluster),
        "unsettled": cluster.unsettled,
    }


def cmd_status(store: dcs.DCS, cfg: config.Config, args: argparse.Namespace) -> Output:
    cluster = summarize(store.read_with_ttls(), cfg.allowed_networks)
    value = status_value(cluster, store.root, store.endpoint)
    return status_text(cluster, f"{store.root} via {store.endpoint}"), value


def why_text(reasons: balancer.Why, cluster: Cluster, view: ClusterView) -> str:
    """`yaimctl why`: who holds the address, whom the plan gives it to, and for every
    other node why not it."""
    address, holder = reasons.address, reasons.holder
    entry = next((e for e in cluster.entries if e.address == address), None)
    if entry is None:
        return f"{address}: not in the pool"
    lines = [
        f"{address}: held by {holder or 'nobody'}"
        + (f", {_ttl(entry.ttl)} left of its mark" if entry.ttl else "")
    ]
    if address in view.marks:
        lines.append(f"  its mark was made at etcd index/revision {view.marks[address]}")
    if address in cluster.conflicts:
        note = cluster.conflicts[address]
        lines.append(
            f"  in conflict: {note.mac} answers for it (seen by {note.node}); nobody takes it"
        )
    if reasons.planned is not None and reasons.planned != holder:
        lines.append(f"  the plan gives it to {reasons.planned} this round")
    rows = []
    for s in reasons.standings:
        rows.append(
            (
                s.node,
                str(s.rank),
                str(s.weight),
                f"{s.holds}/{s.quota}",
                _standing(s, reasons),
            )
        )
    for node in cluster.nodes:
        if node.name not in view.nodes:
            rows.append((node.name, "-", "-", f"{len(node.addresses)}/0", _outside(node)))
    lines.append("")
    lines.append(table(("NODE", "RANK", "WEIGHT", "HOLDS/SHARE", "WHY"), rows))
    return "\n".join(lines)


def _standing(s: balancer.Standing, reasons: balancer.Why) -> str:
    """Why a participant holds the address or not."""
    if s.node == reasons.holder:
        kept = reasons.planned == s.node
        return "holds it" + ("" if kept else ": over its share, releases it")
    if s.node == reasons.planned:
        return "takes it: it has room and wants it most of those with room"
    if s.joining:
        return "joining: waits out rebalance-delay before it takes from others"
    if s.weight == 0:
        return "weight 0: takes addresses only when no other node can"
    if s.holds >= s.quota:
        return "at its share"
    return "has room, but wants it less than its holder or ranks below"


def _outside(node: Node) -> str:
    """Why a node that does not take part holds nothing."""
    if node.drained:
        return "drained"
    if node.out is not None:
        return "out: " + shown(node.out, OUT_SHOWN)
    return "no node key: stopped, crashed or cut off"


def cmd_why(store: dcs.DCS, cfg: config.Config, args: argparse.Namespace) -> Output:
    (address,) = parse_addresses([args.address], cfg.allowed_networks)
    snapshot = store.read_with_ttls()
    view, refused = parse_snapshot(snapshot, cfg.allowed_networks, time.time())
    cluster = summary(snapshot, view, refused)
    reasons = balancer.why(view, address)
    value = {
        "address": str(address),
        "in_pool": any(e.address == address for e in cluster.entries),
        "holder": reasons.holder,
        "mark": view.marks.get(address),
        "planned": reasons.planned,
        "nodes": [dict(s._asdict(), why=_standing(s, reasons)) for s in reasons.standings],
        "outside": [
            {"node": n.name, "why": _outside(n)} for n in cluster.nodes if n.name not in view.nodes
        ],
    }
    return why_text(reasons, cluster, view), value


def cmd_rebalance(store: dcs.DCS, cfg: config.Config, args: argparse.Namespace) -> Output:
    """Ask every node to plan as `rebalance: auto` until the spread is settled (the
    `rebalance` key, for at most --timeout), then take the key away: the plan moves the
    fewest addresses that settle it."""
    before = parse_snapshot(store.read(), cfg.allowed_networks, time.time())[0]
    if not any(balancer.excess(before).values()):
        return "nothing to move: the spread is settled", {"moved": [], "settled": True}
    note = json.dumps({"by": "yaimctl", "at": int(time.time())})
    started = time.monotonic()
    store.ask_rebalance(note, math.ceil(args.timeout))
    try:
        after, settled = before, False
        while not settled and time.monotonic() - started < args.timeout:
            after = parse_snapshot(store.read(), cfg.allowed_networks, time.time())[0]
            settled = (
                not any(balancer.excess(after).values()) and after.pool <= after.holders.keys()
            )
            if not settled:
                time.sleep(REBALANCE_POLL)  # polling the DCS with a deadline
    finally:
        store.end_rebalance(note)
    moved = [
        {"address": str(a), "from": before.holders[a], "to": after.holders.get(a)}
        for a in in_order(before.holders)
        if after.holders.get(a) != before.holders[a] and a in after.pool
    ]
    lines = [f"{m['address']}: {m['from']} -> {m['to'] or 'nobody yet'}" for m in moved]
    took = time.monotonic() - started
    lines.append(
        f"moved {len(moved)} address{'es' if len(moved) != 1 else ''} in {took:.1f} s"
        if settled
        else f"not settled within {args.timeout:g} s: moved {len(moved)} so far"
    )
    if not settled:
        raise Unfinished("\n".join(lines))
    return "\n".join(lines), {"moved": moved, "settled": settled}


# --- yaimctl migrate: the cluster's v2 layout into its v3 one (the plans: yaim.migration) ---


def cmd_migrate(store: dcs.DCS, cfg: config.Config, args: argparse.Namespace) -> Output:
    """Copy the pool and the drain flags of the v2 layout into the v3 one where missing,
    or (--remove-v2) delete the v2 keys once no node uses v2 and v3 has them all. Both
    APIs at the config's endpoints, with its TLS and credentials, whatever its dcs-type:
    the same etcd serves both (3.4 and 3.5 with --enable-v2)."""
    old, new = dcs.connect(cfg, api="etcd"), dcs.connect(cfg, api="etcd3")
    entries = _v2_listing(old)
    v2 = dcs.snapshot_of(old.root, entries, old.POOL_DIRS)
    v3 = new.read()
    if args.remove_v2:
        return _remove_v2(old, entries, v2, v3, cfg, args.dry_run)
    return _copy(new, migration.plan_copy(v2, v3, cfg.allowed_networks), args.dry_run)


def _v2_listing(old: dcs.DCS) -> List[dcs.Entry]:
    """Every v2 key of the cluster directory; a server that serves no v2 API is no DCS
    failure but nothing to migrate from (exit 2, saying so)."""
    try:
        return old.list_entries()[0]
    except DCSError:
        problem = old.release_problem()
        if problem is None:
            raise
        raise Refused(f"refused, nothing changed: no v2 layout to read: {problem}") from None


def _copy(new: dcs.DCS, copy: migration.Copy, dry_run: bool) -> Output:
    """Write the keys of `copy` (none with `dry_run`): a line per key, and a summary."""
    lines = [f"skipped {r.label}: {r.reason} (not copied)" for r in copy.skipped]
    verb = "would copy" if dry_run else "copied"
    copied, present = [], copy.present
    for address in copy.pool:
        key = f"{new.root}/ips/{address}"
        if dry_run or new.add_address(address):  # False: written since the read
            copied.append(key)
            lines.append(f"{verb} {key} (pool address)")
        else:
            present += 1
    for node in copy.drained:
        key = f"{new.root}/drain/{node}"
        if not dry_run:
            new.drain(node)
        copied.append(key)
        lines.append(f"{verb} {key} (drain key)")
    if copied:
        lines.append(
            f"{verb} {len(copied)} key{_s(copied)} of {new.root} from the v2 layout to the v3"
            f" one ({present} there already); marks and node keys are not copied: every node"
            " makes its own" + ("; a dry run, nothing written" if dry_run else "")
        )
    else:
        lines.append(
            f"nothing to copy: the v3 layout of {new.root} has every pool address and drain"
            f" key of the v2 one ({present} key{'s' if present != 1 else ''})"
        )
    value = {
        "dry_run": dry_run,
        "copied": copied,
        "present": present,
        "skipped": [{"entry": r.name, "reason": r.reason} for r in copy.skipped],
    }
    return "\n".join(lines), value


def _remove_v2(
    old: etcd2.Backend,
    entries: Sequence[dcs.Entry],
    v2: Snapshot,
    v3: Snapshot,
    cfg: config.Config,
    dry_run: bool,
) -> Output:
    """Delete yaim's v2 keys of the cluster (none with `dry_run`) as
    yaim.migration.plan_removal plans it, or refuse as it says."""
    keys = migration.v2_keys(old.root, entries, old.namespace_names())
    removal = migration.plan_removal(old.root, keys, v2, v3, cfg.allowed_networks)
    if removal.refused:
        why = []
        if removal.live:
            why.append(
                f"v2 is still in use at {old.root}: {'; '.join(removal.live)} (stop the nodes"
                " on dcs-type etcd, or move them to etcd3: their keys go within ttl)"
            )
        if removal.missing:
            why.append(
                f"the v3 layout lacks {' and '.join(removal.missing)}: run yaimctl migrate first"
            )
        raise Refused("refused, nothing deleted: " + "; ".join(why))
    verb = "would delete" if dry_run else "deleted"
    lines, deleted, kept = [], [], list(removal.kept)
    for deletion in removal.deletions:
        if dry_run:
            done: Optional[bool] = True
        elif deletion.directory and not deletion.recursive:
            done = old.delete_empty(deletion.key)
        else:
            done = old.delete_raw(deletion.key, deletion.recursive)
        if done is None:
            kept.append(
                (
                    deletion.text,
                    "not empty: a key the listing did not show is in it (written since,"
                    " or hidden: _name)",
                )
            )
        elif done:
            deleted.append(deletion.text)
            lines.append(f"{verb} {deletion.text} ({deletion.what})")
    lines += [f"kept {key}: {reason}" for key, reason in kept]
    if not deleted:
        lines.append(f"nothing to delete: no v2 key of {old.root} is left")
    else:
        lines.append(
            f"{verb} {len(deleted)} v2 key{_s(deleted)} of {old.root}"
            + ("; a dry run, nothing deleted" if dry_run else "")
        )
    value = {
        "dry_run": dry_run,
        "deleted": deleted,
        "kept": [{"key": key, "reason": reason} for key, reason in kept],
    }
    if len(kept) > len(removal.kept):
        raise Unfinished("\n".join([*lines, "written to meanwhile: look, and run it again"]))
    return "\n".join(lines), value


def _s(items: Sequence[Any]) -> str:
    return "" if len(items) == 1 else "s"


COMMANDS: Dict[str, Callable[[dcs.DCS, config.Config, argparse.Namespace], Output]] = {
    "ips": cmd_ips,
    "nodes": cmd_nodes,
    "drain": cmd_drain,
    "undrain": cmd_drain,
    "status": cmd_status,
    "why": cmd_why,
    "rebalance": cmd_rebalance,
    "migrate": cmd_migrate,
}


def build_parser() -> argparse.ArgumentParser:
    """The command line (also the source of the manual page: packaging/generate.py)."""
    json_flag = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's default must not reset a --json given before it.
    json_flag.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts"
    )
    parser = argparse.ArgumentParser(
        prog="yaimctl",
        parents=[json_flag],
        description="Show and change the yaim pool and nodes, in the DCS the daemon uses.",
        epilog=(
            "Exit status: 0 done, 2 input refused (nothing changed), 1 DCS unreachable"
            " or a rebalance not settled in time."
        ),
    )
    parser.add_argument(
        "-c",
        "--config",
        help="configuration file (default: $YAIM_CONFIG, else ./yaim.yml if it exists, else"
        " /etc/yaim/yaim.yml)",
    )
    parser.add_argument("--version", action="version", version="yaimctl " + __version__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    ips = commands.add_parser(
        "ips", parents=[json_flag], help="pool addresses, their holders and TTL left"
    )
    actions = ips.add_subparsers(dest="action", metavar="ACTION")
    for action, words in (("add", "add to"), ("remove", "remove from")):
        sub = actions.add_parser(action, parents=[json_flag], help=f"{words} the pool")
        sub.add_argument("addresses", nargs="+", metavar="ADDR")
    commands.add_parser(
        "nodes", parents=[json_flag], help="nodes: healthy, drained, addresses held, why out"
    )
    for name, words in (
        ("drain", "make NODE release its addresses and take none"),
        ("undrain", "let NODE take its share again"),
    ):
        sub = commands.add_parser(name, parents=[json_flag], help=words)
        sub.add_argument("node", metavar="NODE")
    commands.add_parser("status", parents=[json_flag], help="one screen summary")
    why = commands.add_parser(
        "why", parents=[json_flag], help="why ADDRESS is where it is, and not elsewhere"
    )
    why.add_argument("address", metavar="ADDRESS")
    rebalance = commands.add_parser(
        "rebalance",
        parents=[json_flag],
        help="move the fewest addresses that settle the spread (for rebalance: manual)",
    )
    rebalance.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the spread to settle"
    )
    migrate = commands.add_parser(
        "migrate",
        parents=[json_flag],
        help="copy the pool and drain keys from the v2 layout to the v3 one",
        description=(
            "Copy the cluster's pool addresses and drain keys from its etcd v2 layout to"
            " its v3 layout where they are missing, one line per key; entries the daemon"
            " skips are named and not copied, marks and node keys are the nodes' own. With"
            " --remove-v2, delete the cluster's v2 keys and the directories they leave"
            " empty, never a key that is not yaim's. Both APIs at the config's endpoints,"
            " with its TLS and credentials, whatever its dcs-type (etcd 3.4 or 3.5 with"
            " --enable-v2)."
        ),
        epilog=(
            "Exit status: 0 done (also when nothing was to do), 2 refused, nothing changed"
            " (--remove-v2 while a node key, mark or out key is in the v2 layout, or while"
            " the v3 layout lacks a v2 pool address or drain key; a server without v2),"
            " 1 DCS unreachable or a directory written to meanwhile."
        ),
    )
    migrate.add_argument(
        "--dry-run",
        action="store_true",
        help="say what would be written or deleted, change nothing",
    )
    migrate.add_argument(
        "--remove-v2",
        action="store_true",
        help=(
            "instead, delete the cluster's v2 keys and the directories left empty; refused"
            " (exit 2) while a node runs on v2 or the v3 layout lacks a v2 key"
        ),
    )
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def own_word(status_listen: str, timeout: float = 2.0) -> str:
    """What this host's node says of its failsafe hold (its GET /status): while etcd is
    down, the one place that knows whether the addresses are kept."""
    host, port = config.listen_address(status_listen)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/status"
    connection = http.client.HTTPConnection(host, port, timeout=timeout)  # no proxy here
    try:
        connection.request("GET", "/status")
        state = json.loads(connection.getresponse().read(1 << 20))
        node, failsafe = shown(str(state["node"])), dict(state["failsafe"])
        addresses = ", ".join(shown(str(a)) for a in state["addresses"]) or "no address"
    except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError) as exc:
        return f"no word from this host's node at {url}: {exc}"
    finally:
        connection.close()
    if not failsafe.get("on"):
        return f"node {node} (its {url}): failsafe off, holding {addresses}"
    if failsafe.get("holding"):
        left = shown(str(failsafe.get("hold_left")))
        return (
            f"node {node} (its {url}): failsafe hold, keeping {addresses} on its peers'"
            f" word ({left} s left of the hold, renewed every half interval)"
        )
    return f"node {node} (its {url}): failsafe on, not holding; holding {addresses}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    cfg = load_or_report(args.config, system_fallback=True)
    if cfg is None:
        return EXIT_REFUSED
    secrets = Secrets.of(cfg)  # nothing printed quotes a password of the config
    store = dcs.connect(cfg)
    try:
        text, value = COMMANDS[args.command](store, cfg, args)
    except Refused as exc:
        print(secrets.scrub(f"yaimctl: {exc}"), file=sys.stderr)
        return EXIT_REFUSED
    except Unfinished as exc:
        print(secrets.scrub(f"yaimctl: {exc}"), file=sys.stderr)
        return EXIT_DCS
    except DCSError as exc:
        print(secrets.scrub(f"yaimctl: DCS unreachable: {exc}"), file=sys.stderr)
        if args.command == "status" and cfg.status_listen:
            print(secrets.scrub(f"yaimctl: {own_word(cfg.status_listen)}"), file=sys.stderr)
        return EXIT_DCS
    if getattr(args, "json", False):
        print(json.dumps(secrets.scrub_value(value), indent=2))
    elif text:
        print(secrets.scrub(text))
    return EXIT_OK


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
