"""yaimctl migrate's plans (yaim.migration) on snapshots made by hand: what is copied,
what is skipped and why, when --remove-v2 refuses, and that it deletes yaim's keys
only, the directories bottom up, and the namespace directory only when nothing else
is in it."""

from __future__ import annotations

import ipaddress

from yaim import dcs, migration
from yaim.view import Mark, Snapshot

ROOT = "/service/yaim"
A, B = ipaddress.ip_address("198.51.100.1"), ipaddress.ip_address("2001:db8::1")
ALLOWED = (ipaddress.ip_network("198.51.100.0/24"), ipaddress.ip_network("2001:db8::/32"))


def snapshot(pool=(), drained=(), **parts) -> Snapshot:
    return Snapshot(frozenset(pool), parts.pop("marks", {}), parts.pop("nodes", frozenset()),
                    frozenset(drained), **parts)  # fmt: skip


EMPTY = snapshot()


def listing(*paths: str):
    """Entries of a v2 listing of ROOT: a path ending in `/` is a directory."""
    return [dcs.Entry(f"{ROOT}/{p.rstrip('/')}", "", p.endswith("/")) for p in paths]


def test_copy_takes_what_v3_lacks_and_counts_what_it_has():
    v2 = snapshot({str(A), str(B)}, {"n1", "n2"})
    copy = migration.plan_copy(v2, snapshot({str(A)}, {"n2"}), ALLOWED)
    assert copy == migration.Copy((B,), ("n1",), 2, ())
    done = migration.plan_copy(v2, snapshot({str(A), str(B)}, {"n1", "n2"}), ALLOWED)
    assert done.empty and done.present == 4


def test_copy_compares_parsed_addresses_and_skips_what_the_daemon_skips():
    v2 = snapshot(
        {"2001:db8::1", "bogus", "192.0.2.50", "2001:DB8::2", "10.0.0.1"},
        {"n1", "a b"},
        malformed={"10.0.0.1": "a plain key, not a directory"},
    )
    # v3 has 2001:db8::1 under another spelling: not the daemon's address, so no match
    copy = migration.plan_copy(v2, snapshot({"2001:0db8::1"}), ALLOWED)
    assert copy.pool == (B,) and copy.drained == ("n1",) and copy.present == 0
    assert [(r.label, r.reason) for r in copy.skipped] == [
        ("pool entry '10.0.0.1'", "a plain key, not a directory"),
        ("pool entry '192.0.2.50'", "outside allowed-networks"),
        ("pool entry '2001:DB8::2'", "not in canonical form (expected 2001:db8::2)"),
        ("pool entry 'bogus'", "not an IP address"),
        ("key 'drain/a b'", "not a node name"),
    ]


def keys_of(*paths: str, namespace=("yaim",)):
    return migration.v2_keys(ROOT, listing(*paths), namespace)


def test_removal_deletes_the_layout_then_its_directories_up_to_the_namespace():
    keys = keys_of("ips/", f"ips/{A}/", "drain/", "drain/n1", "nodes/", "sync/", "rebalance")
    v2 = snapshot({str(A)}, {"n1"})
    removal = migration.plan_removal(ROOT, keys, v2, v2, ALLOWED)
    assert not removal.refused and removal.kept == ()
    assert [(d.text, d.what, d.recursive) for d in removal.deletions] == [
        ("/service/yaim/drain/n1", "drain key", False),
        ("/service/yaim/drain/", "directory", False),
        (f"/service/yaim/ips/{A}/", "pool directory", True),
        ("/service/yaim/ips/", "directory", False),
        ("/service/yaim/nodes/", "directory", False),
        ("/service/yaim/rebalance", "rebalance key", False),
        ("/service/yaim/sync/", "directory", False),
        ("/service/yaim/", "cluster directory", False),
        ("/service/", "namespace directory", False),
    ]
    # the entries migrate skipped are yaim's pool entries all the same: they go too
    junk = migration.plan_removal(ROOT, keys_of("ips/", "ips/bogus/"), snapshot({"bogus"}), EMPTY)
    assert junk.deletions[0] == migration.Deletion(
        f"{ROOT}/ips/bogus", "pool directory, never copied: not an IP address", True, True
    )


def test_removal_keeps_what_is_not_yaims_and_the_directories_that_hold_it():
    keys = keys_of("drain/", "drain/n1", "notes", namespace=("yaim", "other"))
    removal = migration.plan_removal(ROOT, keys, snapshot(drained={"n1"}), snapshot(drained={"n1"}))
    assert [d.text for d in removal.deletions] == ["/service/yaim/drain/n1", "/service/yaim/drain/"]
    assert removal.kept == (
        ("/service/yaim/notes", "not a key of yaim's layout"),
        ("/service/other", "not this cluster's"),
    )
    # this cluster gone, another cluster's directory beside it: the namespace stays
    beside = migration.plan_removal(ROOT, keys_of(namespace=("yaim", "other")), EMPTY, EMPTY)
    assert [d.text for d in beside.deletions] == ["/service/yaim/"]
    # an empty namespace left behind is removed; none at all, nothing to do
    left = migration.plan_removal(ROOT, keys_of(namespace=()), EMPTY, EMPTY)
    assert [d.text for d in left.deletions] == ["/service/"]
    none = migration.plan_removal(ROOT, keys_of(namespace=None), EMPTY, EMPTY)
    assert none.deletions == () and none.kept == () and not none.refused
    # a namespace etcd-user may not read: the cluster's keys go, the namespace stays
    unread = migration.plan_removal(ROOT, keys_of("drain/", namespace=None), EMPTY, EMPTY)
    assert [d.text for d in unread.deletions] == ["/service/yaim/drain/", "/service/yaim/"]


def test_removal_refuses_while_a_node_runs_on_v2_or_v3_lacks_a_key():
    keys = keys_of("ips/", f"ips/{A}/", f"ips/{A}/marked", "nodes/", "nodes/n1")
    v2 = snapshot({str(A)}, {"n3"}, marks={str(A): Mark("n1")}, nodes=frozenset({"n1"}))
    removal = migration.plan_removal(ROOT, keys, v2, EMPTY, ALLOWED)
    assert removal.refused
    assert removal.live == ("node keys n1", f"marks of {A} (held by n1)")
    assert removal.missing == (f"pool addresses {A}", "drain keys n3")
    out = snapshot(out={"n2": "link down"})
    assert migration.plan_removal(ROOT, keys_of(), out, EMPTY).live == (
        "out keys (nodes running, taking no part) n2",
    )
    # a skipped entry is not missing from v3: it was never to be copied
    assert not migration.plan_removal(ROOT, keys_of(), snapshot({"bogus"}), EMPTY).refused


def test_a_long_refusal_lists_ten_names_and_counts_the_rest():
    pool = {f"198.51.100.{i}" for i in range(1, 31)}
    removal = migration.plan_removal(ROOT, keys_of(), snapshot(pool), EMPTY, ALLOWED)
    (missing,) = removal.missing
    assert missing.endswith("198.51.100.10 and 20 more") and missing.count(",") == 9
