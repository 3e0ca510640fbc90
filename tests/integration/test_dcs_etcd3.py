"""The etcd v3 backend against a real etcd on loopback: layout, leases, atomicity, the
session shared by a node's handles, failover; and the watch of both backends."""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import threading
import time

import etcd as python_etcd
import pytest

from lab.etcd import _free_port
from lab.util import wait_until
from tests.integration.conftest import b64, key_of, v3
from yaim.dcs import gateway as etcd3_gateway
from yaim.dcs.etcd3 import MARKS_PER_TXN
from yaim.errors import DCSError
from yaim.view import Release, parse_snapshot

A = ipaddress.ip_address("198.51.100.100")
B = ipaddress.ip_address("198.51.100.101")


# For what both backends must do alike: run the test once per dcs-type.
both = pytest.mark.parametrize("make", ["etcd", "etcd3"], indirect=True)


def test_read_sorts_the_v3_layout(make, etcd):
    n1 = make("n1")
    assert n1.read().pool == frozenset()
    for name in ("198.51.100.100", "not-an-ip"):
        make.add_pool(name)
    v3(etcd, "/v3/kv/put", {"key": b64(make.root + "/drain/n2"), "value": b64("drained")})
    assert n1.create_mark(A)
    n1.touch_node()
    snapshot = n1.read()
    assert snapshot.pool == {"198.51.100.100", "not-an-ip"}
    assert snapshot.marks["198.51.100.100"].holder == "n1"
    assert snapshot.nodes == {"n1"} and snapshot.drained == {"n2"}
    lease = n1.session.lease
    assert key_of(etcd, make.root + "/ips/198.51.100.100/marked") == ("n1", lease)
    assert key_of(etcd, make.root + "/nodes/n1")[1] == lease


def test_the_operator_s_read_tells_each_mark_s_ttl_from_its_holder_s_lease(make):
    n1, n2 = make("n1"), make("n2")
    make.add_pool(A)
    make.add_pool(B)
    assert n1.create_mark(A) and n2.create_mark(B)
    assert n1.read().marks[str(A)].ttl is None  # the daemon's read does without
    marks = make("n3").read_with_ttls().marks
    assert all(0 <= marks[str(a)].ttl <= n1.etcd_ttl for a in (A, B)), marks


def test_marks_are_atomic_and_only_the_holder_refreshes_or_deletes(make):
    n1, n2 = make("n1"), make("n2")
    make.add_pool(A)
    assert n1.create_mark(A)
    assert not n2.create_mark(A)
    assert n1.refresh_mark(A)
    assert not n2.refresh_mark(A)
    assert not n2.delete_mark(A)
    assert n1.delete_mark(A)
    assert not n1.refresh_mark(A)
    assert n2.create_mark(A)


@both
def test_a_round_s_marks_are_made_together_only_where_free(make, etcd, requests_made):
    """create_marks: the free pool addresses are marked for this node, the one another node
    marked and the one outside the pool are not; v3 in one request and one revision, the
    marks on the node's lease."""
    n1, n2 = make("n1"), make("n2")
    taken, outside = ipaddress.ip_address("198.51.100.102"), ipaddress.ip_address("198.51.100.9")
    for address in (A, B, taken):
        make.add_pool(address)
    assert n2.create_mark(taken)
    n1.touch_node()  # its lease granted
    before = requests_made()
    started = time.monotonic()
    made = n1.create_marks([A, taken, outside, B])
    sent = requests_made() - before
    assert set(made) == {A, B} and all(started <= at <= time.monotonic() for at in made.values())
    assert n1.read().marks[str(taken)].holder == "n2"
    assert {n1.read().marks[str(a)].holder for a in (A, B)} == {"n1"}
    if make.dcs_type == "etcd3":
        assert sent == 1, "one transaction for the whole round"
        marks = [b64(f"{make.root}/ips/{a}/marked") for a in (A, B)]
        kvs = [v3(etcd, "/v3/kv/range", {"key": key})["kvs"][0] for key in marks]
        assert {kv["mod_revision"] for kv in kvs} == {kvs[0]["mod_revision"]}
        assert {kv["lease"] for kv in kvs} == {str(n1.session.lease)}
        before = requests_made()
        assert n1.refresh_mark(A) and requests_made() == before, "known to be on the lease"


def test_a_round_of_more_marks_than_one_transaction_may_hold_sends_a_few(make, requests_made):
    n1 = make("n1")
    pool = [ipaddress.ip_address("198.51.100.0") + i for i in range(MARKS_PER_TXN + 2)]
    for address in pool:
        make.add_pool(address)
    n1.touch_node()
    before = requests_made()
    assert list(n1.create_marks(pool)) == pool
    assert requests_made() - before == 2


def test_a_round_s_transaction_whose_answer_is_lost_makes_no_mark_known(make, monkeypatch):
    """etcd applied the round's transaction but its answer was lost: the retry finds the
    marks taken and reports none made, as a lost answer of one create_mark does; the
    marks are this node's, and the next round resumes them (refresh_mark)."""
    n1 = make("n1")
    for address in (A, B):
        make.add_pool(address)
    call, lost = etcd3_gateway.Gateway.call, []

    def answer_lost(gateway, path, body):
        answer = call(gateway, path, body)
        if path == "/kv/txn" and not lost and "request_txn" in body["success"][0]:
            lost.append(answer)
            raise etcd3_gateway.GatewayError(14, "the answer was lost")
        return answer

    monkeypatch.setattr(etcd3_gateway.Gateway, "call", answer_lost)
    assert n1.create_marks([A, B]) == {}
    assert lost, "the transaction went out once and was applied"
    assert {n1.read().marks[str(a)].holder for a in (A, B)} == {"n1"}
    assert not n1.session.holding(n1._mark_key(a) for a in (A, B))
    assert n1.refresh_mark(A) and n1.refresh_mark(B)


def test_no_mark_for_an_address_outside_the_pool(make, etcd):
    n1 = make("n1")
    assert not n1.create_mark(B)
    assert key_of(etcd, make.root + f"/ips/{B}/marked") is None


def test_one_keep_alive_per_round_refreshes_the_node_key_and_every_mark(make, requests_made):
    n1 = make("n1")
    addresses = [ipaddress.ip_address(f"198.51.100.{110 + i}") for i in range(5)]
    for address in addresses:
        make.add_pool(address)
        assert n1.create_mark(address)
    n1.touch_node()
    before = requests_made()
    for _ in range(3):  # three heartbeat rounds, more than a TTL
        n1.keep_alive()
        n1.touch_node()
        assert all(n1.refresh_mark(address) for address in addresses)
        time.sleep(0.8)  # the heartbeat's own pace: the lease must outlive the rounds
    assert requests_made() - before == 3
    snapshot = n1.read()
    assert set(snapshot.marks) == {str(a) for a in addresses} and snapshot.nodes == {"n1"}


def test_the_fence_time_follows_the_keep_alive_not_the_refresh(make):
    n1 = make("n1")
    make.add_pool(A)
    assert n1.create_mark(A)
    before = time.monotonic()
    n1.keep_alive()
    after = time.monotonic()
    time.sleep(0.2)
    assert n1.refresh_mark(A)
    assert before <= n1.ttl_start(time.monotonic()) <= after


def test_node_key_and_marks_vanish_together_when_the_lease_expires(make, etcd):
    n1 = make("n1")
    make.add_pool(A)
    make.add_pool(B)
    assert n1.create_mark(A) and n1.create_mark(B)
    n1.touch_node()
    n1.touch_out("not healthy: a late write")  # an out key is on the lease too
    started = time.monotonic()
    wait_until(lambda: not make("n2").read().marks, timeout=6, what="the lease to expire")
    snapshot = make("n2").read()
    assert time.monotonic() - started >= 1.0
    assert snapshot.nodes == frozenset() and {"198.51.100.100", "198.51.100.101"} <= snapshot.pool
    assert snapshot.out == {}
    n1.keep_alive()  # learns that the lease is gone
    assert n1.session.lease is None
    assert not n1.refresh_mark(A)
    n1.touch_node()  # a new lease and node key
    assert n1.read().nodes == {"n1"}


@both
def test_the_node_key_publishes_weight_and_joining_and_only_a_change_is_an_event(make):
    n1, n2 = make("n1"), make("n2")
    n1.touch_node(weight=2, joining=True)
    view, _ = parse_snapshot(n2.read())
    assert (view.nodes, view.weights, view.joining) == ({"n1"}, {"n1": 2}, {"n1"})
    n1.touch_node(weight=2, joining=True)  # every round while it waits: no event
    assert n2.watch_events(n2.seen, 0.5)[0] == []
    n1.touch_node(weight=2, joining=False)  # it has waited: the others hear it at once
    events, _, _ = n2.watch_events(n2.seen, 2.0)
    assert [event.key for event in events] == [make.root + "/nodes/n1"]
    view, _ = parse_snapshot(n2.read())
    assert (view.weights, view.joining) == ({"n1": 2}, frozenset())


@both
def test_a_rebalance_request_lives_for_its_ttl_and_ends_only_as_it_was_written(make):
    ctl = make("ctl")
    ctl.ask_rebalance("asked by ctl", 2)
    assert parse_snapshot(ctl.read())[0].rebalance
    assert not ctl.end_rebalance("asked by someone else")
    assert ctl.end_rebalance("asked by ctl") and not parse_snapshot(ctl.read())[0].rebalance
    ctl.ask_rebalance("asked by ctl", 1)
    wait_until(lambda: not parse_snapshot(ctl.read())[0].rebalance, 5, what="its expiry")


@both
def test_a_node_out_says_why_in_its_out_key_until_it_takes_part_again(make, etcd):
    url = "http://yaim:s3cret@127.0.0.1:9/health"  # a check's words may quote its URL
    n1 = make("n1", **{"checker-type": "http", "http-url": url})
    n1.touch_out("link down: lan0 has no carrier")
    n2 = make("n2")
    assert n2.read().out == {"n1": "link down: lan0 has no carrier"}
    n1.touch_out("link down: lan0 has no carrier")  # every round while out: no event
    assert n2.watch_events(n2.seen, 0.5)[0] == []
    n1.touch_out(f"not healthy: GET {url}: connection refused")
    said = n2.read().out["n1"]
    assert said == "not healthy: GET http://yaim:***@127.0.0.1:9/health: connection refused"
    if make.dcs_type == "etcd3":  # on the lease, with the node key and the marks
        assert key_of(etcd, make.root + "/out/n1")[1] == n1.session.lease
        assert n1.session.holds(make.root + "/out/n1")
    n1.touch_node()
    n1.delete_out()
    snapshot = make("n2").read()
    assert snapshot.out == {} and snapshot.nodes == {"n1"}
    n1.touch_out("not healthy: stopping")  # a stop deletes both
    n1.delete_node()
    n1.delete_out()
    snapshot = make("n2").read()
    assert snapshot.out == {} and snapshot.nodes == frozenset()


def test_a_write_on_a_revoked_lease_drops_it_and_the_retry_takes_a_new_one(make, etcd):
    """etcd's "requested lease not found" (gRPC NOT_FOUND) on a write: the session forgets
    the lease and what was on it, and the next try of the same operation grants a new one."""
    n1 = make("n1", **{"retry-num": 2})
    make.add_pool(A)
    make.add_pool(B)
    assert n1.create_mark(A)
    old = n1.session.lease
    v3(etcd, "/v3/lease/revoke", {"ID": str(old)})
    assert n1.create_mark(B)
    assert n1.session.lease not in (None, old)
    assert key_of(etcd, make.root + f"/ips/{B}/marked") == ("n1", n1.session.lease)
    assert not n1.session.holds(make.root + f"/ips/{A}/marked")


def test_a_restarted_node_moves_its_marks_onto_its_new_lease(make, etcd):
    before = make("n1")
    make.add_pool(A)
    assert before.create_mark(A)
    old = before.session.lease
    after = make("n1")  # the same node name, a new process
    assert after.refresh_mark(A)
    value, lease = key_of(etcd, make.root + f"/ips/{A}/marked")
    assert value == "n1" and lease == after.session.lease != old
    v3(etcd, "/v3/lease/revoke", {"ID": str(old)})
    assert key_of(etcd, make.root + f"/ips/{A}/marked") == ("n1", after.session.lease)


def test_handles_of_one_node_share_its_lease_and_learn_from_reads(make, etcd):
    balancer = make("n1")
    heartbeat = balancer.clone()
    make.add_pool(A)
    assert balancer.create_mark(A)
    assert heartbeat.session is balancer.session
    assert heartbeat.refresh_mark(A)
    v3(etcd, "/v3/kv/deleterange", {"key": b64(make.root + f"/ips/{A}/marked")})
    balancer.read()  # the read shows the mark gone: the next refresh asks etcd
    assert not heartbeat.refresh_mark(A)


def test_the_operator_operations(make, etcd):
    n1 = make("n1")
    assert n1.add_address(A) and not n1.add_address(A)
    assert n1.create_mark(A)
    n1.drain("n2")
    assert n1.read().drained == {"n2"}
    assert n1.undrain("n2") and not n1.undrain("n2")
    assert n1.remove_address(A) and not n1.remove_address(A)
    assert key_of(etcd, make.root + f"/ips/{A}/marked") is None
    assert n1.read().pool == frozenset()


@both
def test_a_dead_endpoint_fails_over_to_a_live_one(make, etcd):
    dead = f"http://127.0.0.1:{_free_port()}"
    for _ in range(5):
        n1 = make("n1", endpoints=[dead, *etcd.endpoints], **{"retry-num": 2})
        n1.touch_node()
        assert n1.endpoint == etcd.endpoints[0]


@both
def test_unreachable_dcs_names_the_endpoint_after_the_retries(make):
    dead = f"http://127.0.0.1:{_free_port()}"
    n1 = make("n1", endpoints=[dead], **{"retry-num": 3, "retry-after": 100})
    started = time.monotonic()
    with pytest.raises(
        DCSError, match=f"read .* via {dead}: .*Connection refused \\(after 3 tries"
    ):
        n1.read()
    assert 0.2 <= time.monotonic() - started < 2


# --- the watch, both backends ---


def wait_in_thread(store, timeout):
    """Run `wait_for_change` in a thread; returns a function giving (result, seconds).
    The watch resumes after what the store has seen, so a change made before its
    request is on the wire counts just the same."""
    outcome = {}

    def run():
        started = time.monotonic()
        outcome["result"] = store.wait_for_change(timeout)
        outcome["took"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def result():
        thread.join(timeout + 5)
        return outcome["result"], outcome["took"]

    return result


@both
def test_the_watch_starts_with_a_resync_and_stays_quiet_without_changes(make):
    watcher = make("n3")
    assert watcher.wait_for_change(1.0)
    started = time.monotonic()
    assert not watcher.wait_for_change(0.5)
    assert 0.4 < time.monotonic() - started < 2


@both
def test_the_watch_wakes_at_once_when_a_mark_goes_but_not_when_one_is_taken(make):
    n1, watcher = make("n1"), make("n3")
    make.add_pool(A)
    n1.touch_node()  # a node joining does wake the watch: before it starts
    assert watcher.wait_for_change(1.0)
    result = wait_in_thread(watcher, 1.0)
    assert n1.create_mark(A)
    n1.keep_alive()  # refreshes (v3 keep-alive, v2 refresh=true) make no event
    n1.touch_node()
    assert n1.refresh_mark(A)
    assert result()[0] is False
    result = wait_in_thread(watcher, 5.0)
    deleted_at = time.monotonic()
    assert n1.delete_mark(A)
    changed, _ = result()
    print(f"{make.dcs_type}: watch woke {time.monotonic() - deleted_at:.3f} s after the delete")
    assert changed and time.monotonic() - deleted_at < 0.5


@both
def test_the_watch_wakes_when_an_address_is_added(make):
    watcher = make("n3")
    assert watcher.wait_for_change(1.0)
    result = wait_in_thread(watcher, 5.0)
    make.add_pool(B)
    changed, took = result()
    assert changed and took < 1.0


def test_a_compacted_v3_history_means_a_resync(make, etcd):
    watcher, n1 = make("n3"), make("n1")
    assert watcher.wait_for_change(1.0)
    make.add_pool(A)
    assert n1.create_mark(A)
    revision = int(v3(etcd, "/v3/kv/range", {"key": b64("/")})["header"]["revision"])
    v3(etcd, "/v3/kv/compaction", {"revision": str(revision)})
    assert watcher.wait_for_change(1.0)  # canceled by etcd: resync needed
    assert watcher.seen is None
    assert watcher.wait_for_change(1.0)  # the resync (a full read)
    assert watcher.seen >= revision
    assert not watcher.wait_for_change(0.5)


@pytest.mark.parametrize("make", ["etcd"], indirect=True)
def test_a_v2_watch_behind_the_event_history_means_a_resync(make, etcd):
    watcher = make("n3")
    assert watcher.wait_for_change(1.0)
    raw = python_etcd.Client(host="127.0.0.1", port=etcd.members[0].client_port)
    for i in range(1010):  # etcd v2 keeps the last 1000 events
        raw.write(f"{make.root}/filler", str(i))
    assert watcher.wait_for_change(1.0)
    assert watcher.seen is None
    assert watcher.wait_for_change(1.0) and watcher.seen is not None


def test_a_late_copy_of_a_delete_cannot_delete_the_mark_made_since(make, etcd, monkeypatch):
    """Chaos: a request that timed out at a hung etcd member was applied seconds later,
    after its retry. A delete compared on the holder's name alone would delete the mark
    the node made since, under the address it holds."""
    sent = []
    call = etcd3_gateway.Gateway.call

    def spy(gateway, path, body):
        sent.append((path, body))
        return call(gateway, path, body)

    monkeypatch.setattr(etcd3_gateway.Gateway, "call", spy)
    n1 = make("n1")
    make.add_pool(A)
    assert n1.create_mark(A)
    assert n1.delete_mark(A)
    [(path, delete)] = [
        (p, b) for p, b in sent if p == "/kv/txn" and "request_delete_range" in str(b)
    ]
    assert n1.create_mark(A)
    assert v3(etcd, "/v3" + path, delete).get("succeeded") is not True
    assert key_of(etcd, f"{make.root}/ips/{A}/marked")[0] == "n1"


@both
def test_a_release_leaves_a_note_naming_the_mark_and_a_new_mark_has_a_new_number(make):
    n1, n2 = make("n1"), make("n2")
    make.add_pool(A)
    assert n1.create_mark(A)
    first = n1.read().marks[str(A)].created
    assert first is not None and n1.read().released == {}
    assert n1.release_mark(A, first)
    snapshot = n2.read()
    assert str(A) not in snapshot.marks
    assert Release.parse(snapshot.released[str(A)]) == Release("n1", first)
    assert n2.create_mark(A)
    assert n2.read().marks[str(A)].created not in (None, first)
    assert not n1.clear_note("released", A, Release("n1", first + 1).text())
    assert n1.clear_note("released", A, Release("n1", first).text())
    assert n2.read().released == {}


def test_a_v3_release_writes_its_note_and_deletes_the_mark_in_one_revision(
    make, etcd, requests_made
):
    n1 = make("n1")
    make.add_pool(A)
    assert n1.create_mark(A)
    first = n1.read().marks[str(A)].created
    before = requests_made()
    assert n1.release_mark(A, first)
    assert requests_made() - before == 2, "the note's lease, then one transaction"
    mark, note = f"{make.root}/ips/{A}/marked", f"{make.root}/released/{A}"
    [written] = v3(etcd, "/v3/kv/range", {"key": b64(note)})["kvs"]
    revision = int(written["mod_revision"])
    at = {"key": b64(mark), "revision": str(revision - 1)}
    assert v3(etcd, "/v3/kv/range", at).get("kvs"), "the mark lived until that revision"
    assert not v3(etcd, "/v3/kv/range", dict(at, revision=str(revision))).get("kvs")
    assert Release.parse(base64.b64decode(written["value"]).decode()) == Release("n1", first)
    lease = v3(etcd, "/v3/lease/timetolive", {"ID": written["lease"]})
    assert 0 < int(lease["TTL"]) <= n1.etcd_ttl and written["lease"] != str(n1.session.lease)


def test_a_v3_release_of_a_mark_not_ours_leaves_it_and_writes_no_note(make, etcd):
    n1, n2 = make("n1"), make("n2")
    make.add_pool(A)
    assert n1.create_mark(A)
    first = n1.read().marks[str(A)].created
    assert not n2.release_mark(A, first), "by name: n2 never wrote it"
    v3(etcd, "/v3/kv/deleterange", {"key": b64(f"{make.root}/ips/{A}/marked")})
    assert n2.create_mark(A)
    assert not n1.release_mark(A, first), "by the revision n1 wrote: n2's since"
    snapshot = make("n3").read()
    assert snapshot.marks[str(A)].holder == "n2" and snapshot.released == {}


@both
def test_a_release_without_the_mark_s_number_leaves_no_note(make):
    n1 = make("n1")
    make.add_pool(A)
    assert n1.create_mark(A)
    assert n1.release_mark(A, None)
    snapshot = n1.read()
    assert str(A) not in snapshot.marks and snapshot.released == {}


def test_an_interrupted_watch_ends_at_once_and_is_wound_up_by_its_own_thread(make):
    """Shutdown interrupts the watch from the main thread: the watching thread's read ends
    at once and that thread closes the stream, so no suspended stream is left for the
    interpreter's exit (where urllib3 printed a traceback, found by a chaos run)."""
    watcher = make("n3")
    assert watcher.wait_for_change(1.0)  # the resync read; the next call opens the stream
    finished = threading.Event()

    def watch():
        with contextlib.suppress(DCSError):
            watcher.wait_for_change(20.0)
        finished.set()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    wait_until(lambda: watcher._watch is not None, 5, what="the watch stream to open")
    watcher.stop.set()  # as the daemon does before it interrupts
    started = time.monotonic()
    watcher.interrupt()
    assert finished.wait(5), "the watch did not end"
    assert time.monotonic() - started < 1.0
    assert watcher._watch is None
