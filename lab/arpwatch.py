"""Listen for ARP on an interface for a while and print what was seen, as JSON.

Run inside a lab namespace (the client's) to count the announcements the nodes send:
one line, a list of [seconds since start, operation (1 request, 2 reply), sender
address, target address]. A packet socket sees every frame on the link, whether or
not it is for this host; a gratuitous one has the same sender and target address.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import time

ETH_P_ARP = 0x0806


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--interface", default="lan0")
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args()
    seen = []
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as sock:
        sock.bind((args.interface, ETH_P_ARP))
        sock.settimeout(0.1)
        start = time.monotonic()
        while time.monotonic() - start < args.seconds:
            try:
                frame = sock.recv(128)
            except socket.timeout:
                continue
            if len(frame) < 42:
                continue
            operation = struct.unpack_from("!H", frame, 20)[0]
            sender, target = socket.inet_ntoa(frame[28:32]), socket.inet_ntoa(frame[38:42])
            seen.append([round(time.monotonic() - start, 3), operation, sender, target])
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
