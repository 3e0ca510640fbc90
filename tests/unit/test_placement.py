"""Placement rules of yaim.balancer beyond the even spread: weights, joining nodes that
wait out `rebalance-delay`, `rebalance: manual`, and what a rebalance would move."""

from __future__ import annotations

import itertools
from fractions import Fraction
from typing import Dict

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.unit.test_balancer import (
    EMPTY,
    NODES,
    counts,
    held_by,
    moved,
    play_round,
    settle,
    spread,
    v4,
    view,
    views,
)
from yaim.balancer import excess, heirs, plan, shares
from yaim.dcs import Entry, snapshot_of, wakes_balancer
from yaim.view import ClusterView, NodeInfo, Snapshot, parse_snapshot

fast = settings(max_examples=200, deadline=None)


def available(v: ClusterView) -> int:
    return len(v.pool) - sum(1 for a, h in v.holders.items() if h not in v.nodes and a in v.pool)


def weights_of(v: ClusterView) -> Dict[str, int]:
    weights = {node: v.weights.get(node, 1) for node in v.nodes}
    return weights if any(weights.values()) else dict.fromkeys(weights, 1)


def exact(v: ClusterView) -> Dict[str, Fraction]:
    """Each participant's exact share M x w / W."""
    weights = weights_of(v)
    total = sum(weights.values())
    return {node: Fraction(available(v) * w, total) for node, w in weights.items()}


def minimum_moves(v: ClusterView) -> int:
    """Fewest addresses that must change hands to bring every node within one of its exact
    share, by trying every choice of the nodes that get one above the whole part."""
    if not v.nodes:
        return 0
    shares_ = exact(v)
    whole = {node: int(share) for node, share in shares_.items()}
    extra = available(v) - sum(whole.values())
    fractional = sorted(node for node, share in shares_.items() if share != whole[node])
    have = counts(v)
    return min(
        sum(max(0, have[node] - whole[node] - (node in lucky)) for node in v.nodes)
        for lucky in itertools.combinations(fractional, extra)
    )


@st.composite
def weighted_views(draw) -> ClusterView:
    v = draw(views())
    weights = {node: draw(st.integers(0, 4)) for node in sorted(v.nodes)}
    joining = draw(st.frozensets(st.sampled_from(NODES)))
    return v._replace(weights={n: w for n, w in weights.items() if w != 1}, joining=joining)


def matured(v: ClusterView) -> ClusterView:
    return v._replace(joining=frozenset())


# Examples.


def test_weights_two_one_one_over_eight_addresses_settle_four_two_two():
    settled, _ = settle(view("abc", [v4(i) for i in range(8)])._replace(weights={"a": 2}))
    assert counts(settled) == {"a": 4, "b": 2, "c": 2}


def test_a_weight_change_moves_only_what_the_new_shares_need():
    before, _ = settle(view("abc", [v4(i) for i in range(8)])._replace(weights={"a": 2}))
    after, released = settle(before._replace(weights={"a": 2, "b": 2}))
    assert counts(after) == {"a": 3, "b": 3, "c": 2}
    assert released == moved(before, after) == 1


def test_weight_zero_takes_only_what_no_one_else_can():
    v = view("abc", [v4(i) for i in range(6)])._replace(weights={"c": 0})
    assert counts(settle(v)[0]) == {"a": 3, "b": 3, "c": 0}
    alone = view("c", [v4(i) for i in range(6)])._replace(weights={"c": 0})
    assert counts(settle(alone)[0]) == {"c": 6}


def test_a_joining_node_takes_free_addresses_but_makes_nobody_release():
    v = spread(view("abc", [v4(i) for i in range(10)]), ("a", 4), ("b", 4))
    v = v._replace(joining=frozenset("c"))
    for node in "ab":
        assert plan(v, node) == EMPTY._replace(keep=held_by(v, node))
    assert plan(v, "c").take == v.pool - v.holders.keys()
    settled, released = settle(v)
    assert counts(settled) == {"a": 4, "b": 4, "c": 2} and released == 0
    after, released = settle(matured(settled))
    assert sorted(counts(after).values()) == [3, 3, 4] and released == 1


def test_the_odd_address_goes_to_a_node_that_keeps_what_it_holds_before_a_joining_one():
    """b, joining, holds what marks it had left: it gives back down to its quota in one
    round, not in two (a keeps its two anyway, so the odd address is a's)."""
    v = spread(view(["a", "aa", "b", "c", "d"], [v4(i) for i in range(6)]), ("a", 2), ("aa", 1))
    v = spread(v, ("b", 3))._replace(joining=frozenset("bcd"))
    settled, released = settle(v)
    assert counts(settled) == {"a": 2, "aa": 1, "b": 1, "c": 1, "d": 1} and released == 2


def test_manual_keeps_everything_it_holds_and_still_takes_its_room():
    v = spread(view("abc", [v4(i) for i in range(9)]), ("a", 6))
    assert plan(v, "a", rebalance=False) == EMPTY._replace(keep=held_by(v, "a"))
    assert excess(v) == {"a": 3, "b": 0, "c": 0}
    taken = [plan(v, node, rebalance=False).take for node in "bc"]
    assert taken == [plan(v, node).take for node in "bc"], "the free ones, as auto would"
    assert taken[0] | taken[1] == v.pool - v.holders.keys()


# Properties.


@fast
@given(weighted_views())
def test_weighted_plans_are_safe_and_settle_within_one_of_the_exact_share(v):
    for node in v.nodes:
        p = plan(v, node)
        assert p.keep | p.release == held_by(v, node) and not p.keep & p.release
    settled, _ = settle(matured(v))
    have = counts(settled)
    for node, share in exact(settled).items():
        assert abs(have[node] - share) < 1, (node, have, share)


@fast
@given(weighted_views(), st.data())
def test_weighted_join_leave_or_weight_change_moves_the_minimum(v, data):
    v, _ = settle(matured(v))
    change = data.draw(st.sampled_from(["join", "leave", "weight"]))
    if change == "join":
        newcomer = data.draw(st.sampled_from(NODES))
        assume(newcomer not in v.nodes)
        changed = v._replace(nodes=v.nodes | {newcomer})
    elif change == "leave":
        assume(v.nodes)
        leaver = data.draw(st.sampled_from(sorted(v.nodes)))
        rest = {a: h for a, h in v.holders.items() if h != leaver}
        changed = v._replace(nodes=v.nodes - {leaver}, holders=rest)
    else:
        assume(v.nodes)
        node = data.draw(st.sampled_from(sorted(v.nodes)))
        changed = v._replace(weights={**v.weights, node: data.draw(st.integers(0, 4))})
    settled, released = settle(changed)
    assert released == moved(changed, settled) == minimum_moves(changed)


@fast
@given(weighted_views())
def test_the_next_round_never_undoes_a_round_with_weights_and_joining_nodes(v):
    after, _ = play_round(v)
    for node in after.nodes:
        assert not plan(after, node).release


@fast
@given(views(), st.frozensets(st.sampled_from(NODES), min_size=1))
def test_joining_nodes_move_nothing_held_and_their_share_follows_once_they_have_waited(
    v, newcomers
):
    before, _ = settle(v)
    assume(before.nodes and not newcomers <= before.nodes)
    joined = before._replace(nodes=before.nodes | newcomers, joining=newcomers - before.nodes)
    settled, _ = settle(joined)
    for address, holder in joined.holders.items():
        if holder in before.nodes and address in joined.pool:
            assert settled.holders[address] == holder, "a joining node took it"
    _, released = settle(matured(settled))
    assert released == minimum_moves(matured(settled))


@fast
@given(weighted_views(), st.frozensets(st.sampled_from(NODES)))
def test_manual_nodes_release_nothing_and_no_address_goes_to_two_nodes(v, manual):
    plans = {node: plan(v, node, rebalance=node not in manual) for node in v.nodes}
    taken = [a for p in plans.values() for a in p.take]
    assert len(taken) == len(set(taken)) and set(taken) <= v.pool - v.holders.keys()
    for node in manual & v.nodes:
        assert plans[node].keep == held_by(v, node) and not plans[node].release


@fast
@given(weighted_views())
def test_excess_is_what_an_automatic_round_releases(v):
    assert excess(v) == {node: len(plan(v, node).release) for node in sorted(v.nodes)}
    quotas, limits = shares(v)
    assert sum(quotas.values()) == (available(v) if v.nodes else 0)
    assert all(limits[node] >= quotas[node] for node in quotas)


@fast
@given(weighted_views())
def test_heirs_with_weights_or_joining_nodes_are_what_planning_without_each_gives(v):
    for me in sorted(v.nodes):
        expected = {}
        for gone in set(v.holders.values()) - {me}:
            rest = {a: h for a, h in v.holders.items() if h != gone}
            without = v._replace(nodes=v.nodes - {gone}, holders=rest)
            taken = plan(without, me).take & held_by(v, gone)
            if taken:
                expected[gone] = taken
        assert heirs(v, me) == expected, me


# What node keys publish, and the operator's request.


def test_node_keys_publish_weights_and_joining_and_bad_values_count_as_the_defaults():
    values = {
        "n1": NodeInfo(weight=3).value(),
        "n2": NodeInfo(joining=True).value(),
        "n3": "healthy",
        "n4": '{"weight": 1001}',
        "n5": '{"weight": true}',
        "n6": '{"joining": "yes"}',
        "n7": "\x1b[2J",
    }
    snapshot = Snapshot(frozenset(), {}, frozenset(values), node_values=values)
    v, rejected = parse_snapshot(snapshot)
    assert (v.weights, v.joining, v.nodes) == ({"n1": 3}, {"n2"}, frozenset(values))
    assert sorted(r.name for r in rejected) == ["nodes/n4", "nodes/n5", "nodes/n6", "nodes/n7"]
    assert NodeInfo().value() == "healthy", "what every node wrote before weights"


def test_the_rebalance_key_is_part_of_the_layout_and_a_directory_there_is_odd():
    root = "/service/yaim"
    asked = snapshot_of(root, [Entry(root + "/rebalance", "asked")], pool_dirs=False)
    assert asked.rebalance == "asked" and parse_snapshot(asked)[0].rebalance
    odd = snapshot_of(root, [Entry(root + "/rebalance", "", is_dir=True)], pool_dirs=True)
    assert odd.rebalance is None and "rebalance" in odd.odd
    assert wakes_balancer("/rebalance", False) and wakes_balancer("/rebalance", True)
