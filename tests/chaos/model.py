"""What the chaos run knows besides the samples, and the time bounds it holds yaim to.

The bounds (seconds; ttl and interval of the lab's daemons):

    crash      ttl + 2 x interval + 1 s   the contract's bound after a node's crash
    clean      2 x interval + 1 s         after a clean stop, an unhealthy result, an address
                                          being added (the contract's), a drain or a release
    unhealthy  detection + clean          from the health endpoint failing: detection is one
                                          check interval plus the retries of a failing check
                                          round ((retry-num - 1) x retry-after), after which
                                          the "unhealthy result" of the contract exists
    sigcont    interval                   from SIGCONT until a paused node has dropped every
                                          address whose mark expired while it was stopped

An address that goes unheld is held to the bound of the fault it went unheld in:
`crash` for the faults that kill, pause or cut off a node or an etcd member,
`clean` or `unhealthy` for the others, `clean` between faults. The contract is
silent about the DCS itself being down; the bound applied then is explicit: while
etcd has no quorum nothing can be taken (a take is an atomic create), so an
address unheld while etcd was down must be held within `crash` after etcd
answers again (every member healthy), as if every node had crashed that moment.
With etcd3 add etcd's election timeout (1 s): a new leader renews every lease,
a dead node's too, for its TTL plus that much (etcd-io/etcd#9395). With the failsafe
hold on (the chaos world runs it) add one ttl more: a node that promised a holder
during the outage keeps off that holder's addresses until its promise ends, up to
one ttl after etcd is back, also when the holder crashed meanwhile (README.rst,
"Failsafe hold"); the whole-etcd faults check the hold itself more strictly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Hashable, List, NamedTuple, Optional, Tuple

# Fault classes: which bound an address that goes unheld during the fault is held to.
HARD, CLEAN, UNHEALTHY = "crash", "clean", "unhealthy"


@dataclass(frozen=True)
class Bounds:
    """The time bounds of the contract, for one daemon configuration (seconds)."""

    interval: float
    ttl: float
    detection: float
    sigcont: float
    renewal: float = 0.0  # what a new etcd leader adds to every lease beyond its TTL (v3)
    promise: float = 0.0  # with the failsafe: how long promises outlast an outage (ttl)

    @classmethod
    def for_config(
        cls,
        interval: float,
        ttl: float,
        check_interval: float,
        retries: int,
        retry_after: float,
        renewal: float = 0.0,
        failsafe: bool = False,
    ) -> Bounds:
        detection = check_interval + (retries - 1) * retry_after
        promise = ttl if failsafe else 0.0
        return cls(interval, ttl, detection, interval, renewal, promise)

    @property
    def after_outage(self) -> float:
        """From etcd answering again until every address is held."""
        return self.crash + self.renewal + self.promise

    @property
    def crash(self) -> float:
        return self.ttl + 2 * self.interval + 1

    @property
    def clean(self) -> float:
        return 2 * self.interval + 1

    @property
    def unhealthy(self) -> float:
        return self.detection + self.clean

    def of(self, fault_class: str) -> float:
        return {HARD: self.crash, CLEAN: self.clean, UNHEALTHY: self.unhealthy}[fault_class]


class Spans:
    """Time spans per key (a node, an address): [start, end), end None while open."""

    def __init__(self) -> None:
        self._spans: Dict[Hashable, List[List[Optional[float]]]] = {}

    def begin(self, key: Hashable, t: float) -> None:
        if self.open(key) is None:
            self._spans.setdefault(key, []).append([t, None])

    def end(self, key: Hashable, t: float) -> None:
        span = self.open(key)
        if span is not None:
            span[1] = t

    def open(self, key: Hashable) -> Optional[List[Optional[float]]]:
        spans = self._spans.get(key)
        if spans and spans[-1][1] is None:
            return spans[-1]
        return None

    def covering(self, key: Hashable, t: float) -> Optional[Tuple[float, Optional[float]]]:
        """The span of `key` that contains time `t`, if any."""
        for start, end in reversed(self._spans.get(key, ())):
            if start <= t and (end is None or t < end):
                return start, end
            if start <= t:
                return None
        return None

    def ended_before(self, key: Hashable, t: float) -> Optional[float]:
        """The end of the last span of `key` that ended at or before `t`."""
        for start, end in reversed(self._spans.get(key, ())):
            if end is not None and end <= t:
                return end
            if start <= t:
                return None
        return None

    def spans(self, key: Hashable) -> List[Tuple[float, Optional[float]]]:
        return [(s, e) for s, e in self._spans.get(key, ())]

    def subjects(self) -> List[Hashable]:
        return list(self._spans)

    def forget_before(self, t: float) -> None:
        """Drop spans that ended before `t` (a long run keeps its memory bounded)."""
        for key, spans in self._spans.items():
            self._spans[key] = [s for s in spans if s[1] is None or s[1] >= t]


@dataclass
class Fault:
    """One injected fault: its kind, class (bound), what it hit, and when."""

    kind: str
    fault_class: str
    start: float
    detail: str = ""
    end: Optional[float] = None  # when its checks were done (the cluster settled or gave up)


@dataclass
class Timeline:
    """The run's own bookkeeping: what it did to whom, and when (monotonic seconds)."""

    bounds: Bounds
    faults: List[Fault] = field(default_factory=list)
    pool: Spans = field(default_factory=Spans)  # address -> in the pool
    unhealthy: Spans = field(default_factory=Spans)  # node -> its health endpoint failing
    drained: Spans = field(default_factory=Spans)  # node -> drain key set
    paused: Spans = field(default_factory=Spans)  # node -> SIGSTOP .. SIGCONT
    stopped: Spans = field(default_factory=Spans)  # node -> stopped cleanly, not running
    link_down: Spans = field(default_factory=Spans)  # node -> lan0 down, no carrier or gone
    dcs_down: Spans = field(default_factory=Spans)  # "etcd" -> no quorum

    def fault_at(self, t: float) -> Optional[Fault]:
        """The fault with the loosest bound among those whose window contains `t`."""
        found = [f for f in self.faults if f.start <= t and (f.end is None or t <= f.end)]
        return max(found, key=lambda f: self.bounds.of(f.fault_class), default=None)

    def bound_at(self, t: float) -> Tuple[float, str]:
        """(seconds, why) an address that goes unheld at `t` may stay unheld."""
        fault = self.fault_at(t)
        if fault is None:
            bound, why = self.bounds.clean, "no fault: clean bound"
        else:
            bound, why = self.bounds.of(fault.fault_class), f"{fault.kind} {fault.detail}".strip()
        return bound, why

    def deadline(self, start: float, until: float) -> Tuple[Optional[float], str]:
        """When something that began at `start` (and lasted at least until `until`) must be
        over: its fault's bound from `start`, or `crash` after etcd answered again when
        etcd was down from `start` - ttl on. None while etcd is still down."""
        bound, why = self.bound_at(start)
        deadline = start + bound
        for down, up in self.dcs_down.spans("etcd"):
            if down <= until and (up is None or up >= start - self.bounds.ttl):
                if up is None:
                    return None, why + ", etcd down"
                if up + self.bounds.after_outage > deadline:
                    deadline, why = up + self.bounds.after_outage, why + ", etcd down until then"
        return deadline, why

    def pause_exempt(self, node: int, t: float) -> bool:
        """Whether `node` may still hold an address someone else holds at `t`: it is
        SIGSTOPped, or was SIGCONTed less than `sigcont` ago."""
        if self.paused.covering(node, t) is not None:
            return True
        resumed = self.paused.ended_before(node, t)
        return resumed is not None and t - resumed <= self.bounds.sigcont


class Violation(NamedTuple):
    time: float
    check: str
    text: str


class Ledger:
    """Invariant checks made and failed (by name), the violations, and the figures the
    summary reports."""

    def __init__(self) -> None:
        self.made: Dict[str, int] = {}
        self.failed: Dict[str, int] = {}
        self.violations: List[Violation] = []
        self.figures: Dict[str, List[Tuple[float, str]]] = {}

    def check(self, name: str, ok: bool, text: str = "", t: float = 0.0, count: int = 1) -> bool:
        """Count `count` checks of `name`; a failure is recorded with `text`."""
        self.made[name] = self.made.get(name, 0) + count
        if not ok:
            self.failed[name] = self.failed.get(name, 0) + 1
            self.violations.append(Violation(t, name, text))
        return ok

    def note(self, figure: str, value: float, context: str = "") -> None:
        """Record one measurement of `figure` (seconds) with what it was about."""
        self.figures.setdefault(figure, []).append((value, context))

    def longest(self, figure: str) -> Tuple[float, str]:
        return max(self.figures.get(figure, ()), default=(0.0, "none"), key=lambda v: v[0])

    @property
    def ok(self) -> bool:
        return not self.violations
