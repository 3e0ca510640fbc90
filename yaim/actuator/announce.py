"""Neighbour announcements after a takeover, so that traffic switches at once, and
periodically after, so that caches stay right.

IPv4: a gratuitous ARP request (sender and target address both the taken one),
broadcast on a raw packet socket; with `announce-mode: reply` an ARP reply instead
(as `arping -A` sends; `-U` sends the request), for the switches and hypervisors that
only learn from replies. IPv6 (either mode): an unsolicited neighbour advertisement
(RFC 4861 7.2.6): override flag set, solicited flag clear, our MAC in the
target link-layer address option, sent to all nodes (ff02::1) with hop limit
255 on a raw ICMPv6 socket; the kernel writes the IPv6 header (source: the
interface's link-local address) and the checksum. A neighbour that has the
address cached takes the new MAC at once; both need CAP_NET_RAW.

The frame builders are pure, so they are tested without a network; the
conflict probes (yaim.actuator.probe) share them. So is `Refresh`, the schedule of
`announce-refresh` (keepalived's vrrp_garp_master_refresh): every held address once
per period, one after the other, so that 1,000 addresses do not go out in one burst.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from typing import Iterable, List, Optional

from yaim.view import IPAddress, address_order, in_order

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
BROADCAST = b"\xff" * 6
NO_MAC = b"\x00" * 6
ARP_REQUEST, ARP_REPLY = 1, 2
ARP_HEADER = struct.Struct("!HHBBH")  # hardware type, protocol type, their lengths, operation

ND_SOLICITATION, ND_ADVERTISEMENT = 135, 136
ND_SOURCE_LLADDR, ND_TARGET_LLADDR = 1, 2
NA_OVERRIDE = 0x20000000  # R=0 (not a router), S=0 (unsolicited), O=1
ALL_NODES = ipaddress.IPv6Address("ff02::1")
ND_HOP_LIMIT = 255  # receivers drop neighbour discovery that crossed a router

SIOCGIFHWADDR = 0x8927
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


def arp_frame(
    mac: bytes,
    sender_ip: bytes,
    target_ip: bytes,
    operation: int = ARP_REQUEST,
    target_mac: bytes = NO_MAC,
) -> bytes:
    """An Ethernet broadcast ARP packet from `mac`; the target MAC unknown (zero) unless given."""
    ethernet = BROADCAST + mac + struct.pack("!H", ETH_P_ARP)
    arp = ARP_HEADER.pack(1, ETH_P_IP, 6, 4, operation) + mac + sender_ip + target_mac + target_ip
    return ethernet + arp


def gratuitous_arp_frame(mac: bytes, address: IPAddress, reply: bool = False) -> bytes:
    """An ARP request announcing `address` at `mac` (sender and target are the address);
    `reply`: an ARP reply to the broadcast address instead, as `arping -A` sends it."""
    if reply:
        return arp_frame(mac, address.packed, address.packed, ARP_REPLY, BROADCAST)
    return arp_frame(mac, address.packed, address.packed)


def lladdr_option(kind: int, mac: bytes) -> bytes:
    """A neighbour discovery link-layer address option (length in units of 8 bytes)."""
    return struct.pack("!BB", kind, 1) + mac


def neighbour_advertisement(mac: bytes, address: IPAddress) -> bytes:
    """The ICMPv6 message of an unsolicited NA for `address` at `mac` (checksum left 0)."""
    header = struct.pack("!BBHI", ND_ADVERTISEMENT, 0, 0, NA_OVERRIDE)
    return header + address.packed + lladdr_option(ND_TARGET_LLADDR, mac)


def hardware_address(ifname: str) -> bytes:
    """The interface's MAC address (SIOCGIFHWADDR); raises OSError."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16s16x", ifname.encode())
        answer = fcntl.ioctl(sock.fileno(), SIOCGIFHWADDR, request)
    return answer[18:24]  # ifr_hwaddr: family (2 bytes), then the address


def arp_socket(ifname: str) -> socket.socket:
    """A raw packet socket for ARP on the interface (sends and receives frames)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    try:
        sock.bind((ifname, ETH_P_ARP))
    except OSError:
        sock.close()
        raise
    return sock


def icmpv6_socket(ifname: str) -> socket.socket:
    """A raw ICMPv6 socket bound to the interface, sending with hop limit 255."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ND_HOP_LIMIT)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ND_HOP_LIMIT)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
    except OSError:
        sock.close()
        raise
    return sock


def link_scoped(ifname: str, address: ipaddress.IPv6Address) -> tuple:
    """A sockaddr for a link-scope multicast address on the interface."""
    return (str(address), 0, 0, socket.if_nametoindex(ifname))


def announce(ifname: str, address: IPAddress, reply: bool = False) -> None:
    """Send one announcement for the address on the interface (`reply`: an IPv4 one as an
    ARP reply); raises OSError."""
    if address.version == 4:
        with arp_socket(ifname) as sock:
            mac = sock.getsockname()[4]
            sock.send(gratuitous_arp_frame(mac, address, reply))
        return
    message = neighbour_advertisement(hardware_address(ifname), address)
    with icmpv6_socket(ifname) as sock:
        sock.sendto(message, link_scoped(ifname, ALL_NODES))


class Refresh:
    """Which held addresses to announce again now, for `period` seconds between two
    announcements of each (0: never).

    The addresses take turns in address order, at `n / period` a second for `n` held
    addresses: each round (the actuator's, at least every interval) sends the ones
    whose turn has come since the last round, continuing after the last one sent.
    After a long stall (a frozen process) at most one pass goes out at once.
    """

    def __init__(self, period: float) -> None:
        self.period = period
        self._last: Optional[float] = None  # the previous round, None: nothing held
        self._credit = 0.0  # announcements due, not yet sent
        self._after: Optional[IPAddress] = None  # the last one sent

    def due(self, held: Iterable[IPAddress], now: float) -> List[IPAddress]:
        order = in_order(held)
        if self.period <= 0 or not order:
            self._last, self._credit = None, 0.0
            return []
        if self._last is None:
            self._last = now
            return []
        self._credit = min(
            float(len(order)), self._credit + (now - self._last) * len(order) / self.period
        )
        self._last = now
        count = int(self._credit)
        self._credit -= count
        if count == 0:
            return []
        start = 0
        if self._after is not None:
            after = address_order(self._after)
            start = next((i for i, a in enumerate(order) if address_order(a) > after), 0)
        chosen = [order[(start + k) % len(order)] for k in range(count)]
        self._after = chosen[-1]
        return chosen
