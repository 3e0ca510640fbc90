"""Address changes through the `ip` command: the fallback when netlink is not usable.

An older iproute2 (6.1 of Debian bookworm, for one) knows no `proto` for
addresses (the address protocol mark): an add it refuses for that is run again
without it, and later ones go without it.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from typing import List, Optional

from yaim.actuator import AddressTool, Configured
from yaim.errors import ActuatorError
from yaim.view import IPAddress

TIMEOUT = 5.0
# Older iproute2 prints the errno text, newer the kernel's extended ack.
ALREADY = ("File exists", "ddress already assigned")
ABSENT = ("Cannot assign requested address", "ddress not found")
NO_PROTO = '"proto" is a garbage'


def _ip(argv: List[str], benign=()) -> Optional[str]:
    """Run `ip` with the arguments: its output, None if it failed with a benign message."""
    try:
        done = subprocess.run(
            ["ip", *argv],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ActuatorError("ip {}: {}".format(" ".join(argv), exc)) from exc
    if done.returncode == 0:
        return done.stdout
    if any(text in done.stderr for text in benign):
        return None
    raise ActuatorError("ip {}: {}".format(" ".join(argv), done.stderr.strip()))


def _protocol(text: Optional[str]) -> Optional[int]:
    """The `protocol` of `ip -N -j addr` ("0x8b"); None when absent or not a number."""
    try:
        return int(text, 0) if text else None
    except ValueError:
        return None


class IpCommand(AddressTool):
    """iproute2's `ip`, one process per call."""

    name = "ip"

    def __init__(self) -> None:
        self.knows_proto = True

    def list(self, ifname: str) -> List[Configured]:
        output = _ip(["-N", "-j", "addr", "show", "dev", ifname])
        try:
            links = json.loads(output or "[]")
        except ValueError as exc:
            raise ActuatorError(f"ip -j addr show: unreadable output: {exc}") from exc
        return [
            Configured(
                ipaddress.ip_address(info["local"]),
                int(info["prefixlen"]),
                info.get("label", ""),
                _protocol(info.get("protocol")),
            )
            for link in links
            for info in link.get("addr_info", [])
            if "local" in info
        ]

    def add(
        self, ifname: str, address: IPAddress, prefixlen: int, label: str, protocol: int
    ) -> bool:
        argv = ["addr", "add", f"{address}/{prefixlen}", "dev", ifname]
        argv += ["label", label] if address.version == 4 else ["nodad"]
        if self.knows_proto:
            try:
                return _ip([*argv, "proto", str(protocol)], benign=ALREADY) is not None
            except ActuatorError as exc:
                if NO_PROTO not in str(exc):
                    raise
                self.knows_proto = False
        return _ip(argv, benign=ALREADY) is not None

    def remove(self, ifname: str, address: IPAddress, prefixlen: int) -> None:
        _ip(["addr", "del", f"{address}/{prefixlen}", "dev", ifname], benign=ABSENT)
