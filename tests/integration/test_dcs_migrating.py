"""A migrating node (dcs-type etcd3 with dcs-migrate-from etcd) beside v2 and v3 nodes
on one real etcd: each refuses what the others hold, a refused v3 create takes its v2
mark back, a release removes both, and a read shows both layouts as one."""

from __future__ import annotations

import ipaddress

import pytest

from tests.integration.conftest import key_of
from yaim.dcs.migrating import Backend
from yaim.view import Release, parse_snapshot

A, B, C = (ipaddress.ip_address(f"198.51.100.{n}") for n in (110, 111, 112))

DCS_TYPE = "etcd3"


@pytest.fixture
def nodes(make, etcd):
    """(migrating, v2, v3) handles of nodes n1, n2, n3 on one cluster directory whose
    pool, A, B and C, is in both layouts (as yaimctl migrate leaves it)."""
    for address in (A, B, C):
        make.add_pool(address)
        etcd.put_dir(f"{make.root}/ips/{address}")
    migrating = make("n1", **{"dcs-migrate-from": "etcd"})
    assert isinstance(migrating, Backend)
    return migrating, make("n2", **{"dcs-type": "etcd"}), make("n3")


def marks(make, etcd, address):
    """(holder of the v2 mark, holder of the v3 mark), None where there is none."""
    old = etcd.get(f"{make.root}/ips/{address}/marked")
    new = key_of(etcd, f"{make.root}/ips/{address}/marked")
    return (old and old["value"]), (new and new[0])


def test_each_kind_of_node_refuses_what_a_migrating_one_holds_and_back(nodes, make, etcd):
    migrating, v2, v3 = nodes
    assert migrating.create_marks([A]) != {}
    assert marks(make, etcd, A) == ("n1", "n1")
    assert not v2.create_mark(A) and not v3.create_mark(A)
    assert v2.create_mark(B) and v3.create_mark(C)
    assert migrating.create_marks([B, C]) == {}
    assert marks(make, etcd, B) == ("n2", None)  # nothing made in v3 for a v2 mark refused
    assert marks(make, etcd, C) == (None, "n3")  # the v2 mark made first was taken back
    assert migrating.refresh_marks([A])[A].ok


def test_a_release_removes_both_marks_and_notes_it_in_v3(nodes, make, etcd):
    migrating, v2, _ = nodes
    migrating.create_marks([A, B])
    view, _ = parse_snapshot(migrating.read())
    assert view.holders == {A: "n1", B: "n1"}
    assert migrating.release_mark(A, view.marks[A])
    assert marks(make, etcd, A) == (None, None)
    note = Release.parse(key_of(etcd, f"{make.root}/released/{A}")[0])
    assert note == Release("n1", view.marks[A])  # the v3 mark's number, in v3 only
    assert etcd.get(f"{make.root}/released/{A}") is None
    assert migrating.delete_mark(B) and marks(make, etcd, B) == (None, None)
    assert not migrating.delete_mark(B)
    assert v2.create_mark(A) and not migrating.create_mark(A)


def test_a_half_found_gone_is_made_again_one_someone_else_holds_is_lost(nodes, make, etcd):
    migrating, v2, _ = nodes
    migrating.create_marks([A, B])
    etcd.delete(f"{make.root}/ips/{A}/marked")
    etcd.delete(f"{make.root}/ips/{B}/marked")
    assert v2.create_mark(B)
    done = migrating.refresh_marks([A, B])
    assert done[A].ok and not done[B].ok
    assert marks(make, etcd, A) == ("n1", "n1")
    # B: shown as the v2 node's, so the migrating node takes it in neither layout, and
    # its v3 half, which holds nothing, goes (or it would stand on the lease for ever)
    view, _ = parse_snapshot(migrating.read())
    assert view.holders[B] == "n2" and B not in view.marks
    assert marks(make, etcd, B) == ("n2", None)


def test_a_read_shows_both_layouts_and_refuses_a_one_sided_address(nodes, make, etcd):
    migrating, v2, v3 = nodes
    etcd.put_dir(f"{make.root}/ips/198.51.100.113")  # in v2 only: not yet migrated
    v2.touch_node()
    v3.touch_node()
    migrating.touch_node()
    assert v2.create_mark(B) and v3.create_mark(C)
    view, rejected = parse_snapshot(migrating.read())
    assert view.pool == {A, B, C}
    assert [r.name for r in rejected] == ["198.51.100.113"]
    assert view.nodes == {"n1", "n2", "n3"}
    assert view.holders == {B: "n2", C: "n3"}
    # its node key is in both layouts: the v2 node and the v3 node both plan with it
    assert "n1" in v2.read().nodes and "n1" in v3.read().nodes
    migrating.delete_node()
    assert "n1" not in v2.read().nodes | v3.read().nodes


def test_the_operators_changes_reach_both_layouts(nodes):
    migrating, v2, v3 = nodes
    d = ipaddress.ip_address("198.51.100.114")
    assert migrating.add_address(d) and not migrating.add_address(d)
    assert str(d) in v2.read().pool and str(d) in v3.read().pool
    migrating.drain("n2")
    assert "n2" in v2.read().drained and "n2" in v3.read().drained
    assert migrating.undrain("n2") and not v2.read().drained | v3.read().drained
    assert migrating.remove_address(d)
    assert str(d) not in v2.read().pool | v3.read().pool
