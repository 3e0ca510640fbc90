"""The kernel side of the service link: rtnetlink's link and address events, and a look
at the flags.

A netlink socket bound to the RTMGRP_LINK group hears every RTM_NEWLINK and
RTM_DELLINK of the namespace: an interface set up or down, its carrier or operstate
changing, its deletion or rename. Bound to the address groups too, it hears every
RTM_NEWADDR and RTM_DELADDR: the actuator lists the interface's addresses again only
after one of them (an address added or removed, by yaim or by anyone: `addresses_moved`),
a lost event, an error, or its resync period, and trusts its last listing meanwhile.
The actuator thread owns the socket and waits on it (yaim.threads.base.Worker.watched_fd),
so a link or address event wakes it at once; nothing is polled. The interface is
followed by its name: a message naming it tells its state (yaim.link.from_flags), a
deletion or a rename of its index says it is gone, and one that names it again
(re-created, renamed back) tells its new state.

Written by hand on the standard library's AF_NETLINK socket, the wire format in
yaim.actuator.rtnetlink (which says why). The state at start, after a lost event (the
socket's buffer overran, or a datagram did not parse) and after an address add that
failed, is read with SIOCGIFFLAGS, an ioctl on a socket of the node's own namespace
(sysfs could show another namespace's).

Where no netlink socket can be opened (a sandbox refusing AF_NETLINK), the flags are
read at every actuator round instead, which is polling at the round's pace: logged.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import socket
import struct
from typing import List, NamedTuple, Optional, Union

from yaim.actuator import rtnetlink
from yaim.actuator.rtnetlink import (
    IFLA_IFNAME,
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_NEWADDR,
    RTM_NEWLINK,
    Malformed,
)
from yaim.link import Link, from_flags, gone

log = logging.getLogger(__name__)

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x10, 0x100
SIOCGIFFLAGS = 0x8913
RECEIVE_BUFFER = 1 << 20  # a burst of link events (a bridge of many ports) fits


class LinkMessage(NamedTuple):
    """One RTM_NEWLINK or RTM_DELLINK: which interface, its name and flags."""

    deleted: bool
    index: int
    name: Optional[str]
    flags: int


class AddressMessage(NamedTuple):
    """One RTM_NEWADDR or RTM_DELADDR: the index of the interface whose addresses moved."""

    index: int


def parse(data: bytes) -> List[Union[LinkMessage, AddressMessage]]:
    """The link and address messages in one datagram from the socket; the rest is skipped.
    Malformed if a message in it does not parse: nothing of it is guessed at."""
    found: List[Union[LinkMessage, AddressMessage]] = []
    for message in rtnetlink.messages(data):
        if message.kind in (RTM_NEWLINK, RTM_DELLINK):
            info = rtnetlink.ifinfo(message.body)
            name = info.attributes.get(IFLA_IFNAME)
            found.append(
                LinkMessage(
                    message.kind == RTM_DELLINK,
                    info.index,
                    None if name is None else rtnetlink.text(name),
                    info.flags,
                )
            )
        elif message.kind in (RTM_NEWADDR, RTM_DELADDR):
            found.append(AddressMessage(rtnetlink.ifaddr(message.body).index))
    return found


def read_flags(ifname: str) -> Link:
    """The interface's state now (SIOCGIFFLAGS); gone if it does not exist."""
    request = struct.pack("16sH14x", ifname.encode(), 0)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            answer = fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request)
    except OSError as exc:
        if exc.errno == errno.ENODEV:
            return gone(ifname)
        raise
    return from_flags(ifname, struct.unpack_from("16sH", answer)[1])


class LinkWatch:
    """Follows one interface's link; not thread-safe: it belongs to the actuator thread."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        self.index: Optional[int] = None
        self._sock: Optional[socket.socket] = None
        # An address of the interface may have moved since the actuator last listed them
        # (it clears this when it lists); always, without a socket to hear the events.
        self.addresses_moved = True

    def open(self) -> Link:
        """Start listening (before the first look, so that no change falls between), and
        return the state now."""
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
            sock.setblocking(False)
            self._sock = sock
        except OSError as exc:
            log.warning(
                "cannot listen to link events of %s (%s): reading its state every round",
                self.ifname,
                exc,
            )
        return self.current()

    def fileno(self) -> Optional[int]:
        """The socket to wait on; None without one."""
        return None if self._sock is None else self._sock.fileno()

    def current(self) -> Link:
        """Look at the interface now; a look that fails counts as the link down. Gone under
        its name while its index still exists: renamed."""
        try:
            link = read_flags(self.ifname)
        except OSError as exc:
            return Link(False, f"the state of {self.ifname} cannot be read: {exc}")
        if link.deleted and self.index is not None:
            with contextlib.suppress(OSError):
                return gone(self.ifname, socket.if_indextoname(self.index))
        try:
            self.index = socket.if_nametoindex(self.ifname)
        except OSError:
            self.index = None
        return link

    def changes(self) -> List[Link]:
        """What the link did since the last call, in order; without a socket, a look now.
        Ending down, a look now comes last: an interface being deleted is set down first,
        and the look tells it is gone."""
        if self._sock is None:
            self.addresses_moved = True  # nothing to hear it by
            return [self.current()]
        found = self._receive()
        if found and not found[-1].up:
            found.append(self.current())
        return found

    def _receive(self) -> List[Link]:
        """The messages waiting on the socket, as links of our interface."""
        found: List[Link] = []
        while True:
            try:
                messages = parse(self._sock.recv(65536))
            except BlockingIOError:
                return found
            except (OSError, Malformed) as exc:
                if isinstance(exc, OSError) and exc.errno != errno.ENOBUFS:
                    raise
                log.warning("link events of %s were lost (%s): looking again", self.ifname, exc)
                self.addresses_moved = True
                found.append(self.current())
                continue
            found += [link for link in map(self._judge, messages) if link is not None]

    def _judge(self, message: Union[LinkMessage, AddressMessage]) -> Optional[Link]:
        """What a link message says of our interface (None if it is about another). An
        address message of ours, or of an interface not known yet, and any link message of
        ours (set down, IPv6 addresses may go) set `addresses_moved`."""
        if isinstance(message, AddressMessage):
            if self.index is None or message.index == self.index:
                self.addresses_moved = True
            return None
        link = self._link(message)
        if link is not None:
            self.addresses_moved = True
        return link

    def _link(self, message: LinkMessage) -> Optional[Link]:
        if message.name == self.ifname:
            if message.deleted:
                self.index = None
                return gone(self.ifname)
            self.index = message.index
            return from_flags(self.ifname, message.flags)
        if message.index == self.index:
            self.index = None
            return gone(self.ifname, "" if message.deleted else message.name or "?")
        return None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
