"""The actuator on a real interface in a namespace: both tools, idempotence, labels, fallback.

Each test runs its body inside a fresh namespace (a child process entered with
`ip netns exec`), because the actuator, like the daemon, works on the
namespace it runs in.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.integration.conftest import run_in

pytestmark = pytest.mark.netns


def kernel_addresses(netns: str) -> dict:
    """Address -> label on lan0, as `ip` shows them."""
    out = subprocess.run(
        ["ip", "-n", netns, "-j", "addr", "show", "dev", "lan0"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {a["local"]: a.get("label") for a in json.loads(out)[0]["addr_info"]}


@pytest.mark.parametrize("tool", ["Netlink", "IpCommand"])
def test_each_tool_adds_and_removes_idempotently_with_the_label(netns, tool):
    module = "netlink" if tool == "Netlink" else "iproute"
    result = run_in(
        netns,
        f"""
        from yaim.actuator import Actuator
        from yaim.actuator.{module} import {tool}
        act = Actuator("lan0", "yaim", 32, 128, [{tool}()])
        v4, v6 = ipaddress.ip_address("198.51.100.50"), ipaddress.ip_address("2001:db8::50")
        for address in (v4, v4, v6, v6):
            act.add(address)
        act.announce(v4)
        after_add = sorted(map(str, act.scan().ours))
        for address in (v4, v4, v6, v6):
            act.remove(address)
        result = [after_add, sorted(map(str, act.scan().ours))]
    """,
    )
    assert result == [["198.51.100.50", "2001:db8::50"], []]
    assert "198.51.100.50" not in kernel_addresses(netns)


def test_falls_back_to_the_ip_command_when_netlink_fails(netns):
    result = run_in(
        netns,
        """
        from yaim.actuator import Actuator, AddressTool
        from yaim.actuator.iproute import IpCommand
        from yaim.errors import ActuatorError

        class Broken(AddressTool):
            name = "broken"
            def list(self, ifname):
                raise ActuatorError("no netlink here")
            add = remove = lambda self, *args: self.list(None)

        act = Actuator("lan0", "yaim", 32, 128, [Broken(), IpCommand()])
        act.add(ipaddress.ip_address("198.51.100.51"))
        result = sorted(map(str, act.scan().ours))
    """,
    )
    assert result == ["198.51.100.51"]
    assert kernel_addresses(netns)["198.51.100.51"] == "lan0:yaim"


def test_only_labelled_addresses_count_as_ours(netns):
    subprocess.run(
        [
            "ip",
            "-n",
            netns,
            "addr",
            "add",
            "198.51.100.60/32",
            "dev",
            "lan0",
            "label",
            "lan0:other",
        ],
        check=True,
    )
    result = run_in(
        netns,
        """
        from yaim.actuator import Actuator
        act = Actuator("lan0", "yaim", 32, 128)
        act.add(ipaddress.ip_address("198.51.100.61"))
        result = sorted(map(str, act.scan().ours))
    """,
    )
    assert result == ["198.51.100.61"]
    assert set(kernel_addresses(netns)) >= {"198.51.100.10", "198.51.100.60", "198.51.100.61"}
