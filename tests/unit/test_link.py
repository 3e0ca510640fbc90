"""Following the service link without a network: the rise/fall rules, the netlink
messages, the ledger suspended, the actuator thread acting on the link, the balancer
handing the marks over, the periodic announcements and the reply frames."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import struct
import threading
from typing import List

import pytest

from lab.util import wait_until
from tests.unit.fakes import V4, V6, FakeTool, NotedDCS, balancer_round_setup
from yaim.actuator import Actuator
from yaim.actuator import link as link_module
from yaim.actuator.announce import ARP_REPLY, ARP_REQUEST, BROADCAST, Refresh, gratuitous_arp_frame
from yaim.actuator.link import AddressMessage, LinkMessage, LinkWatch, parse, read_flags
from yaim.actuator.rtnetlink import (
    IFADDR,
    IFINFO,
    IFLA_IFNAME,
    NLMSG,
    RTATTR,
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_NEWADDR,
    RTM_NEWLINK,
    Malformed,
)
from yaim.claims import Ledger
from yaim.errors import ActuatorError
from yaim.link import IFF_RUNNING, IFF_UP, Link, LinkTracker, from_flags, gone
from yaim.threads import actuator as actuator_thread
from yaim.threads.base import Worker

UP = Link(True, "lan0 is up")
DOWN = Link(False, "lan0 has no carrier")
FAR = 1e12


# --- the rules (yaim.link) ---


def test_the_link_down_counts_at_once_and_up_only_after_rise():
    tracker = LinkTracker(1.0, UP)
    assert tracker.taking_part
    assert tracker.observe(DOWN, 10.0) == (False, "lan0 has no carrier")
    assert tracker.observe(DOWN, 10.1) is None, "already out: no second change"
    assert tracker.observe(UP, 10.2) is None and tracker.due() == 11.2
    assert tracker.tick(11.1) is None and not tracker.taking_part
    change = tracker.tick(11.2)
    assert change is not None and change.taking_part and tracker.taking_part
    assert change.cause == "lan0 is up again for 1 s"


def test_a_link_flapping_faster_than_rise_keeps_the_node_out():
    tracker = LinkTracker(1.0, UP)
    changes = []
    now = 0.0
    for n in range(17):  # 300 ms each way for 5 s
        link = DOWN if n % 2 == 0 else UP
        changes.append(tracker.observe(link, now))
        changes.append(tracker.tick(now + 0.29))
        now += 0.3
    assert [c for c in changes if c is not None] == [(False, DOWN.cause)]
    assert tracker.observe(UP, now) is None
    assert tracker.tick(now + 1.0) is not None, "up for rise after the flapping: back"


def test_a_link_down_at_start_needs_rise_and_rise_0_is_at_once():
    tracker = LinkTracker(1.0, DOWN)
    assert not tracker.taking_part and tracker.due() is None
    tracker.observe(UP, 5.0)
    assert tracker.tick(5.5) is None and tracker.tick(6.0) is not None
    quick = LinkTracker(0.0, UP)
    quick.observe(DOWN, 1.0)
    assert quick.observe(UP, 1.0) == (True, "lan0 is up again for 0 s")


def test_the_flags_tell_down_from_no_carrier():
    assert from_flags("lan0", 0) == (False, "lan0 is set down", False)
    assert from_flags("lan0", IFF_UP) == (False, "lan0 has no carrier", False)
    assert from_flags("lan0", IFF_UP | IFF_RUNNING).up
    assert gone("lan0").deleted and not gone("lan0", "eth9").deleted


# --- the netlink messages (yaim.actuator.link) ---


def link_message(kind: int, index: int, flags: int, name: str) -> bytes:
    value = name.encode() + b"\0"
    attribute = RTATTR.pack(RTATTR.size + len(value), IFLA_IFNAME) + value
    attribute += b"\0" * (-len(attribute) % 4)
    other = RTATTR.pack(8, 13) + b"\0\0\0\0"  # an attribute of no interest (IFLA_TXQLEN)
    body = IFINFO.pack(0, 1, index, flags, 0) + other + attribute
    return NLMSG.pack(NLMSG.size + len(body), kind, 0, 0, 0) + body


def test_parse_reads_link_messages_and_skips_the_rest():
    noise = NLMSG.pack(NLMSG.size + 12, 24, 0, 0, 0) + b"\0" * 12  # an RTM_NEWROUTE
    data = link_message(RTM_NEWLINK, 7, IFF_UP, "lan0") + noise
    data += link_message(RTM_DELLINK, 8, 0, "dcs0")
    assert parse(data) == [
        LinkMessage(False, 7, "lan0", IFF_UP),
        LinkMessage(True, 8, "dcs0", 0),
    ]
    cut = NLMSG.pack(NLMSG.size + 4, RTM_NEWADDR, 0, 0, 0) + b"\0" * 4  # an ifaddrmsg cut short
    for broken in (data[:-3], data + cut):
        with pytest.raises(Malformed):
            parse(broken)  # cut short: no guess


def test_a_datagram_that_does_not_parse_counts_as_lost_events(monkeypatch, caplog):
    monkeypatch.setattr(link_module, "read_flags", lambda ifname: DOWN)
    watch = LinkWatch("lan0")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, theirs:
        ours.setblocking(False)
        watch._sock = ours
        watch.addresses_moved = False
        theirs.send(link_message(RTM_NEWLINK, 7, IFF_UP | IFF_RUNNING, "lan0")[:-3])
        theirs.send(link_message(RTM_NEWLINK, 7, IFF_UP | IFF_RUNNING, "lan0"))
        assert watch.changes() == [DOWN, UP], "a look at once, then the next datagram"
        assert watch.addresses_moved
    assert "link events of lan0 were lost (a message of" in caplog.text


def address_message(kind: int, index: int) -> bytes:
    body = IFADDR.pack(2, 32, 0, 0, index) + RTATTR.pack(8, 1) + bytes([198, 51, 100, 7])
    return NLMSG.pack(NLMSG.size + len(body), kind, 0, 0, 0) + body


def test_address_messages_of_the_interface_say_its_addresses_moved():
    data = address_message(RTM_NEWADDR, 7) + address_message(RTM_DELADDR, 8)
    assert parse(data) == [AddressMessage(7), AddressMessage(8)]
    watch = LinkWatch("lan0")
    watch._judge(LinkMessage(False, 7, "lan0", IFF_UP | IFF_RUNNING))
    watch.addresses_moved = False
    watch._judge(AddressMessage(8))
    assert not watch.addresses_moved, "another interface's address"
    watch._judge(AddressMessage(7))
    assert watch.addresses_moved
    watch.addresses_moved = False
    watch._judge(LinkMessage(False, 7, "lan0", IFF_UP))  # no carrier: IPv6 addresses may go
    assert watch.addresses_moved


def test_the_watch_follows_its_interface_by_name_through_rename_and_deletion():
    watch = LinkWatch("lan0")
    judge = watch._judge
    assert judge(LinkMessage(False, 7, "lan0", IFF_UP | IFF_RUNNING)) == UP
    assert judge(LinkMessage(False, 9, "dcs0", 0)) is None, "another interface"
    renamed = judge(LinkMessage(False, 7, "eth5", IFF_UP | IFF_RUNNING))
    assert renamed == (False, "lan0 is gone (renamed to eth5)", False)
    assert judge(LinkMessage(False, 7, "eth5", 0)) is None, "not ours any more"
    assert judge(LinkMessage(False, 12, "lan0", 0)) == (False, "lan0 is set down", False)
    assert judge(LinkMessage(True, 12, "lan0", 0)) == (False, "lan0 is gone", True)


def test_without_a_netlink_socket_every_round_looks_at_the_flags(monkeypatch, caplog):
    def refused(*args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(link_module.socket, "socket", refused)
    looks = iter([UP, DOWN])
    monkeypatch.setattr(link_module, "read_flags", lambda ifname: next(looks))
    watch = LinkWatch("lan0")
    assert watch.open() == UP and watch.fileno() is None
    assert watch.changes() == [DOWN]
    assert "reading its state every round" in caplog.text


def test_the_flags_of_a_real_interface_and_of_a_missing_one():
    """Read-only looks at the host: lo is up (no carrier to lose), a made-up name is gone."""
    watch = LinkWatch("lo")
    assert watch.open().up and watch.fileno() is not None and watch.index == 1
    assert watch.changes() == []
    watch.close()
    assert read_flags("ytnone0") == gone("ytnone0")


# --- the ledger suspended ---


def test_a_suspended_ledger_ends_every_claim_and_claims_nothing_until_resumed():
    ledger = Ledger("n1", 3.0)
    assert ledger.hold(V4, FAR, "free")
    ledger.suspend()
    assert ledger.held() == set() and ledger.refusing
    assert ledger.claim(V4).end == ("release", "link-down")
    assert not ledger.hold(V6, FAR, "free")
    assert ledger.finish([V4]) == {}, "not off yet: kept ending, not held again"
    assert ledger.held() == set()
    ledger.resume()
    assert ledger.hold(V6, FAR, "free") and not ledger.refusing


# --- the actuator thread ---


class FakeWatch:
    """A LinkWatch whose events the test queues; `now` is what a look finds. Its addresses
    always may have moved (as without an event socket) unless `quiet`: then only when the
    test says so."""

    def __init__(self, quiet: bool = False) -> None:
        self.events: List[Link] = []
        self.now = UP
        self.closed = False
        self.quiet = quiet
        self.moved = True

    @property
    def addresses_moved(self) -> bool:
        return self.moved or not self.quiet

    @addresses_moved.setter
    def addresses_moved(self, value: bool) -> None:
        self.moved = value

    def open(self) -> Link:
        return self.now

    def fileno(self):
        return None

    def current(self) -> Link:
        return self.now

    def changes(self) -> List[Link]:
        found, self.events = self.events, []
        return found

    def close(self) -> None:
        self.closed = True


def link_thread(tool: FakeTool, watch: FakeWatch, rise: float = 1.0, **announcing):
    told: List[Link] = []
    notified: List[tuple] = []
    ledger = Ledger("n1", 3.0, lambda *event: notified.append(event))
    thread = actuator_thread.ActuatorThread(
        lambda: Actuator("lan0", "yaim", 32, 128, [tool]),
        ledger,
        "n1",
        make_link=lambda: watch,
        link_rise=rise,
        on_link=told.append,
        period=1.0,
        **{"announce_count": 0, **announcing},
        stop=threading.Event(),
        on_crash=print,
    )
    return thread, ledger, told, notified


def test_the_link_going_down_takes_every_address_off_in_that_round(caplog):
    tool, watch = FakeTool(), FakeWatch()
    thread, ledger, told, notified = link_thread(tool, watch)
    ledger.hold(V4, FAR, "free")
    thread.step([])
    assert V4 in tool.entries and told == []
    watch.events = [DOWN]
    thread.step([])
    assert V4 not in tool.entries
    assert told == [Link(False, "lan0 has no carrier")]
    assert notified[-1] == ("release", V4, "link-down")
    assert ledger.claim(V4).vouched, "off, in no form: a released note may vouch for it"
    lines = [r.getMessage() for r in caplog.records if "stops taking part" in r.getMessage()]
    assert lines == [
        "node n1 stops taking part: lan0 has no carrier; its addresses go off and over to"
        " the others"
    ]


def test_a_deletion_set_down_then_gone_is_one_stop_with_the_latest_cause(caplog):
    tool, watch = FakeTool(), FakeWatch()
    thread, _, told, _ = link_thread(tool, watch)
    thread.step([])
    watch.events = [Link(False, "lan0 is set down"), gone("lan0")]
    thread.step([])
    assert told == [Link(False, "lan0 is gone")]
    assert len([r for r in caplog.records if "stops taking part" in r.getMessage()]) == 1
    watch.events = [gone("lan0"), UP, gone("lan0")]  # still out for the same cause: nothing
    thread.step([])
    assert len(told) == 1


def test_a_deletion_told_a_round_after_the_set_down_updates_the_cause(caplog):
    caplog.set_level(logging.DEBUG)
    tool, watch = FakeTool(), FakeWatch()
    thread, _, told, _ = link_thread(tool, watch)
    thread.step([])
    watch.events = [Link(False, "lan0 is set down")]
    thread.step([])
    watch.events = [gone("lan0")]
    thread.step([])
    assert told == [Link(False, "lan0 is set down"), Link(False, "lan0 is gone")]
    assert [r.getMessage() for r in caplog.records if "stays out" in r.getMessage()] == [
        "node n1 stays out: lan0 is gone"
    ]
    assert len([r for r in caplog.records if "stops taking part" in r.getMessage()]) == 1


def test_the_link_back_up_resumes_after_rise(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(actuator_thread.time, "monotonic", lambda: now[0])
    tool, watch = FakeTool(), FakeWatch()
    thread, ledger, told, _ = link_thread(tool, watch)
    thread.step([])
    watch.events = [DOWN, UP]
    thread.step([])
    assert ledger.refusing and thread.next_timeout() <= 1.0
    now[0] += 0.5
    thread.step([])
    assert ledger.refusing and len(told) == 1
    now[0] += 0.5
    thread.step([])
    assert not ledger.refusing and told[-1] == Link(True, "lan0 is up again for 1 s")


def test_a_deleted_interface_ends_the_releases_without_a_scan():
    tool, watch = FakeTool(), FakeWatch()
    thread, ledger, _, notified = link_thread(tool, watch)
    ledger.hold(V4, FAR, "free")
    thread.step([])

    def gone_list(ifname):
        raise ActuatorError("no interface named lan0")

    tool.list = gone_list
    watch.events = [gone("lan0")]
    thread.step([])
    assert notified[-1] == ("release", V4, "link-down")
    assert thread.interface == (frozenset(), frozenset())


def test_a_failed_round_looks_at_the_link_and_a_link_down_counts():
    tool, watch = FakeTool(), FakeWatch()
    thread, ledger, told, _ = link_thread(tool, watch)
    thread.step([])

    def refused(*args):
        raise ActuatorError("netlink: Network is down")

    tool.add = refused
    ledger.hold(V4, FAR, "free")
    watch.now = Link(False, "lan0 is set down")  # no event came (yet)
    thread.step([])
    assert told == [watch.now] and ledger.refusing and ledger.held() == set()


class CountingTool(FakeTool):
    """Counts its listings; `fail_adds` makes every add fail."""

    def __init__(self) -> None:
        super().__init__()
        self.listings = 0
        self.fail_adds = False

    def list(self, ifname: str):
        self.listings += 1
        return super().list(ifname)

    def add(self, ifname, address, prefixlen, label, protocol) -> bool:
        if self.fail_adds:
            raise ActuatorError("refused")
        return super().add(ifname, address, prefixlen, label, protocol)


def test_the_addresses_are_listed_only_when_they_moved_a_round_failed_or_resync_is_due(
    monkeypatch,
):
    now = [100.0]
    monkeypatch.setattr(actuator_thread.time, "monotonic", lambda: now[0])
    tool, watch = CountingTool(), FakeWatch(quiet=True)
    thread, ledger, _, _ = link_thread(tool, watch, resync=60.0)
    thread.step([])
    assert tool.listings == 1, "at start"
    ledger.hold(V4, FAR, "free")
    thread.step([])
    assert tool.listings == 1 and V4 in tool.entries, "added on the last listing"
    thread.step([])
    assert tool.listings == 1, "steady: nothing listed"
    del tool.entries[V4]  # by hand: the kernel tells it with an address event
    watch.moved = True
    thread.step([])
    assert tool.listings == 2 and V4 in tool.entries, "listed again, and put back"
    now[0] += 60.0
    thread.step([])
    assert tool.listings == 3, "resync"
    tool.fail_adds = True
    ledger.hold(V6, FAR, "free")
    thread.step([])
    tool.fail_adds = False
    thread.step([])
    assert tool.listings == 4 and V6 in tool.entries, "after a failed round, listed again"


OWN = ipaddress.ip_address("198.51.100.11")


def test_the_own_address_is_announced_when_it_appears_and_when_the_node_takes_part_again(
    monkeypatch,
):
    now = [100.0]
    monkeypatch.setattr(actuator_thread.time, "monotonic", lambda: now[0])
    sent: List[ipaddress.IPv4Address] = []
    monkeypatch.setattr(Actuator, "announce", lambda self, address: sent.append(address))
    tool, watch = FakeTool(), FakeWatch()
    thread, _, _, _ = link_thread(
        tool, watch, rise=0.0, announce_count=2, announce_interval=0.5, own=OWN
    )
    thread.step([])
    assert sent == [], "not on the interface: nothing to announce, nothing pending"
    assert thread.next_timeout() == 1.0
    tool.put(OWN)  # put there by the host's network configuration
    for _ in range(3):
        thread.step([])
        now[0] += 0.5
    assert sent == [OWN, OWN], "appeared: announced announce-count times"
    watch.events = [DOWN]
    thread.step([])
    watch.events = [UP]  # an interface replaced: new MAC, the peers' caches are stale
    for _ in range(3):
        thread.step([])
        now[0] += 0.5
    assert sent == [OWN] * 4, "taking part again: announced again"


# --- the balancer hands the marks over ---


def test_the_balancer_deletes_the_marks_the_link_released_with_their_notes(monkeypatch):
    thread, store, ledger, _ = balancer_round_setup(monkeypatch, {}, NotedDCS)
    thread.dcs_round([])
    assert set(store.marks) == {str(V4), str(V6)}
    ledger.suspend()
    thread.state.link = Link(False, "lan0 has no carrier")
    thread.sync_actuator(1.0)  # the actuator's round: both off
    thread.dcs_round([])
    assert store.marks == {}
    assert set(store.released) == {str(V4), str(V6)}, "handed over: no probe needed"


# --- announcements ---


def test_refresh_announces_each_held_address_once_a_period_spread_over_it():
    refresh = Refresh(2.0)
    held = [ipaddress.ip_address(f"198.51.100.{i}") for i in range(1, 5)]
    sent = []
    for n in range(17):  # rounds every 0.5 s for 8 s
        sent.append(refresh.due(held, 100.0 + 0.5 * n))
    assert all(len(batch) <= 1 for batch in sent), sent
    flat = [a for batch in sent for a in batch]
    assert flat == held * 4


def test_refresh_of_1000_addresses_goes_out_a_few_per_round():
    refresh = Refresh(60.0)
    held = [ipaddress.ip_address("203.0.113.0") + i for i in range(250)]
    held += [ipaddress.ip_address("2001:db8::") + i for i in range(750)]
    batches = [refresh.due(held, float(second)) for second in range(61)]
    assert max(map(len, batches)) <= 17, "a few per round, never one burst"
    flat = [a for batch in batches for a in batch]
    assert len(flat) == len(set(flat)) == 1000, "each once in the period"
    assert Refresh(0.0).due(held, 5.0) == []


def test_reply_mode_sends_an_arp_reply_to_broadcast():
    mac = bytes.fromhex("020000000001")
    request = gratuitous_arp_frame(mac, V4)
    reply = gratuitous_arp_frame(mac, V4, reply=True)
    assert struct.unpack_from("!H", request, 20)[0] == ARP_REQUEST
    assert struct.unpack_from("!H", reply, 20)[0] == ARP_REPLY
    assert reply[32:38] == BROADCAST and reply[28:32] == reply[38:42] == V4.packed


# --- the thread base: a watched descriptor wakes the thread ---


class Watching(Worker):
    watches_fd = True

    def __init__(self, fd: int, **kwargs) -> None:
        super().__init__("watching", **kwargs)
        self.fd = fd
        self.rounds = 0

    def watched_fd(self):
        return self.fd

    def step(self, messages) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 64)
        self.rounds += 1  # after the read: a byte written once this shows wakes the next


def test_a_readable_watched_descriptor_wakes_the_thread_and_a_poke_still_does():
    read, write = os.pipe()
    os.set_blocking(read, False)
    stop = threading.Event()
    worker = Watching(read, period=60, stop=stop, on_crash=print)
    worker.start()
    try:
        wait_until(lambda: worker.rounds == 1, 5, what="the first round")
        os.write(write, b"x")
        wait_until(lambda: worker.rounds == 2, 5, what="the round the descriptor woke")
        worker.poke()
        wait_until(lambda: worker.rounds == 3, 5, what="the poked round")
    finally:
        stop.set()
        worker.poke()
        worker.join(5)
        os.close(read)
        os.close(write)
