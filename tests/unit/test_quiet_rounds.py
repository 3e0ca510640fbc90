"""A steady node's rounds cost O(changes), not O(pool): the balancer's quiet look at the
same cache again (the handover rule's notes, the conflicts it skips, its own marks), and
the v3 heartbeat's refresh of the marks its lease carries. Each shortcut gives what the
full work would."""

from __future__ import annotations

import ipaddress
import time
from types import SimpleNamespace
from typing import List, Optional
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yaim import conflicts
from yaim.conflicts import Conflicts, Handovers
from yaim.dcs import Incomplete, etcd3
from yaim.errors import DCSError
from yaim.view import ClusterView, Release

ADDRESSES = [ipaddress.ip_address(f"198.51.100.{i}") for i in range(1, 5)]
TTL = 3.0


class Full(Handovers):
    """Handovers without its shortcut: the full work on every note."""

    def note(self, view, sent_at, history=None) -> None:
        self._only_last = False
        super().note(view, sent_at, history)


def view_of(holders, released) -> ClusterView:
    """A view where `holders` (address index -> node) hold their marks, numbered by
    address and holder, and `released` (address index -> node) left notes."""
    held = {ADDRESSES[i]: node for i, node in holders.items()}
    marks = {a: 10 * (ADDRESSES.index(a) + 1) + int(node[1]) for a, node in held.items()}
    notes = {
        ADDRESSES[i]: Release(node, 10 * (i + 1) + int(node[1]))
        for i, node in released.items()
        if ADDRESSES[i] not in held
    }
    return ClusterView(
        nodes=frozenset({"n1", "n2"}),
        pool=frozenset(ADDRESSES),
        holders=held,
        marks=marks,
        released=notes,
    )


nodes = st.sampled_from(["n1", "n2"])
indexes = st.integers(0, len(ADDRESSES) - 1)
views = st.builds(view_of, st.dictionaries(indexes, nodes), st.dictionaries(indexes, nodes))
steps = st.lists(
    st.tuples(
        st.floats(0, 2.0),  # seconds that pass first
        st.one_of(st.none(), views),  # None: the same look again (a quiet round)
        st.one_of(st.none(), st.frozensets(st.sampled_from([str(a) for a in ADDRESSES]))),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_a_note_of_the_same_look_again_leaves_what_the_full_work_would(run):
    clock = [100.0]
    with mock.patch.object(conflicts.time, "monotonic", lambda: clock[0]):
        fast, full = Handovers(TTL), Full(TTL)
        view: Optional[ClusterView] = None
        sent_at = clock[0]
        for passed, new, history in run:
            clock[0] += passed
            if new is not None or view is None:
                view, sent_at = new or view_of({}, {}), clock[0]
            else:
                history = None  # a quiet round: the last sync's look again, no history
            fast.note(view, sent_at, history)
            full.note(view, sent_at, history)
            assert fast.addresses == full.addresses
            assert fast.seen == full.seen


def test_the_same_look_noted_again_does_no_work():
    handovers = Handovers(TTL)
    view = view_of({0: "n1", 1: "n2"}, {})
    handovers.note(view, time.monotonic())
    seen = handovers.seen
    handovers.note(view, handovers.seen[ADDRESSES[0]].read_at)
    assert handovers.seen is seen and handovers.addresses == frozenset()


def test_a_view_is_skipped_as_it_is_while_this_node_saw_no_conflict():
    config = SimpleNamespace(node_name="n1", conflict_backoff_s=300.0)
    skipping = Conflicts(config, dcs=None)
    view = view_of({0: "n1"}, {})
    assert skipping.skip(view) is view


# --- the v3 heartbeat ---

CONFIG = SimpleNamespace(
    node_name="n1",
    dcs_namespace="service",
    dcs_clustername="yaim",
    ttl_s=TTL,
    retry_num=1,
    retry_after_s=0.0,
    interval_s=1.0,
    dcs_endpoints=("http://127.0.0.1:1",),
    etcd_user=None,
    etcd_password=None,
    etcd_ca_file=None,
    etcd_cert_file=None,
    etcd_key_file=None,
    peer_listen=None,
    failsafe_on=False,
)
LEASE = 7


@pytest.fixture
def v3(monkeypatch):
    """An etcd3 handle whose lease carries the marks of ADDRESSES[0] and [2]; the others'
    refreshes (which need requests) are recorded, and ADDRESSES[1]'s fails."""
    backend = etcd3.Backend(CONFIG)
    backend.session.start(LEASE, time.monotonic())
    for address in (ADDRESSES[0], ADDRESSES[2]):
        backend.session.attach(backend._mark_key(address), LEASE, 5)
    asked: List[object] = []

    def refresh_mark(address) -> bool:
        asked.append(address)
        if address == ADDRESSES[1]:
            raise DCSError("etcd is gone")
        return True

    monkeypatch.setattr(backend, "refresh_mark", refresh_mark)
    return backend, asked


def test_marks_on_the_lease_are_renewed_without_a_request_or_a_key_made_again(v3):
    backend, asked = v3
    key = backend._mark_key(ADDRESSES[0])
    before = time.monotonic()
    done = backend.refresh_marks([ADDRESSES[0], ADDRESSES[2]])
    assert asked == [] and set(done) == {ADDRESSES[0], ADDRESSES[2]}
    assert all(r.ok and r.sent_at >= before for r in done.values())
    assert backend._mark_key(ADDRESSES[0]) is key, "made once, kept"


def test_a_failed_refresh_keeps_the_answers_of_every_mark_on_the_lease(v3):
    backend, asked = v3
    with pytest.raises(Incomplete) as failed:
        backend.refresh_marks(ADDRESSES)
    assert asked == [ADDRESSES[1]], "the marks not known to be on the lease go one by one"
    assert set(failed.value.done) == {ADDRESSES[0], ADDRESSES[2]}


def test_the_marks_not_on_the_lease_are_refreshed_in_order_after_those_on_it(v3):
    backend, asked = v3
    done = backend.refresh_marks([ADDRESSES[3], ADDRESSES[0]])
    assert asked == [ADDRESSES[3]] and set(done) == {ADDRESSES[0], ADDRESSES[3]}


def test_a_handle_keeps_no_more_mark_keys_than_its_bound(monkeypatch):
    monkeypatch.setattr("yaim.dcs.MARK_KEYS", 2)
    backend = etcd3.Backend(CONFIG)
    for address in ADDRESSES:
        assert backend._mark_key(address) == f"/service/yaim/ips/{address}/marked"
    assert len(backend._mark_keys) <= 2
