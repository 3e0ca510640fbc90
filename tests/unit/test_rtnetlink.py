"""rtnetlink's wire format (yaim.actuator.rtnetlink) and the address tool on it
(yaim.actuator.netlink), without a kernel: the kernel's side of a request is the other
end of a datagram socket pair, answered before the request is sent."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import struct
import time
from typing import List

import pytest

from yaim.actuator import netlink
from yaim.actuator.rtnetlink import (
    IFA_ADDRESS,
    IFA_LABEL,
    IFA_LOCAL,
    IFA_PROTO,
    NLM_F_ACK,
    NLM_F_ACK_TLVS,
    NLM_F_CAPPED,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_MULTI,
    NLM_F_REQUEST,
    NLMSG,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSGERR_ATTR_MSG,
    RTM_DELADDR,
    RTM_GETADDR,
    RTM_NEWADDR,
    Malformed,
    Message,
    NetlinkError,
    RouteSocket,
    attribute,
    attributes,
    ifaddr,
    messages,
    pack,
    pack_ifaddr,
)
from yaim.errors import ActuatorError

V4 = ipaddress.ip_address("198.51.100.7")
V6 = ipaddress.ip_address("2001:db8::7")


def error(seq: int, code: int, flags: int = 0, tail: bytes = b"") -> bytes:
    """An NLMSG_ERROR for request `seq`: -code, the echoed request's header, then `tail`."""
    echoed = NLMSG.pack(NLMSG.size, RTM_NEWADDR, NLM_F_REQUEST, seq, 0)
    return pack(NLMSG_ERROR, flags, seq, struct.pack("=i", -code) + echoed + tail)


def done(seq: int) -> bytes:
    return pack(NLMSG_DONE, NLM_F_MULTI, seq, struct.pack("=i", 0))


def address(index: int, ip, label: str = "", protocol=None) -> bytes:
    """The body of an RTM_NEWADDR as the kernel dumps it."""
    attrs = [(IFA_ADDRESS, ip.packed)]
    if ip.version == 4:
        attrs += [(IFA_LOCAL, ip.packed), (IFA_LABEL, label.encode() + b"\0")]
    if protocol is not None:
        attrs.append((IFA_PROTO, bytes([protocol])))
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    return pack_ifaddr(family, 32 if ip.version == 4 else 128, 0x80, index, attrs)


@pytest.fixture
def kernel():
    """(our end, the kernel's end) of a datagram socket pair; closed afterwards."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    yield ours, theirs
    ours.close()
    theirs.close()


# --- packing and parsing ---


def test_an_address_message_packs_and_parses_back_with_padded_attributes():
    body = pack_ifaddr(
        socket.AF_INET, 32, 0, 7, [(IFA_LOCAL, V4.packed), (IFA_LABEL, b"lan0:yaim\0")]
    )
    assert len(attribute(IFA_LABEL, b"lan0:yaim\0")) == 16, "10 bytes of value, padded to 4"
    data = pack(RTM_NEWADDR, NLM_F_REQUEST, 9, body) + pack(RTM_NEWADDR, 0, 10, b"\0" * 8)
    first, second = messages(data)
    assert first == Message(RTM_NEWADDR, NLM_F_REQUEST, 9, body) and second.seq == 10
    parsed = ifaddr(first.body)
    assert (parsed.family, parsed.prefixlen, parsed.index) == (socket.AF_INET, 32, 7)
    assert parsed.attributes == {IFA_LOCAL: V4.packed, IFA_LABEL: b"lan0:yaim\0"}


def test_a_message_or_attribute_cut_short_is_rejected_not_guessed_at():
    data = pack(RTM_NEWADDR, 0, 1, address(7, V4, "lan0:yaim"))
    with pytest.raises(Malformed, match="a message of 56 bytes at byte 0 of a datagram of 53"):
        list(messages(data[:-3]))
    with pytest.raises(Malformed, match="less than a header"):
        list(messages(data + b"\0" * 8))
    with pytest.raises(Malformed, match="an attribute of 12 bytes with 8 left"):
        attributes(attribute(IFA_LOCAL, b"\0" * 8)[:8])
    with pytest.raises(Malformed, match="an ifaddrmsg of 4 bytes"):
        ifaddr(b"\0" * 4)


# --- requests and their answers ---


def test_a_dump_in_several_datagrams_ends_at_done_and_skips_a_late_answer(kernel):
    ours, theirs = kernel
    first, second, third = address(7, V4), address(7, V6), address(8, V4)
    theirs.send(pack(RTM_NEWADDR, NLM_F_MULTI, 99, first))  # a timed-out request's answer
    theirs.send(
        pack(RTM_NEWADDR, NLM_F_MULTI, 1, first) + pack(RTM_NEWADDR, NLM_F_MULTI, 1, second)
    )
    theirs.send(pack(RTM_NEWADDR, NLM_F_MULTI, 1, third) + done(1))
    channel = RouteSocket(1.0, ours)
    assert channel.request(RTM_GETADDR, NLM_F_DUMP, b"\0" * 8) == [first, second, third]
    [sent] = messages(theirs.recv(4096))
    assert sent == Message(RTM_GETADDR, NLM_F_DUMP | NLM_F_REQUEST, 1, b"\0" * 8)


def test_an_error_message_is_the_errno_with_the_kernel_s_words_and_zero_is_the_ack(kernel):
    ours, theirs = kernel
    words = attribute(NLMSGERR_ATTR_MSG, b"Address already assigned\0")
    theirs.send(error(1, errno.EEXIST, NLM_F_CAPPED | NLM_F_ACK_TLVS, words))
    theirs.send(error(2, 0, NLM_F_CAPPED))
    theirs.send(error(3, errno.EINVAL))
    channel = RouteSocket(1.0, ours)
    with pytest.raises(NetlinkError) as refused:
        channel.request(RTM_NEWADDR, NLM_F_ACK, b"")
    assert refused.value.code == errno.EEXIST
    assert str(refused.value) == "File exists: Address already assigned"
    assert channel.request(RTM_NEWADDR, NLM_F_ACK, b"") == []
    with pytest.raises(NetlinkError, match=r"^Invalid argument$"):
        channel.request(RTM_NEWADDR, NLM_F_ACK, b"")


def test_no_complete_answer_in_time_is_a_timeout_not_a_hang(kernel):
    ours, theirs = kernel
    theirs.send(pack(RTM_NEWADDR, NLM_F_MULTI, 1, address(7, V4)))  # and never NLMSG_DONE
    started = time.monotonic()
    with pytest.raises(socket.timeout):
        RouteSocket(0.2, ours).request(RTM_GETADDR, NLM_F_DUMP, b"\0" * 8)
    assert time.monotonic() - started < 2.0


# --- the address tool on it ---


class Kernel:
    """The tool's sockets: each new one a socket pair whose far end holds `answers`."""

    def __init__(self, answers: List[bytes]) -> None:
        self.answers = answers
        self.opened: List[socket.socket] = []

    def __call__(self, timeout: float, sock=None) -> RouteSocket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.opened += [ours, theirs]
        for answer in self.answers:
            theirs.send(answer)
        return RouteSocket(0.2, ours)

    def sent(self) -> List[Message]:
        """What the tool sent on its last socket."""
        theirs = self.opened[-1]
        theirs.setblocking(False)
        found: List[Message] = []
        with contextlib.suppress(BlockingIOError):
            while True:
                found += messages(theirs.recv(4096))
        return found

    def close(self) -> None:
        for sock in self.opened:
            sock.close()


@pytest.fixture
def fake_kernel(monkeypatch):
    made = Kernel([])
    monkeypatch.setattr(netlink, "RouteSocket", made)
    yield made
    made.close()


def test_the_listing_is_the_interface_s_addresses_with_label_and_protocol(fake_kernel):
    lo = socket.if_nametoindex("lo")
    fake_kernel.answers = [
        pack(RTM_NEWADDR, NLM_F_MULTI, 1, address(lo, V4, "lo:yaim", 0x9B))
        + pack(RTM_NEWADDR, NLM_F_MULTI, 1, address(lo, V6))
        + pack(RTM_NEWADDR, NLM_F_MULTI, 1, address(lo + 1, ipaddress.ip_address("192.0.2.1")))
        + done(1)
    ]
    listed = netlink.Netlink().list("lo")
    assert listed == [
        netlink.Configured(V4, 32, "lo:yaim", 0x9B),
        netlink.Configured(V6, 128, "", None),  # no IFA_PROTO: an older kernel's
    ]


def test_already_there_and_already_gone_are_success_other_refusals_are_not(fake_kernel):
    fake_kernel.answers = [
        error(1, errno.EEXIST),
        error(2, 0),
        error(3, errno.EADDRNOTAVAIL),
        error(4, errno.EPERM),
    ]
    tool = netlink.Netlink()
    assert tool.add("lo", V4, 32, "lo:yaim", 0x9B) is False
    assert tool.add("lo", V6, 128, "lo:yaim", 0x9B) is True
    tool.remove("lo", V4, 32)
    with pytest.raises(ActuatorError, match="netlink: Operation not permitted"):
        tool.remove("lo", V4, 32)
    assert len(fake_kernel.opened) == 2, "a refusal keeps the socket"
    new4, new6, del4, _ = fake_kernel.sent()
    create = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    assert (new4.kind, new4.flags, new6.flags) == (RTM_NEWADDR, create, create)
    assert (del4.kind, del4.flags) == (RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK)
    v4, v6 = ifaddr(new4.body), ifaddr(new6.body)
    assert (v4.flags, v4.attributes[IFA_LABEL], v4.attributes[IFA_PROTO]) == (
        0,
        b"lo:yaim\0",
        b"\x9b",
    )
    assert (v6.flags, IFA_LABEL in v6.attributes, v6.attributes[IFA_PROTO]) == (2, False, b"\x9b")
    assert IFA_PROTO not in ifaddr(del4.body).attributes


def test_a_broken_answer_closes_the_socket_and_the_next_call_opens_another(fake_kernel):
    fake_kernel.answers = [pack(RTM_NEWADDR, NLM_F_MULTI, 1, address(1, V4))[:-3]]
    tool = netlink.Netlink()
    with pytest.raises(ActuatorError, match="netlink: a message of"):
        tool.list("lo")
    assert tool._sock is None
    fake_kernel.answers = [done(1)]
    assert tool.list("lo") == []
    assert len(fake_kernel.opened) == 4
    with pytest.raises(ActuatorError, match="no interface named ytnone0"):
        tool.list("ytnone0")


def test_a_change_sends_what_ip_sends():
    body = netlink._address_body("lo", V4, 32, 0, [(IFA_LABEL, b"lo:yaim\0")])
    parsed = ifaddr(body)
    assert (parsed.family, parsed.prefixlen, parsed.index) == (socket.AF_INET, 32, 1)
    assert parsed.attributes == {
        IFA_LOCAL: V4.packed,
        IFA_ADDRESS: V4.packed,
        IFA_LABEL: b"lo:yaim\0",
    }
