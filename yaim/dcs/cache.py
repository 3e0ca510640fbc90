"""The cluster cache: the cluster directory kept locally, fed by one listing and the watch.

Reading the whole directory every interval costs each node O(addresses) per interval
and etcd O(nodes x addresses) (bench/RESULTS.md); Kubernetes' informers and Patroni's
etcd3 KVCache keep a copy fed by one watch instead. Here: `reset` with one full listing
(DCS.list_entries: the entries and the revision they reflect), then `apply` the watch's
events (DCS.watch_events) in order. A put, create, set or compareAndSwap upserts its key
(in the v2 layout also the directories above it that the write made); a delete, expire
or compareAndDelete removes it (a v2 directory with everything below it). An event older
than the cache's revision is a replay (after a reconnect, or from a member behind the one
listed from) and is ignored; one at that very revision is applied again, harmlessly:
etcd changes a key at most once per revision (it refuses a transaction that touches one
twice), which also lets the events of one v3 transaction, sharing a revision, come one
by one. `snapshot()` is what a fresh read would give (through yaim.dcs.snapshot_of), but
for the seconds left of v2 keys: a listing's TTLs go stale the moment they are cached,
so the cache keeps none (the daemon plans without them; yaimctl reads afresh).

Known current. A cache is worth what the last moment it is known to match the store is:
`current_at`, the monotonic time a full read was sent, or the arrival of an answer in
which etcd vouched that nothing newer had happened below the directory (a progress
notification, events sent as they happened). It never moves for a replay, and a silent
stream leaves it where it was: no news is not news that nothing happened (a member cut
off from its leader falls silent; the v3 stream asks etcd to end it then instead). An
arrival is later than the moment it vouches for by the stream's delay: that delay is
the error of `current_at`, where a read's send time has none.

- The handover rule (yaim.claims, yaim.conflicts): a `released` note is trusted only of
  a mark seen less than HANDOVER_WINDOW x ttl ago, since every mark made after that
  moment is claimed only while it has that long to live. "Seen" is `current_at` of a
  state showing the mark, never when the mark was written or last changed: a mark
  written an hour ago in a cache current a moment ago was seen a moment ago, one in a
  cache not known current for a minute was seen a minute ago. The rule has no spare for
  the stream's delay, so the wiring must take it out of the window (or confirm the cache
  against a linearizable answer whose send time it knows).
- Fencing (yaim.claims): a claim's fence counts only from the send time of the request
  that started its mark's TTL (DCS.ttl_start), never from the cache: a cache may end a
  claim sooner (its mark shown gone or someone else's: `Ledger.lost`), never extend one.
  A stale cache can make a node try to take an address that is not free; the atomic
  create refuses it.

Pure: no I/O, no clock (the caller gives the times). Written here rather than taken from
a library: it is a dict in our own layout, and python-etcd has no cache.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional

from yaim.dcs import Entry, Event, snapshot_of
from yaim.view import Snapshot


class ClusterCache:
    """The keys below `root` as of `revision`, known current at `current_at`.

    pool_dirs: the v2 layout (pool entries are directories, and a write below a missing
    directory makes it), as DCS.POOL_DIRS says.
    """

    def __init__(self, root: str, pool_dirs: bool) -> None:
        self.root = root
        self.pool_dirs = pool_dirs
        self.revision: Optional[int] = None  # None until the first listing
        self.current_at: Optional[float] = None
        self._entries: Dict[str, Entry] = {}
        self._snapshot: Optional[Snapshot] = None  # of the entries as they are, once asked

    def reset(self, entries: Iterable[Entry], revision: int, sent_at: float) -> None:
        """Start again from a full listing at `revision`, whose request was sent at `sent_at`."""
        self._entries = {e.key: e._replace(ttl=None) for e in entries if self._below(e.key)}
        self._snapshot = None
        self.revision = revision
        self.current_at = sent_at

    def apply(self, events: Iterable[Event], revision: int, at: Optional[float]) -> List[Event]:
        """Apply a watch's answer: its events in order, then the `revision` it says the
        cache is at; `at`: when it arrived if etcd vouched it was current then, else None.
        Returns the events applied (not the replays)."""
        if self.revision is None:
            raise RuntimeError("a cluster cache needs a listing before events")
        applied = []
        for event in events:
            if event.revision < self.revision:
                continue
            if event.entry is None:
                self._remove(event.key, event.subtree)
            else:
                self._upsert(event.entry, event.revision)
            self.revision = event.revision
            applied.append(event)
        self.revision = max(self.revision, revision)
        if at is not None:
            self.current_at = at if self.current_at is None else max(self.current_at, at)
        return applied

    def snapshot(self) -> Snapshot:
        """The layout's parts, as a fresh read at `revision` would sort them."""
        if self._snapshot is None:
            self._snapshot = snapshot_of(self.root, self._entries.values(), self.pool_dirs)
        return self._snapshot

    def listing(self) -> List[Entry]:
        """The entries, sorted by key (TTLs left out)."""
        return sorted(self._entries.values())

    def _below(self, key: str) -> bool:
        return key.startswith(self.root + "/")

    def _upsert(self, entry: Entry, revision: int) -> None:
        if not self._below(entry.key):
            return  # the cluster directory itself (a v2 mkdir)
        if self.pool_dirs:
            parts = entry.key[len(self.root) + 1 :].split("/")[:-1]
            for n in range(1, len(parts) + 1):
                parent = "/".join([self.root, *parts[:n]])
                self._entries.setdefault(parent, Entry(parent, None, True, created=revision))
        self._entries[entry.key] = entry._replace(ttl=None)
        self._changed(entry.key)

    def _remove(self, key: str, subtree: bool) -> None:
        self._entries.pop(key, None)
        if subtree:
            below = key + "/"
            for name in [k for k in self._entries if k.startswith(below)]:
                del self._entries[name]
        self._changed(key)

    def _changed(self, key: str) -> None:
        """Forget the snapshot, unless `key` is a sync key (or their v2 directory), which
        the layout's parts leave out: every node's sync is an event at every node, and
        the same snapshot object is what spares the balancer parsing it again (a
        snapshot of 1,000 addresses: 2 to 6 ms, at every look and every wake-up)."""
        sync = self.root + "/sync"
        if key != sync and not key.startswith(sync + "/"):
            self._snapshot = None
