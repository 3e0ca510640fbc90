"""The service link as the node judges it: up or down with a cause, and whether to take part.

The kernel side (yaim.actuator.link) turns rtnetlink's link messages, or a look at the
interface's flags, into a `Link`; this module decides what it means for the node:

- down counts at once: the interface set down, without carrier (operstate not up),
  renamed or gone. The node stops taking part on the first such word;
- up counts only once the link has stayed up for `link-rise` without a break, so that
  a link flapping faster than that keeps the node out and moves nothing more.

Pure module: no kernel, no clock (every time is given), so the rules are tested alone.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

# The interface flags of rtnetlink's ifinfomsg and of SIOCGIFFLAGS (linux/if.h).
IFF_UP = 0x1
IFF_RUNNING = 0x40  # operstate up (or unknown): set by the kernel only while IFF_UP, with carrier


class Link(NamedTuple):
    """What the kernel says of the interface: usable or not, in words for the log, and
    whether it is gone for good, taking every address on it along (deleted; a renamed
    interface still has them)."""

    up: bool
    cause: str
    deleted: bool = False


def from_flags(ifname: str, flags: int) -> Link:
    """The link as the interface flags tell it."""
    if not flags & IFF_UP:
        return Link(False, f"{ifname} is set down")
    if not flags & IFF_RUNNING:
        return Link(False, f"{ifname} has no carrier")
    return Link(True, f"{ifname} is up")


def gone(ifname: str, renamed: str = "") -> Link:
    """The interface no longer exists under its name: deleted, or renamed to `renamed`."""
    if renamed:
        return Link(False, f"{ifname} is gone (renamed to {renamed})")
    return Link(False, f"{ifname} is gone", deleted=True)


class Change(NamedTuple):
    """A decision of the tracker: the node takes part again, or stops, and why."""

    taking_part: bool
    cause: str


class LinkTracker:
    """Turns the link's ups and downs into taking part or not, with the rise rule.

    `rise`: seconds the link must stay up before the node takes part again. The node
    starts taking part at once if the link is up at start: there is nothing to debounce
    before it took part at all.
    """

    def __init__(self, rise: float, link: Link) -> None:
        self.rise = rise
        self.link = link
        self.taking_part = link.up
        self.cause = link.cause  # of the last change (while out: of the latest down)
        self._up_since: Optional[float] = None  # up, not taking part yet: since when

    def observe(self, link: Link, now: float) -> Optional[Change]:
        """The kernel's latest word on the link; the change it causes, if any."""
        self.link = link
        if not link.up:
            self._up_since = None
            if self.taking_part:
                return self._change(False, link.cause)
            self.cause = link.cause  # still out: for the latest reason
            return None
        if not self.taking_part and self._up_since is None:
            self._up_since = now
        return self.tick(now)

    def due(self) -> Optional[float]:
        """When the link, up since a while, will have been up for `rise`; None: not rising."""
        return None if self._up_since is None else self._up_since + self.rise

    def tick(self, now: float) -> Optional[Change]:
        """Take part again once the link has been up for `rise`."""
        due = self.due()
        if due is None or now < due:
            return None
        self._up_since = None
        return self._change(True, f"{self.link.cause} again for {self.rise:g} s")

    def _change(self, taking_part: bool, cause: str) -> Change:
        self.taking_part, self.cause = taking_part, cause
        return Change(taking_part, cause)
