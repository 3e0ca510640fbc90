"""The watch thread: keeps the node's cluster cache and wakes the balancer when it changes.

It follows the DCS through its own handle: one full listing, then the watch's events in
order (yaim.dcs.cache), kept in a `Feed` that the balancer plans from. It pokes the
balancer for every change that may change the plan: a mark deleted or expired, an
address added or removed, a node come or gone, a drain flag (yaim.dcs.wakes_balancer).
It lists everything again when the watch cannot go on (etcd no longer has the events
after the cache's revision), after a failure, and every `resync`; while it cannot follow,
the feed is not live and the balancer reads the whole cluster every round, as it did
before the cache: a lost watch costs speed, never safety.

A watch can also sit on a member that answers nothing (frozen, or a v2 member cut from
the others): to the watch that looks like a quiet cluster. The balancer's sync write is
the test: when the cache has not seen one within an interval, the feed says so, the
watch's wait is ended (v3: its stream; a v2 long poll cannot be ended from outside, so
it waits QUIET_POLL intervals at most), and a quiet answer while the cache is still
behind moves the watch to the next endpoint.

A backend that cannot be followed so (DCS.CACHEABLE, a test's stand-in) keeps the watch
as a wake-up only: the balancer reads every round.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, FrozenSet, Iterable, List, NamedTuple, Optional, Set

from yaim.dcs import DCS, Entry, Event, Resync, wakes_balancer
from yaim.dcs.cache import ClusterCache
from yaim.errors import DCSError
from yaim.threads.base import DCSWorker
from yaim.view import Snapshot

log = logging.getLogger(__name__)

# Seconds one watch request waits for news before it is made again.
WATCH_WAIT = 30.0
# Intervals a watch request that cannot be ended from outside (DCS.WATCH_INTERRUPTIBLE
# False: a v2 long poll) waits at most: a member that lags behind is left that soon.
QUIET_POLL = 2
# Seconds the shutdown waits for the thread once its watch is interrupted.
STOP_TIMEOUT = 0.5


class Synced(NamedTuple):
    """The cluster as of `sent_at`: the cache once it had applied the event of a sync write
    sent then, or a full read sent then.

    continued: the cache followed the store without a listing since the previous sync,
    so it saw every change in between; marked: the addresses (their pool names) whose
    marks were written in between, even if gone again; version: the feed's, to tell
    whether anything changed since."""

    snapshot: Snapshot
    sent_at: float
    continued: bool = False
    marked: FrozenSet[str] = frozenset()
    version: int = -1
    seen_at: float = 0.0  # when the sync's own request ended (the balancer's DCS handle)


class Behind(NamedTuple):
    """A message to the balancer: a request of another thread found the store other than
    the cache shows (a mark of this node gone), so the cache is behind: a watch can sit
    unanswered on a hung member, and a v2 long poll that ends unanswered looks like a
    quiet cluster. The balancer's next round reads the whole cluster instead of trusting
    the cache's last look."""

    why: str


class Feed:
    """The cluster cache between the watch thread, which keeps it, and the balancer, which
    plans from it; behind one condition. Live only while the watch follows the store."""

    def __init__(self, root: str, pool_dirs: bool) -> None:
        self.cache = ClusterCache(root, pool_dirs)
        self.changed = threading.Condition()
        self.live = False
        self._continued = False  # no listing since the last sync
        self._marked: Set[str] = set()  # pool names whose marks were written since then
        self._version = 0  # moves on with every listing and every change applied
        # The latest revision the store acknowledged (a sync write) that the cache did not
        # reach in time; and who is told then (the watch, which may be waiting on a member
        # that lags behind: it ends that wait).
        self._awaited = 0
        self.on_behind: Callable[[], None] = lambda: None

    def reset(self, entries: Iterable[Entry], revision: int, sent_at: float) -> None:
        with self.changed:
            self.cache.reset(entries, revision, sent_at)
            self.live = True
            self._continued = False
            self._version += 1
            self.changed.notify_all()

    def apply(self, events: List[Event], revision: int, at: Optional[float]) -> List[Event]:
        """Apply a watch answer; the events applied."""
        with self.changed:
            applied = self.cache.apply(events, revision, at)
            root = self.cache.root
            for event in applied:
                parts = event.key[len(root) :].strip("/").split("/")
                # Another node's sync changes nothing to plan: were it a change, every
                # node's sync would make the others sync again, without end.
                self._version += parts[0] != "sync"
                if event.entry is not None and parts[0] == "ips" and parts[2:] == ["marked"]:
                    self._marked.add(parts[1])
            self.changed.notify_all()
            return applied

    def lost(self) -> None:
        """The watch cannot follow the store now: the balancer reads for itself."""
        with self.changed:
            self.live = False
            self.changed.notify_all()

    def peek(self) -> Optional[Snapshot]:
        """The cache as it is, of no known freshness (no sync behind it); None while not
        live. The changes since the last sync stay counted for the next."""
        with self.changed:
            return self.cache.snapshot() if self.live else None

    @property
    def continued(self) -> bool:
        """No listing since the last sync: the next sync's look carries the history."""
        with self.changed:
            return self._continued

    def quiet_since(self, synced: Synced) -> bool:
        """Live, and nothing changed since `synced` was taken: still the same state."""
        with self.changed:
            return self.live and self._version == synced.version

    def synced(self, revision: int, sent_at: float, timeout: float) -> Optional[Synced]:
        """The cache once it has reached `revision` (the balancer's sync write, sent at
        `sent_at`); None if it is not live or does not get there within `timeout` s, and
        then the watch is told (`on_behind`)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while self.live and self.cache.revision < revision:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.changed.wait(left)
            if not self.live:
                return None
            if self.cache.revision >= revision:
                snapshot, marked = self.cache.snapshot(), frozenset(self._marked)
                found = Synced(snapshot, sent_at, self._continued, marked, self._version)
                self._continued, self._marked = True, set()
                return found
            self._awaited = max(self._awaited, revision)
        self.on_behind()  # outside the lock: it may end a request of the watch's thread
        return None

    def behind(self) -> bool:
        """The cache has not reached a revision the store acknowledged an interval or more
        ago: after a quiet answer of the watch, its member lags behind the one that took
        that write (frozen, or cut from the others while its clients still reach it)."""
        with self.changed:
            return self.cache.revision < self._awaited


class WatchThread(DCSWorker):
    """Runs the watch back to back; after a failure it waits `backoff` seconds.

    Its period is the time one watch request may wait, so a quiet cluster never
    looks like a stuck thread. `feed` None: a wake-up only (a backend without a cache).
    """

    def __init__(
        self,
        dcs: DCS,
        on_change: Callable[[], None],
        backoff: float,
        feed: Optional[Feed] = None,
        resync: float = 60.0,
        **kwargs,
    ) -> None:
        kwargs.setdefault("period", WATCH_WAIT)
        super().__init__(
            "watch", dcs, "watch lost (the balancer reads every interval meanwhile)", **kwargs
        )
        self.on_change = on_change
        self.backoff = backoff
        self.feed = feed
        self.resync = resync
        self.listed_at: Optional[float] = None
        if feed is not None:
            feed.on_behind = dcs.interrupt  # the retry asks the next endpoint

    def next_timeout(self) -> float:
        return self.backoff if self.failing else 0.0

    def interrupt(self, timeout: float = STOP_TIMEOUT) -> None:
        """Shutdown, from the main thread: end the blocking watch and wait up to `timeout`
        for the thread to wind it up (the stop Event is set already)."""
        self.dcs.interrupt()
        self.join(timeout)

    def dcs_round(self, messages: List[Any]) -> None:
        if self.feed is None:
            if self.dcs.wait_for_change(self.period):
                self.on_change()
            return
        try:
            self._follow(self.feed)
        except Resync:  # etcd answered, without the events: list everything again now
            self._lose(self.feed)
        except DCSError:
            self._lose(self.feed)
            raise

    def _lose(self, feed: Feed) -> None:
        feed.lost()
        self.listed_at = None

    def _follow(self, feed: Feed) -> None:
        now = time.monotonic()
        if self.listed_at is None or now >= self.listed_at + self.resync:
            entries, revision = self.dcs.list_entries()
            feed.reset(entries, revision, now)
            self.listed_at = now
            self.on_change()
            return
        wait = min(self.period, self.listed_at + self.resync - now)
        if not self.dcs.WATCH_INTERRUPTIBLE:
            wait = min(wait, QUIET_POLL * self.backoff)
        events, revision, caught_up = self.dcs.watch_events(feed.cache.revision, wait)
        if not events and feed.behind():
            log.warning(
                "watch of node %s: %s told nothing of a write etcd took an interval ago"
                " (a member frozen or cut from the others): asking the next endpoint",
                self.dcs.node,
                self.dcs.endpoint,
            )
            self.dcs.move_on()
        applied = feed.apply(events, revision, time.monotonic() if caught_up else None)
        root = feed.cache.root
        if any(wakes_balancer(e.key[len(root) :], e.entry is None) for e in applied):
            self.on_change()
