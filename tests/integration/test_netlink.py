"""The netlink address tool (yaim.actuator.netlink) against the kernel, in a namespace.

It lists, adds and removes an IPv4 /32 and an IPv6 /128 of the documentation ranges
on a veth in a fresh namespace, each change twice (already there and already gone are
success). `ip`, not yaim, tells the label and the nodad flag. The address protocol is
the kernel's answer to the tool's listing (the kernel lists IFA_PROTO only when it kept
one), and `ip`'s too where it knows address protocols (iproute2 6.1 does not). The tool
runs in a child process entered with `ip netns exec`, as the actuator works on the
namespace it runs in.
"""

from __future__ import annotations

import re
import subprocess
from typing import Dict, List

import pytest

from tests.integration.conftest import run_in
from yaim.actuator import address_protocol

pytestmark = pytest.mark.netns

LABEL = "lan0:yaim"
PROTOCOL = address_protocol(LABEL)
V4, V6 = "198.51.100.50", "2001:db8::50"
# What every run in the namespace starts with (run_in's prelude): the tool, and `listed()`,
# its listing as JSON.
TOOL = f"""
from yaim.actuator.netlink import Netlink
tool = Netlink()
v4, v6 = ipaddress.ip_address("{V4}"), ipaddress.ip_address("{V6}")
def listed():
    return {{str(e.address): [e.prefixlen, e.label, e.protocol] for e in tool.list("lan0")}}
"""


def ip(argv: List[str]) -> str:
    """What `ip` prints on stdout and stderr (`ip address help` exits 255)."""
    done = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=10)
    return done.stdout + done.stderr


def shown(netns: str) -> Dict[str, str]:
    """Address -> its line of `ip -N -d addr show dev lan0` (with the lines it continues on)."""
    out = ip(["-N", "-n", netns, "-d", "addr", "show", "dev", "lan0"])
    found = {}
    for block in re.split(r"\n(?=    inet)", out)[1:]:
        found[block.split()[1].split("/")[0]] = " ".join(block.split())
    return found


def test_the_tool_lists_adds_and_removes_both_families_idempotently_marked(netns):
    before, added, after = run_in(
        netns,
        f"""
        before = listed()
        added = [tool.add("lan0", v4, 32, "{LABEL}", {PROTOCOL}) for _ in "12"]
        added += [tool.add("lan0", v6, 128, "{LABEL}", {PROTOCOL}) for _ in "12"]
        result = [before, added, listed()]
        """,
        TOOL,
    )
    assert before["198.51.100.10"] == [24, "lan0", None]
    assert V4 not in before and V6 not in before
    assert added == [True, False, True, False], "the second add finds it there: success"
    assert after[V4] == [32, LABEL, PROTOCOL] and after[V6] == [128, "", PROTOCOL]
    lines = shown(netns)
    assert lines[V4].startswith(f"inet {V4}/32 scope 0 {LABEL} "), lines[V4]  # 0: global
    assert lines[V6].startswith(f"inet6 {V6}/128 scope 0 nodad "), lines[V6]
    if "proto" in ip(["address", "help"]):  # an iproute2 that knows address protocols
        for address in (V4, V6):
            assert f"proto {PROTOCOL:#x}" in lines[address], lines[address]

    after_removal = run_in(
        netns,
        """
        for _ in "12":
            tool.remove("lan0", v4, 32)
            tool.remove("lan0", v6, 128)
        result = listed()
        """,
        TOOL,
    )
    assert V4 not in after_removal and V6 not in after_removal
    assert "198.51.100.10" in after_removal, "only what it was told to remove"
    assert set(shown(netns)) & {V4, V6} == set()
