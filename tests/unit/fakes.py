"""Fakes shared by the unit tests of the actuator, the balancer thread and shutdown: an
interface as a dict, the DCS as dicts (with numbered marks and `released` notes), and a
balancer thread of node n1 wired to them."""

from __future__ import annotations

import ipaddress
import itertools
import threading
from types import SimpleNamespace
from typing import Dict, List, Optional

from yaim import conflicts
from yaim.actuator import AddressTool, Configured
from yaim.claims import Interface, Ledger
from yaim.dcs import DCS
from yaim.errors import DCSError
from yaim.state import NodeState
from yaim.threads import balancer as balancer_thread
from yaim.view import Mark, Release, Snapshot

V4 = ipaddress.ip_address("198.51.100.7")
V6 = ipaddress.ip_address("2001:db8::7")
LINK_LOCAL = ipaddress.ip_address("fe80::1")


class FakeTool(AddressTool):
    """An interface as a dict; `shows_protocol` False is a kernel or tool without IFA_PROTO."""

    name = "fake"

    def __init__(self, shows_protocol: bool = True) -> None:
        self.shows_protocol = shows_protocol
        self.entries: Dict[object, Configured] = {}
        self.put(LINK_LOCAL, protocol=3)  # the kernel's own (IFAPROT_KERNEL_LL)
        self.adds: List[object] = []

    def put(self, address, label: str = "", protocol: Optional[int] = None) -> None:
        self.entries[address] = Configured(address, 64, label, protocol)

    def list(self, ifname: str) -> List[Configured]:
        if self.shows_protocol:
            return list(self.entries.values())
        return [entry._replace(protocol=None) for entry in self.entries.values()]

    def add(self, ifname, address, prefixlen, label, protocol) -> bool:
        self.adds.append(address)
        if address in self.entries:
            return False
        self.put(address, label if address.version == 4 else "", protocol)
        return True

    def remove(self, ifname, address, prefixlen) -> None:
        self.entries.pop(address, None)


class FakeDCS:
    """The DCS as dicts, for one node n1; `fail_notes` makes note_conflict fail."""

    node = "n1"
    endpoint = "fake"
    problem = None

    def check_release(self) -> None:
        """Every fake server serves what the daemon speaks."""

    def __init__(self, pool) -> None:
        self.pool = {str(a) for a in pool}
        self.marks: Dict[str, str] = {}
        self.notes: Dict[str, str] = {}
        self.fail_notes = False
        self.calls: List[str] = []

    def read(self) -> Snapshot:
        return Snapshot(
            pool=frozenset(self.pool),
            marks={a: Mark(h) for a, h in self.marks.items()},
            nodes=frozenset({"n1"}),
            conflicts=dict(self.notes),
        )

    def create_mark(self, address) -> bool:
        self.calls.append(f"create {address}")
        return self.marks.setdefault(str(address), self.node) == self.node

    create_marks = DCS.create_marks  # one by one, through create_mark

    def refresh_mark(self, address) -> bool:
        return self.marks.get(str(address)) == self.node

    refresh_marks = DCS.refresh_marks  # one after the other, through refresh_mark

    def delete_mark(self, address) -> bool:
        self.calls.append(f"delete {address}")
        return self.marks.pop(str(address), None) is not None

    def release_mark(self, address, mark) -> bool:
        return self.delete_mark(address)

    def add_address(self, address) -> bool:
        self.calls.append(f"add {address}")
        added = str(address) not in self.pool
        self.pool.add(str(address))
        return added

    def note_conflict(self, address, note: str) -> None:
        self.calls.append(f"note {address}")
        if self.fail_notes:
            raise DCSError("etcd is gone")
        self.notes[str(address)] = note

    def ttl_start(self, sent_at: float) -> float:
        return sent_at

    def conflict_ttl(self) -> int:
        return 300


class FakeInterface:
    """The actuator thread as the balancer sees it: each round puts every held address on
    the interface and takes the others off at once; `rounds` has what was held in each."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.rounds: List[set] = []

    def sync(self, timeout: float) -> bool:
        held = frozenset(self.ledger.held())
        self.rounds.append(set(held))
        self.ledger.confirm(Interface(held, held))
        return True


def balancer_round_setup(monkeypatch, answers, dcs: type = FakeDCS):
    """A balancer thread of n1 over a `dcs` (FakeDCS) whose probe hears `answers` (address
    -> MAC); (the thread, the FakeDCS, its ledger, the probes sent)."""
    probed: List[list] = []

    def probe(ifname, addresses, duration):
        probed.append(sorted(map(str, addresses)))
        return {a: mac for a, mac in answers.items() if a in addresses}

    monkeypatch.setattr(conflicts, "probe", probe)
    store = dcs([V4, V6])
    ledger = Ledger("n1", 3.0)
    return healthy_balancer(store, ledger), store, ledger, probed


def healthy_balancer(
    store: FakeDCS, ledger: Ledger, probe_timeout: float = 0.25, ip=None, **kwargs
) -> balancer_thread.BalancerThread:
    """The balancer thread of a healthy n1 (interval 0.5 s, ttl 3 s) over `store`, its
    actuator a FakeInterface; `ip`: a vip-manager file's one address; `kwargs` go to the
    thread (a failsafe `policy`)."""
    state = NodeState()
    state.set_health(True, "fine")
    config = SimpleNamespace(
        node_name="n1",
        allowed_networks=(),
        interval_s=0.5,
        interface="lan0",
        probe_timeout_s=probe_timeout,
        conflict_backoff_s=300.0,
        ttl_s=3.0,
        ip=ip,
    )
    return balancer_thread.BalancerThread(
        store,
        ledger,
        state,
        config,
        FakeInterface(ledger).sync,
        period=0.5,
        stop=threading.Event(),
        on_crash=print,
        **kwargs,
    )


class NotedDCS(FakeDCS):
    """FakeDCS whose marks have numbers, with `released` notes; n2 is a node too."""

    numbers = itertools.count(100)

    def __init__(self, pool) -> None:
        super().__init__(pool)
        self.number: Dict[str, int] = {}
        self.released: Dict[str, str] = {}
        self.nodes = {"n1"}

    def read(self) -> Snapshot:
        snapshot = super().read()
        return snapshot._replace(
            marks={a: Mark(h, 2.0, self.number[a]) for a, h in self.marks.items()},
            nodes=frozenset(self.nodes),
            released=dict(self.released),
        )

    def put_mark(self, address, node: str) -> None:
        self.marks[str(address)] = node
        self.number[str(address)] = next(self.numbers)

    def create_mark(self, address) -> bool:
        if str(address) in self.marks:
            return False
        self.put_mark(address, self.node)
        return True

    def release_mark(self, address, mark) -> bool:
        if mark is not None:
            self.released[str(address)] = Release(self.node, mark).text()
        return self.delete_mark(address)

    def release_by(self, address, node: str, note: bool = True) -> None:
        """Another node releases its mark (with a note) or lets it expire (without)."""
        if note:
            self.released[str(address)] = Release(node, self.number[str(address)]).text()
        del self.marks[str(address)]

    def clear_note(self, kind: str, address, note: str) -> bool:
        self.calls.append(f"clear {kind} {address}")
        return self.released.pop(str(address), None) == note


class Clock:
    """A monotonic clock the test moves by hand (`now`)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
