"""The client's view of a pool: ARP requests for every address every period, every reply logged.

    python bench/probe.py --interface lan0 --source 198.51.100.2 --out FILE ADDRESS...

Runs inside the client namespace. Each round sends one ARP request per address on a
raw packet socket, then reads replies until the next round is due. A reply to us
(target address = `--source`) from a pool address is written as one line

    MONOTONIC_TIME ADDRESS MAC

CLOCK_MONOTONIC is system wide, so the benchmark compares these times with its own.
Gratuitous ARP (announcements, probes) is not an answer and is not logged. Stops on
SIGTERM or after `--max-seconds`.
"""

from __future__ import annotations

import argparse
import ipaddress
import select
import signal
import time
from typing import Dict, List, NoReturn, Optional, TextIO

from yaim.actuator.announce import ARP_HEADER, ARP_REPLY, arp_frame, arp_socket

ARP_OFFSET = 14  # after the Ethernet header
SENDER_MAC = slice(ARP_OFFSET + 8, ARP_OFFSET + 14)
SENDER_IP = slice(ARP_OFFSET + 14, ARP_OFFSET + 18)
TARGET_IP = slice(ARP_OFFSET + 24, ARP_OFFSET + 28)


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def parse_reply(frame: bytes, source: bytes, pool: Dict[bytes, str]) -> Optional[tuple]:
    """(address, mac) when `frame` is an ARP reply to `source` from a pool address, else None."""
    if len(frame) < TARGET_IP.stop:
        return None
    operation = ARP_HEADER.unpack_from(frame, ARP_OFFSET)[4]
    sender = frame[SENDER_IP]
    if operation != ARP_REPLY or frame[TARGET_IP] != source or sender not in pool:
        return None
    return pool[sender], mac_text(frame[SENDER_MAC])


def run(
    interface: str, source: str, addresses: List[str], out: TextIO, period: float, limit: float
) -> None:
    """Probe until `limit` seconds have passed (or a signal ends the process)."""
    src = ipaddress.IPv4Address(source).packed
    pool = {ipaddress.IPv4Address(a).packed: a for a in addresses}
    with arp_socket(interface) as sock:
        mac = sock.getsockname()[4]
        requests = [arp_frame(mac, src, target) for target in pool]
        start = next_round = time.monotonic()
        while next_round - start < limit:
            for frame in requests:
                sock.send(frame)
            next_round += period
            now = time.monotonic()
            if next_round < now:  # fell behind (a stall): skip rounds rather than burst
                next_round = now + period
            while now < next_round:
                ready, _, _ = select.select([sock], [], [], next_round - now)
                now = time.monotonic()
                if not ready:
                    break
                answer = parse_reply(sock.recv(128), src, pool)
                if answer is not None:
                    out.write(f"{now:.6f} {answer[0]} {answer[1]}\n")
            out.flush()


def _stop(signum: int, frame: object) -> NoReturn:
    raise SystemExit(0)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interface", required=True)
    parser.add_argument("--source", required=True, help="our IPv4 address on the interface")
    parser.add_argument("--out", required=True, help="file the replies are appended to")
    parser.add_argument("--period", type=float, default=0.01, help="seconds between rounds")
    parser.add_argument("--max-seconds", type=float, default=4 * 3600, help="stop after this")
    parser.add_argument("addresses", nargs="+")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    with open(args.out, "a") as out:
        run(args.interface, args.source, args.addresses, out, args.period, args.max_seconds)


if __name__ == "__main__":
    main()
