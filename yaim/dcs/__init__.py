"""The distributed store, behind one small interface.

Every backend offers the same few operations on the contract's layout. Each
operation is retried `retry-num` times, `retry-after` apart, moving to the next
endpoint (endpoints are tried in a random order) after a failure; when every
try failed it raises DCSError. A refusal no other try could change (the user
lacks the rights, the credentials are wrong) raises DCSError at once. "The key
is not ours" is an answer, not an error: those methods return False.
A batch of requests (`refresh_marks`, `create_marks`) that fails part way raises
Incomplete, which carries the answers it had.

The backends differ in their clients and in how their errors read; the retry
policy, the key names of the contract's layout and the sorting of a read into
the layout's parts are here, once. Every read is one listing (`list_entries`);
that and the watch's events (`watch_events`) are what a cluster cache
(yaim.dcs.cache) is made of.
"""

from __future__ import annotations

import abc
import importlib
import logging
import math
import random
import ssl
import threading
import time
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
)

from yaim.errors import DCSError
from yaim.redact import Secrets
from yaim.view import OUT_LIMIT, Endpoint, IPAddress, Mark, NodeInfo, Release, Snapshot

log = logging.getLogger(__name__)

T = TypeVar("T")

# Told about every request (every try): operation kind (the first word of its
# description: read, write, create, refresh, delete), seconds taken, success.
Observer = Callable[[str, float, bool], None]

BACKENDS = {"etcd": "yaim.dcs.etcd2", "etcd3": "yaim.dcs.etcd3"}
# What a backend's client library comes in: python-etcd is only recommended by the packages.
INSTALL = {"etcd": " (install python3-etcd, or pip install 'yaim[etcd2]'; or use dcs-type etcd3)"}
# The names directly below a cluster directory that the layout has (drawn in each
# backend's docstring): everything else there is somebody else's (yaimctl migrate).
LAYOUT = frozenset({"ips", "nodes", "out", "drain", "conflicts", "released", "sync", "rebalance"})
# A node with dcs-migrate-from: a member of the v3 layout and of the one it moves from.
MIGRATING = "yaim.dcs.migrating"
MARK_KEYS = 100_000  # mark keys a handle keeps made (`DCS._mark_key`), far above a pool's size


class Transient(Exception):
    """One try failed in a way another try (maybe on another endpoint) could fix."""


class Refused(Exception):
    """etcd refused the request for a reason no other try would change (missing rights,
    wrong credentials): the operation fails at once instead of `retry-num` times."""


class Resync(Exception):
    """The watch cannot go on from the revision asked for: etcd no longer has the events
    after it (v3 compacted its history past it, v2 kept only its last 1000 events). Not a
    failure: etcd answered; the caller lists everything again and watches from there."""


class Refreshed(NamedTuple):
    """One mark's refresh: whether it was renewed, and when its request was sent."""

    ok: bool
    sent_at: float


class Incomplete(DCSError):
    """Some requests of a batch failed after their retries; `done` has the answers of
    those that finished, so that the fence times of the refreshes among them move on all
    the same (a round whose creates failed takes none of them: the marks made are found
    at the next read, and resumed)."""

    def __init__(self, message: str, done: Dict[IPAddress, Refreshed]) -> None:
        super().__init__(message)
        self.done = done


def system_ca_file() -> str:
    """The system's CA bundle: https without etcd-ca-file verifies against it, never not at all."""
    paths = ssl.get_default_verify_paths()
    return paths.cafile or paths.openssl_cafile


def describe(exc: BaseException) -> str:
    """The innermost cause of a failed request on one line: the TLS or socket error, not
    the layers of wrappers (MaxRetryError, ConnectionError, ...) around it."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "reason", None) or getattr(exc, "cause", None)
        if not isinstance(inner, BaseException):
            inner = next((a for a in exc.args if isinstance(a, BaseException)), exc.__cause__)
        if inner is None:
            break
        exc = inner
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLEOFError):
        # TLS 1.3 servers refuse a client certificate after the handshake: a bare EOF
        return "TLS: the server closed the connection (is the client certificate refused?)"
    if isinstance(exc, ssl.SSLError):
        return "TLS: " + (exc.reason.replace("_", " ").lower() if exc.reason else str(exc))
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]


class ReleaseNote:
    """What the check of the server's release found last (a log level and its words),
    shared by a handle's clones so that the daemon logs it once, not once per thread."""

    def __init__(self) -> None:
        self.said: Optional[Tuple[int, str]] = None
        self._lock = threading.Lock()

    def update(self, notice: Optional[Tuple[int, str]]) -> bool:
        """Keep `notice`; True if it differs from the one kept before."""
        with self._lock:
            changed, self.said = notice != self.said, notice
        return changed

    @property
    def problem(self) -> Optional[str]:
        """The words of an error: why the store cannot serve this node at all."""
        return error_words(self.said)


def error_words(notice: Optional[Tuple[int, str]]) -> Optional[str]:
    """The words of a release notice that is an error (the server cannot serve this
    backend), None for a warning or no notice."""
    return notice[1] if notice is not None and notice[0] >= logging.ERROR else None


def wakes_balancer(relative_key: str, deleted: bool) -> bool:
    """Whether a change below the cluster directory needs the balancer now.

    Writing a mark only confirms what its writer already knows, a `released` note
    comes and goes beside the deletion of a mark, which wakes it, and a `sync` key
    changes nothing, nor does an `out` key (a node that takes no part has no node key,
    whose going woke it already); everything else (a mark going, the pool, node keys,
    drain keys, conflicts) may change the plan.
    """
    if relative_key.startswith(("/released/", "/sync/", "/out/")):
        return False
    return deleted or not relative_key.endswith("/marked")


class Rotation:
    """A handle's endpoints, in its own random order, and the one its requests go to
    (a failed try moves on to the next). Handles that speak for one node in one thread
    may share one: a migrating node's two layouts do (yaim.dcs.migrating), so that a
    member one of them found hung is passed by the other too."""

    def __init__(self, endpoints: List[str]) -> None:
        self.endpoints = endpoints
        self.current = 0

    @property
    def endpoint(self) -> str:
        return self.endpoints[self.current]

    def move_on(self) -> None:
        self.current = (self.current + 1) % len(self.endpoints)

    def copy(self) -> Rotation:
        """Another rotation starting where this one stands."""
        twin = Rotation(self.endpoints)
        twin.current = self.current
        return twin


class DCS(abc.ABC):
    """The operations yaim needs from its store, for one node of one cluster."""

    # What a backend's client raises when one try fails; `_failure` sorts each.
    FAILURES: Tuple[Type[BaseException], ...] = ()
    # The v2 layout: pool entries are directories, and a write below a missing one makes it.
    POOL_DIRS = False
    # A cluster cache (yaim.dcs.cache) can follow it: every change below the directory is
    # an event of its watch, and `sync` tells when the cache is current.
    CACHEABLE = True
    # `interrupt` ends a watch request that waits (v3: its stream); a v2 long poll cannot be.
    WATCH_INTERRUPTIBLE = True

    def __init__(
        self,
        config,
        tries: Optional[int] = None,
        timeout: Optional[float] = None,
        stop: Optional[threading.Event] = None,
        observe: Optional[Observer] = None,
    ) -> None:
        self.config = config
        self.observe = observe
        self.node = config.node_name
        self.root = "/{}/{}".format(config.dcs_namespace.strip("/"), config.dcs_clustername)
        self.ttl = config.ttl_s
        self.tries = tries or config.retry_num
        self.timeout = timeout or max(0.2, min(config.interval_s, 2.0))
        self.stop = stop or threading.Event()
        self.rotation = Rotation(
            random.sample(list(config.dcs_endpoints), len(config.dcs_endpoints))
        )
        self._clients: Dict[str, Any] = {}  # endpoint -> the backend's client, made on first use
        self.last_success: Optional[float] = None
        self.last_failure: Optional[float] = None  # the end of the last try that failed
        self._tries_lock = threading.Lock()
        self._owner: Optional[DCS] = None  # the handle this one sends for (`_at_once`)
        self._helpers: List[DCS] = []  # this handle's own such helpers, made on first use
        # The index (v2) or revision (v3) the last read reflects; the watch resumes after it.
        self.seen: Optional[int] = None
        self._mark_keys: Dict[IPAddress, str] = {}
        self._out_said: Optional[str] = None  # the reason of the out key written last
        self._node_said: Optional[str] = None  # the value of the node key written last
        self.release = ReleaseNote()

    def node_value(self, weight: int = 1, joining: bool = False) -> str:
        """The node key's value (yaim.view.NodeInfo): the peer endpoint the others ask with
        the failsafe on (yaim.failsafe), the weight, and whether the node is joining."""
        peer = Endpoint.parse(self.config.peer_listen or "") if self.config.failsafe_on else None
        return NodeInfo(peer, weight, joining).value()

    @property
    def endpoint(self) -> str:
        """The endpoint the next request goes to."""
        return self.rotation.endpoint

    def _retry(self, what: str, attempt: Callable[[str], T]) -> T:
        """Run one operation with the retry and failover policy of the contract."""
        problem = None
        for n in range(self.tries):
            endpoint = self.endpoint
            started = time.monotonic()
            try:
                result = attempt(endpoint)
            except Transient as exc:
                self._tried(False, self._observe(what, started, False))
                problem = f"{endpoint}: {exc}"
                log.debug("%s via %s (try %d/%d)", what, problem, n + 1, self.tries)
                self.move_on()
                if n + 1 < self.tries and self.stop.wait(self.config.retry_after_s):
                    break
                continue
            except Refused as exc:
                self._observe(what, started, False)
                raise DCSError(f"{what} via {endpoint}: {exc} (not retried)") from exc
            self._tried(True, self._observe(what, started, True))
            return result
        raise DCSError(f"{what} via {problem} (after {self.tries} tries)")

    def _tried(self, ok: bool, ended: float) -> None:
        """Remember when a try ended, here and in the handle this one helps: the failsafe
        judges by them whether etcd answers (yaim.failsafe.etcd_answers), from the first
        try that failed on, so a helper's tries count for its owner at once."""
        for handle in (self,) if self._owner is None else (self, self._owner):
            with handle._tries_lock:
                if ok:
                    handle.last_success = max(handle.last_success or ended, ended)
                else:
                    handle.last_failure = max(handle.last_failure or ended, ended)

    def _call(self, what: str, operation: Callable[[Any], T]) -> T:
        """One operation under the retry policy, given the endpoint's client; semantic
        answers are handled by `operation`, failed tries sorted by `_failure`."""

        def attempt(endpoint: str) -> T:
            client = self._client(endpoint)
            try:
                return operation(client)
            except self.FAILURES as exc:
                raise self._failure(exc) from exc

        return self._retry(what, attempt)

    def _client(self, endpoint: str) -> Any:
        """The backend's client for `endpoint`, made on first use and kept."""
        client = self._clients.get(endpoint)
        if client is None:
            client = self._clients[endpoint] = self._connect(endpoint)
        return client

    @abc.abstractmethod
    def _connect(self, endpoint: str) -> Any:
        """The backend's client for one endpoint."""

    @abc.abstractmethod
    def _failure(self, exc: BaseException) -> Exception:
        """The Transient or Refused that one of FAILURES is."""

    # --- the keys of the layout, the same in both APIs (drawn in each backend's docstring) ---

    def _mark_key(self, address: IPAddress) -> str:
        """Made once per address and kept (MARK_KEYS at most): the heartbeat asks for the
        key of every held mark every round, and an IPv6 address's text takes long to make."""
        key = self._mark_keys.get(address)
        if key is None:
            if len(self._mark_keys) >= MARK_KEYS:
                self._mark_keys.clear()
            key = self._mark_keys[address] = f"{self.root}/ips/{address}/marked"
        return key

    def _pool_key(self, address: IPAddress) -> str:
        return f"{self.root}/ips/{address}"

    @property
    def _node_key(self) -> str:
        return f"{self.root}/nodes/{self.node}"

    @property
    def _out_key(self) -> str:
        return f"{self.root}/out/{self.node}"

    def _drain_key(self, node: str) -> str:
        return f"{self.root}/drain/{node}"

    def _note_key(self, kind: str, address: IPAddress) -> str:
        return f"{self.root}/{kind}/{address}"

    @property
    def _rebalance_key(self) -> str:
        return f"{self.root}/rebalance"

    @property
    def _sync_key(self) -> str:
        return f"{self.root}/sync/{self.node}"

    def clone(self) -> DCS:
        """Another handle for another thread: its own connections, the same node session."""
        twin = type(self)(
            self.config,
            tries=self.tries,
            timeout=self.timeout,
            stop=self.stop,
            observe=self.observe,
        )
        twin.release = self.release
        return twin

    @property
    def problem(self) -> Optional[str]:
        """Why the store cannot serve this node whatever the retries do (/health, /status)."""
        return self.release.problem

    def check_release(self) -> None:
        """Ask the current endpoint's server whether it serves what this backend speaks
        (`_release_notice`), and log what it says once, and again only when it changes:
        a server that lacks the API would otherwise show only as generic failed tries."""
        answered, notice = self._ask_release()
        if not answered:
            return  # no answer: the retry policy reports that
        if self.release.update(notice) and notice is not None:
            log.log(notice[0], "%s", notice[1])

    def release_problem(self) -> Optional[str]:
        """The words of an error of `_release_notice`, asked now and logged nowhere: for
        yaimctl, which explains a request that failed by it. None: nothing wrong, or no
        answer."""
        return error_words(self._ask_release()[1])

    def _ask_release(self) -> Tuple[bool, Optional[Tuple[int, str]]]:
        """(whether the server answered, `_release_notice`) of the current endpoint."""
        try:
            return True, self._release_notice(self.endpoint)
        except self.FAILURES as exc:
            log.debug("release check via %s: %s", self.endpoint, describe(exc))
            return False, None

    def _release_notice(self, endpoint: str) -> Optional[Tuple[int, str]]:
        """A backend's word on the server's release: (log level, words), or None."""
        return None

    def interrupt(self) -> None:
        """From another thread: make a blocking watch of this handle end now; at shutdown,
        so that its thread winds it up itself instead of leaving it to the interpreter's
        exit, and when the watch is found behind, so that its retry asks the next
        endpoint. v2 watches are plain requests that cannot be ended so."""

    def move_on(self) -> None:
        """The next request goes to the next endpoint: this one answers, but lags behind."""
        self.rotation.move_on()

    def keep_alive(self) -> None:
        """Renew the node's session once per interval, before the marks are refreshed.

        v3 renews the one lease that the node key and every mark hang on; v2 renews
        each key by itself, so there is nothing to do here.
        """

    def ttl_start(self, sent_at: float) -> float:
        """When the TTL of a key written or refreshed by a request sent at `sent_at` began.

        The fence time counts from here. A v2 write restarts the key's own TTL; a v3 key
        lives as long as its lease, whose TTL restarts with each keep-alive, so there it
        is the send time of the last successful keep-alive, whichever request came later.
        """
        return sent_at

    def wait_for_change(self, timeout: float) -> bool:
        """Block until something the balancer must react to changes, at most `timeout` s.

        False: nothing happened. True: a change, or a resync (first call, a lost or
        compacted watch, an error before): the caller reads everything again.
        """
        deadline = time.monotonic() + timeout
        try:
            if self.seen is None:
                self.read()
                return True
            while time.monotonic() < deadline:
                events, self.seen, _ = self.watch_events(self.seen, deadline - time.monotonic())
                if any(wakes_balancer(e.key[len(self.root) :], e.entry is None) for e in events):
                    return True
            return False
        except Resync:
            self.seen = None
            return True
        except DCSError:
            self.seen = None
            raise

    def _observe(self, what: str, started: float, ok: bool) -> float:
        """Report one request to the observer, if any; returns when it ended."""
        now = time.monotonic()
        if self.observe is not None:
            self.observe(what.split(" ", 1)[0], now - started, ok)
        return now

    def read(self) -> Snapshot:
        """The whole cluster directory: pool, marks, nodes, drained nodes."""
        return snapshot_of(self.root, self.list_entries()[0], self.POOL_DIRS)

    @abc.abstractmethod
    def sync(self) -> int:
        """Write this node's `sync` key (TTL ttl) and return the revision of that write.

        A cache that has applied the watch's event of that write has applied every change
        before it, and the write took effect after this call was made: the cache is then
        as current as a read sent at this call's start (yaim.dcs.cache). One write, not a
        read: a read's revision is etcd's whole store's, which other users of etcd move
        on, and this cluster's watch would never reach it."""

    def follow_key(self, key: str, after: Optional[int], timeout: float) -> Optional[KeyState]:
        """The value of `key`, anyone's key outside the cluster directory (Patroni's
        leader key, for `checker-type: dcs-key`), and the revision it is as of; with
        `after`, first wait up to `timeout` s for a change of it after that revision, and
        None if there was none. One read through the quorum, or one watch of that key
        alone; a history too old to watch from (compacted, or v2's 1,000 events) is read
        afresh."""
        if after is not None:
            deadline = time.monotonic() + timeout
            try:
                return self._call(
                    "watch " + key, lambda h: self._key_change(h, key, after, deadline)
                )
            except Resync:
                pass
        return self._call("read " + key, lambda handle: self._read_key(handle, key))

    @abc.abstractmethod
    def _key_change(self, handle: Any, key: str, after: int, deadline: float) -> Optional[KeyState]:
        """One watch of `key` alone from `after` + 1 on a client `handle`: the key's first
        change it brings, None if none came by the deadline; Resync if the history no
        longer reaches back to `after`."""

    @abc.abstractmethod
    def _read_key(self, handle: Any, key: str) -> KeyState:
        """One read of `key` through the quorum on a client `handle`."""

    @abc.abstractmethod
    def list_entries(self) -> Tuple[List[Entry], int]:
        """Every key below the cluster directory (one consistent read), and the index (v2)
        or revision (v3) it reflects: what a cluster cache (yaim.dcs.cache) starts from.
        Sets `seen` to that revision."""

    @abc.abstractmethod
    def watch_events(self, after: int, timeout: float) -> Tuple[List[Event], int, bool]:
        """The changes below the cluster directory after revision `after`, in order, as
        soon as there are any, or none after `timeout` s: (events, revision, caught_up).

        `revision`: what the cache is at once they are applied (`after` if none came).
        caught_up: etcd vouched, when it sent them, that nothing newer had happened below
        the directory (a progress notification, or events sent as they happened); False
        for a replay that may have more to come, or nothing at all. Resync when etcd no
        longer has the events after `after`; DCSError when every try failed.
        """

    def read_with_ttls(self) -> Snapshot:
        """read(), with the seconds each mark has left even where that costs more
        requests (v3 leases): for the operator's view, the daemon does without."""
        return self.read()

    def touch_node(self, weight: int = 1, joining: bool = False) -> None:
        """Create or refresh this node's key, with the TTL. A value unlike the one this
        handle wrote last (the node joined, a reload changed its weight) is written: an
        event at every watch, which is how the others learn it; an unchanged one only
        lives on (v2: a TTL refresh, v3: the lease), which wakes nobody."""
        value = self.node_value(weight, joining)
        self._write_own(self._node_key, value, same=value == self._node_said)
        self._node_said = value

    @abc.abstractmethod
    def delete_node(self) -> None:
        """Remove this node's key (it is no longer healthy, or it stops)."""

    def touch_out(self, reason: str) -> None:
        """Create or refresh this node's `out` key, with the TTL: the node runs but takes
        no part (unhealthy, link down), and the operator's yaimctl, which sees no node key
        then, shows it and why. `reason` as the log has it: no password of the config
        (a check's words may quote its URL or DSN), at most OUT_LIMIT characters."""
        text = Secrets.of(self.config).scrub(reason)[:OUT_LIMIT]
        self._write_own(self._out_key, text, same=text == self._out_said)
        self._out_said = text

    @abc.abstractmethod
    def _write_own(self, key: str, value: str, same: bool) -> None:
        """Write one of this node's keys that live with its TTL (the node key, the out
        key); `same`: this handle wrote `value` there last, so the key need only live on
        (v2: a TTL refresh, v3: the lease's keep-alive) if it is still there."""

    @abc.abstractmethod
    def delete_out(self) -> None:
        """Remove this node's `out` key (it takes part again, or stops)."""

    @abc.abstractmethod
    def create_mark(self, address: IPAddress) -> bool:
        """Mark an address for this node, only if nobody has: True if this node got it."""

    def create_marks(self, addresses: Sequence[IPAddress]) -> Dict[IPAddress, float]:
        """`create_mark` of each address, in their order: those this node got -> when the
        request that made the mark was sent. One after the other here; v2 sends a few at
        once, v3 up to 64 in one transaction. After a DCSError none counts as made (those
        etcd made all the same are this node's at the next read)."""
        made = {}
        for address in addresses:
            sent_at = time.monotonic()
            if self.create_mark(address):
                made[address] = sent_at
        return made

    @abc.abstractmethod
    def refresh_mark(self, address: IPAddress) -> bool:
        """Renew this node's mark; False if the mark is gone or someone else's."""

    def refresh_marks(self, addresses: Iterable[IPAddress]) -> Dict[IPAddress, Refreshed]:
        """Renew this node's marks of `addresses`, in their order: address -> Refreshed.

        One after the other, each request sent when the one before was answered: a v3
        refresh costs no request while the mark is known to be on the lease. The first
        that fails after its retries ends the batch, Incomplete with the answers before it.
        """
        done: Dict[IPAddress, Refreshed] = {}
        for address in addresses:
            sent_at = time.monotonic()
            try:
                done[address] = Refreshed(self.refresh_mark(address), sent_at)
            except DCSError as exc:
                raise Incomplete(str(exc), done) from exc
        return done

    def _refresh_at_once(
        self, addresses: Iterable[IPAddress], width: int
    ) -> Dict[IPAddress, Refreshed]:
        """`refresh_marks` with up to `width` refreshes on the way at once, for a backend
        that sends one request per mark (v2): so that M marks cost about M / `width`
        round trips of wall time, not M (`_at_once`)."""
        addresses = list(addresses)
        if min(width, len(addresses)) < 2:
            return DCS.refresh_marks(self, addresses)
        return self._at_once(addresses, width, lambda handle, address: handle.refresh_mark(address))

    def _create_at_once(self, addresses: Sequence[IPAddress], width: int) -> Dict[IPAddress, float]:
        """`create_marks` with up to `width` creates on the way at once (`_at_once`), for
        a backend that sends one or two requests per mark (v2: a node of a 30-node
        cluster takes 33 of 1,000 addresses, 66 round trips one after the other)."""
        if min(width, len(addresses)) < 2:
            return DCS.create_marks(self, addresses)
        answered = self._at_once(
            addresses, width, lambda handle, address: handle.create_mark(address)
        )
        return {address: answer.sent_at for address, answer in answered.items() if answer.ok}

    def _at_once(
        self,
        addresses: Sequence[IPAddress],
        width: int,
        each: Callable[[DCS, IPAddress], bool],
    ) -> Dict[IPAddress, Refreshed]:
        """`each(handle, address)` for every address, up to `width` on the way at once, in
        their order: address -> its answer and when it was sent. Each helper thread sends
        through a handle of its own (`clone`: its own connections and retry state, this
        node's versions), kept for the next rounds, and takes the next address when its
        request is answered. Once one has failed after its retries no new one is sent:
        the batch is Incomplete, as one after the other, with the answers of those that
        finished.
        """
        width = min(width, len(addresses))
        while len(self._helpers) < width:
            helper = self.clone()
            helper._owner = self
            self._helpers.append(helper)
        for helper in self._helpers:  # start where this handle works now: it may have just
            helper.rotation = self.rotation.copy()  # failed over
        name = threading.current_thread().name + "-batch"  # its log lines say whose
        lock = threading.Lock()
        todo = iter(addresses)
        done: Dict[IPAddress, Refreshed] = {}
        failed: List[Exception] = []  # a DCSError, or a bug: raised in the caller's thread

        def send(handle: DCS) -> None:
            while True:
                with lock:
                    address = None if failed else next(todo, None)
                if address is None:
                    return
                sent_at = time.monotonic()
                try:
                    ok = each(handle, address)
                except Exception as exc:
                    with lock:
                        failed.append(exc)
                    return
                with lock:
                    done[address] = Refreshed(ok, sent_at)

        threads = [
            threading.Thread(target=send, args=(helper,), name=f"{name}-{n}", daemon=True)
            for n, helper in enumerate(self._helpers[:width])
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        answered = {address: done[address] for address in addresses if address in done}
        if failed and isinstance(failed[0], DCSError):
            raise Incomplete(str(failed[0]), answered) from failed[0]
        if failed:
            raise failed[0]
        return answered

    @abc.abstractmethod
    def delete_mark(self, address: IPAddress) -> bool:
        """Delete this node's mark; False if it was not (or no longer) ours."""

    def release_mark(self, address: IPAddress, mark: Optional[int]) -> bool:
        """Delete this node's mark of an address that is off the interface already.

        With the mark's number (`Mark.created`) a `released` note goes first, so that
        the next holder knows no yaim node has the address and need not probe the link
        for it. Only ever called once the address is gone from this node's interface.
        """
        if mark is not None:
            self.write_note("released", address, Release(self.node, mark).text(), self.etcd_ttl)
        return self.delete_mark(address)

    def note_conflict(self, address: IPAddress, note: str) -> None:
        """Write the `conflicts` note of an address, TTL `conflict-backoff`: meanwhile no
        node takes it. Written before the mark is deleted, so nobody sees it free."""
        self.write_note("conflicts", address, note, self.conflict_ttl())

    def clear_conflict(self, address: IPAddress, note: str) -> bool:
        """Delete the `conflicts` note of an address if it is still `note`; True if deleted."""
        return self.clear_note("conflicts", address, note)

    def conflict_ttl(self) -> int:
        """The note's TTL in whole seconds, as etcd keeps them."""
        return math.ceil(self.config.conflict_backoff_s)

    @property
    def etcd_ttl(self) -> int:
        """`ttl` in whole seconds, as etcd keeps TTLs."""
        return math.ceil(self.ttl)

    def write_note(self, kind: str, address: IPAddress, note: str, ttl: int) -> None:
        """Write the note `<kind>/<address>` with a TTL of `ttl` seconds."""
        self._put_for(self._note_key(kind, address), note, ttl)

    def clear_note(self, kind: str, address: IPAddress, note: str) -> bool:
        """Delete the note `<kind>/<address>` if it is still `note`; True if deleted."""
        return self._delete_if(self._note_key(kind, address), note)

    @abc.abstractmethod
    def _put_for(self, key: str, value: str, ttl: int) -> None:
        """Write `key` with a TTL of `ttl` seconds of its own (v3: a lease of its own)."""

    @abc.abstractmethod
    def _delete_if(self, key: str, value: str) -> bool:
        """Delete `key` if it still holds `value`; True if deleted."""

    # The operator's operations (yaimctl): they change the pool, the drain flags and ask
    # for a rebalance.

    def ask_rebalance(self, note: str, ttl: int) -> None:
        """Write the `rebalance` key for `ttl` seconds: while it is there, nodes with
        `rebalance: manual` plan as `auto` ones (yaimctl rebalance)."""
        self._put_for(self._rebalance_key, note, ttl)

    def end_rebalance(self, note: str) -> bool:
        """Delete the `rebalance` key if it is still the one `note` wrote."""
        return self._delete_if(self._rebalance_key, note)

    @abc.abstractmethod
    def add_address(self, address: IPAddress) -> bool:
        """Add an address to the pool atomically; False if it is already there."""

    @abc.abstractmethod
    def remove_address(self, address: IPAddress) -> bool:
        """Remove an address and its mark from the pool; False if it was not there."""

    @abc.abstractmethod
    def drain(self, node: str) -> None:
        """Set the drain flag of a node (no TTL): it releases its addresses and takes none."""

    @abc.abstractmethod
    def undrain(self, node: str) -> bool:
        """Clear the drain flag of a node; False if it was not drained."""


def backend_module(config) -> str:
    """The module of the backend a config names: `dcs-type`'s, or with `dcs-migrate-from`
    the one of both layouts (yaim.dcs.migrating)."""
    return MIGRATING if config.dcs_migrate_from else BACKENDS[config.dcs_type]


def unavailable(config) -> Optional[str]:
    """Why the backend the config names cannot be loaded here (its client library is
    missing), None if it can: asked before the daemon starts and by --check-config."""
    try:
        importlib.import_module(backend_module(config))
    except ImportError as exc:
        return f"{config.dcs_type} cannot be loaded: {exc}" + INSTALL.get(config.dcs_type, "")
    return None


def connect(config, api: Optional[str] = None, **kwargs) -> DCS:
    """The backend the config names (`backend_module`), imported only when chosen; `api`
    (a `dcs-type` value) picks that one layout's on the same endpoints, TLS and
    credentials: yaimctl migrate reads the v2 layout and writes the v3 one."""
    module = importlib.import_module(BACKENDS[api] if api else backend_module(config))
    return module.Backend(config, **kwargs)


class KeyState(NamedTuple):
    """A key's value (None: not set) as of a revision (v3) or index (v2)."""

    value: Optional[str]
    revision: int


class Entry(NamedTuple):
    """One key below the cluster directory, as a backend read it."""

    key: str
    value: str
    is_dir: bool = False
    ttl: Optional[float] = None
    created: Optional[int] = None  # the key's creation index or revision


class Event(NamedTuple):
    """One change below the cluster directory, as a watch reported it."""

    revision: int  # v3 mod_revision, v2 modifiedIndex
    key: str
    entry: Optional[Entry] = None  # the key as it is now; None: deleted or expired
    subtree: bool = False  # deleted with everything below it (a v2 directory)


def snapshot_of(root: str, entries: Iterable[Entry], pool_dirs: bool) -> Snapshot:
    """Sort the keys below `root` into the layout's parts (the same names in v2 and v3).

    pool_dirs: pool entries are directories (v2), so a plain key there is malformed.
    A directory where the layout wants a key (a mark, a node key, a drain flag, a note)
    is listed in `odd`, and so skipped, not taken for what it is named after.
    """
    pool, malformed, marks, nodes, drained, odd = set(), {}, {}, set(), set(), {}
    node_values: Dict[str, str] = {}
    rebalance: Optional[str] = None
    notes: Dict[str, Dict[str, str]] = {"conflicts": {}, "released": {}, "out": {}}
    named = {"nodes": nodes, "drain": drained}
    for entry in entries:
        path = entry.key[len(root) :].strip("/")
        parts = path.split("/")
        kind, name = parts[0], parts[1] if len(parts) > 1 else ""
        if len(parts) == 2 and kind == "ips":
            if entry.is_dir or not pool_dirs:
                pool.add(name)
            else:
                malformed[name] = "a plain key, not a directory"
        elif entry.is_dir and kind == "ips" and parts[2:] == ["marked"]:
            malformed[name] = "its marked key is a directory, so no node can mark it"
        elif entry.is_dir and len(parts) == 2 and (kind in named or kind in notes):
            odd[path] = "a directory where the layout has a key"
        elif len(parts) == 3 and kind == "ips" and parts[2] == "marked":
            marks[name] = Mark(entry.value, entry.ttl, entry.created)
        elif len(parts) == 2 and kind in named:
            named[kind].add(name)
            if kind == "nodes":
                node_values[name] = entry.value
        elif len(parts) == 2 and kind in notes:
            notes[kind][name] = entry.value
        elif path == "rebalance":
            if entry.is_dir:
                odd[path] = "a directory where the layout has a key"
            else:
                rebalance = entry.value
    return Snapshot(
        pool=frozenset(pool),
        marks=marks,
        nodes=frozenset(nodes),
        drained=frozenset(drained),
        malformed=malformed,
        conflicts=notes["conflicts"],
        released=notes["released"],
        out=notes["out"],
        odd=odd,
        node_values=node_values,
        rebalance=rebalance,
    )
