"""Puts pool addresses on the interface and takes them off, and announces them.

Two tools talk to the kernel: netlink (pyroute2) first, the `ip` command when
netlink fails or pyroute2 is missing. Both are idempotent: adding an address
that is there, or removing one that is not, succeeds. Only addresses yaim added
(IPv4: carrying `<interface>:<label>`) are ever removed.

An Actuator is not thread-safe on purpose: netlink sockets belong to one thread,
so the daemon keeps every call to it in its actuator thread.
"""

from __future__ import annotations

import abc
import logging
from typing import Iterable, List, NamedTuple, Optional, Set

from yaim.actuator.announce import announce
from yaim.errors import ActuatorError
from yaim.view import IPAddress

log = logging.getLogger(__name__)


class Configured(NamedTuple):
    """An address as the kernel lists it on the interface."""

    address: IPAddress
    prefixlen: int
    label: str


class AddressTool(abc.ABC):
    """One way to read and change the addresses of an interface; raises ActuatorError."""

    name = "?"

    @abc.abstractmethod
    def list(self, ifname: str) -> List[Configured]:
        """Every address on the interface."""

    @abc.abstractmethod
    def add(self, ifname: str, address: IPAddress, prefixlen: int, label: str) -> None:
        """Add the address; already present is success."""

    @abc.abstractmethod
    def remove(self, ifname: str, address: IPAddress, prefixlen: int) -> None:
        """Remove the address; already absent is success."""


def default_tools() -> List[AddressTool]:
    """Netlink first when pyroute2 imports, then the `ip` command."""
    from yaim.actuator.iproute import IpCommand

    try:
        from yaim.actuator.netlink import Netlink
    except ImportError as exc:
        log.warning("pyroute2 is not usable (%s): using the ip command only", exc)
        return [IpCommand()]
    return [Netlink(), IpCommand()]


class Actuator:
    """The addresses yaim manages on one interface."""

    def __init__(
        self,
        interface: str,
        label: str,
        netmask: int,
        netmask6: int,
        tools: Optional[List[AddressTool]] = None,
    ) -> None:
        self.interface = interface
        self.label = f"{interface}:{label}"
        self.prefixlen = {4: netmask, 6: netmask6}
        self.tools = tools if tools is not None else default_tools()
        # IPv6 addresses carry no label in Linux: remember which ones this run added.
        self._added: Set[IPAddress] = set()

    def _each_tool(self, what: str, operation):
        problems = []
        for tool in self.tools:
            try:
                return operation(tool)
            except ActuatorError as exc:
                problems.append(f"{tool.name}: {exc}")
                log.warning("%s on %s with %s failed: %s", what, self.interface, tool.name, exc)
        raise ActuatorError("{} on {}: {}".format(what, self.interface, "; ".join(problems)))

    def owned(self) -> Set[IPAddress]:
        """The addresses on the interface that yaim put there."""
        listed = self._each_tool("list addresses", lambda tool: tool.list(self.interface))
        present = {entry.address for entry in listed}
        self._added &= present
        return {entry.address for entry in listed if entry.label == self.label} | self._added

    def add(self, address: IPAddress) -> None:
        """Put the address on the interface (no-op if there)."""
        prefixlen = self.prefixlen[address.version]
        self._each_tool(
            f"add {address}",
            lambda tool: tool.add(self.interface, address, prefixlen, self.label),
        )
        if address.version == 6:
            self._added.add(address)

    def remove(self, address: IPAddress) -> None:
        """Take the address off the interface (no-op if absent)."""
        prefixlen = self.prefixlen[address.version]
        self._each_tool(
            f"remove {address}",
            lambda tool: tool.remove(self.interface, address, prefixlen),
        )
        self._added.discard(address)

    def announce(self, address: IPAddress) -> None:
        """Tell the neighbours the address moved here (gratuitous ARP); failures are logged."""
        try:
            announce(self.interface, address)
        except OSError as exc:
            log.warning("announcing %s on %s failed: %s", address, self.interface, exc)

    def remove_all(self, addresses: Iterable[IPAddress]) -> List[IPAddress]:
        """Remove each address, going on after a failure; returns the ones that failed."""
        failed = []
        for address in addresses:
            try:
                self.remove(address)
            except ActuatorError as exc:
                log.error("could not remove %s: %s", address, exc)
                failed.append(address)
        return failed
