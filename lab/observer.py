"""A thread that samples which node holds which virtual address, and checks that no
address is ever held by two nodes at once.

Each sample reads, for every node, whether its lan0 is up and the addresses on it
(`Lab.lan_state`, rtnetlink, well under a millisecond per node, so a sample is
close to a snapshot; an address seen on two nodes is checked once more, so that a
handover between two reads is not taken for two holders). A node whose lan0 is
down is off the LAN (as after `YaimNode.crash()`): its addresses are not counted
as held.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, TypeVar

from lab.netns import IPAddress, Lab

T = TypeVar("T")
Holders = Dict[IPAddress, List[int]]


@dataclass(frozen=True)
class Sample:
    """Holders (address -> sorted node indexes with lan0 up) at `time` (monotonic)."""

    time: float
    holders: Holders


class Observer:
    """Samples every `period` seconds until stopped; a context manager.

    The default target of 40 ms keeps the achieved median period under the 50 ms
    that tests require, wake-up latency included.
    """

    def __init__(self, lab: Lab, period: float = 0.04) -> None:
        self.lab = lab
        self.period = period
        self.samples: List[Sample] = []
        self.violations: List[Tuple[float, IPAddress, List[int]]] = []
        self.error: Optional[BaseException] = None
        self._stop = threading.Event()
        self._new_sample = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="lab-observer", daemon=True)

    def __enter__(self) -> Observer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> Observer:
        """Start sampling; return once the first sample is taken."""
        self._thread.start()
        self._wait(lambda: self.samples, timeout, "the first sample")
        return self

    def stop(self) -> None:
        """Stop sampling and wait for the thread; re-raise an error it met."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10.0)
        if self.error is not None:
            raise RuntimeError("observer failed") from self.error

    # sampling ------------------------------------------------------------

    def _run(self) -> None:
        try:
            due = time.monotonic()
            while not self._stop.is_set():
                self._record(self._sample())
                due = max(due + self.period, time.monotonic())
                self._stop.wait(due - time.monotonic())
        except BaseException as exc:
            self.error = exc
        finally:
            with self._new_sample:
                self._new_sample.notify_all()

    def _sample(self) -> Sample:
        """One read of every node, in index order. An address found on two nodes must
        still be on the one read first when it is read again, after the other: else the
        first let it go before the other took it, between the two reads (a handover
        takes about 10 ms, and a busy machine can hold up this thread between reads)."""
        holders = self._holders(self.lab.node_indexes)
        earlier = {i for nodes in holders.values() for i in nodes[:-1]}
        if earlier:
            again = self._holders(sorted(earlier))
            for address, nodes in holders.items():
                holders[address] = [i for i in nodes[:-1] if i in again.get(address, ())]
                holders[address].append(nodes[-1])
        return Sample(time.monotonic(), holders)

    def _holders(self, indexes) -> Holders:
        """address -> the nodes of `indexes` with lan0 up that have it, in index order."""
        holders: Holders = {}
        for i in indexes:
            state = self.lab.lan_state(i)
            if state.up:
                for addr in state.addresses:
                    holders.setdefault(addr, []).append(i)
        return holders

    def _record(self, sample: Sample) -> None:
        for addr, nodes in sample.holders.items():
            if len(nodes) > 1:
                self.violations.append((sample.time, addr, nodes))
        with self._new_sample:
            self.samples.append(sample)
            self._new_sample.notify_all()

    # queries -------------------------------------------------------------

    def holders(self) -> Holders:
        """The latest sample's map address -> node indexes."""
        return self.samples[-1].holders

    def _wait(self, pred: Callable[[], T], timeout: float, what: str) -> T:
        """Wait on new samples until `pred()` is truthy; its value."""
        deadline = time.monotonic() + timeout
        with self._new_sample:
            while True:
                if self.error is not None:
                    raise RuntimeError("observer failed") from self.error
                value = pred()
                left = deadline - time.monotonic()
                if value or left <= 0:
                    break
                if not self._thread.is_alive():
                    raise RuntimeError("observer is not running")
                self._new_sample.wait(left)
        if not value:
            raise TimeoutError(
                "timed out after {:.1f} s waiting for {}; holders now: {}".format(
                    timeout, what, format_holders(self.holders()) if self.samples else "none"
                )
            )
        return value

    def wait_for(
        self, pred: Callable[[Holders], object], timeout: float, what: str = "holders condition"
    ) -> Sample:
        """Wait for the first sample taken after this call whose holders satisfy `pred`,
        and return it (its `time` says when the state was first seen). Every sample is
        looked at, not only the latest. TimeoutError shows the latest holders."""
        start = time.monotonic()
        with self._new_sample:
            seen = len(self.samples)

        def found() -> Optional[Sample]:
            nonlocal seen
            samples = self.samples[seen:]
            seen += len(samples)
            return next((s for s in samples if s.time > start and pred(s.holders)), None)

        return self._wait(found, timeout, what)

    def first_seen(self, address: IPAddress, node: int, after: float) -> Optional[float]:
        """Time of the first sample after `after` where `node` holds `address`."""
        for sample in list(self.samples):
            if sample.time > after and node in sample.holders.get(address, ()):
                return sample.time
        return None

    def window(self, start: float, end: float) -> List[Sample]:
        """The samples taken from `start` to `end` (monotonic times), oldest first."""
        with self._new_sample:
            return [s for s in self.samples if start <= s.time <= end]

    def discard_before(self, t: float) -> None:
        """Forget samples and violations older than `t`, so a long run keeps its memory
        bounded; not while a `wait_for` is running in another thread."""
        with self._new_sample:
            self.samples = [s for s in self.samples if s.time >= t]
            self.violations = [v for v in self.violations if v[0] >= t]

    # statistics ------------------------------------------------------------

    @property
    def sample_count(self) -> int:
        return len(self.samples)

    def periods(self) -> List[float]:
        """Seconds between consecutive samples."""
        times = [s.time for s in self.samples]
        return [b - a for a, b in zip(times, times[1:])]

    def median_period(self) -> float:
        """Median achieved sample period in seconds (inf with fewer than two samples)."""
        periods = self.periods()
        return statistics.median(periods) if periods else float("inf")

    def stats(self) -> str:
        """One line: sample count, median and maximum period."""
        periods = self.periods() or [float("inf")]
        median, longest = 1000 * statistics.median(periods), 1000 * max(periods)
        return f"{self.sample_count} samples, period median {median:.1f} ms, max {longest:.1f} ms"


def format_holders(holders: Holders) -> str:
    """`address: n1,n2; ...` sorted by address, for messages."""
    items = sorted(holders.items(), key=lambda kv: (kv[0].version, kv[0]))
    return (
        "; ".join("{}: {}".format(a, ",".join(f"n{n}" for n in nodes)) for a, nodes in items)
        or "(none)"
    )
