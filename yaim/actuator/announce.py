"""Neighbour announcements after a takeover, so that traffic switches at once.

IPv4: a gratuitous ARP request (sender and target address both the taken one),
sent on a raw packet socket; needs CAP_NET_RAW.
"""

from __future__ import annotations

import logging
import socket
import struct

from yaim.view import IPAddress

log = logging.getLogger(__name__)

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6


def gratuitous_arp_frame(mac: bytes, address: IPAddress) -> bytes:
    """An Ethernet broadcast ARP request announcing `address` at `mac`."""
    ip = address.packed
    ethernet = BROADCAST + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + ip + b"\x00" * 6 + ip
    return ethernet + arp


def announce(ifname: str, address: IPAddress) -> None:
    """Send one announcement for the address on the interface; raises OSError."""
    if address.version != 4:
        log.debug("no announcement for IPv6 address %s yet", address)
        return
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as sock:
        sock.bind((ifname, ETH_P_ARP))
        mac = sock.getsockname()[4]
        sock.send(gratuitous_arp_frame(mac, address))
