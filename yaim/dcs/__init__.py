"""The distributed store, behind one small interface.

Every backend offers the same few operations on the contract's layout. Each
operation is retried `retry-num` times, `retry-after` apart, moving to the next
endpoint (endpoints are tried in a random order) after a failure; when every
try failed it raises DCSError. "The key is not ours" is an answer, not an
error: those methods return False.
"""

from __future__ import annotations

import abc
import importlib
import logging
import random
import threading
import time
from typing import Callable, List, Optional, TypeVar

from yaim.errors import DCSError
from yaim.view import IPAddress, Snapshot

log = logging.getLogger(__name__)

T = TypeVar("T")

BACKENDS = {"etcd": "yaim.dcs.etcd2"}


class Transient(Exception):
    """One try failed in a way another try (maybe on another endpoint) could fix."""


class DCS(abc.ABC):
    """The operations yaim needs from its store, for one node of one cluster."""

    def __init__(
        self,
        config,
        tries: Optional[int] = None,
        timeout: Optional[float] = None,
        stop: Optional[threading.Event] = None,
    ) -> None:
        self.config = config
        self.node = config.node_name
        self.root = "/{}/{}".format(config.dcs_namespace.strip("/"), config.dcs_clustername)
        self.ttl = config.ttl_s
        self.tries = tries or config.retry_num
        self.timeout = timeout or max(0.2, min(config.interval_s, 2.0))
        self.stop = stop or threading.Event()
        self.endpoints: List[str] = random.sample(
            list(config.dcs_endpoints), len(config.dcs_endpoints)
        )
        self._current = 0
        self.last_success: Optional[float] = None

    @property
    def endpoint(self) -> str:
        """The endpoint the next request goes to."""
        return self.endpoints[self._current]

    def _retry(self, what: str, attempt: Callable[[str], T]) -> T:
        """Run one operation with the retry and failover policy of the contract."""
        problem = None
        for n in range(self.tries):
            endpoint = self.endpoint
            try:
                result = attempt(endpoint)
            except Transient as exc:
                problem = exc
                log.debug(
                    "%s via %s failed (try %d/%d): %s", what, endpoint, n + 1, self.tries, exc
                )
                self._current = (self._current + 1) % len(self.endpoints)
                if n + 1 < self.tries and self.stop.wait(self.config.retry_after_s):
                    break
                continue
            self.last_success = time.monotonic()
            return result
        raise DCSError(f"{what}: {problem} (after {self.tries} tries)")

    @abc.abstractmethod
    def read(self) -> Snapshot:
        """The whole cluster directory: pool, marks, nodes, drained nodes."""

    @abc.abstractmethod
    def touch_node(self) -> None:
        """Create or refresh this node's key, with the TTL."""

    @abc.abstractmethod
    def delete_node(self) -> None:
        """Remove this node's key (it is no longer healthy, or it stops)."""

    @abc.abstractmethod
    def create_mark(self, address: IPAddress) -> bool:
        """Mark an address for this node, only if nobody has: True if this node got it."""

    @abc.abstractmethod
    def refresh_mark(self, address: IPAddress) -> bool:
        """Renew this node's mark; False if the mark is gone or someone else's."""

    @abc.abstractmethod
    def delete_mark(self, address: IPAddress) -> bool:
        """Delete this node's mark; False if it was not (or no longer) ours."""


def connect(config, **kwargs) -> DCS:
    """The backend `dcs-type` names, imported only when chosen."""
    module = importlib.import_module(BACKENDS[config.dcs_type])
    return module.Backend(config, **kwargs)
