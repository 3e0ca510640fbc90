"""Whatever the DCS holds, parsing it never raises: hostile values and names are skipped.

Property tests (hypothesis) of the parsers every value read from etcd goes through
(notes, pool names, the sorting of keys into the layout), and one regression test
per value that used to stop every node.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yaim import ctl
from yaim.dcs import Entry, snapshot_of
from yaim.names import BadName, check_name, is_name, shown
from yaim.view import Conflict, Release, Snapshot, parse_address, parse_snapshot

ROOT = "/service/yaim"
A1 = "198.51.100.1"
V4 = ipaddress.ip_network("198.51.100.0/24")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
note_texts = st.one_of(
    st.text(),
    st.builds(
        lambda n, m: f'{{"node": {n}, "mark": {m}}}',
        st.sampled_from(['"n1"', "5", "null"]),
        st.sampled_from(["1e999", "-1", "0", "true", '"7"', "9223372036854775808", "1.5"]),
    ),
    json_values.map(lambda v: __import__("json").dumps(v)),
)


@given(note_texts)
def test_a_note_of_any_text_parses_or_is_none(text):
    release = Release.parse(text)
    assert release is None or (is_name(release.node) and 0 < release.mark < 2**63)
    conflict = Conflict.parse(text)
    assert isinstance(conflict.mac, str) and isinstance(conflict.node, str)


@pytest.mark.parametrize(
    "text",
    [
        '{"node":"x","mark":1e999}',  # OverflowError in int(inf)
        "[" * 100_000,  # RecursionError in json
        '{"node":"x","mark":true}',
        '{"node":"?recursive=true","mark":5}',
        '{"node":"x","mark":-3}',
        '{"node":"x","mark":5.0}',
        "x" * (1 << 20),
        "null",
        "[]",
    ],
)
def test_the_values_that_stopped_every_node_are_no_release(text):
    assert Release.parse(text) is None
    assert Conflict.parse(text) == Conflict("?", "?")


def test_a_readable_release_still_parses():
    assert Release.parse(Release("n1", 42).text()) == Release("n1", 42)


def test_a_conflict_note_is_printable():
    note = Conflict.parse('{"mac": "\\u001b[2J", "node": "n\\u001b"}')
    assert note == Conflict("\\x1b[2J", "n\\x1b")


@settings(max_examples=300)
@given(st.text(max_size=60))
def test_parse_address_never_raises(name):
    address, reason = parse_address(name, (V4,))
    assert (address is None) != (reason == "")
    if address is not None:
        assert str(address) == name


@pytest.mark.parametrize(
    "name, reason",
    [
        ("2001:db8::5%eth0", "a scoped IPv6 address"),
        ("fe80::1%eth0", "a scoped IPv6 address"),
        ("%2e", "not an IP address"),
        ("198.51.100.1%25", "not an IP address"),
        ("0.0.0.0", "an unspecified address"),
        ("0.1.2.3", "an unspecified address"),
        ("::", "an unspecified address"),
        ("127.0.0.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("224.0.0.1", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("169.254.1.1", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("255.255.255.255", "a reserved address"),
        (str(ipaddress.ip_address("::ffff:198.51.100.1")), "an IPv4-mapped IPv6 address"),
        ("1" * 100, "not an IP address"),
    ],
)
def test_scoped_and_special_addresses_are_refused(name, reason):
    address, why = parse_address(name)
    assert address is None
    assert why.startswith(reason), why


def test_a_special_address_is_taken_when_allowed_networks_name_it():
    loopback = ipaddress.ip_network("127.0.0.0/8")
    assert parse_address("127.0.0.5", (loopback,)) == (ipaddress.ip_address("127.0.0.5"), "")


key_parts = st.text(alphabet=st.characters(blacklist_characters="/"), max_size=12)
entries = st.builds(
    Entry,
    st.lists(
        st.sampled_from(["ips", "nodes", "drain", "released", "conflicts", "other"]) | key_parts,
        min_size=1,
        max_size=4,
    ).map(lambda parts: ROOT + "/" + "/".join(parts)),
    st.text(max_size=40),
    st.booleans(),
    st.none() | st.floats(allow_nan=False),
    st.none() | st.integers(),
)


@settings(max_examples=300)
@given(st.lists(entries, max_size=30))
def test_any_keys_sort_and_parse_without_raising(listing):
    for pool_dirs in (True, False):
        view, rejected = parse_snapshot(snapshot_of(ROOT, listing, pool_dirs), (V4,))
        assert all(is_name(node) for node in view.nodes)
        assert all(address in V4 for address in view.pool)
        assert all(shown(r.name) in r.label for r in rejected)


def test_directories_where_keys_belong_are_odd_not_nodes_or_marks():
    listing = [
        Entry(f"{ROOT}/ips/{A1}", "", True),
        Entry(f"{ROOT}/ips/{A1}/marked", "", True),
        Entry(f"{ROOT}/ips/{A1}/marked/child", "n1"),
        Entry(f"{ROOT}/nodes/sub", "", True),
        Entry(f"{ROOT}/nodes/sub/child", "healthy"),
        Entry(f"{ROOT}/nodes/n1", "healthy"),
        Entry(f"{ROOT}/drain/n1", "", True),
        Entry(f"{ROOT}/released/{A1}", "", True),
    ]
    snapshot = snapshot_of(ROOT, listing, pool_dirs=True)
    assert snapshot.nodes == {"n1"} and snapshot.drained == frozenset()
    assert snapshot.marks == {} and snapshot.released == {}
    assert set(snapshot.odd) == {"nodes/sub", "drain/n1", f"released/{A1}"}
    assert snapshot.malformed == {A1: "its marked key is a directory, so no node can mark it"}
    view, rejected = parse_snapshot(snapshot)
    assert view.nodes == {"n1"} and view.holders == {} and view.pool == frozenset()
    assert {r.name for r in rejected} == {*snapshot.odd, A1}


def test_node_keys_with_names_no_node_can_have_are_skipped():
    snapshot = Snapshot(
        pool=frozenset({A1}),
        marks={},
        nodes=frozenset({"n1", "a?b&c", "\x1b[2J", "x" * 300}),
        drained=frozenset({"..", "n2"}),
        released={A1: '{"node":"x","mark":1e999}'},
    )
    view, rejected = parse_snapshot(snapshot)
    assert view.nodes == {"n1"}
    labels = sorted(r.label for r in rejected)
    assert "key 'nodes/\\x1b[2J'" in labels and "key 'drain/..'" in labels
    assert f"key 'released/{A1}'" in labels
    assert all("\x1b" not in label and len(label) < 120 for label in labels)


def test_out_keys_of_names_no_node_can_have_are_skipped_and_their_reasons_shown_safely():
    listing = [
        Entry(f"{ROOT}/out/n1", "link down: \x1b[2Jlan0 " + "x" * 5000),
        Entry(f"{ROOT}/out/..", "not healthy"),
        Entry(f"{ROOT}/out/n2", "", True),
        Entry(f"{ROOT}/out/n2/child", "not healthy"),
    ]
    snapshot = snapshot_of(ROOT, listing, pool_dirs=True)
    assert set(snapshot.out) == {"n1", ".."} and set(snapshot.odd) == {"out/n2"}
    view, rejected = parse_snapshot(snapshot)
    assert list(view.out) == ["n1"] and len(view.out["n1"]) == 300
    assert {r.label for r in rejected} == {"key 'out/..'", "key 'out/n2'"}
    cluster = ctl.summary(snapshot, view, rejected)
    row = ctl.nodes_table(cluster).splitlines()[1]
    assert row.startswith("n1") and "\\x1b[2Jlan0" in row and "\x1b" not in row
    assert len(row) < 160


def test_a_mark_of_an_unprintable_holder_is_held_by_a_printable_name():
    from yaim.view import Mark

    snapshot = Snapshot(pool=frozenset({A1}), marks={A1: Mark("\x1b[2J")}, nodes=frozenset())
    view, _ = parse_snapshot(snapshot)
    assert view.holders == {ipaddress.ip_address(A1): "\\x1b[2J"}


@pytest.mark.parametrize(
    "name",
    [
        "..?recursive=true&x=",
        "?recursive=true&x=",
        "..",
        ".",
        "%2e",
        "a b",
        "a/b",
        "",
        "-a",
        "a.",
        "x" * 254,
        "a\x00",
        "n\x1b",
    ],
)
def test_yaimctl_refuses_names_that_could_reach_other_keys(name):
    with pytest.raises(ctl.Refused) as refused:
        ctl.node_name(name)
    assert "\x1b" not in str(refused.value) and "\x00" not in str(refused.value)
    with pytest.raises(BadName):
        check_name(name)


@pytest.mark.parametrize("name", ["n1", "db-1.example.com", "node_7", "A", "x" * 253])
def test_node_names_operators_use_are_accepted(name):
    assert ctl.node_name(name) == name


def test_shown_escapes_and_cuts():
    assert shown("a\x1b[2J\n\\") == "a\\x1b[2J\\n\\\\"
    assert shown("x" * 100) == "x" * 80 + "..."
