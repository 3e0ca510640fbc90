"""Is an address already in use on the link? Asked before a free address is taken.

IPv4: ARP probes as RFC 5227 (and `arping -D`) send them, with sender address
0.0.0.0, so no neighbour learns or changes anything from them; any ARP packet
whose sender address is the probed one, from a MAC other than ours, is an answer.
IPv6: neighbour solicitations for the address to its solicited-node multicast
group, the lookup any neighbour makes before it talks to the address; a
neighbour advertisement for it is an answer, and names the MAC in its target
link-layer address option.

The caller holds the address's mark while probing, so no yaim node adds the
address meanwhile, and a yaim node that released it removed it before deleting
its mark: whoever answers is a host yaim does not control. Raw sockets (CAP_NET_RAW),
no netlink, so any thread may probe. Failing to probe raises OSError.

`probe` asks once, for the balancer's take; `Prober` keeps its sockets open for the
lookout (yaim.lookout), which probes again and again ahead of a mark's expiry and
must know whether the kernel dropped an answer meanwhile (its count of the socket's
drops, SO_MEMINFO).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import select
import socket
import struct
import time
from typing import Dict, Iterable, List, Optional, Tuple

from yaim.actuator.announce import (
    ARP_HEADER,
    ETH_P_ARP,
    ETH_P_IP,
    ND_ADVERTISEMENT,
    ND_SOLICITATION,
    ND_SOURCE_LLADDR,
    ND_TARGET_LLADDR,
    arp_frame,
    arp_socket,
    hardware_address,
    icmpv6_socket,
    link_scoped,
    lladdr_option,
)
from yaim.view import IPAddress, in_order

PROBES = 3  # sent evenly over the probe time, so one lost packet does not hide a host
UNSPECIFIED = b"\x00" * 4
PACKET_OUTGOING = 4  # the packet socket's own frames, seen on the way out
ICMP6_FILTER = 1


def mac_text(mac: bytes) -> str:
    return ":".join(f"{byte:02x}" for byte in mac)


def own_mac(ifname: str) -> str:
    """The interface's MAC as the probe names answerers; raises OSError."""
    return mac_text(hardware_address(ifname))


def is_local(address: IPAddress) -> bool:
    """Whether this host has the address (on any interface): binding to it works."""
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((str(address), 0))
        except OSError:
            return False
    return True


def arp_probe_frame(mac: bytes, address: ipaddress.IPv4Address) -> bytes:
    """An ARP probe for `address` from `mac`: who has it? (sender address 0.0.0.0)."""
    return arp_frame(mac, UNSPECIFIED, address.packed)


def parse_arp(frame: bytes) -> Optional[Tuple[int, bytes, bytes]]:
    """(operation, sender MAC, sender address) of an Ethernet ARP frame for IPv4; else None."""
    if len(frame) < 42 or struct.unpack_from("!H", frame, 12)[0] != ETH_P_ARP:
        return None
    hardware, protocol, hlen, plen, operation = ARP_HEADER.unpack_from(frame, 14)
    if (hardware, protocol, hlen, plen) != (1, ETH_P_IP, 6, 4):
        return None
    return operation, frame[22:28], frame[28:32]


# A classic BPF program (linux/filter.h) that the kernel runs on every ARP frame before it
# queues it for a probe's socket. Written out by hand: it is eighteen instructions, and no
# packaged Python library assembles classic BPF (libpcap's compiler would bring a C
# library and a filter language for what these lines say directly).
SO_ATTACH_FILTER = 26
SKF_AD_PKTTYPE = 0xFFFFF000 + 4  # an ancillary load: the frame's packet type
LD_LEN, LDH_ABS, LD_ABS, JEQ, JGE, RET = 0x80, 0x28, 0x20, 0x15, 0x35, 0x06
SOCK_FILTER = struct.Struct("=HBBI")  # code, jump if true, jump if false, constant
KEEP = 0x40000  # bytes of the frame to queue: all of it


def _assemble(program: List[Tuple[int, int, str, str]]) -> bytes:
    """(code, constant, where to go if true, if false) -> sock_filter array; a jump names
    "next", "keep" or "drop" (the program's two final instructions)."""
    keep = len(program)
    places = {"keep": keep, "drop": keep + 1}
    out = b""
    for i, (code, k, true, false) in enumerate(program):
        jt, jf = (0 if to == "next" else places[to] - i - 1 for to in (true, false))
        out += SOCK_FILTER.pack(code, jt, jf, k)
    return out + SOCK_FILTER.pack(RET, 0, 0, KEEP) + SOCK_FILTER.pack(RET, 0, 0, 0)


def answers_filter(own: bytes) -> bytes:
    """The kernel's copy of `arp_answer`: it passes exactly the frames for which that
    returns an answer (at least 42 bytes, not outgoing, Ethernet ARP for IPv4, a sender
    address other than 0.0.0.0, a sender MAC other than `own`) and drops the rest before
    they wake the thread that reads them: its own probes and the kernel's replies on the
    way out, and the other nodes' probes (sender 0.0.0.0), most of what a link carries.
    arp_answer still judges every frame that passes."""
    first, last = struct.unpack("!IH", own)
    return _assemble(
        [
            (LD_LEN, 0, "next", "next"),
            (JGE, 42, "next", "drop"),
            (LD_ABS, SKF_AD_PKTTYPE, "next", "next"),
            (JEQ, PACKET_OUTGOING, "drop", "next"),
            (LDH_ABS, 12, "next", "next"),
            (JEQ, ETH_P_ARP, "next", "drop"),
            (LDH_ABS, 14, "next", "next"),
            (JEQ, 1, "next", "drop"),
            (LDH_ABS, 16, "next", "next"),
            (JEQ, ETH_P_IP, "next", "drop"),
            (LDH_ABS, 18, "next", "next"),
            (JEQ, 0x0604, "next", "drop"),
            (LD_ABS, 28, "next", "next"),
            (JEQ, 0, "drop", "next"),
            (LD_ABS, 22, "next", "next"),
            (JEQ, first, "next", "keep"),
            (LDH_ABS, 26, "next", "next"),
            (JEQ, last, "drop", "keep"),
        ]
    )


def attach_filter(sock: socket.socket, program: bytes) -> None:
    """Attach a classic BPF program to the socket (SO_ATTACH_FILTER); raises OSError."""
    code = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("HP", len(program) // SOCK_FILTER.size, ctypes.addressof(code))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def answers_socket(ifname: str, own: bytes) -> socket.socket:
    """An ARP socket on the interface that queues only possible answers (answers_filter)."""
    sock = arp_socket(ifname)
    try:
        attach_filter(sock, answers_filter(own))
    except OSError:
        sock.close()
        raise
    return sock


def solicited_node(address: ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    """The multicast group ff02::1:ffXX:XXXX that the holder of `address` listens on."""
    return ipaddress.IPv6Address(b"\xff\x02" + b"\x00" * 9 + b"\x01\xff" + address.packed[-3:])


def neighbour_solicitation(mac: bytes, address: ipaddress.IPv6Address) -> bytes:
    """The ICMPv6 message of an NS for `address` from `mac` (checksum left 0)."""
    header = struct.pack("!BBHI", ND_SOLICITATION, 0, 0, 0)
    return header + address.packed + lladdr_option(ND_SOURCE_LLADDR, mac)


def parse_advertisement(message: bytes) -> Optional[Tuple[bytes, Optional[bytes]]]:
    """(target address, target MAC or None) of an ICMPv6 NA message; else None."""
    if len(message) < 24 or message[0] != ND_ADVERTISEMENT or message[1] != 0:
        return None
    target, offset, mac = message[8:24], 24, None
    while offset + 8 <= len(message):
        kind, units = message[offset], message[offset + 1]
        if units == 0:
            break
        if kind == ND_TARGET_LLADDR:
            mac = message[offset + 2 : offset + 8]
        offset += 8 * units
    return target, mac


def arp_answer(frame: bytes, where: tuple, own: bytes) -> Optional[Tuple[bytes, str]]:
    """(address, MAC) of a host that an ARP frame the socket received shows having the
    address (any ARP packet it sent from it: a reply, a request, an announcement); None
    for anything else, our own frames included."""
    arp = parse_arp(frame)
    if where[2] == PACKET_OUTGOING or arp is None:
        return None
    _, sender_mac, sender_ip = arp
    if sender_mac == own or sender_ip == UNSPECIFIED:
        return None
    return sender_ip, mac_text(sender_mac)


def nd_answer(message: bytes, source: tuple, own: bytes) -> Optional[Tuple[bytes, str]]:
    """(address, MAC) of a host that a neighbour advertisement shows having the address;
    None for anything else, our own included."""
    advertised = parse_advertisement(message)
    if advertised is None or advertised[1] == own:
        return None
    target, mac = advertised
    return target, mac_text(mac) if mac else f"{source[0]} (no MAC given)"


def advertisements_only() -> bytes:
    """An ICMP6_FILTER that passes neighbour advertisements only (a set bit blocks)."""
    words = [0xFFFFFFFF] * 8
    words[ND_ADVERTISEMENT >> 5] &= ~(1 << (ND_ADVERTISEMENT & 31))
    return struct.pack("=8I", *words)


class _Listener:
    """One family's probes: a socket to send them on and read answers from."""

    sock: socket.socket

    def send(self) -> None:
        raise NotImplementedError

    def receive(self, found: Dict[IPAddress, str]) -> None:
        """Read one packet; note an answer for a probed address in `found`."""
        raise NotImplementedError


class _Arp(_Listener):
    def __init__(self, sock: socket.socket, addresses: List[IPAddress]) -> None:
        self.sock = sock
        self.mac = sock.getsockname()[4]
        self.probed = {address.packed: address for address in addresses}

    def send(self) -> None:
        for address in self.probed.values():
            self.sock.send(arp_probe_frame(self.mac, address))

    def receive(self, found: Dict[IPAddress, str]) -> None:
        answer = arp_answer(*self.sock.recvfrom(2048), self.mac)
        if answer is not None and answer[0] in self.probed:
            found[self.probed[answer[0]]] = answer[1]


class _Nd(_Listener):
    def __init__(self, sock: socket.socket, ifname: str, addresses: List[IPAddress]) -> None:
        self.sock = sock
        self.ifname = ifname
        self.mac = hardware_address(ifname)
        self.probed = {address.packed: address for address in addresses}
        sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, advertisements_only())

    def send(self) -> None:
        for address in self.probed.values():
            message = neighbour_solicitation(self.mac, address)
            self.sock.sendto(message, link_scoped(self.ifname, solicited_node(address)))

    def receive(self, found: Dict[IPAddress, str]) -> None:
        answer = nd_answer(*self.sock.recvfrom(2048), self.mac)
        if answer is not None and answer[0] in self.probed:
            found[self.probed[answer[0]]] = answer[1]


def probe(ifname: str, addresses: Iterable[IPAddress], duration: float) -> Dict[IPAddress, str]:
    """Probe every address for `duration` seconds on the interface; address -> who answered.

    The answerer is named by its MAC. Both families are probed at once, so the
    time does not grow with the number of addresses. Raises OSError.
    """
    wanted = in_order(addresses)
    found: Dict[IPAddress, str] = {}
    with contextlib.ExitStack() as stack:
        listeners: List[_Listener] = []
        v4 = [address for address in wanted if address.version == 4]
        v6 = [address for address in wanted if address.version == 6]
        if v4:
            own = hardware_address(ifname)
            listeners.append(_Arp(stack.enter_context(answers_socket(ifname, own)), v4))
        if v6:
            listeners.append(_Nd(stack.enter_context(icmpv6_socket(ifname)), ifname, v6))
        if not listeners:
            return found
        started = time.monotonic()
        for n in range(1, PROBES + 1):
            for listener in listeners:
                listener.send()
            _listen(listeners, started + duration * n / PROBES, found)
    return found


def _listen(listeners: List[_Listener], until: float, found: Dict[IPAddress, str]) -> None:
    """Read answers until the monotonic time `until`."""
    by_socket = {listener.sock: listener for listener in listeners}
    while True:
        left = until - time.monotonic()
        if left <= 0:
            return
        ready, _, _ = select.select(list(by_socket), [], [], left)
        for sock in ready:
            by_socket[sock].receive(found)


# Reading the kernel's count of packets it dropped for a socket (its queue was full):
# getsockopt SO_MEMINFO, an array of SK_MEMINFO_VARS counters (linux/sock_diag.h).
SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)
MEMINFO = struct.Struct("=9I")
SK_MEMINFO_DROPS = 8
DRAIN_LIMIT = 10000  # packets read in one go; more counts as packets lost


def dropped(sock: socket.socket) -> int:
    """How many packets the kernel has dropped for the socket so far; raises OSError."""
    counters = MEMINFO.unpack(sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, MEMINFO.size))
    return counters[SK_MEMINFO_DROPS]


def mac_bytes(text: str) -> Optional[bytes]:
    """A MAC as `mac_text` writes it, as bytes; None for anything else."""
    try:
        mac = bytes.fromhex(text.replace(":", ""))
    except ValueError:
        return None
    return mac if len(mac) == 6 else None


class Prober:
    """Probes sent again and again on sockets kept open, and every answer heard in between:
    for a thread that watches the link over time (yaim.threads.lookout) instead of
    probing once. A family's socket is opened when it is first probed; the sockets do not
    block. Every method raises OSError when the link cannot be used."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        self.mac = hardware_address(ifname)
        self._sockets: Dict[int, socket.socket] = {}  # IP version -> its socket
        self._drops: Dict[int, int] = {}

    def fds(self) -> List[int]:
        """The descriptors that turn readable when an answer comes."""
        return [sock.fileno() for sock in self._sockets.values()]

    def _socket(self, version: int) -> socket.socket:
        sock = self._sockets.get(version)
        if sock is None:
            if version == 4:
                sock = answers_socket(self.ifname, self.mac)
            else:
                sock = icmpv6_socket(self.ifname)
            try:
                if version == 6:
                    sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, advertisements_only())
                sock.setblocking(False)
                self._drops[version] = dropped(sock)
            except OSError:
                sock.close()
                raise
            self._sockets[version] = sock
        return sock

    def send(self, probes: Iterable[Tuple[IPAddress, Optional[bytes]]]) -> None:
        """One probe per (address, MAC): to every host on the link as `probe` asks, or,
        with a MAC (IPv4 only), to that host alone."""
        for address, mac in probes:
            if address.version == 4:
                frame = arp_probe_frame(self.mac, address)
                self._socket(4).send(frame if mac is None else mac + frame[6:])
            else:
                message = neighbour_solicitation(self.mac, address)
                self._socket(6).sendto(message, link_scoped(self.ifname, solicited_node(address)))

    def heard(self) -> Tuple[List[Tuple[IPAddress, str]], bool]:
        """The answers that have come since the last call, (address, MAC) of every host that
        showed it has an address; and whether the kernel dropped packets meanwhile (an
        answer may be among them)."""
        answers: List[Tuple[IPAddress, str]] = []
        lost = False
        for version, sock in self._sockets.items():
            parse = arp_answer if version == 4 else nd_answer
            for _ in range(DRAIN_LIMIT):
                try:
                    packet, source = sock.recvfrom(2048)
                except BlockingIOError:
                    break
                answer = parse(packet, source, self.mac)
                if answer is not None:
                    answers.append((ipaddress.ip_address(answer[0]), answer[1]))
            else:
                lost = True
            drops = dropped(sock)
            lost = lost or drops != self._drops[version]
            self._drops[version] = drops
        return answers, lost

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
