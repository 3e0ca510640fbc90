"""The cluster cache (yaim.dcs.cache): a listing, then a watch's events applied in order,
equals the listing of the final state; replays are ignored; `current_at` moves only on
what vouches for the cache being current."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from yaim.dcs import Entry, Event, snapshot_of
from yaim.dcs.cache import ClusterCache
from yaim.view import Mark

ROOT = "/service/c"
POOL = f"{ROOT}/ips/198.51.100.1"
MARK = f"{POOL}/marked"
NODE = f"{ROOT}/nodes/n1"


def put(revision: int, key: str, value: str = "v", created: Optional[int] = None) -> Event:
    return Event(revision, key, Entry(key, value, created=created or revision))


def test_a_listing_gives_the_snapshot_of_a_read_without_the_seconds_left():
    entries = [Entry(POOL, ""), Entry(MARK, "n1", ttl=1.5, created=7), Entry(NODE, "healthy")]
    cache = ClusterCache(ROOT, pool_dirs=False)
    cache.reset(entries, 9, sent_at=100.0)
    assert (cache.revision, cache.current_at) == (9, 100.0)
    snapshot = cache.snapshot()
    assert snapshot.marks == {"198.51.100.1": Mark("n1", None, 7)}
    assert snapshot == snapshot_of(ROOT, [e._replace(ttl=None) for e in entries], False)


def test_events_apply_in_order_and_the_snapshot_follows():
    cache = ClusterCache(ROOT, pool_dirs=False)
    cache.reset([Entry(POOL, "")], 3, 0.0)
    applied = cache.apply([put(4, MARK, "n1"), put(5, MARK, "n2", created=4)], 5, None)
    assert len(applied) == 2 and cache.snapshot().marks["198.51.100.1"] == Mark("n2", None, 4)
    cache.apply([Event(6, MARK)], 6, None)
    assert cache.snapshot().marks == {} and cache.revision == 6


def test_replayed_events_are_ignored_and_those_of_one_revision_all_apply():
    cache = ClusterCache(ROOT, pool_dirs=False)
    cache.reset([Entry(POOL, "")], 10, 0.0)  # the mark came and went before the listing
    assert cache.apply([put(8, MARK, "n1"), Event(9, MARK)], 10, None) == []
    assert cache.snapshot().marks == {}
    # one transaction: a released note and the deletion of the mark share a revision
    cache.apply([put(11, MARK, "n1")], 11, None)
    note = put(12, f"{ROOT}/released/198.51.100.1", '{"node": "n1", "mark": 11}')
    cache.apply([note, Event(12, MARK)], 12, None)
    assert cache.snapshot().marks == {} and "198.51.100.1" in cache.snapshot().released
    assert cache.apply([Event(12, MARK)], 12, None) == [Event(12, MARK)]  # again: harmless
    assert cache.snapshot().released and cache.revision == 12


def test_a_v2_directory_deleted_takes_its_keys_with_it_and_a_write_makes_its_directories():
    cache = ClusterCache(ROOT, pool_dirs=True)
    cache.reset([Entry(f"{ROOT}/ips", None, True, created=2)], 2, 0.0)
    cache.apply([put(3, MARK, "n1")], 3, None)  # a mark below a missing pool directory
    assert [e.key for e in cache.listing()] == [f"{ROOT}/ips", POOL, MARK]
    assert cache.listing()[1] == Entry(POOL, None, True, created=3)
    assert cache.snapshot().pool == {"198.51.100.1"}
    cache.apply([Event(4, POOL, subtree=True)], 4, None)
    assert [e.key for e in cache.listing()] == [f"{ROOT}/ips"]
    cache.apply([Event(5, ROOT, subtree=True)], 5, None)  # the whole cluster directory
    assert cache.listing() == []


def test_a_v3_key_deleted_leaves_the_keys_named_below_it():
    cache = ClusterCache(ROOT, pool_dirs=False)
    cache.reset([Entry(POOL, ""), Entry(MARK, "n1", created=2)], 3, 0.0)
    cache.apply([Event(4, POOL)], 4, None)
    assert [e.key for e in cache.listing()] == [MARK]


def test_current_at_moves_on_what_vouches_for_it_never_on_a_change_alone():
    cache = ClusterCache(ROOT, pool_dirs=False)
    cache.reset([], 5, sent_at=10.0)
    cache.apply([put(6, NODE)], 6, None)  # a replay, or events not known to be the last
    assert (cache.revision, cache.current_at) == (6, 10.0)
    cache.apply([], 9, at=12.0)  # a progress notification: revision and time, no events
    assert (cache.revision, cache.current_at) == (9, 12.0)
    cache.apply([put(10, NODE)], 10, at=11.0)  # an answer that arrived before the last one
    assert (cache.revision, cache.current_at) == (10, 12.0)
    cache.reset([], 10, sent_at=11.5)  # a new listing: its own send time
    assert cache.current_at == 11.5


def test_a_sync_changes_no_snapshot_so_the_same_one_is_shown_again():
    """The balancer parses a snapshot once (by identity): a sync key's event, at every
    node for every node's sync, keeps it; any other change makes a new one."""
    cache = ClusterCache(ROOT, pool_dirs=False)
    cache.reset([Entry(POOL, ""), Entry(NODE, "healthy")], 3, sent_at=1.0)
    first = cache.snapshot()
    cache.apply([put(4, f"{ROOT}/sync/n2"), Event(5, f"{ROOT}/sync/n3")], 5, None)
    assert cache.snapshot() is first and cache.revision == 5
    cache.apply([put(6, MARK, "n2")], 6, None)
    assert cache.snapshot() is not first and cache.snapshot().marks["198.51.100.1"].holder == "n2"


def test_events_need_a_listing_first():
    with pytest.raises(RuntimeError):
        ClusterCache(ROOT, pool_dirs=False).apply([put(1, NODE)], 1, None)


# --- the property: any changes applied to a listing equal the listing of the final state ---

NAMES = [
    *("ips/a", "ips/a/marked", "ips/b", "ips/b/marked", "nodes/n1", "released/a", "drain/n1"),
    "sync/n1",
]


class FlatStore:
    """etcd v3 as a model: one dict of keys; every transaction one revision."""

    def __init__(self) -> None:
        self.keys: Dict[str, Tuple[str, int]] = {}  # key -> (value, create revision)
        self.revision = 1

    def listing(self) -> List[Entry]:
        return sorted(Entry(k, v, created=c) for k, (v, c) in self.keys.items())

    def run(self, changes: Dict[str, Optional[str]]) -> List[Event]:
        """One transaction: put (a value) or delete (None) each key; its events."""
        self.revision += 1
        events = []
        for key, value in changes.items():
            if value is None:
                if self.keys.pop(key, None) is not None:  # deleting nothing is no event
                    events.append(Event(self.revision, key))
                continue
            created = self.keys.get(key, (value, self.revision))[1]
            self.keys[key] = (value, created)
            events.append(Event(self.revision, key, Entry(key, value, created=created)))
        return events


txns = st.lists(
    st.dictionaries(
        st.sampled_from([f"{ROOT}/{n}" for n in NAMES]),
        st.one_of(st.none(), st.sampled_from(["", "n1", "n2"])),
        min_size=1,
        max_size=3,
    ),
    max_size=25,
)


@given(txns, st.data())
def test_v3_changes_applied_to_any_listing_equal_the_final_listing(batches, data):
    replayed(FlatStore(), batches, ClusterCache(ROOT, pool_dirs=False), data.draw)


def replayed(store, operations, cache: ClusterCache, draw) -> None:
    """`operations` run on `store`; the cache listed at any point, then sent the events
    from any earlier point (a member behind the one listed from), which change nothing,
    then every event, which make the final state."""
    history = [(store.listing(), store.revision)]
    events: List[Event] = []
    for operation in operations:
        events += store.run(operation)
        history.append((store.listing(), store.revision))
    listing, revision = draw(st.sampled_from(history))
    behind = draw(st.integers(0, revision))
    cache.reset(listing, revision, 0.0)
    cache.apply([e for e in events if e.revision <= behind], behind, None)
    assert cache.listing() == listing and cache.revision == revision
    cache.snapshot()  # made now, kept while only sync keys change
    cache.apply(events, store.revision, None)
    assert cache.listing() == store.listing()
    assert cache.snapshot() == snapshot_of(ROOT, store.listing(), cache.pool_dirs)


class TreeStore:
    """etcd v2 as a model: nested directories; every operation one index."""

    def __init__(self) -> None:
        self.tree: Dict[str, dict] = {}  # name -> {"dir", "created", "value" | "children"}
        self.revision = 1

    def listing(self) -> List[Entry]:
        found: List[Entry] = []

        def walk(path: str, children: Dict[str, dict]) -> None:
            for name, node in children.items():
                key = f"{path}/{name}"
                found.append(Entry(key, node.get("value"), node["dir"], None, node["created"]))
                if node["dir"]:
                    walk(key, node["children"])

        walk(ROOT, self.tree)
        return sorted(found)

    def _parent(self, parts: List[str], make: bool) -> Optional[Dict[str, dict]]:
        """The children of the directory holding `parts`[-1]; None where a key is in the way."""
        children = self.tree
        for part in parts[:-1]:
            node = children.get(part)
            if node is None and make:
                node = children[part] = {"dir": True, "created": self.revision + 1, "children": {}}
            if node is None or not node["dir"]:
                return None
            children = node["children"]
        return children

    def run(self, operation: Tuple[str, str, str]) -> List[Event]:
        kind, path, value = operation
        if kind == "delete":
            return self.delete(path)
        return self.set(path, value if kind == "set" else None)

    def set(self, path: str, value: Optional[str]) -> List[Event]:
        """Set a key (a value) or make a directory (None); etcd refuses either over a directory."""
        parts = path.split("/")
        children = self._parent(parts, make=True)
        node = children.get(parts[-1]) if children is not None else None
        if children is None or (node is not None and (node["dir"] or value is None)):
            return []
        self.revision += 1
        key = f"{ROOT}/{path}"
        if value is None:
            children[parts[-1]] = {"dir": True, "created": self.revision, "children": {}}
            return [Event(self.revision, key, Entry(key, None, True, None, self.revision))]
        children[parts[-1]] = {"dir": False, "created": self.revision, "value": value}
        return [Event(self.revision, key, Entry(key, value, False, None, self.revision))]

    def delete(self, path: str) -> List[Event]:
        """Delete a key, or a directory with everything in it."""
        parts = path.split("/")
        children = self._parent(parts, make=False)
        if children is None or parts[-1] not in children:
            return []
        self.revision += 1
        node = children.pop(parts[-1])
        return [Event(self.revision, f"{ROOT}/{path}", None, node["dir"])]


operations = st.lists(
    st.tuples(
        st.sampled_from(["set", "mkdir", "delete"]),
        st.sampled_from([*NAMES, "ips", "nodes", "released", "sync"]),
        st.sampled_from(["n1", "n2"]),
    ),
    max_size=30,
)


@given(operations, st.data())
def test_v2_changes_applied_to_any_listing_equal_the_final_listing(ops, data):
    replayed(TreeStore(), ops, ClusterCache(ROOT, pool_dirs=True), data.draw)
