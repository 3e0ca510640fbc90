"""`yaimctl migrate` against a real etcd serving both APIs: the v2 layout's pool and drain
keys copied into the v3 layout (marks and node keys not), skipped entries said once,
a second run that changes nothing, a dry run that writes nothing; `--remove-v2` refused
while a node runs on v2 or v3 lacks a key, then deleting yaim's v2 keys and the
directories left empty, never a key that is not yaim's; and, on etcd 3.5, etcd's own
`etcdutl check v2store` clean afterwards.

Each test has a namespace of its own (`ymg...`): --remove-v2 deletes the namespace
directory when it is left empty.
"""

from __future__ import annotations

import ipaddress
import json
import secrets

import pytest
import yaml

from lab.etcd import ClusterKeys, EtcdCluster, check_v2store, etcdutl
from tests.integration.conftest import key_of
from yaim import ctl

A, B = ipaddress.ip_address("198.51.100.1"), ipaddress.ip_address("2001:db8::1")
OUTSIDE = "192.0.2.50"  # an address, but outside allowed-networks


def layout(etcd, tmp_path, dcs_type="etcd3", **settings):
    """A config of a fresh cluster in a namespace of its own: (yaimctl's argv head, the
    v2 ClusterKeys, the v3 one); the cluster's root is `keys.root`."""
    namespace = "ymg" + secrets.token_hex(3)
    values = {
        "dcs-type": dcs_type,
        "dcs-endpoints": etcd.endpoints,
        "dcs-namespace": namespace,
        "dcs-clustername": "c1",
        "interface": "lo",
        "checker-type": "none",
        "allowed-networks": ["198.51.100.0/24", "2001:db8::/32"],
        "retry-after": 50,
        **settings,
    }
    path = tmp_path / f"{namespace}.yml"
    path.write_text(yaml.safe_dump(values))
    root = f"/{namespace}/c1"
    return ["-c", str(path)], ClusterKeys(etcd, "etcd", root), ClusterKeys(etcd, "etcd3", root)


def run(capsys, argv, *args):
    """(exit status, stdout, stderr) of `yaimctl ARGV migrate ARGS`."""
    status = ctl.main([*argv, "migrate", *args])
    out, err = capsys.readouterr()
    return status, out, err


def v2_layout(etcd, keys):
    """The operator's v2 pool (two addresses, two entries the daemon skips), a drained
    node, and what a running v2 node has: its node key and a mark."""
    for name in (A, B, "bogus", OUTSIDE):
        keys.add(name)
    etcd.put(f"{keys.root}/drain/n3", "drained")
    etcd.put(f"{keys.root}/nodes/n1", "healthy", ttl=120)
    etcd.put(f"{keys.root}/ips/{A}/marked", "n1", ttl=120)


def v2_keys(etcd, key):
    """Every v2 key below `key`, directories with a trailing `/`."""
    found = set()
    todo = [etcd.get(key, recursive=True) or {}]
    while todo:
        node = todo.pop()
        found.update(n["key"] + ("/" if n.get("dir") else "") for n in node.get("nodes", []))
        todo += node.get("nodes", [])
    return found


def v3_drained(etcd, root, node):
    return key_of(etcd, f"{root}/drain/{node}") is not None


@pytest.mark.parametrize("dcs_type", ["etcd3", "etcd"])
def test_migrate_copies_the_pool_and_drain_keys_once_and_a_dry_run_writes_nothing(
    etcd, tmp_path, capsys, dcs_type
):
    argv, v2, v3 = layout(etcd, tmp_path, dcs_type)
    v2_layout(etcd, v2)
    root = v2.root

    status, out, err = run(capsys, argv, "--dry-run")
    assert (status, err) == (0, ""), err
    assert f"would copy {root}/ips/{A} (pool address)" in out.splitlines()
    assert out.count("skipped") == 2 and "nothing written" in out
    assert v3.pool() == set() and not v3_drained(etcd, root, "n3")

    status, out, err = run(capsys, argv)
    assert (status, err) == (0, ""), err
    lines = out.splitlines()
    assert lines[:2] == [
        f"skipped pool entry '{OUTSIDE}': outside allowed-networks (not copied)",
        "skipped pool entry 'bogus': not an IP address (not copied)",
    ]
    assert lines[2:5] == [
        f"copied {root}/ips/{A} (pool address)",
        f"copied {root}/ips/{B} (pool address)",
        f"copied {root}/drain/n3 (drain key)",
    ]
    assert lines[5].startswith(f"copied 3 keys of {root} from the v2 layout to the v3 one (0 there")
    assert v3.pool() == {str(A), str(B)} and v3_drained(etcd, root, "n3")
    assert v3.holders() == {} and v3.nodes() == set()  # the nodes' own: not copied
    assert v2.pool() == {str(A), str(B), "bogus", OUTSIDE}  # v2 as it was

    status, out, err = run(capsys, argv, "--json")
    assert (status, err) == (0, ""), err
    assert json.loads(out) == {
        "dry_run": False,
        "copied": [],
        "present": 3,
        "skipped": [
            {"entry": OUTSIDE, "reason": "outside allowed-networks"},
            {"entry": "bogus", "reason": "not an IP address"},
        ],
    }
    assert run(capsys, argv)[1].splitlines()[-1] == (
        f"nothing to copy: the v3 layout of {root} has every pool address and drain key of"
        " the v2 one (3 keys)"
    )


def test_remove_v2_refuses_while_v2_is_live_then_deletes_only_yaims_keys(etcd, tmp_path, capsys):
    argv, v2, v3 = layout(etcd, tmp_path)
    v2_layout(etcd, v2)
    root, namespace = v2.root, v2.root.rsplit("/", 1)[0]
    etcd.put(f"{root}/notes", "an operator's own key in the cluster directory")
    etcd.put(f"{namespace}/elsewhere", "somebody else's key beside it")
    before = v2_keys(etcd, namespace)

    status, out, err = run(capsys, argv, "--remove-v2")
    assert (status, out) == (2, ""), out
    (line,) = err.splitlines()
    assert line.startswith("yaimctl: refused, nothing deleted: v2 is still in use at " + root)
    for part in ("node keys n1", f"marks of {A} (held by n1)", f"pool addresses {A}, {B}"):
        assert part in line
    assert "drain keys n3: run yaimctl migrate first" in line

    assert run(capsys, argv)[0] == 0  # migrated; the v2 node still runs
    etcd.delete(f"{root}/nodes/n1")
    status, _, err = run(capsys, argv, "--remove-v2", "--dry-run")
    assert status == 2 and f"marks of {A} (held by n1)" in err and "lacks" not in err
    etcd.delete(f"{root}/ips/{A}/marked")  # the last v2 node is gone
    assert v2_keys(etcd, namespace) == before - {f"{root}/nodes/n1", f"{root}/ips/{A}/marked"}

    status, out, err = run(capsys, argv, "--remove-v2", "--dry-run")
    assert (status, err) == (0, ""), err
    assert f"would delete {root}/ips/{A}/ (pool directory)" in out.splitlines()
    assert etcd.get(f"{root}/ips/{A}") is not None  # a dry run

    status, out, err = run(capsys, argv, "--remove-v2")
    assert (status, err) == (0, ""), err
    lines = out.splitlines()
    assert f"deleted {root}/ips/bogus/ (pool directory, never copied: not an IP address)" in lines
    assert f"deleted {root}/drain/ (directory)" in lines
    assert lines[-3:] == [
        f"kept {root}/notes: not a key of yaim's layout",
        f"kept {namespace}/elsewhere: not this cluster's",
        f"deleted 8 v2 keys of {root}",
    ]
    names = {node["key"] for node in etcd.get(namespace, recursive=True)["nodes"]}
    assert names == {root, f"{namespace}/elsewhere"}
    assert [node["key"] for node in etcd.get(root)["nodes"]] == [f"{root}/notes"]
    assert v3.pool() == {str(A), str(B)}  # v3 untouched

    etcd.delete(f"{root}/notes")
    etcd.delete(f"{namespace}/elsewhere")
    status, out, err = run(capsys, argv, "--remove-v2", "--json")
    assert (status, err) == (0, "")
    assert json.loads(out) == {
        "dry_run": False,
        "deleted": [f"{root}/", f"{namespace}/"],
        "kept": [],
    }
    assert etcd.get(namespace) is None
    assert (
        run(capsys, argv, "--remove-v2")[1] == f"nothing to delete: no v2 key of {root} is left\n"
    )


def test_a_key_the_listing_does_not_show_keeps_its_directory_and_exits_1(etcd, tmp_path, capsys):
    """etcd's v2 listings hide names that start with `_`: the cluster directory's delete,
    of an empty directory only, finds it and keeps it."""
    argv, v2, _ = layout(etcd, tmp_path)
    v2.add(A)
    etcd.put(f"{v2.root}/_hidden", "somebody's")
    assert run(capsys, argv)[0] == 0
    status, out, err = run(capsys, argv, "--remove-v2")
    assert (status, out) == (1, ""), out
    assert f"deleted {v2.root}/ips/{A}/ (pool directory)" in err
    assert f"kept {v2.root}/: not empty: a key the listing did not show is in it" in err
    assert etcd.get(f"{v2.root}/_hidden")["value"] == "somebody's"


@pytest.fixture
def no_v2():
    with EtcdCluster(size=1, v2=False) as cluster:
        yield cluster


def test_a_server_without_v2_is_refused_as_nothing_to_migrate_from(no_v2, tmp_path, capsys):
    argv, _, v3 = layout(no_v2, tmp_path, **{"retry-num": 1})
    for args in ((), ("--remove-v2",)):
        status, out, err = run(capsys, argv, *args)
        assert (status, out) == (2, ""), (out, err)
        (line,) = err.splitlines()
        assert line.startswith("yaimctl: refused, nothing changed: no v2 layout to read: ")
        assert no_v2.endpoints[0] in line and "serves no v2 API" in line
    assert v3.pool() == set()


@pytest.mark.skipif(
    etcdutl() is None,
    reason="needs YAIM_TEST_ETCD on an etcd 3.5 whose etcdutl beside it has `check v2store`"
    " (python -m lab.etcd_releases; YAIM_TEST_ETCD=.cache/etcd/sid/usr/bin/etcd)",
)
def test_etcdutl_check_v2store_passes_after_remove_v2(tmp_path, capsys):
    """etcd 3.6 starts only on a v2 store without yaim's keys: `etcdutl check v2store` of
    a stopped 3.5 member says so, before (it finds them) and after --remove-v2. The tool
    reads the v2 store of the member's last snapshot: one is taken every few changes."""
    with EtcdCluster(size=1, base_dir=tmp_path, snapshot_count=SNAPSHOT_COUNT) as etcd:
        argv, v2, _ = layout(etcd, tmp_path)
        v2_layout(etcd, v2)
        etcd.delete(f"{v2.root}/nodes/n1")
        etcd.delete(f"{v2.root}/ips/{A}/marked")
        etcd.snapshot_past()
        data_dir = etcd.members[0].data_dir
        etcd.stop_member(0)
        dirty = check_v2store(data_dir)
        assert dirty.returncode != 0, dirty.stdout
        assert "custom content" in dirty.stdout + dirty.stderr, (dirty.stdout, dirty.stderr)
        etcd.start_member(0)
        assert run(capsys, argv)[0] == 0
        assert run(capsys, argv, "--remove-v2")[0] == 0
        etcd.snapshot_past()
        etcd.stop_member(0)
        clean = check_v2store(data_dir)
        assert clean.returncode == 0, (clean.stdout, clean.stderr)
        with capsys.disabled():
            print("before:", dirty.stdout.strip(), dirty.stderr.strip()[-300:])
            print("after:", clean.stdout.strip())


SNAPSHOT_COUNT = 5
