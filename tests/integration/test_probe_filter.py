"""The kernel filter of the probe's ARP socket against real frames on a veth pair: it
passes a frame exactly when `arp_answer` makes an answer of it, so it never hides a host
that has an address (a dropped answer would be a duplicate address) and spares the
thread every frame that could not be one."""

from __future__ import annotations

import pytest

from tests.integration.conftest import run_in

pytestmark = pytest.mark.netns

BODY = """
import select, socket, struct, time
from yaim.actuator.announce import ARP_REPLY, arp_frame, arp_socket, hardware_address
from yaim.actuator.probe import answers_socket, arp_answer

own, peer = hardware_address("lan0"), hardware_address("peer0")
filtered, plain = answers_socket("lan0", own), arp_socket("lan0")
sender = arp_socket("peer0")  # frames peer0 sends arrive on lan0
local = arp_socket("lan0")  # frames lan0 sends: outgoing there


def ip(last):
    return bytes([198, 51, 100, last])


def header(frame, **fields):
    at = {"htype": 14, "ptype": 16, "sizes": 18}
    for name, value in fields.items():
        frame = frame[: at[name]] + struct.pack("!H", value) + frame[at[name] + 2 :]
    return frame


frames = [
    (sender, arp_frame(peer, ip(77), ip(10), ARP_REPLY, own)),  # a reply
    (sender, arp_frame(peer, ip(78), ip(10))),  # a request from the address
    (sender, arp_frame(peer, ip(79), ip(79))),  # an announcement
    (sender, arp_frame(peer, bytes(4), ip(80))),  # another node's probe
    (sender, arp_frame(own, ip(81), ip(10))),  # our own MAC as the sender
    (sender, arp_frame(own[:4] + b"\\x99\\x99", ip(82), ip(10))),  # a MAC like ours
    (sender, arp_frame(b"\\x99\\x99\\x99\\x99" + own[4:], ip(83), ip(10))),
    (sender, header(arp_frame(peer, ip(84), ip(10)), ptype=0x86DD)),  # not IPv4
    (sender, header(arp_frame(peer, ip(85), ip(10)), htype=6)),  # not Ethernet
    (sender, header(arp_frame(peer, ip(86), ip(10)), sizes=0x0804)),
    (sender, arp_frame(peer, ip(87), ip(10))[:41]),  # cut short
    (local, arp_frame(own, ip(88), ip(10))),  # our own, on the way out
    (local, arp_frame(peer, ip(89), ip(10))),  # outgoing with another MAC
]
last = arp_frame(peer, ip(99), ip(10), ARP_REPLY, own)  # passes: the end of the batch
for where, frame in frames + [(sender, last)]:
    where.send(frame)


def read(sock):
    got, deadline = [], time.monotonic() + 10
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], 0.5)
        if ready:
            got.append(sock.recvfrom(2048))
            if got[-1][0] == last:
                return got
    raise AssertionError("the batch did not arrive")


seen, kept = read(plain), read(filtered)
result = {
    "kept": [frame.hex() for frame, _ in kept],
    "answers": [frame.hex() for frame, where in seen if arp_answer(frame, where, own)],
    "senders": sorted({frame[31] for frame, _ in kept if frame[28:31] == ip(0)[:3]}),
    "seen": len(seen),
    "sent": len(frames) + 1,
}
"""


def test_the_filter_passes_exactly_the_frames_that_are_answers(netns):
    result = run_in(netns, BODY)
    assert result["seen"] >= result["sent"]  # the unfiltered socket saw the whole batch
    assert result["kept"] == result["answers"]
    # A reply, a request, an announcement, two MACs like ours, the batch's end; and the
    # replies of peer0 (the namespace's own kernel) to the requests lan0 sent, for .10.
    assert result["senders"] == [10, 77, 78, 79, 82, 83, 99]
