"""The read-only status endpoint on `status-listen`: /health, /status, /metrics.

A small stdlib HTTP server in a thread of its own, a thread per connection. It
only reads what the daemon gives it (three callables), so no request can change
anything: every method but GET, whatever its token, is answered 405.

    GET /health   200 when the node is healthy and its DCS session is fresh, else 503
    GET /status   the daemon's state as JSON
    GET /metrics  Prometheus text format

A stalled, slow or hostile client must cost neither the daemon nor the scraper,
so small overrides of socketserver's hooks (rather than a new dependency) bound it:

- Each request has TIMEOUT seconds to arrive and be answered. A watchdog in the
  serving loop (`service_actions`, every WATCHDOG seconds while a connection is open)
  shuts down a connection past its deadline; that also ends a client sending one byte
  at a time, which a socket timeout (per read) would keep forever. While none is open
  the loop sleeps until a connection or the stop comes: socketserver's own loop wakes
  every poll interval, which cost an idle daemon more CPU than all its other threads'
  waits together.
- At most MAX_CONNECTIONS handler threads. When all are taken, a new connection
  makes the oldest one still waiting for its request give way (and waits up to
  BUSY_WAIT for its thread to end). Refusing newcomers instead would leave a scraper
  unanswered for as long as a burst of stalled connections holds every thread; this
  way 1,000 stalled connections cost MAX_CONNECTIONS threads and a scraper that
  connects among them is answered at once. A connection being answered never gives way.
- A client that resets or goes away is logged at DEBUG, without a traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

from yaim.errors import YaimError

log = logging.getLogger(__name__)

TIMEOUT = 5.0  # seconds for a request to arrive and be answered
MAX_CONNECTIONS = 16  # handler threads
BUSY_WAIT = 0.5  # seconds a new connection waits for a thread to end when all are taken
WATCHDOG = 0.2  # seconds between the watchdog's looks while a connection is open


class StatusError(YaimError):
    """The status endpoint could not be started (address in use, not local, ...)."""


class Sources(NamedTuple):
    """What the endpoint shows: callables, called once per request."""

    health: Callable[[], Tuple[bool, str]]  # (healthy and DCS fresh, why)
    status: Callable[[], Dict[str, Any]]
    metrics: Callable[[], bytes]
    metrics_type: str


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def handle_one_request(self) -> None:
        self.server.mark(self.connection, "waiting")
        super().handle_one_request()

    def parse_request(self) -> bool:
        """Refuse every method but GET here, so that any token gets 405 (not 501)."""
        if not super().parse_request():
            return False
        self.server.mark(self.connection, "answering")
        if self.command == "GET":
            return True
        headers = {"Allow": "GET", "Connection": "close"}  # a body it may have sent is unread
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, "text/plain", b"read-only: GET only\n", headers)
        return False

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            answer = self._answer(path)
        except Exception:  # a bug in a source must not kill the endpoint
            log.exception("status endpoint: GET %s failed", path)
            answer = HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain", b"internal error\n"
        self._send(*answer)

    def _answer(self, path: str) -> Tuple[int, str, bytes]:
        sources = self.server.sources
        if path == "/health":
            ok, why = sources.health()
            code = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
            return code, "text/plain; charset=utf-8", f"{why}\n".encode()
        if path == "/status":
            body = json.dumps(sources.status(), indent=2, sort_keys=True) + "\n"
            return HTTPStatus.OK, "application/json", body.encode()
        if path == "/metrics":
            return HTTPStatus.OK, sources.metrics_type, sources.metrics()
        return HTTPStatus.NOT_FOUND, "text/plain", b"try /health, /status, /metrics\n"

    def _send(
        self, code: int, content_type: str, body: bytes, headers: Optional[Dict[str, str]] = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("status endpoint: %s %s", self.address_string(), format % args)


class _Slot(NamedTuple):
    """One open connection, as the limit and the watchdog see it."""

    client: str
    deadline: float  # time.monotonic() by which its request must be read and answered
    state: str  # "waiting" for its request (may give way), "answering" or "dropped"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the kernel holds a burst of connections while they are sorted out

    def __init__(self, address: Tuple[str, int], sources: Sources) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.sources = sources
        self.lock = threading.Condition()
        self.connections: Dict[socket.socket, _Slot] = {}
        self._stopping = False
        self._stopped = threading.Event()
        self._wake: Optional[Tuple[int, int]] = os.pipe()  # `shutdown` wakes the loop
        for fd in self._wake:
            os.set_blocking(fd, False)
        super().__init__(address, _Handler)  # closes the pipe too if it cannot listen

    def serve_forever(self, poll_interval: float = WATCHDOG) -> None:
        """socketserver's loop, asleep while no connection is open: it wakes for a new
        connection and for `shutdown`, and, while one is open, every `poll_interval`
        seconds for the watchdog. Connections are only added here (`process_request`),
        so none can be open while it sleeps without a timeout."""
        self._stopped.clear()
        try:
            with selectors.PollSelector() as selector:
                selector.register(self, selectors.EVENT_READ)
                selector.register(self._wake[0], selectors.EVENT_READ)
                while not self._stopping:
                    with self.lock:
                        timeout = poll_interval if self.connections else None
                    ready = [key.fileobj for key, _ in selector.select(timeout)]
                    if self._stopping:
                        break
                    if self._wake[0] in ready:
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._wake[0], 512)
                    if self in ready:
                        self._handle_request_noblock()
                    self.service_actions()
        finally:
            self._stopping = False
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop the loop and wait for it to end (from another thread)."""
        self._stopping = True
        if self._wake is not None:
            with contextlib.suppress(BlockingIOError):  # the pipe is full: it is being woken
                os.write(self._wake[1], b"\0")
        self._stopped.wait()

    def process_request(self, request: Any, client_address: Any) -> None:
        """A handler thread for the connection if one of MAX_CONNECTIONS is (or gets) free."""
        client = client_address[0]
        with self.lock:
            if len(self.connections) >= MAX_CONNECTIONS:
                waiting = self._in("waiting")
                if waiting:
                    oldest = min(waiting, key=lambda request: waiting[request].deadline)
                    self._drop(oldest, "gives way to a newer one")
                self.lock.wait_for(lambda: len(self.connections) < MAX_CONNECTIONS, BUSY_WAIT)
            admitted = len(self.connections) < MAX_CONNECTIONS
            if admitted:
                self.connections[request] = _Slot(client, time.monotonic() + TIMEOUT, "waiting")
        if admitted:
            super().process_request(request, client_address)
        else:
            log.debug("status endpoint: %s: %d connections busy, closed", client, MAX_CONNECTIONS)
            self.shutdown_request(request)

    def mark(self, request: socket.socket, state: str) -> None:
        """A handler starts waiting for a request (a new deadline) or answering one."""
        with self.lock:
            slot = self.connections.get(request)
            if slot is not None and slot.state != "dropped":
                deadline = time.monotonic() + TIMEOUT if state == "waiting" else slot.deadline
                self.connections[request] = slot._replace(deadline=deadline, state=state)

    def service_actions(self) -> None:
        """Between polls of serve_forever: drop the connections past their deadline."""
        super().service_actions()
        now = time.monotonic()
        with self.lock:
            late = [c for c, s in self._in("waiting", "answering").items() if s.deadline <= now]
            for request in late:
                self._drop(request, f"took more than {TIMEOUT:g} s")

    def _in(self, *states: str) -> Dict[socket.socket, _Slot]:
        return {c: s for c, s in self.connections.items() if s.state in states}

    def _drop(self, request: socket.socket, why: str) -> None:
        """Shut the connection down, which ends its handler's read or write (lock held)."""
        slot = self.connections[request]
        self.connections[request] = slot._replace(state="dropped")
        log.debug("status endpoint: %s: connection %s, closed", slot.client, why)
        with contextlib.suppress(OSError):  # the client went first
            request.shutdown(socket.SHUT_RDWR)

    def close_request(self, request: Any) -> None:
        with self.lock:  # under the lock, so that _drop never shuts down a closed socket
            self.connections.pop(request, None)
            super().close_request(request)
            self.lock.notify_all()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that resets or goes away (OSError) is no error of ours: DEBUG, no traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            log.debug("status endpoint: %s: %s", client_address[0], error)
        else:
            log.error("status endpoint: request from %s failed", client_address[0], exc_info=True)

    def server_close(self) -> None:
        """Also end the connections still open, so that no handler thread outlives the server."""
        super().server_close()
        if self._wake is not None:
            for fd in self._wake:
                os.close(fd)
            self._wake = None
        with self.lock:
            for request in self._in("waiting", "answering"):
                self._drop(request, "open at stop")


class StatusServer:
    """The endpoint's server and the thread that runs it."""

    def __init__(self, address: Tuple[str, int], sources: Sources) -> None:
        try:
            self.server = _Server(address, sources)
        except OSError as exc:
            host, port = address
            raise StatusError(f"status-listen: cannot listen on {host}:{port}: {exc}") from None
        self.thread = threading.Thread(target=self.server.serve_forever, name="status")
        self.thread.daemon = True

    @property
    def address(self) -> Tuple[str, int]:
        """Where it listens (the real port when 0 was asked for)."""
        return self.server.server_address[:2]

    def start(self) -> StatusServer:
        self.thread.start()
        host, port = self.address
        host = f"[{host}]" if ":" in host else host
        log.info("status endpoint on http://%s:%d/ (/health, /status, /metrics)", host, port)
        return self

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
        self.server.server_close()
