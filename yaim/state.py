"""The one lock-guarded state the daemon's threads share.

The rule it keeps: an address may be on the interface only while this node
holds a mark for it that is known to be alive. `held` maps each address to the
monotonic time by which its mark must have been refreshed again, the fence
time (the moment the request that last set its TTL was sent, plus the TTL,
minus a safety margin). The actuator thread removes an address as soon as its
fence time passes, whatever the other threads are doing.

Whoever holds or drops an address also says why (the take's reason; release or
fence and its reason). The actuator thread, the only one that puts addresses on
and takes them off, notifies those events when it does, so that each address's
events come in order and in pairs, whichever thread dropped it and when.
"""

from __future__ import annotations

import threading
import time
from typing import Dict, List, Optional, Set, Tuple

from yaim.view import ClusterView, IPAddress


class SharedState:
    """Health, the latest cluster view and the held addresses, behind one lock."""

    def __init__(self, ttl: float, margin: float) -> None:
        self.lifetime = ttl - margin
        self._lock = threading.Lock()
        self._held: Dict[IPAddress, float] = {}
        # Why each address was last taken, and what last ended it: (release|fence, reason).
        # Kept after use (one entry an address, as small as the pool): the actuator may
        # ask about an address another thread has held or dropped again since.
        self._taken_for: Dict[IPAddress, str] = {}
        self._ended: Dict[IPAddress, Tuple[str, str]] = {}
        self._closed = False
        self.healthy = False
        self.health_reason = "not checked yet"
        self.view: Optional[ClusterView] = None

    def set_health(self, healthy: bool, reason: str) -> bool:
        """Record the health state; True if it changed."""
        with self._lock:
            changed = healthy != self.healthy
            self.healthy, self.health_reason = healthy, reason
            return changed

    def set_view(self, view: ClusterView) -> None:
        with self._lock:
            self.view = view

    def fence_time(self, sent_at: float) -> float:
        """When a mark whose TTL was set by a request sent at `sent_at` must be given up."""
        return sent_at + self.lifetime

    def hold(self, address: IPAddress, fence_time: float, reason: str) -> bool:
        """Hold an address until `fence_time` unless refreshed, taken for `reason`;
        refused once closed."""
        with self._lock:
            if self._closed:
                return False
            self._held[address] = fence_time
            self._taken_for[address] = reason
            return True

    def extend(self, address: IPAddress, sent_at: float) -> None:
        """A refresh sent at `sent_at` succeeded: move the fence time (if still held)."""
        with self._lock:
            if address in self._held:
                self._held[address] = max(self._held[address], self.fence_time(sent_at))

    def drop(self, address: IPAddress, event: str, reason: str) -> Optional[float]:
        """Stop holding an address, ended by `event` (release or fence) for `reason`;
        returns its fence time, None if it was not held."""
        with self._lock:
            return self._end(address, event, reason)

    def _end(self, address: IPAddress, event: str, reason: str) -> Optional[float]:
        """drop() with the lock held."""
        fence_time = self._held.pop(address, None)
        if fence_time is not None:
            self._ended[address] = (event, reason)
        return fence_time

    def taken_for(self, address: IPAddress) -> str:
        """Why an address that has been held was last taken."""
        with self._lock:
            return self._taken_for[address]

    def ended_by(self, address: IPAddress) -> Tuple[str, str]:
        """(release|fence, reason): what last ended an address that has been dropped."""
        with self._lock:
            return self._ended[address]

    def held(self) -> Set[IPAddress]:
        with self._lock:
            return set(self._held)

    def fence_expired(self, now: Optional[float] = None) -> List[Tuple[IPAddress, float]]:
        """Drop and return every held address whose fence time has passed, with how late."""
        now = time.monotonic() if now is None else now
        with self._lock:
            expired = [(a, now - t) for a, t in self._held.items() if t <= now]
            for address, _ in expired:
                self._end(address, "fence", "deadline")
            return expired

    def next_fence_time(self) -> Optional[float]:
        with self._lock:
            return min(self._held.values(), default=None)

    def close(self) -> Set[IPAddress]:
        """Shutdown: hold nothing from now on; returns what was held."""
        with self._lock:
            self._closed = True
            held = set(self._held)
            for address in held:
                self._end(address, "release", "stopping")
            return held
