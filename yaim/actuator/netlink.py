"""Address changes through netlink (pyroute2); the socket belongs to the thread that made it.

An older pyroute2 (0.7.2, Debian bookworm's, for one) does not know IFA_PROTO
and would drop it without a word: there the addresses go on without the
protocol mark, and the Actuator remembers its IPv6 ones in memory.
"""

from __future__ import annotations

import errno
import ipaddress
from typing import List, Optional

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

from yaim.actuator import AddressTool, Configured
from yaim.errors import ActuatorError
from yaim.view import IPAddress

IFA_F_NODAD = 0x02
KNOWS_PROTO = any("IFA_PROTO" in entry for entry in ifaddrmsg.nla_map)


class Netlink(AddressTool):
    """pyroute2's IPRoute, opened on first use in the calling thread."""

    name = "netlink"

    def __init__(self) -> None:
        self._ipr: Optional[IPRoute] = None

    def _index(self, ifname: str) -> int:
        if self._ipr is None:
            self._ipr = IPRoute()
        found = self._ipr.link_lookup(ifname=ifname)
        if not found:
            raise ActuatorError(f"no interface named {ifname}")
        return found[0]

    def _call(self, ok_errno: Optional[int], method: str, *args, **kwargs):
        try:
            return getattr(self._ipr, method)(*args, **kwargs)
        except NetlinkError as exc:
            if exc.code == ok_errno:
                return None
            raise ActuatorError(f"netlink: {exc}") from exc
        except OSError as exc:
            self.close()
            raise ActuatorError(f"netlink: {exc}") from exc

    def list(self, ifname: str) -> List[Configured]:
        index = self._index(ifname)
        result = []
        for msg in self._call(None, "get_addr", index=index):
            text = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            address = ipaddress.ip_address(text)
            label = msg.get_attr("IFA_LABEL") or ""
            protocol = msg.get_attr("IFA_PROTO") if KNOWS_PROTO else None
            result.append(Configured(address, msg["prefixlen"], label, protocol))
        return result

    def add(
        self, ifname: str, address: IPAddress, prefixlen: int, label: str, protocol: int
    ) -> bool:
        extra = {"label": label} if address.version == 4 else {"flags": IFA_F_NODAD}
        if KNOWS_PROTO:
            extra["IFA_PROTO"] = protocol
        return self._change("add", errno.EEXIST, ifname, address, prefixlen, **extra)

    def remove(self, ifname: str, address: IPAddress, prefixlen: int) -> None:
        self._change("del", errno.EADDRNOTAVAIL, ifname, address, prefixlen)

    def _change(
        self, command: str, ok_errno: int, ifname: str, address: IPAddress, prefixlen: int, **extra
    ) -> bool:
        """One RTM_NEWADDR/RTM_DELADDR; False if `ok_errno` said it was already done."""
        index = self._index(ifname)
        return (
            self._call(
                ok_errno,
                "addr",
                command,
                index=index,
                address=str(address),
                prefixlen=prefixlen,
                **extra,
            )
            is not None
        )

    def close(self) -> None:
        """Drop the socket; the next call opens a new one."""
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
