"""The etcd v2 backend against a real etcd on loopback: layout, atomicity, failover."""

from __future__ import annotations

import ipaddress
import time

from tests.lab.util import wait_until
from yaim.view import Mark

A = ipaddress.ip_address("198.51.100.100")
B = ipaddress.ip_address("198.51.100.101")


DCS_TYPE = "etcd"


def test_read_sorts_the_layout(make, etcd):
    n1 = make("n1")
    assert n1.read().pool == frozenset()
    etcd.put_dir(n1.root + "/ips/198.51.100.100")
    etcd.put_dir(n1.root + "/ips/not-an-ip")
    etcd.put(n1.root + "/ips/198.51.100.102", "")
    etcd.put(n1.root + "/drain/n2", "")
    assert n1.create_mark(A)
    n1.touch_node()
    snapshot = n1.read()
    assert snapshot.pool == {"198.51.100.100", "not-an-ip"}
    assert snapshot.malformed == {"198.51.100.102": "a plain key, not a directory"}
    assert snapshot.marks["198.51.100.100"].holder == "n1"
    assert snapshot.nodes == {"n1"}
    assert snapshot.drained == {"n2"}


def test_marks_are_atomic_and_only_the_holder_refreshes_or_deletes(make, etcd):
    n1, n2 = make("n1"), make("n2")
    etcd.put_dir(n1.root + "/ips/198.51.100.100")
    assert n1.create_mark(A)
    assert not n2.create_mark(A)
    assert n1.refresh_mark(A)
    assert not n2.refresh_mark(A)
    assert not n2.delete_mark(A)
    assert n1.read().marks["198.51.100.100"] == Mark("n1", 2)
    assert n1.delete_mark(A)
    assert not n1.refresh_mark(A)
    assert n2.create_mark(A)


def test_a_mark_never_resurrects_a_deleted_pool_entry(make, etcd):
    n1 = make("n1")
    assert not n1.create_mark(B)
    assert "198.51.100.101" not in n1.read().pool
    assert etcd.get(n1.root + "/ips/198.51.100.101") is None


def test_mark_and_node_key_expire_without_refresh(make, etcd):
    n1 = make("n1")
    etcd.put_dir(n1.root + "/ips/198.51.100.100")
    assert n1.create_mark(A)
    n1.touch_node()
    started = time.monotonic()
    wait_until(lambda: not n1.read().marks and not n1.read().nodes, timeout=5, what="expiry")
    assert time.monotonic() - started >= 0.5
    assert "198.51.100.100" in n1.read().pool


def test_node_key_refresh_keeps_it_and_delete_removes_it(make):
    n1 = make("n1")
    for _ in range(3):
        n1.touch_node()
    assert n1.read().nodes == {"n1"}
    n1.delete_node()
    n1.delete_node()
    assert n1.read().nodes == frozenset()
