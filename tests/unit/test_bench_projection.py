"""The projection's model (bench.projection): pure arithmetic on measured figures."""

from __future__ import annotations

import pytest

from bench import projection


def row(dcs: str, **changes: object) -> dict:
    figures = {
        "dcs": dcs,
        "nodes": 10,
        "addresses": 1000,
        "req_node_interval": 1.0 if dcs == "etcd3" else 101.0,
        "dcs_bytes_node_s": 400.0,
        "listing_bytes": 2020 * 150,
        "listing_entries": 2020,
        "churn": {"writes_per_moved": 2.0, "syncs_per_survivor": 1.5, "bytes_per_event": 300.0},
    }
    figures.update(changes)
    return figures


def test_v3_steady_requests_do_not_grow_with_the_pool_and_a_crash_reaches_every_watcher():
    p = projection.project(row("etcd3"), nodes=1000, addresses=10000, interval_s=1, resync_s=60)
    assert p["node_req_s"] == pytest.approx(1.0)
    assert p["listing_bytes"] == pytest.approx(150 * (2 * 10000 + 2 * 1000))
    assert p["etcd_req_s"] == pytest.approx(1000 + 1000 / 60)
    # 10 addresses move (2 writes each), and the 999 survivors sync 1.5 times each
    assert p["crash_writes"] == pytest.approx(10 * 2 + 999 * 1.5)
    assert p["crash_events"] == pytest.approx(p["crash_writes"] * 1000)
    assert p["crash_bytes"] == pytest.approx(p["crash_events"] * 300)


def test_v2_refreshes_every_mark_and_costs_its_bytes_per_request():
    p = projection.project(row("etcd"), nodes=1000, addresses=10000, interval_s=1, resync_s=60)
    assert p["node_req_s"] == pytest.approx(1 + 10)
    per_request = 400.0 / 101.0
    assert p["node_bytes_s"] == pytest.approx(11 * per_request + 150 * 22000 / 60)


def test_the_largest_complete_configuration_is_the_basis():
    rows = [
        row("etcd3", nodes=100, addresses=1000, churn=None),  # did not settle: no churn
        row("etcd3", nodes=30, addresses=1000),
        row("etcd3", nodes=10, addresses=1000),
        row("etcd", nodes=30, addresses=1000),
    ]
    assert projection.basis(rows, "etcd3")["nodes"] == 30
    assert projection.table([]) is None
    text = projection.table(rows)
    assert "etcd3" in text and "30 x 1000" in text
    assert len(projection.limits(rows)) == 2
