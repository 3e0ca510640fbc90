"""Address changes through rtnetlink: list, add and remove the addresses of one interface.

Written by hand on the standard library's AF_NETLINK socket (the wire format in
yaim.actuator.rtnetlink), not with pyroute2: importing pyroute2 alone added 14.7 MB of
resident memory and 82 ms to every daemon's start (bench/RESULTS.md, "Start-up"), with
a goal of 40 MB per daemon, for three requests of one message type.

The requests are those of `ip addr`: RTM_GETADDR dumps every address of the namespace
(the kernel filters by interface only on a socket in strict mode; the answers are
filtered here), RTM_NEWADDR with NLM_F_CREATE | NLM_F_EXCL, so an address already there
answers EEXIST, and RTM_DELADDR, where an absent one answers EADDRNOTAVAIL: both count
as done. Changes ask for the kernel's acknowledgement (NLM_F_ACK), so a refusal is seen.
IPv4 addresses carry the label (IFA_LABEL), IPv6 ones are added with IFA_F_NODAD, and
both with the address protocol (IFA_PROTO), always: a kernel older than 5.18 does not
know that attribute and, parsing address requests liberally, ignores it without an
error, so the address goes on unmarked and is listed without a protocol (None), where
the Actuator remembers its IPv6 ones in memory.

The socket is opened on first use, by the thread that uses it (the actuator thread's),
and has a timeout; an OSError or an answer that does not parse closes it, and the next
call opens a new one.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Any, Callable, List, Optional, Sequence, Tuple

from yaim.actuator import AddressTool, Configured
from yaim.actuator.rtnetlink import (
    IFA_ADDRESS,
    IFA_LABEL,
    IFA_LOCAL,
    IFA_PROTO,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    RTM_DELADDR,
    RTM_GETADDR,
    RTM_NEWADDR,
    IfAddr,
    Malformed,
    NetlinkError,
    RouteSocket,
    ifaddr,
    pack_ifaddr,
    text,
)
from yaim.errors import ActuatorError
from yaim.view import IPAddress

IFA_F_NODAD = 0x02
TIMEOUT = 5.0  # seconds for one request and all its answers
FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}


def _index(ifname: str) -> int:
    try:
        return socket.if_nametoindex(ifname)
    except OSError as exc:
        raise ActuatorError(f"no interface named {ifname}") from exc


def _address_body(
    ifname: str,
    address: IPAddress,
    prefixlen: int,
    flags: int = 0,
    extra: Sequence[Tuple[int, bytes]] = (),
) -> bytes:
    """The ifaddrmsg of a change: the address as IFA_LOCAL and IFA_ADDRESS, as `ip` sends it."""
    attrs = [(IFA_LOCAL, address.packed), (IFA_ADDRESS, address.packed), *extra]
    return pack_ifaddr(FAMILY[address.version], prefixlen, flags, _index(ifname), attrs)


def configured(entry: IfAddr) -> Optional[Configured]:
    """An address message as the Actuator sees it; None for one without an address."""
    raw = entry.attributes.get(IFA_LOCAL, entry.attributes.get(IFA_ADDRESS))
    if entry.family not in FAMILY.values() or raw is None:
        return None
    try:
        address = ipaddress.ip_address(raw)
    except ValueError as exc:
        raise Malformed(f"an address of {len(raw)} bytes") from exc
    label = text(entry.attributes.get(IFA_LABEL, b""))
    protocol = entry.attributes.get(IFA_PROTO)
    return Configured(address, entry.prefixlen, label, protocol[0] if protocol else None)


class Netlink(AddressTool):
    """rtnetlink requests on a socket of the calling thread, opened on first use."""

    name = "netlink"

    def __init__(self) -> None:
        self._sock: Optional[RouteSocket] = None

    def _request(
        self,
        ok_errno: Optional[int],
        kind: int,
        flags: int,
        body: bytes,
        read: Callable[[List[bytes]], Any] = list,
    ) -> Any:
        """`read` of the answers' bodies; None if the kernel refused with `ok_errno` (it
        was done already)."""
        try:
            if self._sock is None:
                self._sock = RouteSocket(TIMEOUT)
            return read(self._sock.request(kind, flags, body))
        except NetlinkError as exc:
            if exc.code == ok_errno:
                return None
            raise ActuatorError(f"netlink: {exc}") from exc
        except (OSError, Malformed) as exc:
            self.close()
            raise ActuatorError(f"netlink: {exc}") from exc

    def list(self, ifname: str) -> List[Configured]:
        index = _index(ifname)

        def read(answers: List[bytes]) -> List[Configured]:
            ours = (configured(entry) for entry in map(ifaddr, answers) if entry.index == index)
            return [entry for entry in ours if entry is not None]

        return self._request(None, RTM_GETADDR, NLM_F_DUMP, pack_ifaddr(0, 0, 0, 0), read)

    def add(
        self, ifname: str, address: IPAddress, prefixlen: int, label: str, protocol: int
    ) -> bool:
        if address.version == 4:
            flags, extra = 0, [(IFA_LABEL, label.encode() + b"\0")]
        else:
            flags, extra = IFA_F_NODAD, []
        extra.append((IFA_PROTO, bytes([protocol])))
        body = _address_body(ifname, address, prefixlen, flags, extra)
        create = NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK
        return self._request(errno.EEXIST, RTM_NEWADDR, create, body) is not None

    def remove(self, ifname: str, address: IPAddress, prefixlen: int) -> None:
        body = _address_body(ifname, address, prefixlen)
        self._request(errno.EADDRNOTAVAIL, RTM_DELADDR, NLM_F_ACK, body)

    def close(self) -> None:
        """Drop the socket; the next call opens a new one."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
