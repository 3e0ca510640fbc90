"""The chaos lab: 5 yaim nodes with http health checks and the failsafe hold on (one
peer secret for all), a 3-member etcd cluster in the hub, 12 addresses, an observer;
and the actions faults are made of, each recorded in the timeline so the checks know
what the cluster should look like when."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import sys
import time
from collections import Counter
from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set

from lab.daemon import YaimNode
from lab.etcd import ClusterKeys, EtcdCluster, EtcdError, EtcdUnreachable
from lab.netns import ETCD_HOSTS, Lab, LabError
from lab.observer import Holders, Observer, Sample, format_holders
from lab.rtnl import IPAddress
from lab.util import wait_until
from tests.chaos.analysis import Analyser
from tests.chaos.model import Fault, Ledger, Timeline
from yaim.view import in_order


def format_addresses(addresses: Set[IPAddress]) -> str:
    """The addresses in order, for a violation's text."""
    return ", ".join(map(str, in_order(addresses))) or "nothing"


NODES = 5
MEMBERS = 3
INTERVAL, TTL = 500, 2000  # ms, as the integration tests
RETRY_NUM, RETRY_AFTER = 3, 250  # the defaults: a failing check round takes 2 x 250 ms more
HEALTH_PORT = 8008
POOL = [ipaddress.ip_address(f"198.51.100.{100 + i}") for i in range(10)] + [
    ipaddress.ip_address("2001:db8::100"),
    ipaddress.ip_address("2001:db8::101"),
]
SPARE = [ipaddress.ip_address(f"198.51.100.{110 + i}") for i in range(30)] + [
    ipaddress.ip_address(f"2001:db8::{0x102 + i:x}") for i in range(14)
]
SETTLE_EXTRA = 6.0  # beyond the crash bound: a restarted daemon's start-up and first rounds
RECOVER_TIMEOUT = 30.0  # after a failed settle, how long to wait before giving up the run
SIGTERM_EXIT = 2.0  # "within about one second"
STABLE = 0.5  # how long a settled state must last to count as settled
PEER_SECRET = "peer.key"  # in the base dir: the one failsafe secret of every node
STATUS_URL = "http://127.0.0.1:9720/status"  # a node's status endpoint, in its namespace
# A node has a good view (the nodes it asks) once etcd has answered it for a whole ttl
# with every node key there; a restarted node's heartbeat may need a few rounds more.
VIEWS_TIMEOUT = 3 * TTL / 1000 + 5

# Placement (issue 19): n1 weighs twice the others, and a node back takes from the others
# only after it has taken part for REBALANCE_DELAY; the settled state follows both.
WEIGHTS = {1: 2}
REBALANCE_DELAY = 1000  # ms
# How long the holders must stay as they are before a check that nothing moves begins:
# a placement move may follow the settled state by REBALANCE_DELAY, then a round or two.
AT_REST = REBALANCE_DELAY / 1000 + 2 * INTERVAL / 1000

SETTLES = "settles, every address on one node, each within one of its weighted share"
MARKS_MATCH = "marks and node keys match the interfaces"
NOTIFY_MATCH = "each node's notify events, in order, add up to the addresses on it"
RUNNING = "daemons do not exit by themselves"
VIEWS = "every node has a good failsafe view of every node (at start, before etcd goes)"


class ChaosAbort(RuntimeError):
    """The cluster did not recover from a fault: the run cannot go on meaningfully."""


class World:
    """The lab and its bookkeeping; a context manager that builds and tears it all down."""

    def __init__(
        self,
        dcs_type: str,
        base_dir: Path,
        timeline: Timeline,
        ledger: Ledger,
        out: Callable[[str], None] = print,
    ) -> None:
        self.dcs_type = dcs_type
        self.base_dir = base_dir
        self.timeline = timeline
        self.ledger = ledger
        self.bounds = timeline.bounds
        self.out = out
        self.started = time.monotonic()
        self._stack = ExitStack()
        self.nodes: Dict[int, YaimNode] = {}
        self.healthy: Dict[int, bool] = {}
        self.drained: Set[int] = set()
        self.paused: Set[int] = set()
        self.cut: Set[int] = set()  # links down or impaired: not expected to take part
        self.stopped: Set[int] = set()  # stopped on purpose
        self.migrating: Set[int] = set()  # on both layouts (dcs-migrate-from): a v2 world's
        self.pool: Set[IPAddress] = set()
        self.spare: List[IPAddress] = list(SPARE)
        self.analyser = Analyser(timeline, ledger)
        self.impairment: Optional[str] = None  # what `impair` applies, None: unavailable
        self.impairment_note = ""
        self.operator_actions: List[str] = []  # what the run did by hand to recover
        self.known_issues: Counter = Counter()  # other software's bugs met: text -> times
        self.reported = 0  # violations printed so far
        self.notify_from: Dict[int, int] = {}  # node -> its first notify line of this run

    # building ------------------------------------------------------------

    def __enter__(self) -> World:
        try:
            self._build()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _build(self) -> None:
        stack = self._stack
        self.lab = stack.enter_context(Lab(NODES, base_dir=self.base_dir / "lab"))
        self.etcd = stack.enter_context(
            EtcdCluster(
                size=MEMBERS,
                netns=self.lab.hub,
                host=list(ETCD_HOSTS),
                base_dir=self.base_dir / "etcd",
            )
        )
        self.observer = stack.enter_context(Observer(self.lab))
        stack.callback(self.lab.stop_processes)
        self._probe_impairment()
        secret = self._write_secret()
        for i in self.lab.node_indexes:
            url = self.lab.start_health(i, HEALTH_PORT)
            self.healthy[i] = True
            line = ["sh", "-c", f'echo "$YAIM_EVENT $YAIM_ADDRESS" >> {self.notify_path(i)}']
            self.nodes[i] = YaimNode(
                self.lab,
                i,
                self.etcd.endpoints,
                interval=INTERVAL,
                ttl=TTL,
                health_url=url,
                dcs_type=self.dcs_type,
                retry_num=RETRY_NUM,
                retry_after=RETRY_AFTER,
                notify_take=line,
                notify_release=line,
                notify_fence=line,
                failsafe="on",
                peer_secret_file=str(secret),
                weight=WEIGHTS.get(i, 1),
                rebalance_delay=REBALANCE_DELAY,
            )

    def _write_secret(self) -> Path:
        """The cluster's peer secret, readable by its owner only, as README asks."""
        path = self.base_dir / PEER_SECRET
        fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an existing file (a --workdir used again) keeps its mode
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_hex(16).encode())
        return path

    def start_daemons(self, timeout: float = 30.0) -> None:
        """Start every daemon; return once each has its node key and a good failsafe view:
        a node takes nothing for its first ttl, and the pool added earlier would wait."""
        for i in self.nodes:
            self._launch(i)
        expected = {node.name for node in self.nodes.values()}
        wait_until(
            lambda: self.keys().nodes() == expected,
            timeout,
            interval=0.1,
            what="every node key",
            ignore=(EtcdError,),
        )
        self.wait_views()

    def add_pool(self, addresses: Sequence[IPAddress]) -> None:
        for address in addresses:
            self.add_address(address)

    def _probe_impairment(self) -> None:
        try:
            self.impairment = self.lab.impair(1)
        except LabError as exc:
            self.impairment_note = f"packet loss and delay unavailable, fault skipped: {exc}"
        finally:
            self.lab.clear_impairment(1)
        if self.impairment is not None and not self.impairment.startswith("netem"):
            self.impairment_note = "sch_netem missing in this kernel: " + self.impairment

    # who should do what ------------------------------------------------------

    def now(self) -> float:
        return time.monotonic()

    def elapsed(self) -> float:
        return self.now() - self.started

    def participants(self) -> List[int]:
        """The nodes that should hold a share now."""
        out = self.stopped | self.paused | self.drained | self.cut
        return [i for i in self.lab.node_indexes if i not in out and self.healthy[i]]

    def name(self, i: int) -> str:
        return self.nodes[i].name

    def keys(self, dcs_type: Optional[str] = None) -> ClusterKeys:
        """The operator's view of the cluster through a running member (of the world's
        layout, or of `dcs_type`'s)."""
        running = [i for i in range(MEMBERS) if self.etcd.running(i)] or [0]
        endpoint = self.etcd.endpoints[running[0]]
        return ClusterKeys(self.etcd, dcs_type or self.dcs_type, endpoint=endpoint)

    def layouts(self) -> List[ClusterKeys]:
        """Every layout the pool is kept in: a v2 world keeps the v3 one in step too, as
        `yaimctl migrate` and a config with dcs-migrate-from do, so that any node may
        become a migrating one (the migrate fault)."""
        return [self.keys()] + ([self.keys("etcd3")] if self.dcs_type == "etcd" else [])

    def has(self, capability: str) -> bool:
        """Whether the world can run a fault kind that needs `capability`."""
        return {"impairment": self.impairment is not None, "v2": self.dcs_type == "etcd"}[
            capability
        ]

    def holders(self) -> Holders:
        return self.observer.holders()

    def at_rest(self) -> Holders:
        """The holders once they have not changed for AT_REST seconds (waiting at most as
        long as a settle may): a check that nothing moves starts from a pool at rest, not
        from one still finishing the last fault's placement, which stays within the
        settled state (found so: a hung etcd leader's return blamed for such a move)."""
        deadline = self.now() + self.bounds.crash + SETTLE_EXTRA
        while True:
            before = self.holders()
            try:
                self.observer.wait_for(before.__ne__, AT_REST, "a change")
            except TimeoutError:
                return before
            if self.now() >= deadline:
                return self.holders()

    def held_by(self, i: int) -> List[IPAddress]:
        return in_order(a for a, nodes in self.holders().items() if i in nodes)

    def sleep(self, seconds: float) -> None:
        """Let a fault play out: the observer samples meanwhile."""
        time.sleep(max(0.0, seconds))

    # the pool ------------------------------------------------------------

    def add_address(self, address: IPAddress) -> None:
        self.timeline.pool.begin(address, self.now())
        for keys in self.layouts():
            keys.add(address)
        self.pool.add(address)

    def remove_address(self, address: IPAddress) -> None:
        self.timeline.pool.end(address, self.now())
        for keys in self.layouts():
            keys.remove(address)
        self.pool.discard(address)
        self.spare.append(address)

    def edit_pool(self, rng) -> str:
        """Add or remove one address at random, keeping the pool between 10 and 14."""
        grow = len(self.pool) <= 10 or (len(self.pool) < 14 and rng.random() < 0.5)
        if grow:
            address = self.spare.pop(rng.randrange(len(self.spare)))
            self.add_address(address)
            return f"+{address}"
        address = rng.choice(in_order(self.pool))
        self.remove_address(address)
        return f"-{address}"

    # daemons ------------------------------------------------------------------

    def _launch(self, i: int) -> None:
        """Start node i's daemon; the notify events of this run are the lines from here."""
        self.notify_from[i] = len(self.notify_events(i))
        self.nodes[i].start()

    def start(self, i: int) -> None:
        self._launch(i)
        self.timeline.stopped.end(i, self.now())
        self.stopped.discard(i)

    def cleanup_hook(self, i: int) -> bool:
        """What the packaged unit's ExecStopPost does after any stop: `yaim --cleanup`."""
        argv = [sys.executable, "-m", "yaim", "--cleanup", "-c", str(self.nodes[i].config_path)]
        done = self.lab.run(self.lab.node_ns(i), argv, check=False, timeout=20.0)
        return done.returncode == 0

    def reboot(self, i: int) -> None:
        """A crashed machine comes back: its addresses are gone (a reboot loses them),
        its links come up, yaim starts."""
        ns = self.lab.node_ns(i)
        for address in self.lab.addresses(i):
            prefix = 32 if address.version == 4 else 128
            self.lab.ip(ns, "addr", "del", f"{address}/{prefix}", "dev", "lan0")
        self.lab.link(i, "dcs0", up=True)
        self.lab.lan_up(i)
        self.cut.discard(i)
        self.start(i)

    def yaimctl(self, i: int, *args: str) -> bool:
        argv = [sys.executable, "-m", "yaim.ctl", "-c", str(self.nodes[i].config_path), *args]
        done = self.lab.run(self.lab.node_ns(i), argv, check=False, timeout=20.0)
        if done.returncode != 0:
            self.out(f"yaimctl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.returncode == 0

    def set_health(self, i: int, ok: bool) -> None:
        t = self.now()
        self.lab.set_health(i, ok)
        self.healthy[i] = ok
        if ok:
            self.timeline.unhealthy.end(i, t)
        else:
            self.timeline.unhealthy.begin(i, t)

    # etcd ------------------------------------------------------------------

    def wait_etcd(self, members: Sequence[int], timeout: float = 30.0) -> float:
        """Wait until `members` are healthy (have a leader); when that was seen."""
        wait_until(
            lambda: all(self.etcd.healthy(m) for m in members),
            timeout,
            interval=0.05,
            what=f"etcd members {list(members)} healthy",
            ignore=(EtcdUnreachable,),
        )
        return self.now()

    def leader(self, timeout: float = 10.0) -> int:
        """The index of the etcd leader, waiting for one to be elected."""
        found = wait_until(
            lambda: [i for i in [self.etcd.leader()] if i is not None],
            timeout,
            interval=0.1,
            what="an etcd leader",
        )
        return found[0]

    # the failsafe hold -----------------------------------------------------------

    def failsafe_report(self, i: int) -> Optional[dict]:
        """The `failsafe` part of node i's /status; None if it does not answer."""
        argv = ["curl", "-s", "--max-time", "2", STATUS_URL]
        done = self.lab.run(self.lab.node_ns(i), argv, check=False, timeout=5.0)
        try:
            report = json.loads(done.stdout)["failsafe"]
        except (ValueError, KeyError, TypeError):
            return None
        return report if isinstance(report, dict) else None

    def views_problem(self) -> Optional[str]:
        """Why a whole-etcd outage now would not be held: every node must have the
        failsafe on and a good view of all the nodes (README.rst, "Failsafe hold": one
        without it answers no, and then every node fences); None if all have."""
        names = sorted(self.name(i) for i in self.nodes)
        for i in self.nodes:
            report = self.failsafe_report(i)
            if report is None or not report.get("on"):
                return f"n{i}: failsafe {report}"
            if report.get("view") != names:
                return f"n{i}: view {report.get('view')} ({report})"
        return None

    def wait_views(self) -> None:
        """Wait until every node has a good view of every node; a violation if not soon."""
        try:
            wait_until(
                lambda: self.views_problem() is None,
                VIEWS_TIMEOUT,
                interval=0.2,
                what="every node's failsafe view",
            )
            self.ledger.check(VIEWS, True)
        except TimeoutError:
            self.ledger.check(VIEWS, False, str(self.views_problem()), self.now())

    # checks -------------------------------------------------------------------

    def settled_problem(self, holders: Holders) -> Optional[str]:
        """Why `holders` is not the settled state, None if it is."""
        parts = self.participants()
        for address in in_order(self.pool):
            nodes = holders.get(address, [])
            if len(nodes) != 1:
                return f"{address} on {len(nodes)} nodes"
            if nodes[0] not in parts:
                return f"{address} on n{nodes[0]}, which should not hold any"
        for address, nodes in holders.items():
            if address not in self.pool:
                return f"{address}, not in the pool, on {nodes}"
        counts = Counter(holders[a][0] for a in self.pool)
        total = sum(WEIGHTS.get(i, 1) for i in parts)
        for i in parts:
            share = Fraction(len(self.pool) * WEIGHTS.get(i, 1), total)
            if abs(counts.get(i, 0) - share) >= 1:
                spread = ", ".join(f"n{n}: {counts.get(n, 0)}" for n in parts)
                return f"not balanced: {spread} (n{i}'s share is {float(share):.2f})"
        return None

    def wait_settled(self, timeout: float, what: str) -> Sample:
        """The first sample of a settled state that then lasts STABLE seconds: a moment
        in the middle of addresses coming and going does not count."""
        deadline = self.now() + timeout

        def settled(holders: Holders) -> bool:
            return self.settled_problem(holders) is None

        while True:
            sample = self.observer.wait_for(settled, max(0.0, deadline - self.now()), what)
            try:
                self.observer.wait_for(lambda h: not settled(h), STABLE, "a change")
            except TimeoutError:
                return sample

    def settle(self, fault: Fault) -> float:
        """Wait for the settled state; its time. A violation, then a longer wait, if late."""
        timeout = self.bounds.crash + SETTLE_EXTRA + REBALANCE_DELAY / 1000
        begun = self.now()
        try:
            sample = self.wait_settled(timeout, "the cluster to settle")
            self.ledger.check(SETTLES, True, t=sample.time)
            return sample.time
        except TimeoutError:
            problem = self.settled_problem(self.holders())
            self.ledger.check(
                SETTLES,
                False,
                f"not settled {timeout:.0f} s after {fault.kind} {fault.detail}: {problem}",
                self.now(),
            )
        self._operator_looks()
        try:
            sample = self.wait_settled(RECOVER_TIMEOUT, "recovery")
        except TimeoutError as exc:
            raise ChaosAbort(
                f"no recovery {self.now() - begun:.0f} s after {fault.kind} {fault.detail}: "
                f"{self.settled_problem(self.holders())}; holders {format_holders(self.holders())}"
            ) from exc
        return sample.time

    def _operator_looks(self) -> None:
        """What yaim's log asks an operator to do about conflicts notes: look, and delete
        them, so the run can go on after the violation is recorded."""
        try:
            cleared = self.keys().clear_conflicts()
        except EtcdError as exc:
            self.out(f"operator: cannot read the conflicts notes: {exc}")
            return
        if cleared:
            self.operator_actions.append(f"deleted conflicts notes of {', '.join(sorted(cleared))}")
            self.out("operator: " + self.operator_actions[-1])

    def marks_problem(self) -> Optional[str]:
        """Why etcd's marks and node keys do not match the interfaces, None if they do."""
        keys = self.keys()
        marks = keys.holders()
        holders = self.holders()
        for address in self.pool:
            seen = ",".join(f"n{n}" for n in holders.get(address, []))
            if marks.get(str(address)) != seen:
                return f"{address}: marked by {marks.get(str(address))}, on {seen or 'none'}"
        if self.dcs_type == "etcd":
            problem = self._v3_marks_problem(marks)
            if problem:
                return problem
        expected = {self.name(i) for i in self.participants()}
        unhealthy = {self.name(i) for i in self.lab.node_indexes if not self.healthy[i]}
        nodes = keys.nodes()
        if not expected <= nodes or nodes & unhealthy:
            return f"node keys {sorted(nodes)}, expected {sorted(expected)}"
        return None

    def _v3_marks_problem(self, v2_marks: Dict[str, str]) -> Optional[str]:
        """In a v2 world: each v3 mark is a migrating node's, the same node as the v2
        mark names (a migrating node holds an address only with both)."""
        names = {self.name(i) for i in self.migrating}
        v3_marks = self.keys("etcd3").holders()
        for address in self.pool:
            v2_holder = v2_marks.get(str(address))
            expected = v2_holder if v2_holder in names else None
            if v3_marks.get(str(address)) != expected:
                return f"{address}: v3 mark {v3_marks.get(str(address))}, v2 mark {v2_holder}"
        return None

    def check_marks(self) -> None:
        try:
            wait_until(lambda: self.marks_problem() is None, 3.0, what="marks", ignore=(EtcdError,))
            self.ledger.check(MARKS_MATCH, True)
        except TimeoutError:
            self.ledger.check(MARKS_MATCH, False, str(self.marks_problem()), self.now())

    def notify_path(self, i: int) -> Path:
        return self.base_dir / f"notify-n{i}"

    def notify_events(self, i: int) -> List[List[str]]:
        """Node i's notify lines so far, each [event, address]."""
        try:
            return [line.split(" ", 1) for line in self.notify_path(i).read_text().splitlines()]
        except FileNotFoundError:
            return []

    def notify_problem(self) -> Optional[str]:
        """Why a running node's notify events since it started do not replay, take by
        release or fence, to the addresses on its interface; None if they all do."""
        for i, node in self.nodes.items():
            if not node.running or i in self.paused:
                continue
            held: Set[IPAddress] = set()
            for event, text in self.notify_events(i)[self.notify_from[i] :]:
                address = ipaddress.ip_address(text)
                if event == "take" and address in held:
                    return f"n{i}: take {address} while it held it"
                if event != "take" and address not in held:
                    return f"n{i}: {event} {address} while it did not hold it"
                held.symmetric_difference_update({address})  # a take adds, the rest remove
            on = set(self.held_by(i))
            if held != on:
                return (
                    f"n{i}: its events add up to {format_addresses(held)}, "
                    f"it has {format_addresses(on)}"
                )
        return None

    def check_notify(self) -> None:
        try:
            wait_until(lambda: self.notify_problem() is None, 5.0, what="notify events")
            self.ledger.check(NOTIFY_MATCH, True)
        except TimeoutError:
            self.ledger.check(NOTIFY_MATCH, False, str(self.notify_problem()), self.now())

    def check_running(self) -> None:
        """Every daemon that should run runs; one that exited is reported and restarted."""
        for i, node in self.nodes.items():
            if i in self.stopped or node.running:
                continue
            code = node.proc.poll() if node.proc is not None else None
            self.ledger.check(RUNNING, False, f"n{i} exited with {code}", self.now())
            self.start(i)
        self.ledger.check(RUNNING, True)

    def check_fenced(self, nodes: Sequence[int], since: float, until: float, why: str) -> None:
        """Cut off from the DCS since `since`, `nodes` hold nothing from `since` + ttl on:
        their marks may have expired, so the contract wants the addresses gone before."""
        start = since + self.bounds.ttl
        if until <= start:
            return
        bad = [
            (s.time, a, n)
            for s in self.observer.window(start, until)
            for a, n in s.holders.items()
            if set(n) & set(nodes)
        ]
        text = ""
        if bad:
            t, address, on = bad[0]
            text = f"{address} still on {on} {t - since:.2f} s after {why}"
        self.ledger.check("fenced before its marks could expire", not bad, text, self.now())

    def analyse(self) -> None:
        """Run the sample checks over what was sampled since the last call."""
        now = self.now()
        self.analyser.feed(self.observer.window(self.analyser.last or 0.0, now))
        self.analyser.check_open(now)
        self.observer.discard_before(now - 2 * self.bounds.crash)
