"""The failsafe hold wired into the node: the endpoints node keys publish, the good view,
the ledger's extension, the policy the balancer and the heartbeat follow, the start-up
checks, and two failsafe threads asking each other over real sockets on loopback."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from types import SimpleNamespace
from typing import Callable, Tuple

import pytest

from tests.unit.fakes import Clock, FakeDCS, FakeInterface, healthy_balancer
from yaim import config as config_module
from yaim.claims import Ledger
from yaim.daemon import prepare_failsafe
from yaim.errors import ConfigError
from yaim.failsafe import Answer, Failsafe, Membership
from yaim.peers import Seal
from yaim.state import NodeState, Reading
from yaim.threads.balancer import BalancerThread
from yaim.threads.failsafe import FailsafeThread, Policy
from yaim.threads.heartbeat import HeartbeatThread
from yaim.threads.watch import Behind
from yaim.view import ClusterView, Endpoint, NodeInfo, Snapshot, parse_snapshot

A, B = (ipaddress.ip_address(f"198.51.100.{i}") for i in (7, 8))
TTL = 3.0
SECRET = b"0123456789abcdef0123"


# --- what node keys publish ---


@pytest.mark.parametrize(
    "text, shown",
    [("198.51.100.1:9721", "198.51.100.1:9721"), ("[2001:db8::1]:80", "[2001:db8::1]:80")],
)
def test_an_endpoint_goes_into_the_node_key_and_comes_back(text, shown):
    endpoint = Endpoint.parse(text)
    assert endpoint is not None and endpoint.text() == shown
    assert NodeInfo.parse(NodeInfo(endpoint).value()) == NodeInfo(endpoint)


@pytest.mark.parametrize(
    "value",
    [
        "healthy",
        '{"peer": "0.0.0.0:9721"}',
        '{"peer": "[::]:9721"}',
        '{"peer": "peer.example:9721"}',
        '{"peer": "198.51.100.1:0"}',
        '{"peer": "198.51.100.1:65536"}',
        '{"peer": "198.51.100.1"}',
        '{"peer": "224.0.0.1:9721"}',
        '{"peer": 9721}',
        '{"peer": "198.51.100.1:9721' + " " * 2000 + '"}',
        "[" * 100000,
    ],
)
def test_a_node_value_that_publishes_no_usable_endpoint_publishes_none(value):
    assert (NodeInfo.parse(value) or NodeInfo()).peer is None


def test_the_view_has_every_node_key_drained_ones_too_and_their_endpoints():
    snapshot = Snapshot(
        pool=frozenset(),
        marks={},
        nodes=frozenset({"n1", "n2", "n3"}),
        drained=frozenset({"n3"}),
        node_values={"n1": '{"peer": "198.51.100.1:9721"}', "n2": "healthy"},
    )
    view, _ = parse_snapshot(snapshot)
    assert view.nodes == {"n1", "n2"} and view.members == {"n1", "n2", "n3"}
    assert view.peers == {"n1": Endpoint(ipaddress.ip_address("198.51.100.1"), 9721)}


# --- the good view ---


def test_a_read_is_a_good_view_only_after_a_ttl_of_answers():
    membership = Membership(TTL)
    membership.follow(True, 10.0)
    membership.saw(frozenset({"n1"}), {}, 12.0)  # right after etcd came back: shrunken
    assert membership.view is None
    membership.saw(frozenset({"n1", "n2"}), {"n2": "e"}, 13.0)
    assert membership.view == {"n1", "n2"} and membership.published == {"n2": "e"}
    membership.follow(False, 14.0)
    membership.follow(True, 15.0)
    membership.saw(frozenset({"n1"}), {}, 16.0)  # a new stretch: not good yet
    assert membership.view == {"n1", "n2"}


# --- the ledger ---


def test_a_hold_extends_live_claims_only_and_never_shortens_one():
    clock = Clock(100.0)
    ledger = Ledger("n1", TTL, clock=clock)
    ledger.hold(A, clock(), "free")
    ledger.hold(B, clock(), "free")
    ledger.release([B], "rebalance")
    FakeInterface(ledger).sync(1.0)  # B confirmed off: no longer alive
    fence = ledger.claim(A).fence
    assert ledger.extend([A, B], fence + 5) == [A]
    assert ledger.claim(A).fence == fence + 5
    ledger.extend([A], fence)
    assert ledger.claim(A).fence == fence + 5
    clock.now = fence + 4
    assert ledger.expired() == []  # kept past its mark on the peers' word


# --- the policy the threads follow ---


def held_by_word(clock: Callable[[], float] = lambda: 100.0) -> Policy:
    """A policy of a node that was granted a hold of A until 2 s from now by `clock`."""
    failsafe = Failsafe("n1", TTL, started=0.0)
    ask = failsafe.ask(frozenset({"n1", "n2"}), {A})
    failsafe.answered(ask, clock() + 2 - failsafe.lifetime, {"n2": failsafe_yes("n2")})
    return Policy(failsafe, clock=clock)


def kept() -> Tuple[Ledger, Policy]:
    """n1 holds A, kept on its peers' word for 2 s more: etcd is back."""
    ledger = Ledger("n1", TTL)
    ledger.hold(A, time.monotonic(), "free")
    return ledger, held_by_word(time.monotonic)


def failsafe_yes(node: str) -> Answer:
    return Answer(node, True, "promised")


def test_off_the_policy_allows_everything_and_covers_nothing():
    policy = Policy(None)
    assert policy.may_take(A) and policy.may_release("rebalance") and not policy.covers(A)
    assert policy.report() == {
        "on": False,
        "view": None,
        "holding": False,
        "hold_left": None,
        "promised": [],
        "answered_for": None,
        "view_age": None,
        "read_age": None,
    }


def test_in_the_hold_nothing_is_taken_and_only_a_node_going_out_releases():
    policy = held_by_word()
    assert policy.covers(A) and not policy.covers(B) and policy.holding()
    assert not policy.may_take(B)
    assert not policy.may_release("rebalance") and not policy.may_release("drained")
    assert policy.may_release("unhealthy") and policy.may_release("link-down")
    assert policy.report()["holding"] and policy.report()["hold_left"] == 2.0
    policy.remarked(A)
    assert not policy.holding() and policy.may_take(B)


def balancer_with(policy: Policy, store: FakeDCS, ledger: Ledger) -> BalancerThread:
    return healthy_balancer(store, ledger, probe_timeout=0.0, policy=policy)


def test_coming_back_the_balancer_makes_a_kept_mark_again_first():
    ledger, policy = kept()
    store = FakeDCS([A])  # A's mark expired meanwhile
    fence = ledger.claim(A).fence
    balancer_with(policy, store, ledger).step([])
    assert store.marks == {str(A): "n1"} and store.calls[0] == f"create {A}"
    assert ledger.held() == {A} and ledger.claim(A).fence > fence
    assert not policy.covers(A) and not policy.holding()


def test_a_healthy_node_whose_key_expired_in_the_outage_keeps_what_it_holds():
    ledger, policy = kept()
    store = FakeDCS([A])
    store.read = lambda: Snapshot(frozenset({str(A)}), {}, frozenset())  # no node key yet
    balancer_with(policy, store, ledger).step([])
    assert ledger.held() == {A} and store.marks == {str(A): "n1"}


def test_a_kept_mark_someone_else_made_meanwhile_fences_the_address():
    ledger, policy = kept()
    store = FakeDCS([A])
    store.marks[str(A)] = "n9"
    balancer_with(policy, store, ledger).step([])
    assert ledger.held() == set() and ledger.claim(A).end == ("fence", "mark-lost")
    assert not policy.covers(A)


def test_without_the_hold_the_same_missing_mark_is_a_lost_claim():
    ledger = Ledger("n1", TTL)
    ledger.hold(A, time.monotonic(), "free")
    store = FakeDCS([A])
    store.marks[str(A)] = "n2"
    balancer_with(Policy(None), store, ledger).step([])
    assert ledger.held() == set()


def test_a_promised_address_is_not_taken_until_the_promise_ends():
    now = [100.0]
    failsafe = Failsafe("n1", TTL, started=0.0)
    ask = Failsafe("n2", TTL, started=0.0).ask(frozenset({"n1", "n2"}), {A})
    assert failsafe.answer(ask, now[0], False, frozenset({"n1", "n2"}), ()).yes
    policy = Policy(failsafe, clock=lambda: now[0])
    ledger = Ledger("n1", TTL)
    store = FakeDCS([A, B])
    balancer_with(policy, store, ledger).step([])
    assert ledger.held() == {B}
    now[0] += TTL
    balancer_with(policy, store, ledger).step([])
    assert ledger.held() == {A, B}


class Outage(FakeDCS):
    """etcd back after an outage that outlasted every mark: refreshes find them gone."""

    def keep_alive(self) -> None:
        pass

    def touch_node(self, weight: int = 1, joining: bool = False) -> None:
        pass


def heartbeat_with(policy: Policy, store: FakeDCS, ledger: Ledger) -> HeartbeatThread:
    state = NodeState()
    state.set_health(True, "fine")
    return HeartbeatThread(
        store,
        ledger,
        state,
        lambda message: None,
        policy=policy,
        period=1.0,
        stop=threading.Event(),
        on_crash=print,
    )


def test_coming_back_the_heartbeat_leaves_a_kept_mark_to_the_balancer_and_wakes_it():
    ledger, policy = kept()
    woken = []
    heartbeat = heartbeat_with(policy, Outage([A]), ledger)
    heartbeat.on_change = woken.append
    heartbeat.advertised = True  # its node key is there: only the mark wakes the balancer
    heartbeat.step([])
    assert ledger.held() == {A} and policy.covers(A)
    assert [type(message) for message in woken] == [Behind], "to read: the cache may lag"


def test_a_node_that_may_not_take_yet_does_not_advertise_itself():
    now = [10.0]
    policy = Policy(Failsafe("n1", TTL, started=10.0), clock=lambda: now[0])
    store = Outage([A])
    calls = []
    store.touch_node = lambda weight, joining: calls.append("touch")
    heartbeat = heartbeat_with(policy, store, Ledger("n1", TTL))
    heartbeat.step([])
    assert calls == [] and policy.settling()
    now[0] += TTL
    heartbeat.step([])
    assert calls == ["touch"]


# --- the start-up checks ---


def failsafe_config(tmp_path, **values) -> config_module.Config:
    path = tmp_path / "yaim.yml"
    settings = {"interface": "lo", "checker-type": "none", "failsafe": True}
    settings["peer-secret-file"] = str(tmp_path / "k")
    settings.update(values)
    path.write_text("\n".join(f"{k}: {v}" for k, v in settings.items()) + "\n")
    return config_module.load(str(path))


def test_a_missing_or_short_secret_is_a_config_error_naming_the_key(tmp_path):
    config = failsafe_config(tmp_path, **{"peer-listen": "127.0.0.1:9721"})
    with pytest.raises(ConfigError, match="peer-secret-file"):
        prepare_failsafe(config)
    (tmp_path / "k").write_bytes(b"short\n")
    with pytest.raises(ConfigError, match=r"peer-secret-file.*16 bytes"):
        prepare_failsafe(config)


def test_without_peer_listen_the_interfaces_own_address_is_published(tmp_path):
    (tmp_path / "k").write_bytes(SECRET)
    config, secret = prepare_failsafe(failsafe_config(tmp_path))
    assert secret == SECRET and config.peer_listen == "127.0.0.1:9721"


@pytest.mark.parametrize("listen", ["0.0.0.0:9721", "peer.example:9721"])
def test_peer_listen_must_be_an_address_the_others_can_ask(tmp_path, listen):
    with pytest.raises(ConfigError, match="peer-listen"):
        failsafe_config(tmp_path, **{"peer-listen": listen})


def test_off_nothing_is_read(tmp_path):
    config = failsafe_config(tmp_path, failsafe=False)
    assert prepare_failsafe(config) == (config, None)


# --- two failsafe threads over real sockets ---


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Node:
    """One node's failsafe thread on 127.0.0.1, etcd silent for it, its view n1 and n2."""

    def __init__(self, name: str, port: int, secret: bytes, peers) -> None:
        self.ledger = Ledger(name, TTL)
        self.state = NodeState()
        self.state.set_health(True, "fine")
        view = ClusterView(frozenset({"n1", "n2"}), frozenset(), {}, members=frozenset(peers))
        self.state.latest = Reading(Snapshot(frozenset(), {}, frozenset()), view, (), 0.0)
        config = SimpleNamespace(
            node_name=name,
            ttl_s=TTL,
            interval_s=1.0,
            peer_endpoint=Endpoint(ipaddress.ip_address("127.0.0.1"), port),
        )
        self.policy = Policy(Failsafe(name, TTL, started=time.monotonic() - TTL))
        self.thread = FailsafeThread(
            self.policy,
            self.ledger,
            self.state,
            config,
            Seal(name, secret, TTL),
            lambda now: False,
            period=1.0,
            stop=threading.Event(),
            on_crash=print,
        )
        self.thread.membership.view = frozenset(peers)
        self.thread.membership.published = peers
        self.thread.server.start()

    def close(self) -> None:
        self.thread.finish([])


@pytest.fixture
def pair(request):
    ports = free_port(), free_port()
    endpoints = {
        f"n{i + 1}": Endpoint(ipaddress.ip_address("127.0.0.1"), p) for i, p in enumerate(ports)
    }
    secrets = getattr(request, "param", (SECRET, SECRET))
    nodes = [Node(name, endpoints[name].port, s, endpoints) for name, s in zip(endpoints, secrets)]
    yield nodes
    for node in nodes:
        node.close()


def test_a_node_whose_etcd_is_silent_keeps_its_address_on_its_peers_word(pair, caplog):
    asker, peer = pair
    asker.ledger.hold(A, time.monotonic(), "free")
    fence = asker.ledger.claim(A).fence
    asker.thread.step([])
    assert asker.ledger.claim(A).fence > fence and asker.policy.holding()
    assert peer.policy.report()["promised"] == [str(A)]
    assert "every node of the view (n2) promised" in caplog.text


@pytest.mark.parametrize("pair", [(SECRET, b"another secret of 16 bytes")], indirect=True)
def test_a_peer_with_another_secret_is_refused_and_nothing_is_kept(pair, caplog):
    asker, peer = pair
    asker.ledger.hold(A, time.monotonic(), "free")
    fence = asker.ledger.claim(A).fence
    asker.thread.step([])
    assert asker.ledger.claim(A).fence == fence and not asker.policy.holding()
    assert peer.policy.report()["promised"] == []
    assert "refused an ask: wrong signature on node n2" in caplog.text


def test_a_peer_that_reaches_etcd_says_no(pair, caplog):
    caplog.set_level(logging.INFO)
    asker, peer = pair
    peer.thread.reaches = lambda now: True
    peer.thread.membership.since = time.monotonic() - TTL  # for a whole ttl
    asker.ledger.hold(A, time.monotonic(), "free")
    asker.thread.step([])
    assert not asker.policy.holding()
    assert "node n2 said no: etcd answers here" in caplog.text


def test_a_node_out_of_the_hold_releases_at_once(pair):
    asker, _ = pair
    asker.ledger.hold(A, time.monotonic(), "free")
    asker.thread.step([])
    asker.state.set_health(False, "check failed")
    asker.thread.step([])
    assert asker.ledger.held() == set()
    assert asker.ledger.claim(A).end == ("release", "unhealthy")
    FakeInterface(asker.ledger).sync(1.0)  # the actuator takes it off
    asker.thread.step([])
    assert asker.ledger.claim(A) is None, "logged as released and forgotten"


def test_a_peer_whose_etcd_came_back_less_than_a_ttl_ago_still_promises(pair):
    asker, peer = pair
    peer.thread.reaches = lambda now: True
    peer.thread.membership.since = time.monotonic() - TTL / 2  # back from the outage
    asker.ledger.hold(A, time.monotonic(), "free")
    asker.thread.step([])
    assert asker.policy.holding() and peer.policy.report()["promised"] == [str(A)]


def test_a_kept_mark_made_again_while_its_refresh_was_on_the_way_is_not_lost():
    """The balancer makes the mark again after the heartbeat's refresh found it gone."""
    ledger, policy = kept()
    store = Outage([A])

    def refresh(address) -> bool:
        store.marks[str(address)] = "n1"  # the balancer's create lands meanwhile
        policy.remarked(address)
        return False

    store.refresh_mark = refresh
    heartbeat_with(policy, store, ledger).step([])
    assert ledger.held() == {A}, "not fenced: the next round's refresh finds the new mark"
