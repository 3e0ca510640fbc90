"""The scale benchmark's figures, computed from synthetic interface states and counters."""

from __future__ import annotations

import ipaddress
import math

import pytest

from bench import scale
from lab.rtnl import LinkState

A, B, C = scale.pool(3)


def links(*nodes):
    """(up, [addresses]) of nodes 1, 2, ... -> node -> its lan0 state."""
    return {i: LinkState(up, dict.fromkeys(held)) for i, (up, held) in enumerate(nodes, 1)}


def test_pool_is_m_distinct_documentation_addresses():
    addresses = scale.pool(1000)
    assert len(set(addresses)) == 1000
    assert all(a in ipaddress.ip_network("2001:db8::/32") for a in addresses)


def test_holders_count_only_pool_addresses_on_interfaces_that_are_up():
    other = ipaddress.ip_address("fe80::1")
    state = links((True, [A, other]), (False, [B]), (True, [A, C]))
    assert scale.holders(state, {A, B, C}) == {A: [1, 3], C: [3]}


def test_spread_counts_nodes_without_addresses_as_zero():
    assert scale.spread({A: [1], B: [1], C: [2]}, [1, 2]) == 1
    assert scale.spread({A: [1], B: [1], C: [2]}, [1, 2, 3]) == 2


@pytest.mark.parametrize(
    "held, names, ok",
    [
        ({A: [1], B: [2], C: [3]}, [1, 2, 3], True),
        ({A: [1], B: [1], C: [2]}, [1, 2], True),  # 2 and 1
        ({A: [1], B: [1], C: [1]}, [1, 2], False),  # 3 and 0
        ({A: [1], B: [2]}, [1, 2], False),  # C held by nobody
        ({A: [1, 2], B: [2], C: [1]}, [1, 2], False),  # A twice
        ({A: [3], B: [2], C: [1]}, [1, 2], False),  # A on a crashed node
    ],
)
def test_settled_needs_each_address_once_on_a_chosen_node_and_spread_one(held, names, ok):
    assert scale.settled(held, {A, B, C}, names) is ok


def test_describe_says_how_far_from_settled():
    held = {A: [1, 2], B: [1]}
    assert scale.describe(held, {A, B, C}, [1, 2, 3]) == (
        "1 held by none, 1 by several, 0 to 2 per node"
    )


def test_victims_are_the_nodes_holding_the_most_then_the_last():
    held = {A: [2], B: [2], C: [4]}
    assert scale.victims(held, [1, 2, 3, 4, 5], 2) == [2, 4]
    assert scale.victims(held, [1, 2, 3, 4, 5], 3) == [2, 4, 5]


def test_slope_recovers_the_exponent_of_a_power_law():
    xs = [3, 10, 30, 100]
    assert scale.slope(xs, [5.0] * 4) == pytest.approx(0.0)
    assert scale.slope(xs, [2.0 * x for x in xs]) == pytest.approx(1.0)
    assert scale.slope(xs, [0.5 * x * x for x in xs]) == pytest.approx(2.0)


def test_slope_leaves_out_missing_figures_and_needs_two_points():
    assert scale.slope([3, 10, 30], [3.0, None, 30.0]) == pytest.approx(1.0)
    assert scale.slope([3, 10], [3.0, None]) is None
    assert scale.slope([3, 3], [1.0, 2.0]) is None


@pytest.mark.parametrize(
    "exponents, text",
    [
        ({"N": 0.1, "M": -0.2}, "O(1)"),
        ({"N": 1.1, "M": 0.05}, "O(N)"),
        ({"N": 0.0, "M": 0.9}, "O(M)"),
        ({"N": 1.0, "M": 1.0}, "O(N·M)"),
        ({"N": 1.6, "M": None}, "O(N^1.6)"),
        ({"N": None, "M": None}, "-"),
    ],
)
def test_order_reads_exponents_as_big_o(exponents, text):
    assert scale.order(exponents) == text


def test_growth_fits_n_at_each_m_and_m_at_each_n():
    rows = [
        {"nodes": n, "addresses": m, "cost": 0.01 * n * m, "flat": 7.0}
        for n in (3, 10, 30)
        for m in (10, 100)
    ]
    n_exp, m_exp = scale.growth(rows, "cost")
    assert n_exp == pytest.approx(1.0) and m_exp == pytest.approx(1.0)
    assert scale.growth(rows, "flat") == (pytest.approx(0.0), pytest.approx(0.0))
    assert scale.growth(rows[:1], "cost") == (None, None)


def test_samples_and_rates_from_two_metrics_scrapes():
    text = (
        "# HELP yaim_dcs_requests_total DCS requests by operation\n"
        'yaim_dcs_requests_total{operation="read"} 10.0\n'
        'yaim_dcs_requests_total{operation="keep-alive"} 5.0\n'
        "yaim_dcs_requests_totalled 99.0\n"
        'yaim_dcs_request_errors_total{operation="read"} 1.0\n'
    )
    assert scale.samples(text, "yaim_dcs_requests_total") == {
        '{operation="read"}': 10.0,
        '{operation="keep-alive"}': 5.0,
    }
    before = scale.Reading(100.0, 2.0, {"read": 10.0, "keep-alive": 5.0}, {"balancer": (1.0, 4)})
    after = scale.Reading(
        110.0,
        2.1,
        {"read": 30.0, "keep-alive": 15.0, "create": 0.0},
        {"balancer": (1.5, 14), "watch": (0.0, 0)},
    )
    rates = scale.rates(before, after)
    assert rates.cpu == pytest.approx(1.0)
    assert rates.requests == pytest.approx(3.0)
    assert rates.ops == {"read": 2.0, "keep-alive": 1.0, "create": 0.0}
    assert rates.round_ms == {"balancer": pytest.approx(50.0)}


def test_by_label_names_samples_by_their_one_label():
    text = 'yaim_loop_duration_seconds_count{thread="heartbeat"} 7.0\n'
    assert scale.by_label(text, "yaim_loop_duration_seconds_count") == {"heartbeat": 7.0}


def test_proc_figures():
    tick = scale.os.sysconf("SC_CLK_TCK")
    stat = f"42 (python3 (x)) S 1 42 42 0 -1 4194560 1 0 0 0 {3 * tick} {tick} 0 0 20 0 7"
    assert scale.cpu_seconds(stat) == pytest.approx(4.0)
    assert scale.peak_rss_mb("Name:\tpython3\nVmHWM:\t   40960 kB\nVmRSS:\t 1 kB\n") == 40.0
    assert math.isnan(scale.peak_rss_mb("Name:\tpython3\n"))


def test_goals_judge_the_issues_figures():
    rows = [
        {"nodes": n, "addresses": 1000, "dcs": "etcd3", "settle_s": 0.08 * n, "spread": 1}
        for n in (10, 100)
    ]
    rows[0].update(cpu_mean=0.4, rss_max=45.0, req_node_interval=1.0)
    rows.append({"nodes": 30, "addresses": 1000, "dcs": "etcd", "error": "timed out"})
    fits = {"etcd3/req_node_interval": {"N": 0.02, "M": None}}
    verdicts = scale.goals(rows, fits)
    assert verdicts[0].startswith("100 nodes x 1000 addresses (etcd3)") and ": met" in verdicts[0]
    assert "(etcd v2) settle: NOT met" in verdicts[1]
    assert "CPU per daemon under 0.5 % of one core: met (0.40 %)" in verdicts[2]
    assert "at most 1.1: met (1.00)" in verdicts[3]
    assert "at most 40 MB: NOT met (45.00 MB)" in verdicts[4]
    assert verdicts[5].startswith("etcd3: O(1)") and ": met (O(1)" in verdicts[5]
    assert scale.goals([], {})[0].endswith("not measured in this run.")


@pytest.mark.parametrize(
    "dcs_type, text, left",
    [
        ("etcd3", '{"header": {"revision": "7"}}', 0),  # etcd leaves a zero count out
        ("etcd3", '{"header": {"revision": "7"}, "count": "17"}', 17),
        ("etcd", '{"errorCode": 100, "message": "Key not found"}', 0),
        ("etcd", '{"node": {"key": "/service/yaim/released", "dir": true}}', 0),
        ("etcd", '{"node": {"dir": true, "nodes": [{"key": "a"}, {"key": "b"}]}}', 2),
    ],
)
def test_notes_left_counts_the_keys_of_both_apis_answers(dcs_type, text, left):
    assert scale.notes_left(dcs_type, text) == left
