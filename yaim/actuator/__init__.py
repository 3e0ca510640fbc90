"""Puts pool addresses on the interface and takes them off, and announces them.

Two tools talk to the kernel: netlink first (yaim.actuator.netlink, rtnetlink by
hand on the standard library's socket), the `ip` command when netlink fails (a
sandbox refusing AF_NETLINK, say). Both are idempotent: adding an address that
is there, or removing one that is not, succeeds.

Only addresses yaim added are ever removed. It marks them twice: IPv4 ones with
the label `<interface>:<label>` (the contract's mark), both families with an
address protocol number derived from that label (IFA_PROTO, Linux >= 5.18),
the only mark an IPv6 address can carry. Where the kernel (older than 5.18: it
ignores the attribute) or `ip` (iproute2 6.1 and older) cannot set or show it,
the IPv6 addresses this run added are remembered in memory instead (and
`yaim --cleanup` finds a crashed run's through this node's marks in the DCS,
see `adopt`). An address that was on the interface, unmarked, before yaim
wanted it is left alone; one outside `allowed-networks` is never added.

IPv6 addresses are added with `nodad`: duplicate address detection would keep
a taken address unusable (tentative) for a second or more, and the conflict
probe before a take (yaim.actuator.probe) already asks the link whether anyone
else has it.

An Actuator is not thread-safe on purpose: netlink sockets belong to one thread,
so the daemon keeps every call to it in its actuator thread.
"""

from __future__ import annotations

import abc
import fcntl
import ipaddress
import logging
import socket
import struct
import zlib
from typing import Iterable, List, NamedTuple, Optional, Set

from yaim.actuator.announce import announce
from yaim.errors import ActuatorError
from yaim.view import IPAddress, IPNetwork, is_allowed

log = logging.getLogger(__name__)

SIOCGIFADDR = 0x8915


def first_ipv4(interface: str) -> Optional[ipaddress.IPv4Address]:
    """The interface's first IPv4 address (the kernel's SIOCGIFADDR), None without one.

    At start that is the node's own address, ahead of any pool address yaim adds; the
    failsafe publishes it as `peer-listen` when that key is not set. One ioctl, before
    the threads start: not worth a netlink socket outside the actuator thread.
    """
    request = struct.pack("256s", interface.encode()[:15])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            answer = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, request)
        except OSError:
            return None
    return ipaddress.IPv4Address(answer[20:24])


def address_protocol(label: str) -> int:
    """The address protocol number (0x80-0xff) marking the addresses of the yaim on `label`.

    Derived from `<interface>:<label>`, so that two yaim instances on one interface
    (yaim@.service), which need different labels anyway, mostly also get different
    numbers; yaim logs its number at start.
    """
    return 0x80 | (zlib.crc32(label.encode()) & 0x7F)


class AddressRefused(ActuatorError):
    """The address is outside allowed-networks: never added."""


class Configured(NamedTuple):
    """An address as the kernel lists it on the interface (protocol None: not shown)."""

    address: IPAddress
    prefixlen: int
    label: str
    protocol: Optional[int] = None


class Scan(NamedTuple):
    """What one look at the interface found."""

    present: Set[IPAddress]  # every address on it
    ours: Set[IPAddress]  # the ones yaim put there


class AddressTool(abc.ABC):
    """One way to read and change the addresses of an interface; raises ActuatorError."""

    name = "?"

    @abc.abstractmethod
    def list(self, ifname: str) -> List[Configured]:
        """Every address on the interface."""

    @abc.abstractmethod
    def add(
        self, ifname: str, address: IPAddress, prefixlen: int, label: str, protocol: int
    ) -> bool:
        """Add the address (IPv6 with nodad), marked; True if added, False if already there."""

    @abc.abstractmethod
    def remove(self, ifname: str, address: IPAddress, prefixlen: int) -> None:
        """Remove the address; already absent is success."""


def default_tools() -> List[AddressTool]:
    """Netlink first, then the `ip` command (imported here: both import this module)."""
    from yaim.actuator.iproute import IpCommand
    from yaim.actuator.netlink import Netlink

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
        allowed: Iterable[IPNetwork] = (),
        announce_mode: str = "request",
    ) -> None:
        self.interface = interface
        self.reply = announce_mode == "reply"
        self.label = f"{interface}:{label}"
        self.protocol = address_protocol(self.label)
        self.prefixlen = {4: netmask, 6: netmask6}
        self.allowed = tuple(allowed)
        self.tools = tools if tools is not None else default_tools()
        # Added by this run: the IPv6 mark where the kernel or the tools lack IFA_PROTO.
        self._added: Set[IPAddress] = set()
        self._refused: Set[IPAddress] = set()
        self._unmarked_reported = False
        self._protocols_shown = False

    def _each_tool(self, what: str, operation):
        problems = []
        for tool in self.tools:
            try:
                return operation(tool)
            except ActuatorError as exc:
                problems.append(f"{tool.name}: {exc}")
                log.warning("%s on %s with %s failed: %s", what, self.interface, tool.name, exc)
        raise ActuatorError("{} on {}: {}".format(what, self.interface, "; ".join(problems)))

    def scan(self) -> Scan:
        """Every address on the interface, and the ones yaim put there."""
        listed = self._each_tool("list addresses", lambda tool: tool.list(self.interface))
        present = {entry.address for entry in listed}
        self._added &= present
        self._protocols_shown = any(entry.protocol is not None for entry in listed)
        self._report_unmarked(listed)
        return Scan(present, {entry.address for entry in listed if self._ours(entry)})

    def _ours(self, entry: Configured) -> bool:
        if entry.address.version == 4:
            return entry.label == self.label
        return entry.protocol == self.protocol or entry.address in self._added

    def _report_unmarked(self, listed: List[Configured]) -> None:
        """Say once when an IPv6 address this run added shows no protocol mark."""
        if self._unmarked_reported:
            return
        for entry in listed:
            if entry.address in self._added and entry.protocol != self.protocol:
                log.warning(
                    "%s on %s shows no address protocol mark (needs Linux >= 5.18, and an"
                    " ip that knows proto where ip is used): IPv6 addresses this run added are"
                    " remembered in memory, and a crashed run's are found by yaim --cleanup"
                    " through this node's marks in the DCS",
                    entry.address,
                    self.interface,
                )
                self._unmarked_reported = True
                return

    def add(self, address: IPAddress) -> None:
        """Put the address on the interface (no-op if there); AddressRefused outside
        allowed-networks (logged once per address: the pool is filtered before it
        gets here, so this only stops what slipped through, a bug or a stale view)."""
        if not is_allowed(address, self.allowed):
            if address not in self._refused:
                self._refused.add(address)
                log.error(
                    "refusing to add %s to %s: outside allowed-networks", address, self.interface
                )
            raise AddressRefused(f"{address} is outside allowed-networks")
        prefixlen = self.prefixlen[address.version]
        added = self._each_tool(
            f"add {address}",
            lambda tool: tool.add(self.interface, address, prefixlen, self.label, self.protocol),
        )
        if added and address.version == 6:
            self._added.add(address)

    def adopt(self, address: IPAddress) -> bool:
        """Take a held address found on the interface without yaim's mark as ours?

        Only an IPv6 one, and only where no address on the interface shows an
        address protocol (kernel or tools without IFA_PROTO): there a crashed run's
        address looks like anyone's, and this node's live mark says it is ours. Else
        it is someone else's, and is never removed.
        """
        if address.version == 6 and not self._protocols_shown:
            self._added.add(address)
            return True
        return False

    def remove(self, address: IPAddress) -> None:
        """Take the address off the interface (no-op if absent)."""
        prefixlen = self.prefixlen[address.version]
        self._each_tool(
            f"remove {address}",
            lambda tool: tool.remove(self.interface, address, prefixlen),
        )
        self._added.discard(address)

    def announce(self, address: IPAddress) -> None:
        """Tell the neighbours the address is here (gratuitous ARP request or reply as
        `announce-mode` says, unsolicited NA).

        Failures are logged, never raised: the address works without it.
        """
        try:
            announce(self.interface, address, self.reply)
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
