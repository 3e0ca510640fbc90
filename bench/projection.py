"""What one node and the etcd cluster would carry at a size no lab here can run, from the
per-operation costs the scale part measured: a model, not a measurement.

The model follows the DCS layout (README, "DCS layout"): per pool address a pool entry
and its mark, per node its node key and its sync key, so a listing has 2 M + 2 N entries.
At steady state a node sends its measured requests per interval (v3: the lease keep-alive;
v2: the node key and one refresh per mark held, 1 + M/N) and lists everything once per
`resync`. When a node crashes, its M/N addresses move: each costs the writes per moved
address measured in the resettle, every survivor makes the sync writes a survivor
made there (each has to see the takers' new marks at a current look, or their later
release would not count as a handover: yaim.threads.balancer), and etcd sends every
write to every watcher
(each node watches the whole cluster directory), so events = writes x N. Bytes: the
bytes per request, per listed entry and per event as measured on the nodes' DCS links
(wire bytes, TCP/IP headers included). The documented limits it is set against are
etcd's own (op-guide "Understanding performance": a three-member cluster "can
complete more than 30,000 requests per second under heavy load").
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from bench import stats

ETCD_REQUESTS_S = 30000  # op-guide/performance: "more than 30,000 requests per second"


def basis(rows: Sequence[Mapping[str, Any]], dcs_type: str) -> Optional[Mapping[str, Any]]:
    """The largest measured configuration of `dcs_type` with every figure the model needs."""
    needed = ("req_node_interval", "dcs_bytes_node_s", "listing_bytes", "churn")
    usable = [r for r in rows if r["dcs"] == dcs_type and all(r.get(k) for k in needed)]
    return max(usable, key=lambda r: (r["nodes"] * r["addresses"], r["nodes"]), default=None)


def project(
    row: Mapping[str, Any], nodes: int, addresses: int, interval_s: float, resync_s: float
) -> Dict[str, float]:
    """The model's figures at `nodes` x `addresses`, from one measured row."""
    per_request = row["dcs_bytes_node_s"] * interval_s / row["req_node_interval"]
    # v2: one request for the node key and one per mark held; v3: the keep-alive only.
    requests = 1 + addresses / nodes if row["dcs"] == "etcd" else row["req_node_interval"]
    entries = 2 * addresses + 2 * nodes
    listing = row["listing_bytes"] / row["listing_entries"] * entries
    churn = row["churn"]
    moved = addresses / nodes
    syncs = (nodes - 1) * churn["syncs_per_survivor"]
    writes = moved * churn["writes_per_moved"] + syncs
    events = writes * nodes
    return {
        "node_req_s": requests / interval_s,
        "node_bytes_s": requests * per_request / interval_s + listing / resync_s,
        "listing_bytes": listing,
        "listing_share": (listing / resync_s)
        / (requests * per_request / interval_s + listing / resync_s),
        "etcd_req_s": nodes * requests / interval_s + nodes / resync_s,
        "etcd_bytes_s": nodes * (requests * per_request / interval_s + listing / resync_s),
        "crash_writes": writes,
        "crash_syncs": syncs,
        "crash_events": events,
        "crash_bytes": events * churn["bytes_per_event"],
    }


def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.1f} {prefix}{unit}"
    return f"{value:.1f} {unit}"


def table(
    rows: Sequence[Mapping[str, Any]],
    nodes: int = 1000,
    addresses: int = 10000,
    interval_s: float = 1.0,
    resync_s: float = 60.0,
) -> Optional[str]:
    """The projection for each backend measured; None if no row has the figures."""
    body: List[List[object]] = []
    for dcs_type in ("etcd3", "etcd"):
        row = basis(rows, dcs_type)
        if row is None:
            continue
        p = project(row, nodes, addresses, interval_s, resync_s)
        body.append(
            [
                dcs_type,
                f"{row['nodes']} x {row['addresses']}",
                f"{p['node_req_s']:.1f}",
                _si(p["node_bytes_s"], "B/s"),
                _si(p["listing_bytes"], "B"),
                f"{p['etcd_req_s']:,.0f}",
                _si(p["etcd_bytes_s"], "B/s"),
                f"{p['crash_writes']:,.0f}",
                f"{p['crash_events']:,.0f}",
                _si(p["crash_bytes"], "B"),
            ]
        )
    if not body:
        return None
    header = [
        "DCS",
        "measured at",
        "node req/s",
        "node bytes/s",
        "one listing",
        "etcd req/s",
        "etcd bytes/s",
        "writes per crash",
        "events per crash",
        "bytes per crash",
    ]
    return stats.table(header, body)


def limits(
    rows: Sequence[Mapping[str, Any]], nodes: int = 1000, addresses: int = 10000
) -> List[str]:
    """Where the design stops scaling at `nodes` x `addresses`, against etcd's limits."""
    out = []
    for dcs_type in ("etcd3", "etcd"):
        row = basis(rows, dcs_type)
        if row is None:
            continue
        p = project(row, nodes, addresses, 1.0, 60.0)
        share = p["etcd_req_s"] / ETCD_REQUESTS_S
        out.append(
            f"{dcs_type} at {nodes} x {addresses}: steady {p['etcd_req_s']:,.0f} requests/s,"
            f" {share:.0%} of the 30,000/s etcd documents for a cluster under heavy load;"
            f" every node lists {_si(p['listing_bytes'], 'B')} once per resync, which is"
            f" {p['listing_share']:.0%} of etcd's bytes (a longer resync is the lever);"
            " a crash sends"
            f" {p['crash_events']:,.0f} watch events, of which the survivors' sync writes"
            f" are {p['crash_syncs'] * nodes / p['crash_events']:.0%}."
        )
    return out
