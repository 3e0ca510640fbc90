"""yaimctl against a real etcd and running daemons: every command, its JSON and tables,
refusals that change nothing, an unreachable DCS, and drain/undrain end to end.

yaimctl runs in node 1's namespace with node 1's yaim.yml, as an operator on that
host would, with either DCS API. Timing as in test_daemon: interval 500 ms, ttl 2000 ms.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import time

import pytest
import yaml

from lab.etcd import _free_port
from lab.util import wait_until
from tests.integration.conftest import (
    CLEAN_BOUND,
    INTERVAL,
    POOL,
    TTL,
    holding,
    ok,
    settled,
    start,
    unchanged_for,
    yaimctl,
)
from yaim import cli, config, ctl

EXTRA = ipaddress.ip_address("198.51.100.120")
OUTSIDE = "192.0.2.50"  # valid, but outside the lab's allowed-networks


@pytest.fixture(params=["etcd", "etcd3"])
def checked(request, lab):
    """The lab, its daemons and yaimctl speaking each DCS API in turn; at the end, no
    address was on two nodes at any moment of the test."""
    lab.dcs_type = request.param
    yield lab
    print(lab.logs())  # pytest shows it when the test fails
    assert lab.observer.violations == [], f"two holders: {lab.observer.violations[:5]}"


def as_json(lab, *args: str):
    return json.loads(ok(lab, *args, "--json"))


@pytest.mark.netns
def test_ips_nodes_and_status_show_holders_as_the_interfaces_do(checked):
    lab = checked
    start(lab)
    holders = {a: f"n{h[0]}" for a, h in lab.observer.holders().items()}

    ips = as_json(lab, "ips")
    assert [entry["address"] for entry in ips] == [str(a) for a in POOL]
    assert {ipaddress.ip_address(e["address"]): e["holder"] for e in ips} == holders
    # the mark's own TTL (v2) or its holder's lease's (v3), whole seconds either way
    assert all(e["ttl"] is not None and 0 <= e["ttl"] <= TTL / 1000 for e in ips), ips
    table = ok(lab, "ips").splitlines()
    assert table[0].split() == ["ADDRESS", "HOLDER", "TTL"]
    assert {ipaddress.ip_address(line.split()[0]): line.split()[1] for line in table[1:]} == holders

    nodes = as_json(lab, "nodes")
    assert [(n["name"], n["healthy"], n["drained"]) for n in nodes] == [
        ("n1", True, False),
        ("n2", True, False),
        ("n3", True, False),
    ]
    for entry in nodes:
        mine = sorted((a for a, h in holders.items() if h == entry["name"]), key=int)
        assert entry["addresses"] == [str(a) for a in mine]
    table = ok(lab, "nodes").splitlines()
    assert table[0].split() == ["NODE", "HEALTHY", "DRAINED", "ADDRESSES", "OUT"]
    assert [line.split()[:3] for line in table[1:]] == [[f"n{i}", "yes", "no"] for i in (1, 2, 3)]

    status = as_json(lab, "status")
    assert status["cluster"] == "/service/yaim"
    assert status["endpoint"] == lab.etcd.endpoints[0]
    assert status["problems"] == [] and len(status["ips"]) == len(POOL)
    screen = ok(lab, "status")
    print(screen)
    assert "3 taking part: n1, n2, n3" in screen and "no problems seen" in screen
    assert all(str(a) in screen for a in POOL)


@pytest.mark.netns
def test_ips_add_and_remove_and_refusals_that_change_nothing(checked):
    lab = checked
    start(lab)
    before = lab.keys().pool()
    for args in (
        ("ips", "add", str(EXTRA), OUTSIDE),
        ("ips", "add", "198.51.100.300"),
        ("ips", "remove", OUTSIDE, "--json"),
        ("drain", "a/b"),
    ):
        refused = yaimctl(lab, *args)
        assert refused.returncode == 2, (args, refused.stdout, refused.stderr)
        assert refused.stdout == "" and len(refused.stderr.splitlines()) == 1, refused.stderr
        assert "refused" in refused.stderr
    assert "outside allowed-networks" in yaimctl(lab, "ips", "add", OUTSIDE).stderr
    assert lab.keys().pool() == before
    assert yaimctl(lab, "ips", "bogus").returncode == 2  # argparse: unknown action

    added_at = time.monotonic()
    assert as_json(lab, "ips", "add", str(EXTRA), str(POOL[0])) == {
        "added": [str(EXTRA)],
        "present": [str(POOL[0])],
    }
    sample = lab.observer.wait_for(settled([1, 2, 3], [*POOL, EXTRA]), CLEAN_BOUND + 5, "EXTRA")
    assert sample.time - added_at <= CLEAN_BOUND

    removed_at = time.monotonic()
    assert ok(lab, "ips", "remove", str(POOL[0]), "198.51.100.121").splitlines() == [
        f"{POOL[0]}: removed",
        "198.51.100.121: not in the pool",
    ]
    sample = lab.observer.wait_for(lambda h: POOL[0] not in h, CLEAN_BOUND + 5, "POOL[0] gone")
    assert sample.time - removed_at <= CLEAN_BOUND
    lab.observer.wait_for(settled([1, 2, 3], [*POOL[1:], EXTRA]), 5, "rebalance")
    assert [e["address"] for e in as_json(lab, "ips")] == [str(a) for a in [*POOL[1:], EXTRA]]


def test_an_unreachable_dcs_exits_1_with_one_line(tmp_path, capsys):
    path = tmp_path / "yaim.yml"
    closed = f"http://127.0.0.1:{_free_port()}"
    settings = {
        "dcs-endpoints": [closed],
        "interface": "lo",
        "checker-type": "none",
        "retry-after": 10,
        "status-listen": f"127.0.0.1:{_free_port()}",  # no node on this host
    }
    path.write_text(yaml.safe_dump(settings))
    for args in (
        ["ips"],
        ["ips", "add", "198.51.100.1"],
        ["nodes"],
        ["drain", "n1"],
        ["status"],
        ["migrate"],
        ["migrate", "--remove-v2"],
    ):
        assert ctl.main(["-c", str(path), *args]) == 1
        err = capsys.readouterr().err
        lines = err.splitlines()
        assert lines[0].startswith("yaimctl: DCS unreachable: "), err
        if args == ["status"]:  # adds what this host's node says of its hold: here, nothing
            assert len(lines) == 2 and lines[1].startswith("yaimctl: no word from this host"), err
        else:
            assert len(lines) == 1, err
    # input is checked before the DCS is asked: refused, not unreachable
    assert ctl.main(["-c", str(path), "ips", "add", "nonsense", "--json"]) == 2
    assert ctl.main(["-c", str(tmp_path / "missing.yml"), "ips"]) == 2


def test_both_commands_find_the_file_yaim_config_names_and_yaimctl_falls_back_to_etc(
    tmp_path, capsys, monkeypatch
):
    closed = f"http://127.0.0.1:{_free_port()}"
    settings = {"dcs-endpoints": [closed], "interface": "lo", "checker-type": "none"}
    text = yaml.safe_dump({**settings, "retry-after": 10})
    named, system, empty = tmp_path / "named.yml", tmp_path / "system.yml", tmp_path / "empty"
    named.write_text(text)
    empty.mkdir()
    monkeypatch.chdir(empty)  # no ./yaim.yml here
    monkeypatch.setattr(config, "SYSTEM_FILE", str(system))
    monkeypatch.setenv("YAIM_CONFIG", str(named))
    assert cli.main(["--check-config"]) == 0 and closed in capsys.readouterr().out
    assert ctl.main(["ips"]) == 1, "the named file was read: its DCS does not answer"
    capsys.readouterr()
    monkeypatch.delenv("YAIM_CONFIG")
    assert ctl.main(["ips"]) == 2, "no ./yaim.yml, no system file"
    assert str(system) in capsys.readouterr().err
    system.write_text(text)
    assert ctl.main(["ips"]) == 1, "the system file was read"
    assert cli.main(["--check-config"]) == 2, "the daemon reads ./yaim.yml only"
    assert "yaim.yml" in capsys.readouterr().err


@pytest.mark.netns
def test_drain_moves_addresses_cleanly_and_survives_a_restart(checked):
    lab = checked
    nodes = start(lab)
    drained_at = time.monotonic()
    assert as_json(lab, "drain", "n1") == {"node": "n1", "drained": True, "changed": True}
    sample = lab.observer.wait_for(settled([2, 3]), CLEAN_BOUND + 5, "n1's addresses to move")
    print(f"drain: addresses moved in {sample.time - drained_at:.2f} s")
    assert sample.time - drained_at <= CLEAN_BOUND
    n1 = next(n for n in as_json(lab, "nodes") if n["name"] == "n1")
    assert n1 == {
        "name": "n1",
        "healthy": True,
        "drained": True,
        "addresses": [],
        "peer": None,
        "out": None,
        "weight": 1,
        "joining": False,
    }
    log = nodes[0].log()
    assert "drained node n1: releasing" in log
    assert "on node n1: the node is drained" in log  # one "released" line per address

    nodes[0].signal(signal.SIGTERM)
    assert nodes[0].wait_exit(3) == 0
    restarted_at = time.monotonic()
    nodes[0].start()
    wait_until(
        lambda: "drained node n1" in nodes[0].log().rsplit("$ ", 1)[1],
        10,
        what="the restarted n1 to see its drain key",
    )
    wait_until(
        lambda: any(n["name"] == "n1" and n["healthy"] for n in as_json(lab, "nodes")),
        10,
        what="the restarted n1 to be healthy",
    )
    unchanged_for(lab, lab.observer.holders(), time.monotonic(), 4 * INTERVAL / 1000)
    since = [s.holders for s in lab.observer.samples if s.time > restarted_at]
    assert not [h for h in since if any(1 in nodes for nodes in h.values())]

    assert ok(lab, "undrain", "n1") == "n1: undrained\n"
    sample = lab.observer.wait_for(settled([1, 2, 3]), CLEAN_BOUND + 5, "an even spread again")
    assert sorted(len(holding(lab, i)) for i in (1, 2, 3)) == [2, 2, 2]
    assert "undrained node n1" in nodes[0].log()
    assert ok(lab, "undrain", "n1") == "n1: was not drained\n"
