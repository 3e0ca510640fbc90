"""yaimctl without a DCS: the cluster summary, tables, input checks, and every command
against an in-memory store standing in for the backend."""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Dict, Optional, Set

import pytest
import yaml

from yaim import balancer, ctl, dcs
from yaim.errors import DCSError
from yaim.view import Mark, Snapshot, parse_snapshot

A, B, C = (ipaddress.ip_address(f"198.51.100.{i}") for i in (1, 2, 3))
V6 = ipaddress.ip_address("2001:db8::1")
ALLOWED = (ipaddress.ip_network("198.51.100.0/24"), ipaddress.ip_network("2001:db8::/32"))


class Memory:
    """The operations yaimctl uses, on a dict; `down` makes every one fail like etcd gone."""

    root = "/service/yaim"
    endpoint = "http://192.0.2.1:2379"

    def __init__(self) -> None:
        self.pool: Set[str] = set()
        self.marks: Dict[str, Mark] = {}
        self.nodes: Set[str] = set()
        self.drained: Set[str] = set()
        self.out: Dict[str, str] = {}
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise DCSError("read /service/yaim via http://192.0.2.1:2379: refused (after 3 tries)")

    def read(self) -> Snapshot:
        self._check()
        return Snapshot(
            frozenset(self.pool),
            dict(self.marks),
            frozenset(self.nodes),
            frozenset(self.drained),
            out=dict(self.out),
        )

    read_with_ttls = read  # the marks here carry their TTLs

    def add_address(self, address) -> bool:
        self._check()
        new = str(address) not in self.pool
        self.pool.add(str(address))
        return new

    def remove_address(self, address) -> bool:
        self._check()
        self.marks.pop(str(address), None)
        if str(address) not in self.pool:
            return False
        self.pool.remove(str(address))
        return True

    def drain(self, node: str) -> None:
        self._check()
        self.drained.add(node)

    def undrain(self, node: str) -> bool:
        self._check()
        if node not in self.drained:
            return False
        self.drained.remove(node)
        return True


@pytest.fixture
def store(monkeypatch) -> Memory:
    memory = Memory()
    monkeypatch.setattr(dcs, "connect", lambda config, **kw: memory)
    return memory


@pytest.fixture
def run(tmp_path, capsys):
    """yaimctl ARGS with a config allowing ALLOWED: (stdout, stderr); the exit status must
    be `expect`."""
    path = tmp_path / "yaim.yml"
    allowed = [str(net) for net in ALLOWED]
    path.write_text(
        yaml.safe_dump({"interface": "eth0", "checker-type": "none", "allowed-networks": allowed})
    )

    def yaimctl(*args: str, expect: int = 0):
        status = ctl.main(["-c", str(path), *args])
        out, err = capsys.readouterr()
        assert status == expect, (args, out, err)
        return out, err

    return yaimctl


def cluster(store: Optional[Memory] = None) -> Memory:
    """Pool A, B, C, V6 and an invalid entry; n1 holds A and C, n2 (drained) B; n3 is up."""
    store = store or Memory()
    store.pool |= {str(A), str(B), str(C), str(V6), "junk"}
    store.marks.update({str(A): Mark("n1", 2), str(C): Mark("n1", 3), str(B): Mark("n2", 1)})
    store.marks["198.51.100.99"] = Mark("n3", 2)  # a mark outside the pool is ignored
    store.nodes |= {"n1", "n2", "n3"}
    store.drained.add("n2")
    return store


# --- pure parts ---


def test_summarize_lists_the_pool_with_holders_and_every_node():
    summary = ctl.summarize(cluster().read(), ALLOWED)
    assert summary.entries == (
        ctl.Entry(A, "n1", 2),
        ctl.Entry(B, "n2", 1),
        ctl.Entry(C, "n1", 3),
        ctl.Entry(V6, None, None),
    )
    assert summary.nodes == (
        ctl.Node("n1", True, False, (A, C)),
        ctl.Node("n2", True, True, (B,)),
        ctl.Node("n3", True, False, ()),
    )
    assert [r.name for r in summary.refused] == ["junk"]


def test_a_holder_without_node_key_is_listed_and_flagged():
    store = cluster()
    store.nodes.discard("n1")
    summary = ctl.summarize(store.read(), ALLOWED)
    assert summary.nodes[0] == ctl.Node("n1", False, False, (A, C))
    assert "n1 holds addresses but has no node key (gone or unhealthy)" in ctl.problems(summary)


def test_a_node_out_is_listed_with_its_reason_until_its_node_key_is_back(store, run):
    cluster(store)
    store.nodes.discard("n3")
    store.out["n3"] = "link down: lan0 has no carrier"
    store.out["n1"] = "not healthy: a late write"  # n1 has its node key again: it says more
    nodes = {n["name"]: n for n in json.loads(run("nodes", "--json")[0])}
    assert nodes["n3"] == {
        "name": "n3",
        "healthy": False,
        "drained": False,
        "addresses": [],
        "peer": None,
        "out": "link down: lan0 has no carrier",
        "weight": 1,
        "joining": False,
    }
    assert nodes["n1"]["healthy"] and nodes["n1"]["out"] is None
    table = run("nodes")[0].splitlines()
    assert table[3].split(None, 4) == ["n3", "no", "no", "-", "link down: lan0 has no carrier"]
    assert "out      n3: link down: lan0 has no carrier" in run("status")[0].splitlines()
    store.out.clear()
    store.nodes.discard("n3")  # gone without a word (stopped, crashed): not listed
    assert [n["name"] for n in json.loads(run("nodes", "--json")[0])] == ["n1", "n2"]


def test_tables_are_aligned():
    text = ctl.nodes_table(ctl.summarize(cluster().read(), ALLOWED))
    assert text.splitlines() == [
        "NODE  HEALTHY  DRAINED  ADDRESSES                   OUT",
        "n1    yes      no       198.51.100.1, 198.51.100.3  -",
        "n2    yes      yes      198.51.100.2                -",
        "n3    yes      no       -                           -",
    ]
    assert ctl.table(("A", "LONG"), [("xxx", "y")]) == "A    LONG\nxxx  y"


def test_addresses_are_stored_canonical_and_refused_all_or_nothing():
    assert ctl.parse_addresses(["2001:DB8:0::1", "198.51.100.7"], ALLOWED) == [
        V6,
        ipaddress.ip_address("198.51.100.7"),
    ]
    with pytest.raises(ctl.Refused) as refused:
        ctl.parse_addresses(["198.51.100.7", "192.0.2.1", "x"], ALLOWED)
    assert str(refused.value) == (
        "refused, nothing changed: 192.0.2.1: outside allowed-networks; x: not an IP address"
    )
    assert ctl.parse_addresses(["192.0.2.1"], ()) == [ipaddress.ip_address("192.0.2.1")]


@pytest.mark.parametrize(
    "argv",
    [["--json", "ips"], ["ips", "--json"], ["ips", "add", "198.51.100.1", "--json"]],
)
def test_json_is_accepted_before_and_after_the_command(argv):
    assert ctl.parse_args(argv).json is True


@pytest.mark.parametrize("argv", [[], ["ips", "add"], ["drain"], ["frobnicate"], ["ips", "x"]])
def test_bad_command_lines_exit_2(argv):
    with pytest.raises(SystemExit) as exited:
        ctl.parse_args(argv)
    assert exited.value.code == 2


# --- commands against the in-memory store ---


def test_ips_json_and_table(store, run):
    cluster(store)
    out, _ = run("ips", "--json")
    assert json.loads(out)[:2] == [
        {"address": "198.51.100.1", "holder": "n1", "ttl": 2},
        {"address": "198.51.100.2", "holder": "n2", "ttl": 1},
    ]
    assert json.loads(out)[3] == {"address": "2001:db8::1", "holder": None, "ttl": None}
    out, _ = run("ips")
    assert out.splitlines()[1].split() == ["198.51.100.1", "n1", "2s"]
    assert out.splitlines()[4].split() == ["2001:db8::1", "-", "-"]


def test_ips_add_and_remove(store, run):
    assert run("ips", "add", "198.51.100.1", "2001:DB8::1") == (
        "198.51.100.1: added\n2001:db8::1: added\n",
        "",
    )
    out, _ = run("ips", "add", "198.51.100.1", "198.51.100.2", "--json")
    assert json.loads(out) == {"added": ["198.51.100.2"], "present": ["198.51.100.1"]}
    out, _ = run("ips", "remove", "198.51.100.2", "198.51.100.9")
    assert out == "198.51.100.2: removed\n198.51.100.9: not in the pool\n"
    assert store.pool == {"198.51.100.1", "2001:db8::1"}


def test_refused_input_exits_2_and_changes_nothing(store, run):
    cluster(store)
    before = store.read()
    for args in (
        ("ips", "add", "198.51.100.8", "192.0.2.1"),
        ("ips", "remove", "not-an-address"),
        ("drain", "a b"),
        ("undrain", "x/y", "--json"),
    ):
        out, err = run(*args, expect=2)
        assert out == "", args
        assert err.startswith("yaimctl: refused") and err.count("\n") == 1, err
    assert store.read() == before


def test_drain_and_undrain(store, run):
    cluster(store)
    out, _ = run("drain", "n3", "--json")
    assert json.loads(out) == {"node": "n3", "drained": True, "changed": True}
    assert store.drained == {"n2", "n3"}
    assert run("undrain", "n2")[0] == "n2: undrained\n"
    assert run("undrain", "n2")[0] == "n2: was not drained\n"
    assert "note: no node n9 is in the DCS now" in run("drain", "n9")[0]


def test_nodes_and_status(store, run):
    cluster(store)
    out, _ = run("nodes", "--json")
    assert json.loads(out)[1] == {
        "name": "n2",
        "healthy": True,
        "drained": True,
        "addresses": ["198.51.100.2"],
        "peer": None,
        "out": None,
        "weight": 1,
        "joining": False,
    }
    out, _ = run("status")
    lines = out.splitlines()
    assert lines[:6] == [
        "cluster  /service/yaim via http://192.0.2.1:2379",
        "pool     4 addresses, 3 held, none over its holder's share",
        "nodes    2 taking part: n1, n3",
        "drained  n2",
        "out      -",
        "failsafe off",
    ]
    assert "! refused pool entry 'junk': not an IP address" in lines
    assert "! not held by any node: 2001:db8::1" in lines
    out, _ = run("status", "--json")
    value = json.loads(out)
    assert value["cluster"] == "/service/yaim" and len(value["ips"]) == 4
    assert len(value["problems"]) == 2


def test_an_unreachable_dcs_exits_1_with_one_line(store, run):
    store.down = True
    for args in (("ips",), ("ips", "add", "198.51.100.1"), ("nodes",), ("drain", "n1")):
        out, err = run(*args, expect=1)
        assert out == ""
        assert (
            err.startswith("yaimctl: DCS unreachable: read /service/yaim") and err.count("\n") == 1
        )


def test_status_says_where_the_failsafe_is_on_and_warns_of_a_node_without_it():
    peer = '{"peer": "198.51.100.1:9721"}'
    snapshot = Snapshot(
        pool=frozenset(),
        marks={},
        nodes=frozenset({"n1", "n2", "n3"}),
        node_values={"n1": peer, "n2": peer, "n3": "healthy"},
    )
    cluster = ctl.summarize(snapshot)
    assert [n.peer for n in cluster.nodes] == ["198.51.100.1:9721", "198.51.100.1:9721", None]
    assert ctl.failsafe_text(cluster) == "on for n1, n2 only"
    assert ctl.problems(cluster) == [
        "failsafe off on n3: a whole-etcd outage drops every address, as the hold needs"
        " every node's promise"
    ]
    everywhere = ctl.summarize(snapshot._replace(node_values={"n1": peer, "n2": peer, "n3": peer}))
    assert ctl.failsafe_text(everywhere) == "on (every node)" and ctl.problems(everywhere) == []


class OwnStatus(BaseHTTPRequestHandler):
    """A node's GET /status as the daemon answers it during an outage (the body: `state`)."""

    state: bytes = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(self.state)

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize(
    "failsafe, says",
    [
        ({"on": True, "holding": True, "hold_left": 1.7}, "failsafe hold, keeping 198.51.100.1"),
        ({"on": True, "holding": False}, "failsafe on, not holding"),
        ({"on": False}, "failsafe off, holding 198.51.100.1"),
    ],
)
def test_status_without_etcd_gives_the_own_word_of_this_hosts_node(failsafe, says):
    state = {"node": "n1", "addresses": ["198.51.100.1"], "failsafe": failsafe}
    handler = type("Handler", (OwnStatus,), {"state": json.dumps(state).encode()})
    server = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.handle_request, daemon=True).start()
    try:
        word = ctl.own_word(f"127.0.0.1:{server.server_port}")
    finally:
        server.server_close()
    assert word.startswith("node n1 (its http://127.0.0.1:") and says in word


def test_no_word_when_nobody_answers():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    assert ctl.own_word(f"127.0.0.1:{port}").startswith("no word from this host's node")


# --- yaimctl why and rebalance, against a Memory whose nodes follow the plan ---


class Cluster(Memory):
    """A Memory whose participants carry out their plans at every read, `rebalance: manual`
    ones as auto only while the rebalance key is there; `stuck` keeps them from moving."""

    def __init__(self) -> None:
        super().__init__()
        self.rebalance: Optional[str] = None
        self.asked = []
        self.stuck = False

    def read(self):
        snapshot = super().read()._replace(rebalance=self.rebalance)
        view, _ = parse_snapshot(snapshot)
        if not self.stuck:
            for node in sorted(view.nodes):
                p = balancer.plan(view, node, rebalance=view.rebalance)
                for address in p.release:
                    del self.marks[str(address)]
                for address in p.take:
                    self.marks[str(address)] = Mark(node, 9)
        return snapshot

    read_with_ttls = read

    def ask_rebalance(self, note: str, ttl: int) -> None:
        self.rebalance = note
        self.asked.append(ttl)

    def end_rebalance(self, note: str) -> bool:
        ended, self.rebalance = self.rebalance == note, None
        return ended


@pytest.fixture
def manual(monkeypatch) -> Cluster:
    """n1 holds A, B and C; n3 joined and holds nothing; all manual."""
    memory = Cluster()
    memory.pool |= {str(A), str(B), str(C)}
    memory.marks.update({str(a): Mark("n1", 2) for a in (A, B, C)})
    memory.nodes |= {"n1", "n3"}
    monkeypatch.setattr(dcs, "connect", lambda config, **kw: memory)
    return memory


def test_why_names_the_holder_the_plan_and_each_other_node(store, run):
    cluster(store).marks[str(A)] = Mark("n1", 2, 17)  # made at index 17, 2 s left
    out, _ = run("why", str(A))
    lines = out.splitlines()
    assert lines[0].startswith(f"{A}: held by n1")
    assert "made at etcd index/revision 17" in out
    rows = {line.split()[0]: line for line in lines[1:] if line.split()[:1] in (["n1"], ["n2"])}
    assert "holds it" in rows["n1"] and "drained" in rows["n2"]
    value = json.loads(run("why", str(A), "--json")[0])
    assert value["holder"] == "n1" and value["planned"] == "n1" and value["mark"] == 17
    assert sorted(n["node"] for n in value["nodes"]) == ["n1", "n3"]
    assert value["outside"] == [{"node": "n2", "why": "drained"}]
    assert {n["rank"] for n in value["nodes"]} == {1, 2}
    free = json.loads(run("why", str(V6), "--json")[0])
    assert free["holder"] is None and free["planned"] == "n3"


def test_why_of_an_address_outside_the_pool_says_so_and_a_bad_one_is_refused(store, run):
    cluster(store)
    assert run("why", "198.51.100.77")[0].startswith("198.51.100.77: not in the pool")
    assert "not an IP address" in run("why", "bogus", expect=2)[1]


def test_rebalance_moves_the_fewest_addresses_then_takes_its_key_away(manual, run):
    before = run("status")[0]
    assert "1 address over their holders' shares" in before.splitlines()[1]
    out, _ = run("rebalance", "--json")
    value = json.loads(out)
    assert value["settled"] and len(value["moved"]) == 1
    assert value["moved"][0]["from"] == "n1" and value["moved"][0]["to"] == "n3"
    assert manual.rebalance is None and manual.asked == [30]
    assert run("rebalance")[0] == "nothing to move: the spread is settled\n"


def test_a_rebalance_that_does_not_settle_in_time_exits_1_and_ends_its_request(manual, run):
    manual.stuck = True
    _, err = run("rebalance", "--timeout", "0.5", expect=1)
    assert "not settled within 0.5 s: moved 0 so far" in err
    assert manual.rebalance is None
