"""etcd v2 keys API (python-etcd), exactly the seed's layout.

/<ns>/<cl>/ips/<address>/         a directory per pool address (the operator's)
/<ns>/<cl>/ips/<address>/marked   holder's node name, TTL, created with prevExist=false
/<ns>/<cl>/nodes/<node>           present while the node is healthy, TTL
/<ns>/<cl>/out/<node>             why the node, running, takes no part, TTL
/<ns>/<cl>/drain/<node>           set by an operator, no TTL
/<ns>/<cl>/conflicts/<address>    a host outside yaim answered for it, TTL conflict-backoff
/<ns>/<cl>/released/<address>     its last holder took it off and deleted its mark, TTL

Every write to a key of this node that exists already compares its version
(prevIndex) with the one this node last wrote. etcd v2 fixes a TTL's expiration
when a member receives the request; a request that timed out (at a hung member,
or while etcd had no leader) can still be applied seconds later, after its retry
succeeded, and set the expiration back to its own, older one: the mark would
expire while its holder counts on it. With the compare, such a late copy fails.

etcd v2 answers a wrong password and missing rights alike (error 110, "Insufficient
credentials"): both fail at once, with a hint naming both causes.

There are no transactions over two keys: a release writes its `released` note, then
deletes the mark (DCS.release_mark). A round's refreshes go out REFRESH_WIDTH at once,
and so do the marks a round takes.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple
from urllib.parse import quote, urlsplit

import etcd
import urllib3

from yaim.dcs import (
    DCS,
    Entry,
    Event,
    KeyState,
    Refreshed,
    Refused,
    Resync,
    Transient,
    describe,
    system_ca_file,
)
from yaim.names import BadName, shown
from yaim.redact import mask_url
from yaim.view import IPAddress

log = logging.getLogger(__name__)

# Refreshes (or creates) on the way at once (DCS._at_once): v2 has one TTL per mark, so
# one request per mark per interval; this many connections make 300 marks cost about 40
# round trips of wall time, not 300, and stay far below etcd's own limits.
REFRESH_WIDTH = 8

NOT_OURS = (etcd.EtcdKeyNotFound, etcd.EtcdCompareFailed)
DELETIONS = ("delete", "expire", "compareAndDelete")

# python-etcd logs every failed request at ERROR; our retry policy reports them once.
logging.getLogger("etcd").setLevel(logging.CRITICAL)


class _Client(etcd.Client):
    """python-etcd joins keys into its URLs as they are, so `?`, `#`, `%` in a key would
    change the request: every key is quoted on its way, and one with an empty, `.` or
    `..` component (which etcd's path cleaning would resolve) is refused. The names
    that go into keys are checked where they enter (yaim.names); this is the second wall.
    """

    def _sanitize_key(self, key: str) -> str:
        key = super()._sanitize_key(key)
        if any(part in ("", ".", "..") for part in key.split("/")[1:]):
            raise BadName(f"refusing the key {shown(key)!r}: an empty, '.' or '..' component")
        return quote(key, safe="/")


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
    client = _Client(
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


class _Versions:
    """The modifiedIndex of this node's last successful write of each of its keys,
    shared by the node's handles (one per thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._index: Dict[str, int] = {}

    def get(self, key: str) -> Optional[int]:
        with self._lock:
            return self._index.get(key)

    def wrote(self, key: str, result: etcd.EtcdResult) -> None:
        with self._lock:
            self._index[key] = result.modifiedIndex

    def forget(self, key: str) -> None:
        with self._lock:
            self._index.pop(key, None)


def release_notice(endpoint: str, version: str, keys_status: int) -> Optional[Tuple[int, str]]:
    """What to say of a server by the `etcdserver` of its GET /version and the status of
    its GET /v2/keys: an error when it serves no v2 API (etcd 3.4 and 3.5 answer 404
    without --enable-v2), a warning when v2 is on in 3.5, the last release that has it."""
    advice = "use dcs-type: etcd3, and move the keys with yaimctl migrate"
    if keys_status == 404:
        return logging.ERROR, (
            f"etcd {version} at {endpoint} serves no v2 API (started without --enable-v2;"
            f" etcd 3.6 has none at all): {advice}"
        )
    if version.split(".")[:2] == ["3", "5"]:  # not gateway.release_of: v3 stays unloaded
        return logging.WARNING, (
            f"etcd {version} at {endpoint} serves the v2 API, deprecated in 3.5 and gone"
            f" in 3.6: {advice}"
        )
    return None


class Backend(DCS):
    """The v2 backend: one client per endpoint, failover by the shared retry policy."""

    FAILURES = (etcd.EtcdException, urllib3.exceptions.HTTPError, OSError)
    POOL_DIRS = True
    WATCH_INTERRUPTIBLE = False

    def __init__(self, config, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.versions = _Versions()

    def clone(self) -> DCS:
        twin = super().clone()
        twin.versions = self.versions
        return twin

    def _connect(self, endpoint: str) -> etcd.Client:
        return _client(endpoint, self.config, self.timeout)

    def _release_notice(self, endpoint: str) -> Optional[Tuple[int, str]]:
        client = self._client(endpoint)
        timeout = urllib3.Timeout(connect=self.timeout, read=self.timeout)
        headers = client._get_headers()
        answer = client.http.request(
            "GET", client.base_uri + "/version", headers=headers, timeout=timeout
        )
        try:
            version = str(json.loads(answer.data.decode()).get("etcdserver", "?"))
        except (ValueError, AttributeError):
            version = "?"
        keys = client.http.request(
            "GET", client.base_uri + "/v2/keys", headers=headers, timeout=timeout
        )
        return release_notice(mask_url(endpoint), version, keys.status)

    def _failure(self, exc: BaseException) -> Exception:
        if not isinstance(exc, etcd.EtcdInsufficientPermissions):
            return Transient(describe(exc))
        user = self.config.etcd_user
        if user is None:
            return Refused(f"{describe(exc)}: etcd has authentication on, set etcd-user")
        return Refused(
            f"{describe(exc)}: a wrong etcd-password, or user {user!r} lacks read and write"
            f" permission on {self.root}*"
        )

    def list_entries(self) -> Tuple[List[Entry], int]:
        def operation(client: etcd.Client) -> Tuple[List[Entry], int]:
            try:
                result = client.read(self.root, recursive=True, quorum=True)
            except etcd.EtcdKeyNotFound as exc:
                return [], int(exc.payload["index"])
            below = [_entry(node) for node in result.get_subtree() if node.key != self.root]
            return below, result.etcd_index

        entries, self.seen = self._call("read " + self.root, operation)
        return entries, self.seen

    def watch_events(self, after: int, timeout: float) -> Tuple[List[Event], int, bool]:
        """One long poll (`wait=true`): one event per request. etcd's X-Etcd-Index on the
        answer is its index when the poll began: an event at or past it happened while
        the poll waited, one before it comes from the history, maybe with more to come."""
        deadline = time.monotonic() + timeout

        def operation(client: etcd.Client) -> Tuple[List[Event], int, bool]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return [], after, False
            try:
                node = client.read(
                    self.root, wait=True, recursive=True, waitIndex=after + 1, timeout=remaining
                )
            except etcd.EtcdWatchTimedOut:
                return [], after, False
            except etcd.EtcdEventIndexCleared as exc:
                log.info("watch of %s fell behind etcd's event history, resyncing", self.root)
                raise Resync(describe(exc)) from exc
            if node.action in DELETIONS:
                event = Event(node.modifiedIndex, node.key, None, bool(node.dir))
            else:
                event = Event(node.modifiedIndex, node.key, _entry(node))
            return [event], node.modifiedIndex, node.modifiedIndex >= node.etcd_index

        return self._call("watch " + self.root, operation)

    def _key_change(
        self, client: etcd.Client, key: str, after: int, deadline: float
    ) -> Optional[KeyState]:
        """One long poll (DCS._key_change)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            node = client.read(key, wait=True, waitIndex=after + 1, timeout=remaining)
        except etcd.EtcdWatchTimedOut:
            return None
        except etcd.EtcdEventIndexCleared as exc:
            raise Resync(describe(exc)) from exc
        deleted = node.action in DELETIONS or bool(node.dir)
        return KeyState(None if deleted else node.value, node.modifiedIndex)

    def _read_key(self, client: etcd.Client, key: str) -> KeyState:
        try:
            node = client.read(key, quorum=True)
        except etcd.EtcdKeyNotFound as exc:
            return KeyState(None, int(exc.payload["index"]))
        return KeyState(None if node.dir else node.value, node.etcd_index)

    def _version(self, client: etcd.Client, key: str, value: Optional[str]) -> Optional[int]:
        """The current version of `key` (None if it is gone, or holds another value than
        `value` when that is given), read through the quorum."""
        try:
            node = client.read(key, quorum=True)
        except etcd.EtcdKeyNotFound:
            node = None
        if node is None or (value is not None and node.value != value):
            self.versions.forget(key)
            return None
        return node.modifiedIndex

    def _renew(self, client: etcd.Client, key: str, value: Optional[str]) -> bool:
        """Restart the TTL of this node's `key` (holding `value` when given), compared on
        the version this node last wrote; False if the key is gone or not ours.

        A version that moved on since (a late copy of one of our own writes was applied)
        is read again, and the refresh compared on that one.
        """
        known = self.versions.get(key)
        for _ in range(2):
            if known is None:
                known = self._version(client, key, value)
                if known is None:
                    return False
            try:
                # A refresh does not wake watchers.
                result = client.write(key, None, ttl=self.etcd_ttl, refresh=True, prevIndex=known)
            except etcd.EtcdKeyNotFound:
                break
            except etcd.EtcdCompareFailed:
                known = None
                continue
            self.versions.wrote(key, result)
            return True
        self.versions.forget(key)
        return False

    def sync(self) -> int:
        key = self._sync_key
        return self._call(
            "write " + key,
            lambda client: client.write(key, self.node, ttl=self.etcd_ttl).modifiedIndex,
        )

    def _write_own(self, key: str, value: str, same: bool) -> None:
        """A TTL refresh while the value is the same: a refresh wakes no watch, and a write
        every round would be an event at every node's watch."""

        def operation(client: etcd.Client) -> None:
            if not (same and self._renew(client, key, value)):
                self.versions.wrote(key, client.write(key, value, ttl=self.etcd_ttl))

        self._call("write " + key, operation)

    def delete_node(self) -> None:
        self._delete(self._node_key)

    def delete_out(self) -> None:
        self._delete(self._out_key)

    def create_mark(self, address: IPAddress) -> bool:
        key = self._mark_key(address)
        directory = key.rsplit("/", 1)[0]

        def operation(client: etcd.Client) -> bool:
            try:
                mark = client.write(key, self.node, ttl=self.etcd_ttl, prevExist=False)
            except (etcd.EtcdAlreadyExist, etcd.EtcdNotDir, etcd.EtcdNotFile):
                return False
            self.versions.wrote(key, mark)
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

    def create_marks(self, addresses: Sequence[IPAddress]) -> Dict[IPAddress, float]:
        return self._create_at_once(addresses, REFRESH_WIDTH)

    def refresh_mark(self, address: IPAddress) -> bool:
        key = self._mark_key(address)
        return self._call("refresh " + key, lambda client: self._renew(client, key, self.node))

    def refresh_marks(self, addresses: Iterable[IPAddress]) -> Dict[IPAddress, Refreshed]:
        return self._refresh_at_once(addresses, REFRESH_WIDTH)

    def delete_mark(self, address: IPAddress) -> bool:
        key = self._mark_key(address)

        def operation(client: etcd.Client) -> bool:
            known = self.versions.get(key)
            try:
                if known is None:
                    client.delete(key, prevValue=self.node)
                else:  # a late copy of this request must not delete a mark made since
                    client.delete(key, prevIndex=known)
            except etcd.EtcdCompareFailed:
                known = self._version(client, key, self.node)
                if known is None:
                    return False
                try:
                    client.delete(key, prevIndex=known)
                except NOT_OURS:
                    self.versions.forget(key)
                    return False
            except etcd.EtcdKeyNotFound:
                self.versions.forget(key)
                return False
            self.versions.forget(key)
            return True

        return self._call("delete " + key, operation)

    def _put_for(self, key: str, value: str, ttl: int) -> None:
        self._call("write " + key, lambda client: client.write(key, value, ttl=ttl))

    def _delete_if(self, key: str, value: str) -> bool:
        def operation(client: etcd.Client) -> bool:
            try:
                client.delete(key, prevValue=value)
            except NOT_OURS:
                return False
            return True

        return self._call("delete " + key, operation)

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

    # --- the v2 keys as they are, for yaimctl migrate --remove-v2 ---

    @property
    def namespace(self) -> str:
        """The namespace directory, which holds the cluster directory."""
        return self.root.rsplit("/", 1)[0]

    def namespace_names(self) -> Optional[List[str]]:
        """The names in the namespace directory (this cluster's among them, when it has
        a directory); None if there is no such directory, or etcd-user may not read it
        (its rights may end at the cluster directory): either way it is not ours to
        delete."""
        key = self.namespace

        def operation(client: etcd.Client) -> Optional[List[str]]:
            try:
                result = client.read(key, quorum=True)
            except (etcd.EtcdKeyNotFound, etcd.EtcdInsufficientPermissions):
                return None
            if not result.dir:
                return None
            return [node.key.rsplit("/", 1)[1] for node in result.get_subtree() if node.key != key]

        return self._call("read " + key, operation)

    def delete_raw(self, key: str, recursive: bool = False) -> bool:
        """Delete `key` of this cluster's directory (a directory with what is in it when
        `recursive`); False if it was not there."""
        return self._delete(self._own(key), recursive=recursive)

    def delete_empty(self, key: str) -> Optional[bool]:
        """Delete the directory `key` (this cluster's directory, one in it, or the namespace
        directory) only if it is empty, as etcd decides: a key written into it meanwhile,
        or one hidden from listings (`_name`), stays. True: deleted, False: not there,
        None: not empty (or not a directory)."""
        key = self._own(key)

        def operation(client: etcd.Client) -> Optional[bool]:
            try:
                client.delete(key, dir=True)
            except etcd.EtcdKeyNotFound:
                return False
            except (etcd.EtcdDirNotEmpty, etcd.EtcdNotDir):
                return None
            return True

        return self._call("delete " + key, operation)

    def _own(self, key: str) -> str:
        """`key` if it is the namespace directory or in this cluster's directory: the
        raw deletes reach nothing else, whatever they are given."""
        if key not in (self.namespace, self.root) and not key.startswith(self.root + "/"):
            raise ValueError(f"not a key of {self.root}: {shown(key)!r}")
        return key

    def _delete(self, key: str, recursive: bool = False) -> bool:
        """Delete one key (or a directory with what is in it); False if it was not there."""

        def operation(client: etcd.Client) -> bool:
            try:
                client.delete(key, recursive=recursive)
            except etcd.EtcdKeyNotFound:
                return False
            return True

        return self._call("delete " + key, operation)


def _entry(node: etcd.EtcdResult) -> Entry:
    """A key or directory of a listing or an event, as the layout sorts it."""
    return Entry(node.key, node.value, bool(node.dir), node.ttl, node.createdIndex)
