"""Hostile keys and values in etcd change nothing: no node crashes, no address moves.

Anybody who may write the cluster's keys can put anything there. The test writes a
corpus of hostile values (a number too large for a float, 100,000 nested brackets,
wrong types, non-UTF-8 bytes, 1 MB) into every kind of key the layout has (pool
entries, node keys, drain flags, marks, `released` and `conflicts` notes), and
hostile names (`?`, `&`, `%2e`, escape sequences, 300 characters, directories where
keys belong), round after round, into a settled cluster of three nodes, on both
APIs. The daemons keep every address where it was, log each odd key once, restart
and stop cleanly; yaimctl answers with exit 0 or 1 and at most one line of error,
never prints an escape sequence raw, and refuses names that would change other keys.

Timing as in test_daemon: interval 500 ms, ttl 2000 ms.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import sys
import time
from urllib.parse import quote

import pytest

from lab.etcd import ClusterKeys
from lab.util import wait_until
from tests.integration.conftest import POOL, settled, start_cluster, yaimctl

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_two_holders")]

BLOCKED = ipaddress.ip_address("198.51.100.251")  # a pool address behind a hostile conflicts note
DIR_MARKED = ipaddress.ip_address("198.51.100.250")  # v2: its `marked` is a directory
VALUES = [
    b'{"node":"x","mark":1e999}',  # OverflowError in int()
    b"[" * 100_000,  # RecursionError in json
    b'{"node":5,"mark":true}',
    b'{"node":"n1","mark":-1}',
    b"[]",
    b"null",
    b'{"mac":["x"],"node":{}}',
    b"\xff\xfe\x00\x1b[2J",
    b"x" * (1 << 20),
]
NAMES = ["a?b&c=d", "%2e", "n\x1b[2J", "x" * 300, "white space", "sub/child"]


def write_names(raw: ClusterKeys) -> None:
    """Hostile names (and, in v2, directories where keys belong), written once."""
    for name in NAMES:
        raw.put_raw(f"/nodes/{name}", b"healthy")
        raw.put_raw(f"/drain/{name}", b"drained")
        pool_name = quote(name, safe="") if name == "sub/child" else name
        raw.put_raw(f"/ips/{pool_name}", None if not raw.v3 else b"")
    for scoped in ("2001:db8::5%lan0", "fe80::1%lan0", "0.0.0.0", "::ffff:c633:6401"):
        raw.put_raw(f"/ips/{scoped}", None if not raw.v3 else b"")
    if raw.v3:
        raw.put_raw(b"/nodes/\xff\xfe", b"healthy")  # not UTF-8
        return
    raw.put_raw("/nodes/dir/child", b"healthy")  # `dir` must not count as a node
    raw.put_raw("/drain/n1/child", b"drained")  # nor n1 as drained
    raw.put_raw("/released/198.51.100.199/child", b"x")
    raw.put_raw(f"/ips/{DIR_MARKED}/marked/child", b"n1")


def write_values(raw: ClusterKeys, value: bytes) -> None:
    """One hostile value into every kind of key whose value yaim reads."""
    for address in POOL[1:]:
        raw.put_raw(f"/released/{address}", value)
    raw.put_raw(f"/conflicts/{BLOCKED}", value)
    raw.put_raw(f"/ips/{POOL[2]}/other", value)
    raw.put_raw("/drain/nobody", value)


def pool_holders(lab):
    return {a: h for a, h in lab.observer.holders().items() if a in POOL}


def one_line_or_less(done) -> bool:
    return len(done.stderr.strip().splitlines()) <= 1


@pytest.fixture(params=["etcd", "etcd3"])
def checked(request, lab):
    lab.dcs_type = request.param
    return lab


def test_hostile_keys_and_values_change_nothing(checked):
    lab = checked
    nodes = start_cluster(lab)
    raw = lab.keys()
    before, since = pool_holders(lab), time.monotonic()
    write_names(raw)  # v2: makes DIR_MARKED a pool entry, its `marked` a directory
    raw.put_raw(f"/conflicts/{BLOCKED}", VALUES[0])
    lab.keys().add(BLOCKED)
    for value in VALUES:
        write_values(raw, value)
        seen = len(lab.observer.samples)
        # two rounds of every node on this value: each reads it at least once
        wait_until(lambda n=seen: len(lab.observer.samples) > n + 30, 10, what="samples")
        assert all(node.running for node in nodes), lab.logs()
    moved = [s.holders for s in lab.observer.samples if s.time >= since]
    assert all({a: h for a, h in m.items() if a in POOL} == before for m in moved), lab.logs()
    assert BLOCKED not in lab.observer.holders()

    for node in nodes:
        log = node.log()
        assert "Traceback" not in log, log[-3000:]
        me = f"on node {node.name}:"
        assert log.count(f"refused key 'nodes/a?b&c=d' {me} not a node name") == 1, log[-3000:]
        assert log.count(f"refused pool entry '2001:db8::5%lan0' {me} a scoped IPv6") == 1
        assert log.count(f"refused key 'released/{POOL[1]}' {me} not a released note") == 1
        assert "\x1b" not in log
        if not raw.v3:
            assert log.count(f"refused key 'nodes/dir' {me} a directory where") == 1
            assert log.count(f"refused pool entry '{DIR_MARKED}' {me} its marked key is") == 1

    for args in (["ips"], ["nodes"], ["status"], ["ips", "--json"], ["status", "--json"]):
        done = yaimctl(lab, *args)
        assert done.returncode == 0 and not done.stderr, (args, done.stderr)
        assert "\x1b" not in done.stdout and "Traceback" not in done.stdout
    shown = yaimctl(lab, "nodes", "--json")
    assert sorted(n["name"] for n in json.loads(shown.stdout)) == ["n1", "n2", "n3", "nobody"]
    for command in ("drain", "undrain"):
        for name in ("..?recursive=true&x=", "?recursive=true&x=", "..", "%2e", "a\x1bb"):
            done = yaimctl(lab, command, name)
            assert done.returncode == 2 and one_line_or_less(done), (command, name, done)
            assert "\x1b" not in done.stderr
    assert set(map(str, POOL)) <= lab.keys().pool()
    assert {"n1", "n2", "n3"} <= lab.keys().nodes()

    restarted = nodes[2]
    restarted.signal(signal.SIGTERM)
    assert restarted.wait_exit(5) == 0, restarted.log()[-3000:]
    restarted.start()
    lab.observer.wait_for(settled(range(1, 4)), 15, "the pool to settle after a restart")
    restarted.signal(signal.SIGTERM)
    assert restarted.wait_exit(5) == 0, restarted.log()[-3000:]
    cleanup = lab.lab.run(
        restarted.ns,
        [sys.executable, "-m", "yaim", "--cleanup", "-c", str(restarted.config_path)],
        check=False,
    )
    assert cleanup.returncode == 0, cleanup.stderr
    assert "Traceback" not in cleanup.stderr
