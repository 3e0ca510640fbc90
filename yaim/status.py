"""The read-only status endpoint on `status-listen`: /health, /status, /metrics.

A small stdlib HTTP server in a thread of its own. It only reads what the
daemon gives it (three callables), so no request can change anything: every
method but GET is answered 405.

    GET /health   200 when the node is healthy and its DCS session is fresh, else 503
    GET /status   the daemon's state as JSON
    GET /metrics  Prometheus text format
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

from yaim.errors import YaimError

log = logging.getLogger(__name__)


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

    def do_GET(self) -> None:
        sources = self.server.sources
        path = self.path.split("?", 1)[0]
        try:
            if path == "/health":
                ok, why = sources.health()
                code = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
                self._send(code, "text/plain; charset=utf-8", f"{why}\n".encode())
            elif path == "/status":
                body = json.dumps(sources.status(), indent=2, sort_keys=True) + "\n"
                self._send(HTTPStatus.OK, "application/json", body.encode())
            elif path == "/metrics":
                self._send(HTTPStatus.OK, sources.metrics_type, sources.metrics())
            else:
                self._send(HTTPStatus.NOT_FOUND, "text/plain", b"try /health, /status, /metrics\n")
        except Exception:  # a bug in a source must not kill the endpoint
            log.exception("status endpoint: GET %s failed", path)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain", b"internal error\n")

    def _not_allowed(self) -> None:
        self._send(
            HTTPStatus.METHOD_NOT_ALLOWED,
            "text/plain",
            b"read-only: GET only\n",
            {"Allow": "GET"},
        )

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _not_allowed

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


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: Tuple[str, int], sources: Sources) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.sources = sources
        super().__init__(address, _Handler)


class StatusServer:
    """The endpoint's server and the thread that runs it."""

    def __init__(self, address: Tuple[str, int], sources: Sources) -> None:
        try:
            self.server = _Server(address, sources)
        except OSError as exc:
            host, port = address
            raise StatusError(f"status-listen: cannot listen on {host}:{port}: {exc}") from None
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="status", kwargs={"poll_interval": 0.2}
        )
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
