"""The frames yaim puts on the wire, byte by byte: announcements and conflict probes."""

from __future__ import annotations

import ipaddress
import struct

from yaim.actuator import address_protocol
from yaim.actuator.announce import ALL_NODES, gratuitous_arp_frame, neighbour_advertisement
from yaim.actuator.probe import (
    advertisements_only,
    arp_probe_frame,
    mac_text,
    neighbour_solicitation,
    parse_advertisement,
    parse_arp,
    solicited_node,
)

MAC = bytes.fromhex("020000000001")
OTHER = bytes.fromhex("02000000ab02")
V4 = ipaddress.ip_address("198.51.100.7")
V6 = ipaddress.ip_address("2001:db8::1:2:3")


def ethernet(frame: bytes):
    return frame[:6], frame[6:12], struct.unpack("!H", frame[12:14])[0]


def test_an_arp_probe_asks_from_0_0_0_0_so_no_neighbour_learns_anything():
    frame = arp_probe_frame(MAC, V4)
    assert len(frame) == 42
    assert ethernet(frame) == (b"\xff" * 6, MAC, 0x0806)
    assert frame[14:22] == bytes.fromhex("0001 0800 06 04 0001")  # Ethernet, IPv4, request
    assert frame[22:28] == MAC  # sender MAC
    assert frame[28:32] == b"\x00" * 4  # sender address: unspecified
    assert frame[32:38] == b"\x00" * 6  # target MAC: unknown
    assert frame[38:42] == V4.packed


def test_a_gratuitous_arp_names_the_address_as_sender_and_target():
    frame = gratuitous_arp_frame(MAC, V4)
    assert frame[28:32] == frame[38:42] == V4.packed
    assert parse_arp(frame) == (1, MAC, V4.packed)


def test_parse_arp_reads_a_reply_and_ignores_what_is_not_arp_for_ipv4():
    reply = bytearray(arp_probe_frame(OTHER, V4))
    reply[20:22] = b"\x00\x02"
    reply[28:32] = V4.packed
    assert parse_arp(bytes(reply)) == (2, OTHER, V4.packed)
    assert parse_arp(bytes(reply[:41])) is None
    ipv4_frame = bytes(reply[:12]) + b"\x08\x00" + bytes(reply[14:])
    assert parse_arp(ipv4_frame) is None
    other_protocol = bytes(reply[:16]) + b"\x86\xdd" + bytes(reply[18:])
    assert parse_arp(other_protocol) is None


def test_an_unsolicited_neighbour_advertisement_overrides_and_names_our_mac():
    message = neighbour_advertisement(MAC, V6)
    assert len(message) == 32
    kind, code, checksum, flags = struct.unpack("!BBHI", message[:8])
    assert (kind, code, checksum) == (136, 0, 0)  # the kernel fills in the checksum
    assert flags == 0x20000000  # override only: not a router, not solicited
    assert message[8:24] == V6.packed
    assert message[24:32] == b"\x02\x01" + MAC  # target link-layer address option
    assert parse_advertisement(message) == (V6.packed, MAC)
    assert str(ALL_NODES) == "ff02::1"


def test_a_neighbour_solicitation_goes_to_the_solicited_node_group():
    message = neighbour_solicitation(MAC, V6)
    assert struct.unpack("!BBHI", message[:8]) == (135, 0, 0, 0)
    assert message[8:24] == V6.packed
    assert message[24:32] == b"\x01\x01" + MAC  # source link-layer address option
    assert solicited_node(V6) == ipaddress.ip_address("ff02::1:ff02:3")
    assert solicited_node(ipaddress.ip_address("2001:db8::abcd:ef12")) == ipaddress.ip_address(
        "ff02::1:ffcd:ef12"
    )


def test_parse_advertisement_skips_other_options_and_refuses_the_malformed():
    nonce = b"\x0e\x01" + b"\x00" * 6
    message = neighbour_advertisement(OTHER, V6)
    with_nonce = message[:24] + nonce + message[24:]
    assert parse_advertisement(with_nonce) == (V6.packed, OTHER)
    assert parse_advertisement(message[:24]) == (V6.packed, None)
    assert parse_advertisement(message[:23]) is None
    assert parse_advertisement(neighbour_solicitation(MAC, V6)) is None
    zero_length = message[:24] + b"\x02\x00" + OTHER
    assert parse_advertisement(zero_length) == (V6.packed, None)


def test_the_icmpv6_filter_passes_neighbour_advertisements_only():
    words = struct.unpack("=8I", advertisements_only())
    passes = [kind for kind in range(256) if not words[kind >> 5] & (1 << (kind & 31))]
    assert passes == [136]


def test_mac_text():
    assert mac_text(OTHER) == "02:00:00:00:ab:02"


def test_the_address_protocol_is_yaim_s_own_and_differs_per_label():
    ours = address_protocol("lan0:yaim")
    assert 0x80 <= ours <= 0xFF  # clear of the kernel's 0-3 and of small numbers people pick
    assert ours == address_protocol("lan0:yaim")
    assert address_protocol("lan0:pg") != ours
