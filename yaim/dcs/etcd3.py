"""etcd v3 API through etcd's JSON gateway (POST /v3/... on etcd 3.4+), over yaim.httpclient.

/<ns>/<cl>/ips/<address>          a pool address (value ignored), the operator's
/<ns>/<cl>/ips/<address>/marked   holder's node name, on the holder's lease
/<ns>/<cl>/nodes/<node>           present while the node is healthy, on its lease
/<ns>/<cl>/out/<node>             why the node, running, takes no part, on its lease
/<ns>/<cl>/drain/<node>           set by an operator, no lease
/<ns>/<cl>/conflicts/<address>    a host outside yaim answered for it, on a lease of its own
                                  (TTL conflict-backoff), so it outlives its writer
/<ns>/<cl>/released/<address>     its last holder took it off and deleted its mark, on a
                                  lease of its own (TTL ttl)

One lease per node (TTL = ttl): one keep-alive per interval renews the node key
and every mark, and they all vanish together when the node dies. A mark is made
by a transaction that succeeds only while it does not exist (create_revision ==
0) and its pool entry does; the marks a round takes are made in one transaction of
such transactions (nested, etcd 3.3's): one request and one revision, so one watch
event batch at every node instead of one per mark. A release writes its note and
deletes the mark in one transaction, compared as a delete is. The node's handles (one
per thread) share a `_Session`: the lease and the keys known to be on it, so refreshing
a mark costs no request while nothing changed; reads and watch events correct it.

The requests go through yaim.dcs.gateway, a client of our own for the gateway.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import threading
import time
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
)

from yaim.dcs import (
    DCS,
    Entry,
    Event,
    Incomplete,
    KeyState,
    Refreshed,
    Resync,
    Transient,
    snapshot_of,
)
from yaim.dcs.gateway import (
    KV,
    LEASE_NOT_FOUND,
    UNAUTHENTICATED,
    Gateway,
    GatewayError,
    Quiet,
    Stream,
    b64,
    classify,
    comparison,
    created,
    error_of,
    messages_of,
    range_end,
    revision_of,
)
from yaim.view import IPAddress, Release, Snapshot

log = logging.getLogger(__name__)

# Marks made in one transaction at most (`create_marks`): etcd refuses one of more than
# --max-txn-ops (128 by default) operations.
MARKS_PER_TXN = 64


@dataclasses.dataclass
class _Watch:
    """The open watch stream: the gateway it runs on, its messages as they come, and the
    revision it has brought its reader to (a call from there on goes on with it)."""

    gateway: Gateway
    stream: Stream
    messages: Iterator[Dict[str, Any]]
    revision: int


class _Session:
    """This node's lease and the keys known to be on it, shared by the node's handles.

    A key is known from this node's own writes; a read or a watch event that shows
    it gone, changed or on another lease removes it (`check`), a read or event older
    than the write does not. The fence time follows `renewed_at`.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.grant_lock = threading.Lock()
        self.lease: Optional[int] = None
        self.renewed_at: Optional[float] = None  # send time of the last grant or keep-alive
        self._known: Dict[str, int] = {}  # key -> revision of the write that put it on the lease

    def start(self, lease: int, sent_at: float) -> None:
        with self.lock:
            self.lease, self.renewed_at, self._known = lease, sent_at, {}

    def renewed(self, lease: int, sent_at: float) -> None:
        with self.lock:
            if lease == self.lease:
                self.renewed_at = max(self.renewed_at or sent_at, sent_at)

    def lost(self, lease: int) -> bool:
        """The lease is gone, and everything on it; False if it was not the current one."""
        with self.lock:
            if lease != self.lease:
                return False
            self.lease, self.renewed_at, self._known = None, None, {}
            return True

    def attach(self, key: str, lease: int, revision: int) -> None:
        with self.lock:
            if lease == self.lease:
                self._known[key] = max(revision, self._known.get(key, 0))

    def holds(self, key: str) -> bool:
        with self.lock:
            return key in self._known

    def holding(self, keys: Iterable[str]) -> Set[str]:
        """Those of `keys` known to be on the lease (`holds`, under one lock)."""
        with self.lock:
            return {key for key in keys if key in self._known}

    def revision(self, key: str) -> Optional[int]:
        """The revision of this node's last write of `key`, if it is known to be on the lease."""
        with self.lock:
            return self._known.get(key)

    def forget(self, key: str) -> None:
        with self.lock:
            self._known.pop(key, None)

    def check(
        self, revision: int, found: Dict[str, int], keys: Optional[Iterable[str]] = None
    ) -> None:
        """The store at `revision` has `found` (key -> lease) of these known `keys` (all)."""
        with self.lock:
            for key in list(self._known if keys is None else keys):
                known_at = self._known.get(key)
                if known_at is not None and known_at <= revision and found.get(key) != self.lease:
                    del self._known[key]


class Backend(DCS):
    """The v3 backend: one gateway client per endpoint, failover by the shared retry policy."""

    FAILURES = (GatewayError,)

    def __init__(self, config, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.session = _Session()
        self._watch: Optional[_Watch] = None

    def clone(self) -> DCS:
        twin = super().clone()
        twin.session = self.session
        return twin

    # --- requests ---

    def _connect(self, endpoint: str) -> Gateway:
        return Gateway(endpoint, self.config, self.timeout)

    def _failure(self, exc: GatewayError) -> Exception:  # FAILURES holds GatewayError only
        return classify(exc, self.config.etcd_user, self.root + "/")

    def _lease(self, gateway: Gateway) -> int:
        """The node's lease; granted through `gateway` (one request) when it has none."""
        with self.session.grant_lock:
            if self.session.lease is not None:
                return self.session.lease
            sent_at = time.monotonic()
            answer = gateway.call("/lease/grant", {"TTL": str(self.etcd_ttl)})
            lease, granted = int(answer["ID"]), int(answer.get("TTL", 0))
            self.session.start(lease, sent_at)
        log.info("node %s: new lease %x with a TTL of %d s", self.node, lease, granted)
        if granted > self.etcd_ttl:
            log.warning(
                "etcd granted a TTL of %d s instead of %d s (its minimum): a crashed node's"
                " addresses move that much later",
                granted,
                self.etcd_ttl,
            )
        return lease

    @contextlib.contextmanager
    def _on_lease(self, lease: int) -> Iterator[None]:
        """A write on `lease` that etcd refuses because the lease expired drops the lease."""
        try:
            yield
        except GatewayError as exc:
            if exc.means(LEASE_NOT_FOUND):
                self._lost(lease, str(exc))
            raise

    def _lost(self, lease: int, why: str) -> None:
        if self.session.lost(lease):
            log.warning(
                "lease %x of node %s is gone (%s): its node key and marks went with it",
                lease,
                self.node,
                why,
            )

    def _put(self, gateway: Gateway, key: str, value: str, compare: List[Dict[str, Any]]) -> bool:
        """Put `key` on this node's lease if every comparison holds; True if it was written."""
        lease = self._lease(gateway)
        request = {"request_put": {"key": b64(key), "value": b64(value), "lease": str(lease)}}
        with self._on_lease(lease):
            answer = gateway.call("/kv/txn", {"compare": compare, "success": [request]})
        if not answer.get("succeeded"):
            return False
        self.session.attach(key, lease, revision_of(answer))
        return True

    def _txn(
        self, compare: List[Dict[str, Any]], success: List[Dict[str, Any]]
    ) -> Callable[[Gateway], bool]:
        """A transaction operation: True if the comparisons held and `success` ran."""

        def operation(gateway: Gateway) -> bool:
            answer = gateway.call("/kv/txn", {"compare": compare, "success": success})
            return bool(answer.get("succeeded"))

        return operation

    def _mine(self, kv: KV) -> bool:
        """A node key, out key or mark of this node (on whatever lease)."""
        own = kv.key in (self._node_key, self._out_key)
        return own or (kv.key.endswith("/marked") and kv.value == self.node)

    # --- the DCS operations ---

    def list_entries(self) -> Tuple[List[Entry], int]:
        kvs, revision = self._range()
        return [_entry(kv) for kv in kvs], revision

    def read_with_ttls(self) -> Snapshot:
        """A mark lives as long as its lease: one TimeToLive request per holder's lease."""
        kvs, _ = self._range()
        leases = {kv.lease for kv in kvs if kv.lease and kv.key.endswith("/marked")}
        ttls = {lease: self._time_to_live(lease) for lease in leases}
        entries = [_entry(kv, ttls.get(kv.lease)) for kv in kvs]
        return snapshot_of(self.root, entries, self.POOL_DIRS)

    def _range(self) -> Tuple[List[KV], int]:
        """Every key below the cluster directory and the revision (one range request)."""
        prefix = self.root + "/"
        body = {"key": b64(prefix), "range_end": b64(range_end(prefix))}
        answer = self._call("read " + self.root, lambda gateway: gateway.call("/kv/range", body))
        revision = revision_of(answer)
        kvs = [KV.parse(kv) for kv in answer.get("kvs", [])]
        self.session.check(revision, {kv.key: kv.lease for kv in kvs if self._mine(kv)})
        self.seen = revision
        return kvs, revision

    def _time_to_live(self, lease: int) -> Optional[float]:
        """The seconds `lease` has left; None once it is gone."""
        body = {"ID": str(lease)}
        answer = self._call(
            f"time to live of lease {lease:x}",
            lambda gateway: gateway.call("/lease/timetolive", body),
        )
        ttl = int(answer.get("TTL", -1))
        return float(ttl) if ttl >= 0 else None

    def keep_alive(self) -> None:
        lease = self.session.lease
        if lease is None:
            return

        def operation(gateway: Gateway) -> float:
            sent_at = time.monotonic()
            answer = gateway.call("/lease/keepalive", {"ID": str(lease)})
            if int(answer.get("result", {}).get("TTL", 0)) <= 0:
                self._lost(lease, "it expired")
            return sent_at

        self.session.renewed(lease, self._call(f"keep-alive lease {lease:x}", operation))

    def ttl_start(self, sent_at: float) -> float:
        renewed = self.session.renewed_at
        return sent_at if renewed is None else min(sent_at, renewed)

    def sync(self) -> int:
        key = self._sync_key

        def operation(gateway: Gateway) -> int:
            lease = self._lease(gateway)
            body = {"key": b64(key), "value": b64(self.node), "lease": str(lease)}
            with self._on_lease(lease):
                return revision_of(gateway.call("/kv/put", body))

        return self._call("write " + key, operation)

    def _write_own(self, key: str, value: str, same: bool) -> None:
        if same and self.session.holds(key):
            return  # on the lease: the keep-alive renews it
        self._call("write " + key, lambda gateway: self._put(gateway, key, value, []))

    def delete_node(self) -> None:
        self._delete_own(self._node_key)

    def delete_out(self) -> None:
        self._delete_own(self._out_key)

    def _delete_own(self, key: str) -> None:
        """Delete a key of this node's lease, and stop counting it as on the lease."""
        body = {"key": b64(key)}
        self._call("delete " + key, lambda gateway: gateway.call("/kv/deleterange", body))
        self.session.forget(key)

    def create_mark(self, address: IPAddress) -> bool:
        key = self._mark_key(address)
        compare = self._free(address, key)
        return self._call("create " + key, lambda g: self._put(g, key, self.node, compare))

    def _free(self, address: IPAddress, key: str) -> List[Dict[str, Any]]:
        """The comparisons a mark `key` of `address` is made on: it does not exist, and
        the address's pool entry does."""
        return [created(key, "EQUAL"), created(self._pool_key(address), "GREATER")]

    def create_marks(self, addresses: Sequence[IPAddress]) -> Dict[IPAddress, float]:
        """Every `create_mark` of a round in one request (up to MARKS_PER_TXN each): an
        outer transaction without comparisons whose operations are each address's own
        conditional transaction. At a cold start of 100 nodes a node took its 10 one
        after another, 0.6 s each on the loaded etcd, and each was a watch event at all
        100 nodes. A mark counts as made only by its own transaction's answer: a request
        that failed made none known (one etcd applied all the same shows the marks ours
        at the next read, resumed as one-by-one creates would be)."""
        made: Dict[IPAddress, float] = {}
        for first in range(0, len(addresses), MARKS_PER_TXN):
            chunk = addresses[first : first + MARKS_PER_TXN]
            if len(chunk) == 1:
                made.update(DCS.create_marks(self, chunk))
                continue
            sent_at = time.monotonic()
            keys = [self._mark_key(address) for address in chunk]
            for address in self._call(f"create {len(keys)} marks", self._creates(chunk, keys)):
                made[address] = sent_at
        return made

    def _creates(
        self, addresses: Sequence[IPAddress], keys: Sequence[str]
    ) -> Callable[[Gateway], List[IPAddress]]:
        """The operation of `create_marks`: the addresses whose mark it made."""

        def operation(gateway: Gateway) -> List[IPAddress]:
            lease = self._lease(gateway)
            inner = []
            for address, key in zip(addresses, keys):
                put = {"key": b64(key), "value": b64(self.node), "lease": str(lease)}
                txn = {"compare": self._free(address, key), "success": [{"request_put": put}]}
                inner.append({"request_txn": txn})
            with self._on_lease(lease):
                answer = gateway.call("/kv/txn", {"success": inner})
            revision, made = revision_of(answer), []
            for address, key, response in zip(addresses, keys, answer.get("responses", [])):
                if response.get("response_txn", {}).get("succeeded"):
                    self.session.attach(key, lease, revision)
                    made.append(address)
            return made

        return operation

    def refresh_marks(self, addresses: Iterable[IPAddress]) -> Dict[IPAddress, Refreshed]:
        """A mark known to be on the lease was renewed by this round's keep-alive: it
        costs no request, and the whole batch of them one look at the session, answered
        first (sent now, after that keep-alive: its TTL starts with it all the same,
        `ttl_start`); the others follow, one by one as DCS.refresh_marks sends them."""
        keys = {address: self._mark_key(address) for address in addresses}
        on_lease = self.session.holding(keys.values())
        sent_at = time.monotonic()
        done = {a: Refreshed(True, sent_at) for a, key in keys.items() if key in on_lease}
        others = [address for address in keys if address not in done]
        if not others:
            return done
        try:
            done.update(DCS.refresh_marks(self, others))
        except Incomplete as exc:
            done.update(exc.done)
            raise Incomplete(str(exc), done) from exc
        return done

    def refresh_mark(self, address: IPAddress) -> bool:
        key = self._mark_key(address)
        if self.session.holds(key):
            return True  # on the lease, which the keep-alive renewed

        def operation(gateway: Gateway) -> bool:
            kvs = gateway.call("/kv/range", {"key": b64(key)}).get("kvs", [])
            kv = KV.parse(kvs[0]) if kvs else None
            if kv is None or kv.value != self.node:
                return False
            if kv.lease == self._lease(gateway):
                self.session.attach(key, kv.lease, kv.mod_revision)
                return True
            # Ours by name but on another lease (an earlier run's): move it onto ours.
            compare = [comparison(key, "MOD", "mod_revision", str(kv.mod_revision))]
            if not self._put(gateway, key, self.node, compare):
                return False
            log.info("moved the mark of %s onto the lease of node %s", address, self.node)
            return True

        return self._call("refresh " + key, operation)

    def delete_mark(self, address: IPAddress) -> bool:
        """Compared on the revision this node wrote when it is known, not on the name: a
        late copy of this request (it timed out at a hung member and was applied after
        its retry) must not delete the mark this node made since."""
        return self._unmark(address, None)

    def release_mark(self, address: IPAddress, mark: Optional[int]) -> bool:
        """The `released` note and the deletion of the mark in one transaction, on the
        compare of `delete_mark`: a taker sees both in one event (one request less on the
        way of a handover), and a mark that is not ours gets no note. The note is on a
        lease of its own, TTL ttl, as `write_note` puts it."""
        if mark is None:
            return self.delete_mark(address)
        key, note = self._note_key("released", address), Release(self.node, mark).text()

        def put_note(gateway: Gateway) -> Dict[str, Any]:
            lease = gateway.call("/lease/grant", {"TTL": str(self.etcd_ttl)})["ID"]
            return {"request_put": {"key": b64(key), "value": b64(note), "lease": str(lease)}}

        return self._unmark(address, put_note)

    def _unmark(
        self, address: IPAddress, also: Optional[Callable[[Gateway], Dict[str, Any]]]
    ) -> bool:
        """Delete this node's mark (`delete_mark`), and with it do what `also` gives for
        that gateway, in the same transaction; False if the mark was not ours."""
        key = self._mark_key(address)

        def operation(gateway: Gateway) -> bool:
            success = [{"request_delete_range": {"key": b64(key)}}]
            if also is not None:
                success.insert(0, also(gateway))
            known = self.session.revision(key)
            if known is None:
                compare = [comparison(key, "VALUE", "value", b64(self.node))]
            else:
                compare = [comparison(key, "MOD", "mod_revision", str(known))]
            if self._txn(compare, success)(gateway):
                return True
            kvs = gateway.call("/kv/range", {"key": b64(key)}).get("kvs", [])
            kv = KV.parse(kvs[0]) if kvs else None
            if kv is None or kv.value != self.node:
                return False
            # Ours, written since (a late copy of one of our own writes): that revision.
            moved = [comparison(key, "MOD", "mod_revision", str(kv.mod_revision))]
            return self._txn(moved, success)(gateway)

        deleted = self._call("delete " + key, operation)
        self.session.forget(key)
        return deleted

    def _put_for(self, key: str, value: str, ttl: int) -> None:
        def operation(gateway: Gateway) -> None:
            lease = gateway.call("/lease/grant", {"TTL": str(ttl)})["ID"]
            body = {"key": b64(key), "value": b64(value), "lease": str(lease)}
            gateway.call("/kv/put", body)

        self._call("write " + key, operation)

    def _delete_if(self, key: str, value: str) -> bool:
        compare = [comparison(key, "VALUE", "value", b64(value))]
        success = [{"request_delete_range": {"key": b64(key)}}]
        return self._call("delete " + key, self._txn(compare, success))

    # --- the operator's operations ---

    def add_address(self, address: IPAddress) -> bool:
        key = self._pool_key(address)
        put = [{"request_put": {"key": b64(key), "value": ""}}]
        return self._call("create " + key, self._txn([created(key, "EQUAL")], put))

    def remove_address(self, address: IPAddress) -> bool:
        key = self._pool_key(address)
        delete = [
            {"request_delete_range": {"key": b64(key)}},
            {"request_delete_range": {"key": b64(self._mark_key(address))}},
        ]
        return self._call("delete " + key, self._txn([created(key, "GREATER")], delete))

    def drain(self, node: str) -> None:
        key = self._drain_key(node)
        body = {"key": b64(key), "value": b64("drained")}
        self._call("write " + key, lambda gateway: gateway.call("/kv/put", body))

    def undrain(self, node: str) -> bool:
        key = self._drain_key(node)
        body = {"key": b64(key)}
        answer = self._call("delete " + key, lambda g: g.call("/kv/deleterange", body))
        return int(answer.get("deleted", 0)) > 0

    # --- the watch ---

    def watch_events(self, after: int, timeout: float) -> Tuple[List[Event], int, bool]:
        """One watch stream, kept open from call to call while each goes on where the
        last one left it; a silent one is closed after `timeout` s, the next call opens
        another from `after` + 1. It asks for progress notifications, and for its end when
        its member loses its leader (yaim.dcs.gateway.Gateway.stream)."""
        deadline = time.monotonic() + timeout

        def operation(gateway: Gateway) -> Tuple[List[Event], int, bool]:
            watch = self._watch
            if watch is None or watch.gateway is not gateway or watch.revision != after:
                self._open_watch(gateway, after, timeout)
            try:
                return self._follow(after, deadline)
            except Quiet:
                self._close_watch()
                return [], after, False
            except (Transient, GatewayError) as exc:
                self._close_watch()
                if isinstance(exc, GatewayError) and exc.code == UNAUTHENTICATED:
                    gateway.token = None
                raise

        return self._call("watch " + self.root, operation)

    def _open_watch(self, gateway: Gateway, after: int, timeout: float) -> None:
        self._close_watch()
        prefix = self.root + "/"
        create = {
            "key": b64(prefix),
            "range_end": b64(range_end(prefix)),
            "start_revision": str(after + 1),
            "progress_notify": True,
        }
        stream = gateway.stream("/watch", {"create_request": create}, timeout)
        self._watch = _Watch(gateway, stream, messages_of(stream), after)

    def _close_watch(self) -> None:
        """Wind the stream up in this thread: its reader first, then the connection. A
        reader left suspended would be finalised at the interpreter's exit, after its
        socket is gone."""
        if self._watch is not None:
            self._watch.messages.close()
            self._watch.stream.close()
            self._watch = None

    def interrupt(self) -> None:
        """Shut the socket of the open watch stream down (closing it would not end a read
        blocked on it): the watch thread's read fails at once, and that thread closes
        the stream (`_close_watch`)."""
        watch = self._watch
        sock = watch.stream.sock if watch else None
        if sock is not None:
            with contextlib.suppress(OSError):  # whatever state the stream is in
                sock.shutdown(socket.SHUT_RDWR)

    def _follow(self, after: int, deadline: float) -> Tuple[List[Event], int, bool]:
        """Read the open stream until it brings events, or progress from `after` on, or
        the deadline passes. A progress notification behind `after` (a member behind the
        one listed from) is no progress. Quiet when the stream stays silent."""
        watch = self._watch
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return [], after, False
            try:
                result = _next_result(watch.stream, watch.messages, remaining, after)
            except Resync as exc:
                self._close_watch()
                log.info("watch of %s: %s, resyncing", self.root, exc)
                raise
            events = [self._event(event) for event in result.get("events", [])]
            revision = revision_of(result)
            if events:
                watch.revision = max(after, events[-1].revision)
                return events, watch.revision, revision <= watch.revision
            if not result.get("created") and revision >= after:
                watch.revision = revision
                return [], revision, True

    def _key_change(
        self, gateway: Gateway, key: str, after: int, deadline: float
    ) -> Optional[KeyState]:
        """A watch on a stream of its own, closed before this returns (DCS._key_change);
        of several events in one answer, the last."""
        create = {"key": b64(key), "start_revision": str(after + 1)}
        stream = gateway.stream("/watch", {"create_request": create}, deadline - time.monotonic())
        messages = messages_of(stream)
        try:
            while time.monotonic() < deadline:
                remaining = max(0.001, deadline - time.monotonic())
                events = _next_result(stream, messages, remaining, after).get("events", [])
                if events:
                    kv = KV.parse(events[-1]["kv"])
                    deleted = events[-1].get("type") == "DELETE"
                    return KeyState(None if deleted else kv.value, kv.mod_revision)
        except Quiet:
            pass
        finally:
            messages.close()
            stream.close()
        return None

    def _read_key(self, gateway: Gateway, key: str) -> KeyState:
        answer = gateway.call("/kv/range", {"key": b64(key)})
        kvs = [KV.parse(kv) for kv in answer.get("kvs", [])]
        return KeyState(kvs[0].value if kvs else None, revision_of(answer))

    def _event(self, event: Dict[str, Any]) -> Event:
        """One event of the stream; the session learns from it."""
        kv = KV.parse(event["kv"])
        deleted = event.get("type") == "DELETE"
        found = {} if deleted or not self._mine(kv) else {kv.key: kv.lease}
        self.session.check(kv.mod_revision, found, [kv.key])
        return Event(kv.mod_revision, kv.key, None if deleted else _entry(kv))


def _next_result(
    stream: Stream, messages: Iterator[Dict[str, Any]], timeout: float, after: int
) -> Dict[str, Any]:
    """The next answer of a watch stream (read within `timeout`, else Quiet): Transient
    when etcd ends the stream, Resync when it canceled the watch for a history compacted
    past `after`, GatewayError for an error or any other cancel."""
    if stream.sock is not None:
        stream.sock.settimeout(timeout)
    message = next(messages, None)
    if message is None:
        raise Transient("etcd closed the watch stream")
    if "error" in message:
        raise error_of(message, 200)
    result = message.get("result", {})
    if result.get("canceled"):
        compacted = int(result.get("compact_revision", 0))
        if compacted > 0:
            raise Resync(f"etcd compacted its history up to revision {compacted} (past {after})")
        reason = result.get("cancel_reason", "no reason given")
        raise GatewayError(0, "etcd canceled the watch: " + reason)
    return result


def _entry(kv: KV, ttl: Optional[float] = None) -> Entry:
    """A key as the layout sorts it; `ttl`: the seconds left of its lease, where known."""
    return Entry(kv.key, kv.value, ttl=ttl, created=kv.create_revision or None)
