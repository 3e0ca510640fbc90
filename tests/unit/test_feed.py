"""The cache between the watch and the balancer (yaim.threads.watch.Feed), a look through it
(BalancerThread._look), and the handover rule over a cache that saw every change
(yaim.conflicts.Handovers.note with `history`)."""

from __future__ import annotations

import threading
import time
from typing import List

import pytest

from tests.unit.fakes import V4, V6, NotedDCS, healthy_balancer
from yaim.claims import Ledger
from yaim.conflicts import Handovers
from yaim.dcs import Entry, Event
from yaim.failsafe import Membership
from yaim.threads.watch import Behind, Feed
from yaim.view import parse_snapshot

ROOT = "/service/yaim"
POOL = f"{ROOT}/ips/{V4}"
MARK = f"{POOL}/marked"


def put(revision: int, key: str, value: str = "n2") -> Event:
    return Event(revision, key, Entry(key, value, created=revision))


def test_a_feed_answers_once_it_has_reached_the_revision_and_never_while_not_live():
    feed = Feed(ROOT, pool_dirs=False)
    assert feed.synced(1, 0.0, timeout=0.0) is None, "no listing yet"
    feed.reset([Entry(POOL, "")], 5, 10.0)
    first = feed.synced(5, 11.0, timeout=0.0)
    assert first is not None and first.sent_at == 11.0 and not first.continued
    assert feed.quiet_since(first)
    later = threading.Timer(0.05, lambda: feed.apply([put(6, MARK)], 6, None))
    later.start()
    second = feed.synced(6, 12.0, timeout=5.0)
    later.join()
    assert second is not None and second.continued and second.marked == {str(V4)}
    assert second.snapshot.marks[str(V4)].holder == "n2"
    assert not feed.quiet_since(first) and feed.quiet_since(second)
    assert feed.synced(9, 13.0, timeout=0.05) is None, "the sync's event never came"
    feed.lost()
    assert feed.synced(6, 14.0, timeout=1.0) is None and not feed.quiet_since(second)


def test_a_listing_breaks_the_history():
    feed = Feed(ROOT, pool_dirs=False)
    feed.reset([Entry(POOL, "")], 5, 10.0)
    feed.synced(5, 11.0, 0.0)
    feed.reset([Entry(POOL, "")], 8, 12.0)
    assert not feed.synced(8, 13.0, 0.0).continued


def views(store: NotedDCS):
    return parse_snapshot(store.read(), (), time.time())[0]


def test_a_mark_seen_long_ago_counts_as_seen_at_a_sync_whose_history_has_no_mark_since():
    store = NotedDCS([V4])
    store.put_mark(V4, "n2")
    handovers = Handovers(3.0)
    handovers.note(views(store), time.monotonic() - 10.0)  # seen long before the window
    store.release_by(V4, "n2")
    free = views(store)
    for history, trusted in ((None, False), (frozenset({str(V4)}), False), (frozenset(), True)):
        again = Handovers(3.0)
        again.seen = dict(handovers.seen)
        again.note(free, time.monotonic(), history)
        assert (V4 in again.addresses) == trusted, history


def test_a_read_is_wanted_once_etcd_answered_for_a_ttl_since_the_last_one():
    membership = Membership(2.0)
    membership.follow(True, 100.0)
    assert not membership.wants_read(100.5, 101.0), "not a ttl yet: no read would be good"
    assert membership.wants_read(100.5, 102.0)
    assert not membership.wants_read(102.1, 103.0), "the last one was good already"


class SyncingDCS(NotedDCS):
    """A store whose sync writes show up in `feed` at once, as the watch would bring them."""

    def __init__(self, pool, feed: Feed) -> None:
        super().__init__(pool)
        self.feed = feed
        self.revision = 10
        self.calls: List[str] = []
        self.last_success = self.last_failure = None

    def read(self):
        self.calls.append("read")
        return super().read()

    def sync(self) -> int:
        self.calls.append("sync")
        self.last_success = time.monotonic()
        self.revision += 1
        self.feed.apply([put(self.revision, f"{ROOT}/sync/n1", "n1")], self.revision, None)
        return self.revision


def test_the_balancer_looks_through_a_live_cache_and_syncs_only_after_a_change():
    feed = Feed(ROOT, pool_dirs=False)
    store = SyncingDCS([V4], feed)
    thread = healthy_balancer(store, Ledger("n1", 3.0), feed=feed)
    assert thread._look() and store.calls == ["read"], "not live yet: a full read"
    feed.reset([Entry(POOL, "")], 10, time.monotonic())
    synced = thread._look()
    assert store.calls == ["read", "sync"]
    quiet = thread._look()
    assert store.calls == ["read", "sync"], "quiet since (its own sync's event counted)"
    assert quiet.sent_at == synced.sent_at and not quiet.continued
    feed.apply([put(20, MARK)], 20, None)
    store.revision = 20
    look = thread._look()
    assert store.calls == ["read", "sync", "sync"] and look.continued
    assert look.snapshot.marks[str(V4)].holder == "n2" and look.marked == {str(V4)}
    thread._look()
    assert len(store.calls) == 3, "quiet again"
    store.last_success = time.monotonic()  # the balancer wrote (a mark made again, say)
    thread._look()
    assert len(store.calls) == 4, "a look older than its own write would miss it"


def test_after_a_failed_try_the_balancer_looks_through_a_request_though_the_cache_is_quiet():
    """Only a request that works undoes a failed one for the failsafe (etcd_answers)."""
    feed = Feed(ROOT, pool_dirs=False)
    store = SyncingDCS([V4], feed)
    thread = healthy_balancer(store, Ledger("n1", 3.0), feed=feed)
    feed.reset([Entry(POOL, "")], 10, time.monotonic())
    thread._look()
    thread._look()
    assert store.calls == ["sync"], "quiet"
    store.last_failure = time.monotonic() + 1.0  # a sync write that timed out, say
    thread._look()
    assert store.calls == ["sync", "sync"], "a failed try: a request, though nothing changed"
    store.last_failure = store.last_success - 1.0  # that sync worked
    thread._look()
    assert store.calls == ["sync", "sync"], "quiet again"


def test_only_a_change_that_asks_something_of_this_node_makes_a_sync_write():
    """A change that asks nothing of this node (a node came and went) is shown, and no sync
    is written; another node's new mark, its own mark gone, a listing: a current look."""
    other = f"{ROOT}/ips/{V6}"
    feed = Feed(ROOT, pool_dirs=False)
    store = SyncingDCS([V4, V6], feed)
    ledger = Ledger("n1", 3.0)
    thread = healthy_balancer(store, ledger, probe_timeout=0.0, feed=feed)
    nodes = [Entry(f"{ROOT}/nodes/n1", "n1"), Entry(f"{ROOT}/nodes/n2", "n2")]
    mine = Entry(MARK, "n1", created=11)
    feed.reset([Entry(POOL, ""), Entry(other, ""), *nodes, mine], 11, time.monotonic())
    assert ledger.hold(V4, time.monotonic(), "free", 11)
    store.put_mark(V4, "n1")
    thread.dcs_round([])
    assert store.calls == ["sync"], "the first look is current"
    store.revision = 20
    feed.apply([put(20, f"{other}/marked", "n2")], 20, None)
    thread.dcs_round([])
    assert store.calls == ["sync", "sync"], "n2's new mark is seen at a current look"
    store.revision = 21
    feed.apply([Event(21, f"{ROOT}/nodes/n3", Entry(f"{ROOT}/nodes/n3", "n3"))], 21, None)
    feed.apply([Event(22, f"{ROOT}/nodes/n3", None)], 22, None)
    thread.dcs_round([])
    assert store.calls == ["sync", "sync"], "n3 came and went: nothing to do, no sync write"
    assert "n3" not in thread.state.view.nodes, "the status shows the change all the same"
    store.revision = 23
    feed.apply([Event(23, MARK, None)], 23, None)
    thread.dcs_round([])
    assert store.calls == ["sync", "sync", "sync"], "its own mark gone: a current look first"
    assert V4 not in ledger.held()
    taken = [Entry(MARK, "n2", created=24), Entry(f"{other}/marked", "n2", created=20)]
    feed.reset([Entry(POOL, ""), Entry(other, ""), *nodes, *taken], 30, time.monotonic())
    thread.dcs_round([])
    assert store.calls == ["sync"] * 4, "after a listing (a resync) a current look"


def test_a_mark_the_heartbeat_found_gone_is_read_for_not_taken_from_a_stuck_cache():
    """The watch sits on a hung member (a v2 long poll that ends unanswered looks quiet):
    the cache still shows this node's mark, which expired. The heartbeat's word (Behind)
    makes the next round read the store, not the quiet look (chaos, a hung etcd leader: the
    balancer went on with its last look and the mark kept through the outage was never made
    again, so its address was fenced with etcd answering)."""
    feed = Feed(ROOT, pool_dirs=False)
    store = SyncingDCS([V4], feed)
    ledger = Ledger("n1", 3.0)
    thread = healthy_balancer(store, ledger, probe_timeout=0.0, feed=feed)
    mine = Entry(MARK, "n1", created=11)
    feed.reset([Entry(POOL, ""), Entry(f"{ROOT}/nodes/n1", "n1"), mine], 11, time.monotonic())
    assert ledger.hold(V4, time.monotonic(), "free", 11)
    store.put_mark(V4, "n1")
    thread.dcs_round([])
    assert store.calls == ["sync"]
    store.release_by(V4, "n1", note=False)  # expired; the stuck watch shows nothing
    thread.dcs_round([])
    assert store.calls == ["sync"], "quiet: the last look stands"
    thread.dcs_round([Behind("the heartbeat found a mark of this node gone")])
    assert store.calls == ["sync", "read"]
    assert store.marks.get(str(V4)) == "n1" and ledger.held() == {V4}, "marked again"


def test_a_sync_the_cache_does_not_reach_in_time_tells_the_watch_once_and_marks_it_behind():
    feed = Feed(ROOT, pool_dirs=False)
    told: List[str] = []
    feed.on_behind = lambda: told.append("behind")
    feed.reset([Entry(POOL, "")], 5, 10.0)
    assert feed.synced(5, 11.0, timeout=0.0) is not None and not feed.behind()
    assert feed.synced(7, 12.0, timeout=0.01) is None
    assert told == ["behind"] and feed.behind()
    feed.apply([put(7, MARK)], 7, None)
    assert not feed.behind(), "the sync's revision reached: the member caught up"
    feed.lost()
    assert feed.synced(9, 13.0, timeout=0.0) is None and told == ["behind"], "not live: no word"


class QuietStore:
    """A watch's handle whose member answers every watch request with nothing (frozen, or
    a v2 member cut from the others): records the waits asked and the endpoint moves."""

    node = "n1"
    CACHEABLE = True

    def __init__(self, interruptible: bool) -> None:
        self.WATCH_INTERRUPTIBLE = interruptible
        self.endpoints = ["http://192.0.2.1:2379", "http://192.0.2.2:2379"]
        self.current = 0
        self.waits: List[float] = []
        self.interrupted = 0

    @property
    def endpoint(self) -> str:
        return self.endpoints[self.current]

    def list_entries(self):
        return [Entry(POOL, "")], 5

    def watch_events(self, after: int, timeout: float):
        self.waits.append(timeout)
        return [], after, False

    def interrupt(self) -> None:
        self.interrupted += 1

    def move_on(self) -> None:
        self.current = (self.current + 1) % len(self.endpoints)


@pytest.mark.parametrize("interruptible", [True, False])
def test_a_watch_whose_member_stays_quiet_past_a_missed_sync_asks_the_next_endpoint(
    interruptible, caplog
):
    from yaim.threads.watch import QUIET_POLL, WATCH_WAIT, WatchThread

    store, feed = QuietStore(interruptible), Feed(ROOT, pool_dirs=False)
    thread = WatchThread(
        store, lambda: None, 0.5, feed=feed, stop=threading.Event(), on_crash=print
    )
    thread.step([])  # the listing, at revision 5
    thread.step([])  # a quiet cluster: it stays where it is
    assert store.current == 0
    assert store.waits == [WATCH_WAIT if interruptible else QUIET_POLL * 0.5]
    assert feed.synced(8, 1.0, timeout=0.0) is None  # the balancer's sync write, unseen
    assert store.interrupted == 1, "the wait is ended where it can be"
    thread.step([])
    assert store.current == 1 and "asking the next endpoint" in caplog.text
    feed.apply([put(8, MARK)], 8, None)  # the next member has it
    thread.step([])
    assert store.current == 1, "caught up: it stays there"
