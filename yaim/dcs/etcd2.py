"""etcd v2 keys API (python-etcd), exactly the seed's layout.

/<ns>/<cl>/ips/<address>/         a directory per pool address (the operator's)
/<ns>/<cl>/ips/<address>/marked   holder's node name, TTL, created with prevExist=false
/<ns>/<cl>/nodes/<node>           present while the node is healthy, TTL
/<ns>/<cl>/drain/<node>           set by an operator, no TTL
/<ns>/<cl>/conflicts/<address>    a host outside yaim answered for it, TTL conflict-backoff
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import Callable, Dict, Optional, TypeVar
from urllib.parse import urlsplit

import etcd
import urllib3

from yaim.dcs import DCS, Entry, Transient, describe, snapshot_of, system_ca_file, wakes_balancer
from yaim.view import IPAddress, Snapshot

log = logging.getLogger(__name__)

T = TypeVar("T")

NOT_OURS = (etcd.EtcdKeyNotFound, etcd.EtcdCompareFailed)
DELETIONS = ("delete", "expire", "compareAndDelete")

# python-etcd logs every failed request at ERROR; our retry policy reports them once.
logging.getLogger("etcd").setLevel(logging.CRITICAL)


def _client(url: str, config, timeout: float) -> etcd.Client:
    """A python-etcd client for one endpoint; certificates are always verified on https."""
    parts = urlsplit(url)
    ca_cert = None
    if parts.scheme == "https":
        # python-etcd turns verification off when it is given no CA: hand it the system store.
        ca_cert = config.etcd_ca_file or system_ca_file()
    cert = None
    if config.etcd_cert_file:
        cert = (config.etcd_cert_file, config.etcd_key_file)
    client = etcd.Client(
        host=parts.hostname,
        port=parts.port or 2379,
        protocol=parts.scheme,
        read_timeout=timeout,
        username=config.etcd_user,
        password=config.etcd_password,
        ca_cert=ca_cert,
        cert=cert,
        allow_reconnect=False,
    )
    # urllib3 would retry a failed request three times on its own: the contract's
    # retry-num and retry-after are the only retries.
    client.http.connection_pool_kw["retries"] = urllib3.Retry(0, read=False)
    return client


class Backend(DCS):
    """The v2 backend: one client per endpoint, failover by the shared retry policy."""

    def __init__(self, config, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self._clients: Dict[str, etcd.Client] = {}
        self.etcd_ttl = math.ceil(self.ttl)

    def _call(self, what: str, operation: Callable[[etcd.Client], T]) -> T:
        """One operation under the retry policy; semantic answers are handled by `operation`."""

        def attempt(endpoint: str) -> T:
            client = self._clients.get(endpoint)
            if client is None:
                client = self._clients[endpoint] = _client(endpoint, self.config, self.timeout)
            try:
                return operation(client)
            except (etcd.EtcdException, urllib3.exceptions.HTTPError, OSError) as exc:
                raise Transient(describe(exc)) from exc

        return self._retry(what, attempt)

    def _mark_key(self, address: IPAddress) -> str:
        return f"{self.root}/ips/{address}/marked"

    @property
    def _node_key(self) -> str:
        return f"{self.root}/nodes/{self.node}"

    def read(self) -> Snapshot:
        def operation(client: etcd.Client) -> Optional[etcd.EtcdResult]:
            try:
                result = client.read(self.root, recursive=True, quorum=True)
            except etcd.EtcdKeyNotFound as exc:
                self.seen = int(exc.payload["index"])
                return None
            self.seen = result.etcd_index
            return result

        result = self._call("read " + self.root, operation)
        return _snapshot(self.root, result)

    def _wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout

        def operation(client: etcd.Client) -> bool:
            # One event per request: skip those that do not matter until the deadline.
            while time.monotonic() < deadline:
                try:
                    event = client.read(
                        self.root,
                        wait=True,
                        recursive=True,
                        waitIndex=self.seen + 1,
                        timeout=deadline - time.monotonic(),
                    )
                except etcd.EtcdWatchTimedOut:
                    return False
                except etcd.EtcdEventIndexCleared:
                    log.info("watch of %s fell behind etcd's event history, resyncing", self.root)
                    self.seen = None
                    return True
                self.seen = event.modifiedIndex
                if wakes_balancer(event.key[len(self.root) :], event.action in DELETIONS):
                    return True
            return False

        return self._call("watch " + self.root, operation)

    def touch_node(self) -> None:
        def operation(client: etcd.Client) -> None:
            try:
                # A refresh does not wake watchers; only a missing key needs a full write.
                client.write(self._node_key, None, ttl=self.etcd_ttl, refresh=True, prevExist=True)
            except etcd.EtcdKeyNotFound:
                client.write(self._node_key, "healthy", ttl=self.etcd_ttl)

        self._call("write " + self._node_key, operation)

    def delete_node(self) -> None:
        def operation(client: etcd.Client) -> None:
            with contextlib.suppress(etcd.EtcdKeyNotFound):
                client.delete(self._node_key)

        self._call("delete " + self._node_key, operation)

    def create_mark(self, address: IPAddress) -> bool:
        key = self._mark_key(address)
        directory = key.rsplit("/", 1)[0]

        def operation(client: etcd.Client) -> bool:
            try:
                mark = client.write(key, self.node, ttl=self.etcd_ttl, prevExist=False)
            except (etcd.EtcdAlreadyExist, etcd.EtcdNotDir, etcd.EtcdNotFile):
                return False
            # Writing the mark re-creates a pool directory an operator just deleted:
            # if this write made the directory, undo it instead of resurrecting the address.
            try:
                made_directory = client.read(directory).createdIndex == mark.createdIndex
            except etcd.EtcdKeyNotFound:
                return False
            if made_directory:
                client.delete(directory, recursive=True)
                log.info(
                    "not taking %s on node %s: it was removed from the pool meanwhile",
                    address,
                    self.node,
                )
                return False
            return True

        return self._call("create " + key, operation)

    def refresh_mark(self, address: IPAddress) -> bool:
        key = self._mark_key(address)

        def operation(client: etcd.Client) -> bool:
            try:
                client.write(key, None, ttl=self.etcd_ttl, refresh=True, prevValue=self.node)
            except NOT_OURS:
                return False
            return True

        return self._call("refresh " + key, operation)

    def delete_mark(self, address: IPAddress) -> bool:
        key = self._mark_key(address)

        def operation(client: etcd.Client) -> bool:
            try:
                client.delete(key, prevValue=self.node)
            except NOT_OURS:
                return False
            return True

        return self._call("delete " + key, operation)

    def note_conflict(self, address: IPAddress, note: str) -> None:
        key = f"{self.root}/conflicts/{address}"
        ttl = self.conflict_ttl()
        self._call("write " + key, lambda client: client.write(key, note, ttl=ttl))

    def _pool_key(self, address: IPAddress) -> str:
        return f"{self.root}/ips/{address}"

    def _drain_key(self, node: str) -> str:
        return f"{self.root}/drain/{node}"

    def add_address(self, address: IPAddress) -> bool:
        key = self._pool_key(address)

        def operation(client: etcd.Client) -> bool:
            try:
                client.write(key, None, dir=True, prevExist=False)
            except etcd.EtcdAlreadyExist:
                return False
            return True

        return self._call("create " + key, operation)

    def remove_address(self, address: IPAddress) -> bool:
        return self._delete(self._pool_key(address), recursive=True)

    def drain(self, node: str) -> None:
        key = self._drain_key(node)
        self._call("write " + key, lambda client: client.write(key, "drained"))

    def undrain(self, node: str) -> bool:
        return self._delete(self._drain_key(node))

    def _delete(self, key: str, recursive: bool = False) -> bool:
        """Delete one key (or a directory with what is in it); False if it was not there."""

        def operation(client: etcd.Client) -> bool:
            try:
                client.delete(key, recursive=recursive)
            except etcd.EtcdKeyNotFound:
                return False
            return True

        return self._call("delete " + key, operation)


def _snapshot(root: str, result: Optional[etcd.EtcdResult]) -> Snapshot:
    """Sort the recursive read of the cluster directory into the layout's parts."""
    nodes = result.get_subtree() if result is not None else ()
    entries = (Entry(node.key, node.value, bool(node.dir), node.ttl) for node in nodes)
    return snapshot_of(root, entries, pool_dirs=True)
