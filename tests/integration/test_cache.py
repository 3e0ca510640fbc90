"""The cluster cache (yaim.dcs.cache) fed by a backend's listing and watch, against a real
etcd on loopback, both APIs: through random writes, deletes and expiries by other clients
it equals a fresh read; a compacted (v3) or overrun (v2) history raises Resync and a new
listing recovers; a cut connection costs a reconnect and no event, a lost etcd is a
DCSError, and so is (v3) a member cut off from its leader, at once instead of silence."""

from __future__ import annotations

import ipaddress
import os
import random
import signal
import threading
import time

import pytest

from lab.etcd import EtcdCluster, etcd_release, gateway_path
from lab.util import wait_until
from tests.integration.conftest import lose_history, write_outside
from yaim.dcs import Resync, snapshot_of
from yaim.dcs.cache import ClusterCache
from yaim.errors import DCSError
from yaim.threads.watch import Feed, WatchThread

ADDRESSES = [ipaddress.ip_address(f"198.51.100.{120 + i}") for i in range(5)]
PROGRESS_MS = 300  # the members' progress notification interval (etcd's default: 10 min)

both = pytest.mark.parametrize("make", ["etcd", "etcd3"], indirect=True)


# etcd 3.4 made the interval of progress notifications a flag; before, it was 10 min.
PROGRESS_FLAG = etcd_release() >= (3, 4)


class ProgressEtcd(EtcdCluster):
    """Members that send watch progress notifications every PROGRESS_MS (3.4 and later)."""

    def _argv(self, member, state):
        if not PROGRESS_FLAG:
            return super()._argv(member, state)
        interval = f"--experimental-watch-progress-notify-interval={PROGRESS_MS}ms"
        return [*super()._argv(member, state), interval]


@pytest.fixture(scope="module")
def etcd():
    with ProgressEtcd(size=1) as cluster:
        yield cluster


class Follower:
    """A cache fed by one handle's listing and watch, followed in the test's own thread."""

    def __init__(self, store) -> None:
        self.store = store
        self.cache = ClusterCache(store.root, store.POOL_DIRS)
        self.relist()

    def relist(self) -> None:
        sent_at = time.monotonic()
        entries, revision = self.store.list_entries()
        self.cache.reset(entries, revision, sent_at)

    def step(self, timeout: float):
        """One watch call applied; its answer."""
        events, revision, caught_up = self.store.watch_events(self.cache.revision, timeout)
        self.cache.apply(events, revision, time.monotonic() if caught_up else None)
        return events, revision, caught_up

    def up_to(self, revision: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.cache.revision < revision and time.monotonic() < deadline:
            self.step(deadline - time.monotonic())
        assert self.cache.revision >= revision, (self.cache.revision, revision)

    def matches(self, reader) -> bool:
        """The cache, once at the revision of a fresh read, equals it (TTLs aside); False
        if it had moved past it meanwhile (an expiry), so that the caller reads again."""
        entries, revision = reader.list_entries()
        self.up_to(revision)
        if self.cache.revision != revision:
            return False
        stripped = [e._replace(ttl=None) for e in entries]
        assert self.cache.listing() == sorted(stripped)
        assert self.cache.snapshot() == snapshot_of(reader.root, stripped, reader.POOL_DIRS)
        return True


def quiet(reader) -> bool:
    """Every key with a TTL has expired: no marks, node keys or notes are left."""
    snapshot = reader.read()
    return not (snapshot.marks or snapshot.nodes or snapshot.released or snapshot.conflicts)


@both
def test_the_cache_through_random_writes_deletes_and_expiries_equals_a_fresh_read(make, etcd):
    nodes, follower, reader = [make("n1"), make("n2")], Follower(make("n3")), make("n4")
    rng = random.Random(18)
    for address in ADDRESSES[:3]:
        nodes[0].add_address(address)
    for i in range(150):
        node, address = rng.choice(nodes), rng.choice(ADDRESSES)
        kind = rng.randrange(8)
        if kind == 0:
            node.add_address(address)
        elif kind == 1:
            node.remove_address(address)
        elif kind == 2:
            node.touch_node()
        elif kind == 3:
            node.delete_mark(address)
        elif kind == 4:
            node.release_mark(address, i)  # a note on a TTL of its own, then the delete
        elif kind == 5:
            (node.drain if rng.random() < 0.5 else node.undrain)(node.node)
        elif kind == 6:
            write_outside(make, etcd, i)
        else:
            node.create_mark(address)  # v2: outside the pool it makes and deletes the directory
        if rng.random() < 0.3:
            follower.step(0.01)
    nodes[0].keep_alive()  # the loop may outlast a lease (etcd 3.3 is slower): a key
    nodes[0].touch_node()  # that is sure to be there, for the expiries to end
    assert reader.read().nodes
    wait_until(lambda: follower.matches(reader), 10, what="the cache at a fresh read's revision")
    # the leases (v3) and TTLs (v2) of the marks, node keys and notes run out: expiries
    wait_until(lambda: follower.step(0.2) and quiet(reader), 10, what="every TTL to run out")
    wait_until(lambda: follower.matches(reader), 10, what="the cache after the expiries")


@both
def test_a_lost_history_raises_resync_and_a_new_listing_recovers(make, etcd):
    n1, follower, reader = make("n1"), Follower(make("n3")), make("n4")
    make.add_pool(ADDRESSES[0])
    assert n1.create_mark(ADDRESSES[0])
    lose_history(make, etcd)
    with pytest.raises(Resync):
        follower.step(2.0)
    follower.relist()
    assert n1.delete_mark(ADDRESSES[0])
    wait_until(lambda: follower.matches(reader), 10, what="the cache after the new listing")


@pytest.mark.parametrize("make", ["etcd3"], indirect=True)
@pytest.mark.skipif(not PROGRESS_FLAG, reason="etcd before 3.4 sends progress every 10 min")
def test_a_progress_notification_moves_revision_and_current_at_without_events(make, etcd):
    follower = Follower(make("n3"))
    listed_at = follower.cache.current_at
    revision = write_outside(make, etcd, 0)
    deadline = time.monotonic() + 5
    answer = None
    while follower.cache.revision < revision and time.monotonic() < deadline:
        answer = follower.step(deadline - time.monotonic())
    assert answer is not None and answer[0] == [] and answer[2] is True, answer
    assert follower.cache.revision == revision and follower.cache.current_at > listed_at


WATCHING = {"etcd3": gateway_path("/v3/watch").encode(), "etcd": b"wait=true"}


def watch_in_thread(follower, timeout):
    """Run one watch call in a thread; returns a function giving what it raised, or None."""
    outcome = {}

    def run():
        try:
            follower.step(timeout)
        except Exception as exc:
            outcome["raised"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def result():
        thread.join(timeout + 5)
        assert not thread.is_alive(), "the watch call did not end"
        return outcome.get("raised")

    return result


@both
def test_a_cut_connection_costs_a_reconnect_and_no_event(make, relay):
    n1, reader = make("n1"), make("n4")
    follower = Follower(make("n3", endpoints=[relay.endpoint]))
    make.add_pool(ADDRESSES[0])
    result = watch_in_thread(follower, 2.0)
    wait_until(lambda: WATCHING[make.dcs_type] in relay.sent, 5, what="the watch request")
    relay.cut()
    assert result() is None  # retried on a new connection, from where it was
    assert n1.create_mark(ADDRESSES[0])
    n1.touch_node()
    wait_until(lambda: follower.matches(reader), 10, what="the cache after the reconnect")


@both
def test_a_lost_etcd_raises_dcs_error_from_the_watch(make, relay):
    follower = Follower(make("n3", endpoints=[relay.endpoint]))
    result = watch_in_thread(follower, 10.0)
    wait_until(lambda: WATCHING[make.dcs_type] in relay.sent, 5, what="the watch request")
    started = time.monotonic()
    relay.close()
    assert isinstance(result(), DCSError)
    assert time.monotonic() - started < 3.0


@pytest.mark.parametrize("make", ["etcd3"], indirect=True)
def test_a_watch_on_a_member_cut_off_from_its_leader_ends_instead_of_falling_silent(make):
    """Without etcd's require-leader metadata the stream would stay open and silent, and a
    cache fed by it would look merely quiet while the cluster went on without it."""
    with EtcdCluster(size=3) as cluster:
        follower = Follower(make("n3", endpoints=[cluster.endpoints[0]]))
        follower.step(0.5)  # the stream is open
        others = [member.proc.pid for member in cluster.members[1:]]
        for pid in others:
            os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(DCSError, match="no leader"):
                follower.step(15.0)
            print(f"watch ended {time.monotonic() - started:.1f} s after the cut")
        finally:
            for pid in others:
                os.kill(pid, signal.SIGCONT)


@both
def test_a_sync_write_makes_the_watched_cache_as_current_as_a_read_sent_then(make, etcd):
    """The balancer's look through the feed: after any writes by others, a sync write's
    event in the watch means the cache shows them all (a read sent before the sync could
    not show more); the watch thread keeps the feed in its own thread, as the daemon runs
    it, and writes outside the cluster directory (another user of etcd) do not stall it."""
    writer, syncer, watching = (make(n, ttl=60000) for n in ("n1", "n2", "n3"))
    feed = Feed(watching.root, watching.POOL_DIRS)
    stop, crashed, woken = threading.Event(), [], []
    thread = WatchThread(
        watching,
        lambda: woken.append(1),
        0.05,
        feed=feed,
        period=1.0,
        stop=stop,
        on_crash=crashed.append,
    )
    thread.start()
    try:
        wait_until(lambda: feed.live, 5, what="the first listing")
        rng = random.Random(1818)
        for i in range(40):
            address = rng.choice(ADDRESSES)
            rng.choice([writer.add_address, writer.create_mark, writer.remove_address])(address)
            if rng.random() < 0.3:
                write_outside(make, etcd, i)
            before = writer.read()  # sent before the sync: the sync's look shows it, or later
            sent_at = time.monotonic()
            look = feed.synced(syncer.sync(), sent_at, timeout=5.0)
            assert look is not None, f"round {i}: the sync's event did not come"
            assert (look.snapshot.pool, look.snapshot.marks.keys()) == (
                before.pool,
                before.marks.keys(),
            ), f"round {i}"
        assert woken and not crashed
    finally:
        stop.set()
        thread.interrupt(2.0)
