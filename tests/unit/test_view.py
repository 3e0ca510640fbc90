"""parse_snapshot: only canonical, allowed pool names become addresses the balancer sees."""

from __future__ import annotations

import ipaddress

import pytest

from yaim.view import (
    Mark,
    Rejected,
    Release,
    Snapshot,
    handed_over,
    in_order,
    parse_address,
    parse_snapshot,
)

V4 = ipaddress.ip_network("198.51.100.0/24")
V6 = ipaddress.ip_network("2001:db8::/32")
A1 = ipaddress.ip_address("198.51.100.1")
A2 = ipaddress.ip_address("198.51.100.2")
B1 = ipaddress.ip_address("2001:db8::1")


def snapshot(pool=(), marks=None, nodes=(), drained=()):
    return Snapshot(
        pool=frozenset(pool),
        marks=marks or {},
        nodes=frozenset(nodes),
        drained=frozenset(drained),
    )


@pytest.mark.parametrize(
    "name, address",
    [("198.51.100.1", A1), ("2001:db8::1", B1)],
)
def test_parse_address_accepts_canonical(name, address):
    assert parse_address(name) == (address, "")


@pytest.mark.parametrize(
    "name", ["", "eth0", "198.51.100", "198.51.100.256", "2001:db8::g", "::1::"]
)
def test_parse_address_rejects_non_addresses(name):
    assert parse_address(name) == (None, "not an IP address")


@pytest.mark.parametrize("name", ["2001:DB8::1", "2001:db8:0::1", "2001:0db8::1"])
def test_parse_address_rejects_non_canonical(name):
    address, reason = parse_address(name)
    assert address is None
    assert reason == "not in canonical form (expected 2001:db8::1)"


@pytest.mark.parametrize("name", ["198.51.100.1/32", "198.51.100.0/24"])
def test_parse_address_rejects_networks(name):
    assert parse_address(name)[0] is None


def test_parse_address_outside_allowed_networks():
    assert parse_address("198.51.100.1", [V4]) == (A1, "")
    assert parse_address("203.0.113.1", [V4]) == (None, "outside allowed-networks")


def test_allowed_networks_of_one_family_reject_the_other():
    assert parse_address("2001:db8::1", [V4]) == (None, "outside allowed-networks")
    assert parse_address("2001:db8::1", [V4, V6]) == (B1, "")


def test_parse_snapshot_splits_pool_into_addresses_and_rejections():
    view, rejected = parse_snapshot(
        snapshot(pool={"198.51.100.1", "2001:db8::1", "bogus", "2001:DB8::2", "203.0.113.9"}),
        allowed=[V4, V6],
    )
    assert view.pool == {A1, B1}
    assert rejected == (
        Rejected("2001:DB8::2", "not in canonical form (expected 2001:db8::2)"),
        Rejected("203.0.113.9", "outside allowed-networks"),
        Rejected("bogus", "not an IP address"),
    )


def test_parse_snapshot_without_allowed_networks_accepts_any_address():
    view, rejected = parse_snapshot(snapshot(pool={"203.0.113.9"}))
    assert view.pool == {ipaddress.ip_address("203.0.113.9")}
    assert rejected == ()


def test_drained_nodes_are_not_participants():
    view, _ = parse_snapshot(snapshot(nodes={"a", "b", "c"}, drained={"b", "gone"}))
    assert view.nodes == {"a", "c"}


def test_marks_are_kept_for_pool_addresses_whoever_holds_them():
    view, _ = parse_snapshot(
        snapshot(
            pool={"198.51.100.1", "198.51.100.2"},
            marks={"198.51.100.1": Mark("a", 5.0), "198.51.100.2": Mark("dead")},
            nodes={"a"},
        )
    )
    assert view.holders == {A1: "a", A2: "dead"}


def test_marks_on_addresses_outside_the_pool_are_dropped():
    view, _ = parse_snapshot(
        snapshot(
            pool={"198.51.100.1", "2001:DB8::1", "203.0.113.9"},
            marks={
                "198.51.100.1": Mark("a"),
                "198.51.100.3": Mark("a"),
                "2001:DB8::1": Mark("a"),
                "2001:db8::1": Mark("a"),
                "203.0.113.9": Mark("a"),
                "junk": Mark("a"),
            },
        ),
        allowed=[V4, V6],
    )
    assert view.pool == {A1}
    assert view.holders == {A1: "a"}


def test_in_order_sorts_both_families_ipv4_first():
    mixed = [ipaddress.ip_address(a) for a in ("2001:db8::1", "198.51.100.2", "198.51.100.10")]
    assert [str(a) for a in in_order(mixed)] == ["198.51.100.2", "198.51.100.10", "2001:db8::1"]


# --- handovers: released by its holder, so the next one need not probe ---


def view_of(marks=None, released=None):
    """A view of the pool A1, A2: marks name -> (holder, number), released name -> Release."""
    raw = Snapshot(
        pool=frozenset({str(A1), str(A2)}),
        marks={a: Mark(h, 2.0, n) for a, (h, n) in (marks or {}).items()},
        nodes=frozenset({"n1", "n2"}),
        released={a: r.text() for a, r in (released or {}).items()},
    )
    return parse_snapshot(raw)[0]


def test_the_view_carries_the_marks_numbers_and_readable_released_notes():
    raw = Snapshot(
        pool=frozenset({str(A1), str(A2)}),
        marks={str(A1): Mark("n1", 2.0, 7)},
        nodes=frozenset(),
        released={str(A1): Release("n1", 5).text(), str(A2): "garbage", "2001:db8::9": "{}"},
    )
    view = parse_snapshot(raw)[0]
    assert view.marks == {A1: 7}
    assert view.released == {A1: Release("n1", 5)}


def test_an_address_released_by_the_holder_of_the_mark_seen_before_is_handed_over():
    seen = {A1: ("n1", 7), A2: ("n2", 8)}
    now = view_of(marks={str(A2): ("n2", 8)}, released={str(A1): Release("n1", 7)})
    assert handed_over(seen, now) == {A1}


@pytest.mark.parametrize(
    "seen, now_marks, note, why",
    [
        ({A1: ("n1", 7)}, {}, None, "expired: no note"),
        ({A1: ("n1", 7)}, {}, Release("n1", 6), "a note of an earlier mark"),
        ({A1: ("n1", 7)}, {}, Release("n2", 7), "a note by another node"),
        ({}, {}, Release("n1", 7), "not seen marked before"),
        ({A1: ("n1", 7)}, {str(A1): ("n2", 9)}, Release("n1", 7), "marked again"),
    ],
)
def test_nothing_else_counts_as_handed_over(seen, now_marks, note, why):
    now = view_of(marks=now_marks, released={str(A1): note} if note else None)
    assert handed_over(seen, now) == frozenset(), why
