"""Neighbour announcements after a takeover, so that traffic switches at once.

IPv4: a gratuitous ARP request (sender and target address both the taken one),
broadcast on a raw packet socket. IPv6: an unsolicited neighbour advertisement
(RFC 4861 7.2.6): override flag set, solicited flag clear, our MAC in the
target link-layer address option, sent to all nodes (ff02::1) with hop limit
255 on a raw ICMPv6 socket; the kernel writes the IPv6 header (source: the
interface's link-local address) and the checksum. A neighbour that has the
address cached takes the new MAC at once; both need CAP_NET_RAW.

The frame builders are pure, so they are tested without a network; the
conflict probes (yaim.actuator.probe) share them.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

from yaim.view import IPAddress

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
    mac: bytes, sender_ip: bytes, target_ip: bytes, operation: int = ARP_REQUEST
) -> bytes:
    """An Ethernet broadcast ARP packet from `mac`; the target MAC is left unknown (zero)."""
    ethernet = BROADCAST + mac + struct.pack("!H", ETH_P_ARP)
    arp = ARP_HEADER.pack(1, ETH_P_IP, 6, 4, operation) + mac + sender_ip + NO_MAC + target_ip
    return ethernet + arp


def gratuitous_arp_frame(mac: bytes, address: IPAddress) -> bytes:
    """An ARP request announcing `address` at `mac` (sender and target are the address)."""
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


def announce(ifname: str, address: IPAddress) -> None:
    """Send one announcement for the address on the interface; raises OSError."""
    if address.version == 4:
        with arp_socket(ifname) as sock:
            mac = sock.getsockname()[4]
            sock.send(gratuitous_arp_frame(mac, address))
        return
    message = neighbour_advertisement(hardware_address(ifname), address)
    with icmpv6_socket(ifname) as sock:
        sock.sendto(message, link_scoped(ifname, ALL_NODES))
