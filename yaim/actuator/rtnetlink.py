"""rtnetlink's wire format, in one place: messages and attributes packed and parsed, and
a socket for requests and their answers.

yaim speaks rtnetlink twice, both times in the actuator thread: it hears link and
address events (yaim.actuator.link) and it lists, adds and removes addresses
(yaim.actuator.netlink). Both are written by hand on the standard library's AF_NETLINK
socket instead of with pyroute2: `import pyroute2` alone added 14.7 MB of resident
memory and 82 ms to every daemon's start (bench/RESULTS.md, "Start-up"), against a
goal of 40 MB per daemon, for a few fields of four message types. Only those are here:
nlmsghdr, ifinfomsg, ifaddrmsg and rtattr (linux/netlink.h, rtnetlink.h, if_addr.h).

A message or attribute whose length does not fit the bytes it came in raises
Malformed: the rest of such a datagram is never guessed at.

A request (RouteSocket.request) carries a sequence number of its own; answers with
another one (late ones of a request that timed out) are skipped. It ends at the dump's
NLMSG_DONE or at the NLMSG_ERROR that acknowledges it; a refusal there raises
NetlinkError with the errno and, where the kernel gave one, its extended-ack text. The
socket has a timeout and a request a deadline, so nothing waits on the kernel for ever.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP = 0x300
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400  # of a new object
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200  # of an NLMSG_ERROR
SOL_NETLINK = 270
NETLINK_CAP_ACK, NETLINK_EXT_ACK = 10, 11
NLMSGERR_ATTR_MSG = 1
RTM_NEWLINK, RTM_DELLINK = 16, 17
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
IFLA_IFNAME = 3
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_PROTO = 1, 2, 3, 11
NLMSG = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
RTATTR = struct.Struct("=HH")  # rtattr: length, type
ERROR = struct.Struct("=i")  # nlmsgerr's error (and NLMSG_DONE's): 0 or a negative errno
RECEIVE = 1 << 16  # the kernel's datagrams of a dump are at most 32 KiB

Attributes = Dict[int, bytes]


class Malformed(ValueError):
    """A message or attribute longer than the bytes it came in, or shorter than its header."""


class NetlinkError(Exception):
    """The kernel refused a request: `code` is the errno."""

    def __init__(self, code: int, text: str = "") -> None:
        self.code = code
        super().__init__(os.strerror(code) + (f": {text}" if text else ""))


class Message(NamedTuple):
    """One netlink message: its header's type, flags and sequence number, and its body."""

    kind: int
    flags: int
    seq: int
    body: bytes


class IfInfo(NamedTuple):
    """An ifinfomsg (RTM_NEWLINK, RTM_DELLINK) with its attributes."""

    index: int
    flags: int
    attributes: Attributes


class IfAddr(NamedTuple):
    """An ifaddrmsg (RTM_NEWADDR, RTM_DELADDR) with its attributes."""

    family: int
    prefixlen: int
    flags: int
    scope: int
    index: int
    attributes: Attributes


def align(length: int) -> int:
    """The length rounded up to netlink's 4-byte alignment."""
    return (length + 3) & ~3


def pack(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    """One message (port 0: the kernel fills it in)."""
    return NLMSG.pack(NLMSG.size + len(body), kind, flags, seq, 0) + body


def attribute(kind: int, value: bytes) -> bytes:
    """One rtattr, padded to the alignment."""
    packed = RTATTR.pack(RTATTR.size + len(value), kind) + value
    return packed + b"\0" * (align(len(packed)) - len(packed))


def messages(data: bytes) -> Iterator[Message]:
    """The messages of one datagram, in order; Malformed where one does not fit."""
    offset = 0
    while offset < len(data):
        if offset + NLMSG.size > len(data):
            raise Malformed(f"{len(data) - offset} bytes at the end, less than a header")
        length, kind, flags, seq, _port = NLMSG.unpack_from(data, offset)
        if length < NLMSG.size or offset + length > len(data):
            raise Malformed(
                f"a message of {length} bytes at byte {offset} of a datagram of {len(data)}"
            )
        yield Message(kind, flags, seq, data[offset + NLMSG.size : offset + length])
        offset += align(length)


def attributes(data: bytes, start: int = 0) -> Attributes:
    """The rtattrs of data[start:], type -> value (the last one of a type wins)."""
    found: Attributes = {}
    while start < len(data):
        if start + RTATTR.size > len(data):
            raise Malformed(f"{len(data) - start} bytes at the end, less than an attribute")
        length, kind = RTATTR.unpack_from(data, start)
        if length < RTATTR.size or start + length > len(data):
            raise Malformed(f"an attribute of {length} bytes with {len(data) - start} left")
        found[kind] = data[start + RTATTR.size : start + length]
        start += align(length)
    return found


def text(value: bytes) -> str:
    """A NUL-terminated string attribute (IFLA_IFNAME, IFA_LABEL) as text."""
    return value.split(b"\0", 1)[0].decode(errors="replace")


def _body(body: bytes, header: struct.Struct, what: str) -> tuple:
    if len(body) < header.size:
        raise Malformed(f"{what} of {len(body)} bytes, less than its {header.size}")
    return header.unpack_from(body)


def ifinfo(body: bytes) -> IfInfo:
    """The body of a link message, parsed."""
    _family, _type, index, flags, _change = _body(body, IFINFO, "an ifinfomsg")
    return IfInfo(index, flags, attributes(body, IFINFO.size))


def ifaddr(body: bytes) -> IfAddr:
    """The body of an address message, parsed."""
    family, prefixlen, flags, scope, index = _body(body, IFADDR, "an ifaddrmsg")
    return IfAddr(family, prefixlen, flags, scope, index, attributes(body, IFADDR.size))


def pack_ifaddr(
    family: int, prefixlen: int, flags: int, index: int, attrs: Sequence[Tuple[int, bytes]] = ()
) -> bytes:
    """An ifaddrmsg body (scope 0: global) with the attributes (type, value) in order."""
    body = IFADDR.pack(family, prefixlen, flags, 0, index)
    return body + b"".join(attribute(kind, value) for kind, value in attrs)


def refusal(message: Message) -> Optional[NetlinkError]:
    """What an NLMSG_ERROR (or an NLMSG_DONE) says: None for success, else the error
    with the kernel's extended-ack text when it sent one."""
    (error,) = _body(message.body, ERROR, "an error message")
    if error >= 0:
        return None
    words = ""
    if message.kind == NLMSG_ERROR and message.flags & NLM_F_ACK_TLVS:
        # The request comes back after the errno: its header only when capped.
        (echoed,) = _body(message.body[ERROR.size :], struct.Struct("=I"), "an echoed request")
        skip = ERROR.size + align(NLMSG.size if message.flags & NLM_F_CAPPED else echoed)
        words = text(attributes(message.body[skip:]).get(NLMSGERR_ATTR_MSG, b""))
    return NetlinkError(-error, words)


class RouteSocket:
    """A NETLINK_ROUTE socket for requests; it belongs to the thread that uses it."""

    def __init__(self, timeout: float, sock: Optional[socket.socket] = None) -> None:
        """Open one (or use `sock`, which must be bound); OSError if the kernel refuses."""
        self.timeout = timeout
        self._seq = 0
        if sock is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            try:
                for option in (NETLINK_EXT_ACK, NETLINK_CAP_ACK):  # the kernel's words, briefly
                    with contextlib.suppress(OSError):  # Linux < 4.12 has no EXT_ACK
                        sock.setsockopt(SOL_NETLINK, option, 1)
                sock.bind((0, 0))
            except OSError:
                sock.close()
                raise
        self._sock = sock

    def request(self, kind: int, flags: int, body: bytes) -> List[bytes]:
        """Send one request; the bodies of its answers up to NLMSG_DONE or the ack.

        NetlinkError if the kernel refused it; socket.timeout if it did not answer in
        full within the timeout; Malformed if an answer did not parse.
        """
        self._seq = self._seq % 0xFFFFFFFF + 1
        seq = self._seq
        deadline = time.monotonic() + self.timeout
        self._sock.settimeout(self.timeout)
        self._sock.send(pack(kind, flags | NLM_F_REQUEST, seq, body))
        answers: List[bytes] = []
        while True:
            for message in self._receive(deadline):
                if message.seq != seq:
                    continue
                if message.kind in (NLMSG_DONE, NLMSG_ERROR):
                    problem = refusal(message)
                    if problem is not None:
                        raise problem
                    return answers
                answers.append(message.body)

    def _receive(self, deadline: float) -> List[Message]:
        """The messages of the next datagram, waiting no later than the deadline."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout(f"no complete answer from the kernel within {self.timeout} s")
        self._sock.settimeout(left)
        data, _, flags, _ = self._sock.recvmsg(RECEIVE)
        if flags & socket.MSG_TRUNC:
            raise Malformed(f"a datagram longer than {RECEIVE} bytes")
        return list(messages(data))

    def close(self) -> None:
        self._sock.close()
