"""The one lock-guarded state the daemon's threads share.

The rule it keeps: an address may be on the interface only while this node
holds a mark for it that is known to be alive. `held` maps each address to the
monotonic time by which its mark must have been refreshed again, the fence
time (the moment the request that last set its TTL was sent, plus the TTL,
minus a safety margin). The actuator thread removes an address as soon as its
fence time passes, whatever the other threads are doing.
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

    def hold(self, address: IPAddress, fence_time: float) -> bool:
        """Hold an address until `fence_time` unless refreshed; refused once closed."""
        with self._lock:
            if self._closed:
                return False
            self._held[address] = fence_time
            return True

    def extend(self, address: IPAddress, sent_at: float) -> None:
        """A refresh sent at `sent_at` succeeded: move the fence time (if still held)."""
        with self._lock:
            if address in self._held:
                self._held[address] = max(self._held[address], self.fence_time(sent_at))

    def drop(self, address: IPAddress) -> Optional[float]:
        """Stop holding an address; returns its fence time, None if it was not held."""
        with self._lock:
            return self._held.pop(address, None)

    def held(self) -> Set[IPAddress]:
        with self._lock:
            return set(self._held)

    def fence_expired(self, now: Optional[float] = None) -> List[Tuple[IPAddress, float]]:
        """Drop and return every held address whose fence time has passed, with how late."""
        now = time.monotonic() if now is None else now
        with self._lock:
            expired = [(a, now - t) for a, t in self._held.items() if t <= now]
            for address, _ in expired:
                del self._held[address]
            return expired

    def next_fence_time(self) -> Optional[float]:
        with self._lock:
            return min(self._held.values(), default=None)

    def close(self) -> Set[IPAddress]:
        """Shutdown: hold nothing from now on; returns what was held."""
        with self._lock:
            self._closed = True
            held, self._held = set(self._held), {}
            return held
