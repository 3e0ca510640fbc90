"""Address changes through the `ip` command: the fallback when netlink is not usable."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from typing import List

from yaim.actuator import AddressTool, Configured
from yaim.errors import ActuatorError
from yaim.view import IPAddress

TIMEOUT = 5.0
# Older iproute2 prints the errno text, newer the kernel's extended ack.
ALREADY = ("File exists", "ddress already assigned")
ABSENT = ("Cannot assign requested address", "ddress not found")


def _ip(argv: List[str], benign=()) -> str:
    """Run `ip` with the arguments; an error whose message is benign counts as success."""
    try:
        done = subprocess.run(
            ["ip", *argv],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ActuatorError("ip {}: {}".format(" ".join(argv), exc)) from exc
    if done.returncode != 0 and not any(text in done.stderr for text in benign):
        raise ActuatorError("ip {}: {}".format(" ".join(argv), done.stderr.strip()))
    return done.stdout


class IpCommand(AddressTool):
    """iproute2's `ip`, one process per call."""

    name = "ip"

    def list(self, ifname: str) -> List[Configured]:
        output = _ip(["-j", "addr", "show", "dev", ifname])
        try:
            links = json.loads(output or "[]")
        except ValueError as exc:
            raise ActuatorError(f"ip -j addr show: unreadable output: {exc}") from exc
        return [
            Configured(
                ipaddress.ip_address(info["local"]), int(info["prefixlen"]), info.get("label", "")
            )
            for link in links
            for info in link.get("addr_info", [])
            if "local" in info
        ]

    def add(self, ifname: str, address: IPAddress, prefixlen: int, label: str) -> None:
        argv = ["addr", "add", f"{address}/{prefixlen}", "dev", ifname]
        if address.version == 4:
            argv += ["label", label]
        _ip(argv, benign=ALREADY)

    def remove(self, ifname: str, address: IPAddress, prefixlen: int) -> None:
        _ip(["addr", "del", f"{address}/{prefixlen}", "dev", ifname], benign=ABSENT)
