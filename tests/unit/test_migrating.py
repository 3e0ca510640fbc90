"""yaim.dcs.migrating: how a node of both layouts merges their reads, and how it makes,
renews and deletes its marks in the two (with stand-in layouts; the real ones on a real
etcd: tests/integration/test_dcs_migrating.py)."""

from __future__ import annotations

import ipaddress
import logging
from typing import Dict, List, Optional

import pytest

from yaim import config, dcs
from yaim.dcs import Incomplete, Refreshed
from yaim.dcs.migrating import ONLY_V2, ONLY_V3, Backend, merge
from yaim.errors import DCSError
from yaim.view import Mark, Snapshot, parse_snapshot

A, B, C = (ipaddress.ip_address(f"198.51.100.{n}") for n in (1, 2, 3))
ME = "n1"


def snap(pool=(), marks=None, **kw) -> Snapshot:
    return Snapshot(pool=frozenset(map(str, pool)), marks=marks or {}, nodes=frozenset(), **kw)


# --- merge ---


def test_the_pool_is_what_both_layouts_list_and_a_one_sided_address_is_refused():
    merged = merge(snap([A, B]), snap([A, C]), ME).snapshot
    view, rejected = parse_snapshot(merged)
    assert view.pool == {A}
    assert {r.name: r.reason for r in rejected} == {str(B): ONLY_V3, str(C): ONLY_V2}


def test_a_mark_in_either_layout_holds_the_address():
    new = snap([A, B, C], {str(A): Mark("n2", 2.0, 7)})
    old = snap([A, B, C], {str(B): Mark("n3", 1.0, 9)})
    view, _ = parse_snapshot(merge(new, old, ME).snapshot)
    assert view.holders == {A: "n2", B: "n3"}
    # the v3 number names the mark in v3's released notes; a v2 number names nothing there
    assert view.marks == {A: 7}


def test_two_marks_of_one_holder_are_one_mark_with_the_v3_number_and_the_shorter_ttl():
    new = snap([A], {str(A): Mark("n2", 2.0, 7)})
    old = snap([A], {str(A): Mark("n2", 1.0, 9)})
    merged = merge(new, old, ME)
    assert merged.snapshot.marks == {str(A): Mark("n2", 1.0, 7)}
    assert merged.conflicts == {}


@pytest.mark.parametrize(
    "v2, v3, shown",
    [("n2", "n3", "n3"), (ME, "n3", "n3"), ("n2", ME, "n2")],
)
def test_marks_naming_two_holders_are_a_conflict_shown_held_by_the_other(v2, v3, shown):
    merged = merge(snap([A], {str(A): Mark(v3, 2.0, 7)}), snap([A], {str(A): Mark(v2)}), ME)
    assert merged.conflicts == {str(A): (v2, v3)}
    assert merged.snapshot.marks[str(A)] == Mark(shown, 2.0, None)


def test_nodes_drains_and_notes_of_both_layouts_but_released_notes_of_v3_only():
    new = Snapshot(
        pool=frozenset(),
        marks={},
        nodes=frozenset({"n1"}),
        drained=frozenset({"n1"}),
        conflicts={"a": "v3"},
        released={"r": "v3"},
        node_values={"n1": "v3", "n2": "v3"},
        out={"n4": "v3"},
    )
    old = Snapshot(
        pool=frozenset(),
        marks={},
        nodes=frozenset({"n2"}),
        drained=frozenset({"n2"}),
        conflicts={"a": "v2", "b": "v2"},
        released={"s": "v2"},
        node_values={"n2": "v2"},
        out={"n5": "v2"},
        rebalance="asked in v2",
    )
    merged = merge(new, old, ME).snapshot
    assert merged.nodes == merged.drained == {"n1", "n2"}
    assert merged.conflicts == {"a": "v3", "b": "v2"}
    assert merged.released == {"r": "v3"}
    assert merged.node_values == {"n1": "v3", "n2": "v3"}
    assert merged.out == {"n4": "v3", "n5": "v2"}
    assert merged.rebalance == "asked in v2"
    assert merge(new._replace(rebalance="v3"), old, ME).snapshot.rebalance == "v3"


# --- the two layouts' marks, with stand-ins ---


class Layout:
    """One layout's marks in memory: address -> holder; `calls` is shared by both."""

    def __init__(self, name: str, calls: List[str], clock: List[float]) -> None:
        self.name, self.calls, self.clock = name, calls, clock
        self.marks: Dict[object, str] = {}
        self.fail: Optional[object] = None  # the address whose request fails (DCSError)
        self.node, self.root, self.config, self.stop = ME, "/service/t", None, None
        self.rotation = None

    def _sent(self) -> float:
        self.clock[0] += 1.0
        return self.clock[0]

    def create_marks(self, addresses):
        made = {}
        for address in addresses:
            self.calls.append(f"{self.name} create {address}")
            if address == self.fail:
                raise DCSError("down")
            sent = self._sent()
            if address not in self.marks:
                self.marks[address] = ME
                made[address] = sent
        return made

    def refresh_marks(self, addresses):
        done = {}
        for address in addresses:
            self.calls.append(f"{self.name} refresh {address}")
            if address == self.fail:
                raise Incomplete("down", done)
            done[address] = Refreshed(self.marks.get(address) == ME, self._sent())
        return done

    def delete_mark(self, address):
        self.calls.append(f"{self.name} delete {address}")
        return self.marks.pop(address, None) == ME or False

    def release_mark(self, address, mark):
        self.calls.append(f"{self.name} release {address} {mark}")
        return self.delete_mark(address)

    def ttl_start(self, sent_at):
        return sent_at - 0.5 if self.name == "v3" else sent_at

    def note_conflict(self, address, note):
        self.calls.append(f"{self.name} conflict {address}")


@pytest.fixture
def pair():
    calls: List[str] = []
    clock = [0.0]
    new, old = Layout("v3", calls, clock), Layout("v2", calls, clock)
    return Backend.of(new, old), new, old, calls


def test_a_take_makes_the_v2_mark_first_then_the_v3_one(pair):
    store, new, old, calls = pair
    assert store.create_marks([A]) == {A: 1.0}  # the v2 create's send time: the earlier
    assert calls == [f"v2 create {A}", f"v3 create {A}"]
    assert new.marks == old.marks == {A: ME}
    assert store.ttl_start(1.0) == 0.5  # the lease's last keep-alive, if earlier


def test_a_refused_v3_create_undoes_the_v2_mark(pair):
    store, new, old, calls = pair
    new.marks[A] = "n3"
    assert store.create_marks([A, B]) == {B: 2.0}
    assert old.marks == {B: ME} and new.marks == {A: "n3", B: ME}
    assert f"v2 delete {A}" in calls


def test_a_v2_create_refused_asks_nothing_of_v3(pair):
    store, new, old, calls = pair
    old.marks[A] = "n2"
    assert not store.create_mark(A)
    assert calls == [f"v2 create {A}"] and new.marks == {}


def test_a_release_deletes_the_v2_mark_then_the_v3_mark_with_its_note(pair):
    store, new, old, calls = pair
    store.create_marks([A])
    calls.clear()
    assert store.release_mark(A, 7)
    assert calls == [f"v2 delete {A}", f"v3 release {A} 7", f"v3 delete {A}"]
    assert new.marks == old.marks == {}
    assert not store.delete_mark(A)


def test_a_refresh_renews_both_from_the_earlier_send(pair):
    store = pair[0]
    store.create_marks([A])
    assert store.refresh_marks([A]) == {A: Refreshed(True, 3.0)}


def test_a_mark_someone_else_holds_in_either_layout_fails_the_refresh(pair):
    store, new, old, _ = pair
    store.create_marks([A, B])
    old.marks[A], new.marks[B] = "n2", "n3"
    done = store.refresh_marks([A, B])
    assert not done[A].ok and not done[B].ok
    assert old.marks[A] == "n2" and new.marks[B] == "n3"


def test_a_half_found_gone_is_made_again_and_both_gone_is_lost(pair, caplog):
    store, new, old, _ = pair
    store.create_marks([A, B, C])
    del old.marks[A], new.marks[B]
    del old.marks[C], new.marks[C]
    with caplog.at_level(logging.INFO):
        done = store.refresh_marks([A, B, C])
    assert done[A].ok and done[B].ok and not done[C].ok
    assert old.marks == new.marks == {A: ME, B: ME}
    assert f"made the v2 mark of {A}" in caplog.text and f"made the v3 mark of {B}" in caplog.text


def test_a_half_that_cannot_be_made_again_is_lost(pair):
    store, new, old, _ = pair
    store.create_marks([A])
    old.marks[A] = "n2"
    del new.marks[A]
    assert not store.refresh_mark(A)
    assert new.marks == {}


def test_a_layout_failing_part_way_counts_only_what_both_answered(pair):
    store, new = pair[:2]
    store.create_marks([A, B])
    new.fail = B
    with pytest.raises(Incomplete) as caught:
        store.refresh_marks([A, B])
    assert set(caught.value.done) == {A}


class Reads(Layout):
    """A layout whose every read shows `shown`."""

    def __init__(self, name: str, shown: Snapshot) -> None:
        super().__init__(name, [], [0.0])
        self.shown = shown

    def read(self) -> Snapshot:
        return self.shown


def test_a_conflict_between_the_layouts_is_logged_once_while_it_lasts(caplog):
    conflict = snap([A], {str(A): Mark("n3")})
    new, old = Reads("v3", conflict), Reads("v2", snap([A], {str(A): Mark("n2")}))
    store = Backend.of(new, old)
    with caplog.at_level(logging.WARNING):
        store.read()
        store.read()
    assert caplog.text.count("marked by n2 in the v2 layout and by n3 in the v3") == 1
    new.shown = snap([A])
    store.read()
    new.shown = conflict
    with caplog.at_level(logging.WARNING):
        store.read()
    assert caplog.text.count("marked by n2 in the v2 layout") == 2


@pytest.mark.parametrize("mine", ["v2", "v3"])
def test_a_half_of_this_node_beside_someone_elses_mark_is_deleted(mine, caplog):
    ours, theirs = snap([A], {str(A): Mark(ME)}), snap([A], {str(A): Mark("n5")})
    new, old = (
        (Reads("v3", ours), Reads("v2", theirs))
        if mine == "v3"
        else (
            Reads("v3", theirs),
            Reads("v2", ours),
        )
    )
    for layout, shown in ((new, new.shown), (old, old.shown)):
        layout.marks = {A: shown.marks[str(A)].holder}
    store = Backend.of(new, old)
    with caplog.at_level(logging.INFO):
        view = store.read()
    assert view.marks[str(A)].holder == "n5", "shown held by the other one"
    halves = {"v3": new, "v2": old}
    assert halves[mine].calls == [f"{mine} delete {A}"] and A not in halves[mine].marks
    other = "v2" if mine == "v3" else "v3"
    assert halves[other].calls == [], "someone else's mark is never touched"
    assert f"deleted the {mine} mark of {A} on node {ME}" in caplog.text


def test_v2_nodes_beside_v3_nodes_are_an_error_once_two_reads_show_them(caplog):
    def nodes(*names):
        return Snapshot(pool=frozenset(), marks={}, nodes=frozenset(names))

    new, old = Reads("v3", nodes("n1", "n3")), Reads("v2", nodes("n1", "n2"))
    store = Backend.of(new, old)
    with caplog.at_level(logging.ERROR):
        store.read()
        assert "v2 layout only" not in caplog.text  # n3 may be a migrating node half written
        store.read()
        store.read()
    assert caplog.text.count("node(s) n2 are on the v2 layout only and node(s) n3 on") == 1
    old.shown = nodes("n1", "n2", "n3")
    with caplog.at_level(logging.ERROR):
        store.read()
        store.read()
    assert caplog.text.count("v2 layout only") == 1


def test_the_key_picks_the_backend_of_both_layouts(tmp_path):
    path = tmp_path / "yaim.yml"
    path.write_text("interface: lo\nchecker-type: none\ndcs-type: etcd3\n")
    plain = config.load(str(path), {})
    migrating = config.load(str(path), {"YAIM_DCS_MIGRATE_FROM": "etcd"})
    assert dcs.unavailable(migrating) is None
    store = dcs.connect(migrating)
    assert isinstance(store, Backend) and isinstance(store, dcs.DCS)
    assert not store.CACHEABLE and not isinstance(dcs.connect(plain), Backend)
    assert isinstance(store.clone(), Backend)


def test_both_layouts_ask_one_endpoint_and_pass_a_hung_member_together(tmp_path):
    path = tmp_path / "yaim.yml"
    endpoints = ",".join(f"http://192.0.2.{n}:2379" for n in (1, 2, 3))
    path.write_text("interface: lo\nchecker-type: none\ndcs-type: etcd3\n")
    settings = {"YAIM_DCS_MIGRATE_FROM": "etcd", "YAIM_DCS_ENDPOINTS": endpoints}
    store = dcs.connect(config.load(str(path), settings))
    for handle in (store, store.clone()):
        assert handle.legacy.endpoint == handle.primary.endpoint
        first = handle.primary.endpoint
        handle.primary.move_on()  # a try timed out there
        assert handle.legacy.endpoint == handle.primary.endpoint != first


@pytest.mark.parametrize(
    "v2_nodes, v3_nodes, layouts",
    [
        (("n1", "n2"), ("n1",), ["v2"]),  # v2 nodes run: the layout they read
        (("n1",), ("n1", "n3"), ["v3"]),  # v3 nodes run
        (("n1",), ("n1",), ["v3"]),  # migrating nodes only
        (("n2",), ("n3",), ["v2", "v3"]),  # both kinds (an error of the operator's)
        (None, None, ["v2", "v3"]),  # no read yet
    ],
)
def test_a_conflicts_note_goes_to_the_layout_the_single_layout_nodes_read(
    v2_nodes, v3_nodes, layouts
):
    def nodes(names):
        return Snapshot(pool=frozenset(), marks={}, nodes=frozenset(names or ()))

    new, old = Reads("v3", nodes(v3_nodes)), Reads("v2", nodes(v2_nodes))
    store = Backend.of(new, old)
    if v2_nodes is not None:
        store.read()
    store.note_conflict(A, "{}")
    assert [name for name in ("v2", "v3") if f"{name} conflict {A}" in new.calls + old.calls] == (
        layouts
    )
