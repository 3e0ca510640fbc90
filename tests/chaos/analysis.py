"""The invariants checked on every sample of the observer, against the run's timeline.

Samples are fed in order, window by window (after every fault); episodes that
span windows (an address unheld, an address on two nodes) stay open between them.

- never two holders: an address on two nodes with lan0 up is a violation, unless
  one of them is SIGSTOPped or was SIGCONTed less than `sigcont` ago (the known
  exception: a stopped process cannot remove anything);
- every pool address held within its bound (model.Timeline.deadline);
- an address that left the pool is off every interface within its bound, and an
  address never in the pool is on none;
- a node whose health endpoint fails holds nothing once `unhealthy` has passed, a
  drained or cleanly stopped node nothing once `clean` has passed, a node whose lan0
  lost its carrier nothing once `interval` has passed (it acts on the link event; a
  lan0 set down or deleted shows no holder at all, the fault itself looks at it).

`full_share` and `first_move` measure a window of samples for the faults that
expect the failsafe hold (tests/chaos/faults.py).
"""

from __future__ import annotations

from typing import Collection, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from lab.observer import Holders, Sample
from lab.rtnl import IPAddress
from tests.chaos.model import Ledger, Timeline

TWO_HOLDERS = "never two holders"
HELD = "every address held within its bound"
REMOVED = "a removed address is on no node"
UNHEALTHY = "no address on an unhealthy node"
DRAINED = "no address on a drained node"
STOPPED = "no address on a stopped node"
LINK_DOWN = "no address on a node whose link is down"


class _Overlap:
    """An address seen on two nodes, from `start` on."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.exempt = True
        self.nodes: Set[int] = set()


class Analyser:
    """Streams samples through the checks; findings go to the ledger."""

    def __init__(self, timeline: Timeline, ledger: Ledger) -> None:
        self.timeline = timeline
        self.ledger = ledger
        self.bounds = timeline.bounds
        self.last: Optional[float] = None
        self.unheld: Dict[IPAddress, float] = {}  # open episode -> its start
        self.overdue: Set[IPAddress] = set()  # open episodes already reported
        self.overlaps: Dict[IPAddress, _Overlap] = {}
        self.reported: Set[Tuple[str, object, float]] = set()
        self.samples = 0
        self.first: Optional[float] = None
        self.longest_gap = 0.0

    def feed(self, samples: Iterable[Sample]) -> None:
        for sample in samples:
            if self.last is not None and sample.time <= self.last:
                continue
            if self.last is not None:
                self.longest_gap = max(self.longest_gap, sample.time - self.last)
            self._overlaps(sample)
            self._unheld(sample)
            self._strays(sample)
            self._nodes(sample)
            self.last = sample.time
            self.first = sample.time if self.first is None else self.first
            self.samples += 1

    @property
    def mean_period(self) -> float:
        if self.first is None or self.last is None or self.samples < 2:
            return float("inf")
        return (self.last - self.first) / (self.samples - 1)

    # never two holders -----------------------------------------------------

    def _overlaps(self, sample: Sample) -> None:
        t = sample.time
        for address, nodes in sample.holders.items():
            if len(nodes) < 2:
                continue
            episode = self.overlaps.setdefault(address, _Overlap(t))
            episode.nodes.update(nodes)
            if any(self.timeline.pause_exempt(n, t) for n in nodes):
                continue
            if episode.exempt:
                episode.exempt = False
                names = ",".join(f"n{n}" for n in nodes)
                self._violation(TWO_HOLDERS, t, f"{address} on {names} at once")
        self.ledger.check(TWO_HOLDERS, True)
        for address in [a for a in self.overlaps if len(sample.holders.get(a, ())) < 2]:
            episode = self.overlaps.pop(address)
            figure = "overlap while SIGSTOPped" if episode.exempt else "overlap"
            names = ",".join(f"n{n}" for n in sorted(episode.nodes))
            self.ledger.note(figure, t - episode.start, f"{address} on {names}")

    # every address held within its bound ---------------------------------

    def _unheld(self, sample: Sample) -> None:
        t = sample.time
        for address in list(self.unheld):
            if sample.holders.get(address) or self.timeline.pool.covering(address, t) is None:
                end = t
                if not sample.holders.get(address):  # left the pool while unheld
                    end = self.timeline.pool.ended_before(address, t) or t
                self._close_unheld(address, end)
        for address in self._pool_at(t):
            if sample.holders.get(address) or address in self.unheld:
                continue
            since = self.timeline.pool.covering(address, t)[0]
            start = since if self.last is None or since > self.last else t
            self.unheld[address] = start

    def _pool_at(self, t: float) -> List[IPAddress]:
        pool = self.timeline.pool
        return [a for a in pool.subjects() if pool.covering(a, t) is not None]

    def _close_unheld(self, address: IPAddress, end: float) -> None:
        start = self.unheld.pop(address)
        overdue = address in self.overdue
        self.overdue.discard(address)
        deadline, why = self.timeline.deadline(start, end)
        figure = "unheld, etcd down" if "etcd down" in why else "unheld"
        self.ledger.note(figure, end - start, f"{address} ({why})")
        if overdue:
            return
        ok = deadline is None or end <= deadline
        self.ledger.check(
            HELD,
            ok,
            f"{address} unheld for {end - start:.2f} s, allowed "
            f"{(deadline or end) - start:.2f} s ({why})",
            end,
        )

    def check_open(self, now: float) -> None:
        """Report the open episodes whose deadline has passed by `now` (once each)."""
        for address, start in self.unheld.items():
            if address in self.overdue:
                continue
            deadline, why = self.timeline.deadline(start, now)
            if deadline is not None and now > deadline:
                self.overdue.add(address)
                self.ledger.check(
                    HELD,
                    False,
                    f"{address} still unheld {now - start:.2f} s after it went, allowed "
                    f"{deadline - start:.2f} s ({why})",
                    now,
                )

    def longest_open(self, now: float) -> float:
        return max((now - start for start in self.unheld.values()), default=0.0)

    # addresses off the pool -------------------------------------------------

    def _strays(self, sample: Sample) -> None:
        t = sample.time
        pool = self.timeline.pool
        for address, nodes in sample.holders.items():
            if pool.covering(address, t) is not None:
                continue
            if all(self.timeline.pause_exempt(n, t) for n in nodes):
                continue
            removed = pool.ended_before(address, t)
            if removed is None:
                self._once(REMOVED, address, 0.0, t, f"{address}, never in the pool, on {nodes}")
                continue
            deadline, why = self.timeline.deadline(removed, t)
            if deadline is not None and t > deadline:
                text = (
                    f"{address} still on n{nodes[0]} {t - removed:.2f} s after it left the "
                    f"pool, allowed {deadline - removed:.2f} s ({why})"
                )
                self._once(REMOVED, address, removed, t, text)

    # nodes that must hold nothing -----------------------------------------

    def _nodes(self, sample: Sample) -> None:
        t = sample.time
        holding: Dict[int, List[IPAddress]] = {}
        for address, nodes in sample.holders.items():
            for n in nodes:
                holding.setdefault(n, []).append(address)
        rules = (
            (UNHEALTHY, self.timeline.unhealthy, self.bounds.unhealthy, "unhealthy"),
            (DRAINED, self.timeline.drained, self.bounds.clean, "drained"),
            (STOPPED, self.timeline.stopped, self.bounds.clean, "stopped"),
            (LINK_DOWN, self.timeline.link_down, self.bounds.interval, "link down"),
        )
        for name, spans, grace, state in rules:
            for n in spans.subjects():
                span = spans.covering(n, t)
                if span is None or t - span[0] <= grace:
                    continue
                self.ledger.check(name, True)
                if n in holding:
                    held = ", ".join(map(str, holding[n]))
                    text = f"n{n} {state} for {t - span[0]:.2f} s still holds {held}"
                    self._once(name, n, span[0], t, text)

    def _once(self, name: str, key: object, since: float, t: float, text: str) -> None:
        """One violation per (check, subject, episode)."""
        if (name, key, since) not in self.reported:
            self.reported.add((name, key, since))
            self._violation(name, t, text)

    def _violation(self, name: str, t: float, text: str) -> None:
        self.ledger.check(name, False, text, t, count=0)


def full_share(samples: Sequence[Sample], pool: Collection[IPAddress]) -> float:
    """The share of `samples` in which every address of `pool` is on exactly one node
    (0 without samples: an outage nobody watched proves nothing)."""
    full = [s for s in samples if all(len(s.holders.get(a, ())) == 1 for a in pool)]
    return len(full) / len(samples) if samples else 0.0


def first_move(samples: Iterable[Sample], before: Holders) -> Optional[Tuple[Sample, IPAddress]]:
    """The first sample in which an address of `before` is not on exactly the nodes it
    was on, and that address; None if every one stayed put."""
    for sample in samples:
        for address, nodes in before.items():
            if sample.holders.get(address, []) != nodes:
                return sample, address
    return None
