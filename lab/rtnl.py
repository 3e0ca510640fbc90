"""Read one interface's state (up flag, addresses, labels) inside a named network
namespace over rtnetlink, without forking.

The netlink socket is created after setns() on the calling thread only, which then
returns to its own namespace; the socket stays bound to the namespace it was made
in. A read takes well under a millisecond, so an observer can sample often.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Tuple, Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

CLONE_NEWNET = 0x40000000
NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
RTM_GETLINK, RTM_GETADDR = 18, 22
IFLA_IFNAME = 3
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL = 1, 2, 3
IFF_UP = 0x1
NLMSG_HDR = struct.Struct("=IHHII")  # length, type, flags, seq, pid
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
RTA_HDR = struct.Struct("=HH")  # length, type
TIMEOUT = 2.0

_libc = ctypes.CDLL(None, use_errno=True)


class NoInterface(OSError):
    """The namespace has no interface of that name (deleted, renamed, not made yet)."""


@dataclass(frozen=True)
class LinkState:
    """Whether the link is administratively up, and its addresses with labels."""

    up: bool
    addresses: Dict[IPAddress, Optional[str]]


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "setns: " + os.strerror(err))


def socket_in(netns: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket inside the named namespace `netns` (timeout TIMEOUT), e.g. a TCP socket
    that connects to a service listening on the namespace's loopback."""
    with open("/run/netns/" + netns) as target, open("/proc/thread-self/ns/net") as home:
        _setns(target.fileno())
        try:
            sock = socket.socket(family, kind, proto)
        finally:
            _setns(home.fileno())
    sock.settimeout(TIMEOUT)
    return sock


def netlink_socket(netns: str) -> socket.socket:
    """A NETLINK_ROUTE socket inside the named namespace `netns`."""
    return socket_in(netns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)


def _attrs(data: bytes) -> Dict[int, bytes]:
    """Route attributes (type -> payload) packed in `data`."""
    attrs = {}
    offset = 0
    while offset + RTA_HDR.size <= len(data):
        length, kind = RTA_HDR.unpack_from(data, offset)
        if length < RTA_HDR.size:
            break
        attrs[kind] = data[offset + RTA_HDR.size : offset + length]
        offset += (length + 3) & ~3
    return attrs


def _dump(sock: socket.socket, kind: int, body: bytes) -> Iterator[bytes]:
    """Send one dump request; yield the bodies of all answers up to NLMSG_DONE."""
    flags = NLM_F_REQUEST | NLM_F_DUMP
    sock.send(NLMSG_HDR.pack(NLMSG_HDR.size + len(body), kind, flags, 1, 0) + body)
    while True:
        data = sock.recv(65536)
        offset = 0
        while offset + NLMSG_HDR.size <= len(data):
            length, msg_type, _, _, _ = NLMSG_HDR.unpack_from(data, offset)
            payload = data[offset + NLMSG_HDR.size : offset + length]
            offset += (length + 3) & ~3
            if msg_type == NLMSG_DONE:
                return
            if msg_type == NLMSG_ERROR:
                (error,) = struct.unpack_from("=i", payload)
                raise OSError(-error, "netlink: " + os.strerror(-error))
            yield payload


def read_link(netns: str, ifname: str) -> LinkState:
    """The state of interface `ifname` in namespace `netns`."""
    with netlink_socket(netns) as sock:
        index, up = None, False
        for body in _dump(sock, RTM_GETLINK, IFINFOMSG.pack(0, 0, 0, 0, 0)):
            _, _, link_index, link_flags, _ = IFINFOMSG.unpack_from(body)
            name = _attrs(body[IFINFOMSG.size :]).get(IFLA_IFNAME, b"").rstrip(b"\0")
            if name.decode() == ifname:
                index, up = link_index, bool(link_flags & IFF_UP)
        if index is None:
            raise NoInterface(f"no interface {ifname} in {netns}")
        return LinkState(up, dict(_addresses(sock, index)))


def _addresses(sock: socket.socket, index: int) -> Iterator[Tuple[IPAddress, Optional[str]]]:
    for body in _dump(sock, RTM_GETADDR, IFADDRMSG.pack(0, 0, 0, 0, 0)):
        if IFADDRMSG.unpack_from(body)[4] != index:
            continue
        attrs = _attrs(body[IFADDRMSG.size :])
        raw = attrs.get(IFA_LOCAL, attrs.get(IFA_ADDRESS))
        label = attrs.get(IFA_LABEL)
        if raw is not None:
            yield (
                ipaddress.ip_address(raw),
                None if label is None else label.rstrip(b"\0").decode(),
            )
