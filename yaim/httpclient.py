"""A small HTTP/1.1 client on the standard library's http.client, for etcd's JSON gateway
(yaim.dcs.gateway) and the http checker: one kept-alive connection per client, TLS from
an ssl context, a connect and a read timeout, and streamed answers (a watch).

Written here instead of using requests: an etcd3 daemon built with requests (and
urllib3, idna, charset_normalizer, certifi) is 4.5 MB larger (34.0 against 29.5 MB),
and a request through it costs about three times the CPU of one through http.client
(issue 18's goals are 40 MB and 0.5 % of a core per daemon). yaim needs nothing of
what requests adds: no cookies, redirects, proxies or guessed encodings.

A kept-alive connection the server has closed meanwhile is seen before it is used (it
reads as ready while idle, as urllib3 checks) and replaced. A request is never sent
twice by this module unless its caller says it may be (`retry_reused`: a GET); a
POST to etcd that failed is the retry policy's to try again (yaim.dcs).
"""

from __future__ import annotations

import base64
import http.client
import json
import select
import socket
import ssl
from typing import Any, Dict, Iterator, NamedTuple, Optional
from urllib.parse import unquote, urlsplit

MIN_TIMEOUT = 0.001  # seconds: a socket timeout of 0 would make the socket non-blocking
# What one try can fail with below this module: the socket, TLS, a malformed answer.
FAILURES = (OSError, http.client.HTTPException)
# A kept-alive connection the server closed as the request went out: nothing was answered.
DROPPED = (
    http.client.RemoteDisconnected,
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
)


class HTTPFailure(Exception):
    """A request got no HTTP answer: the connection failed, timed out, or what came back
    was not HTTP. The message is the cause on one line."""


class Timeout(HTTPFailure):
    """The connection or the answer took longer than its timeout."""


class Response(NamedTuple):
    """A whole answer: status code, headers (names in lower case) and body."""

    status: int
    headers: Dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        """The body as its Content-Type's charset says (UTF-8 if it names none);
        what does not decode shows as U+FFFD."""
        charset = "utf-8"
        for param in self.headers.get("content-type", "").split(";")[1:]:
            name, _, value = param.strip().partition("=")
            if name.lower() == "charset" and value:
                charset = value.strip("\"'")
        try:
            return self.body.decode(charset, "replace")
        except LookupError:  # a charset Python does not know
            return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; ValueError if it is not."""
        return json.loads(self.body)


def _failure(exc: BaseException) -> HTTPFailure:
    """The HTTPFailure (raised from `exc`, which stays its cause) of a failed try."""
    kind = Timeout if isinstance(exc, socket.timeout) else HTTPFailure
    text = str(exc) or type(exc).__name__
    return kind(text.splitlines()[0][:300])


def _dropped(sock: Optional[socket.socket]) -> bool:
    """Whether an idle kept-alive connection is unusable: closed by the server (it reads as
    ready: an end of file, or bytes nobody asked for) or gone."""
    if sock is None or sock.fileno() < 0:
        return True
    try:
        ready, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(ready)


class Stream:
    """A streamed answer on a connection of its own: its status, its body as it comes
    (`chunks`), and its socket (to set the read timeout, or to shut it from another
    thread). Closed by `close`, or when the client that opened it fails it."""

    def __init__(self, connection: http.client.HTTPConnection, response) -> None:
        self._connection = connection
        self._response = response
        self.status: int = response.status

    @property
    def sock(self) -> Optional[socket.socket]:
        return self._connection.sock

    def read_all(self) -> Response:
        """The rest of the body at once (an error answer), the stream closed after it."""
        try:
            body = self._response.read()
        except FAILURES as exc:
            raise _failure(exc) from exc
        finally:
            self.close()
        return Response(self.status, _headers(self._response), body)

    def chunks(self) -> Iterator[bytes]:
        """The body's bytes as they arrive; it ends when the server ends the answer.
        Timeout when nothing came within the socket's timeout, HTTPFailure for the rest."""
        while True:
            try:
                chunk = self._response.read1(65536)
            except FAILURES as exc:
                raise _failure(exc) from exc
            if not chunk:
                return
            yield chunk

    def close(self) -> None:
        self._response.close()
        self._connection.close()


def _headers(response) -> Dict[str, str]:
    return {name.lower(): value for name, value in response.getheaders()}


class Client:
    """Requests to one server (`url`: scheme, host, port, and a path prefix), one at a
    time, on one kept-alive connection; not thread-safe (one per thread, as the DCS
    handles are). `context`: the TLS settings of an https URL (the system's CAs if None)."""

    def __init__(
        self, url: str, connect_timeout: float, context: Optional[ssl.SSLContext] = None
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http or https URL: {url}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.connect_timeout = connect_timeout
        self.context = context
        if self.https and context is None:
            self.context = ssl.create_default_context()
        self.auth: Optional[str] = None  # user:password of the URL, as Basic authorization
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self.auth = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        self._connection: Optional[http.client.HTTPConnection] = None

    def _connect(self) -> http.client.HTTPConnection:
        """A new connection, connected within the connect timeout."""
        if self.https:
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.connect_timeout, context=self.context
            )
        else:
            connection = http.client.HTTPConnection(
                self.host, self.port, timeout=self.connect_timeout
            )
        try:
            connection.connect()
        except FAILURES as exc:
            connection.close()
            raise _failure(exc) from exc
        return connection

    def _send(
        self,
        connection: http.client.HTTPConnection,
        method: str,
        target: str,
        body: Optional[bytes],
        headers: Dict[str, str],
        read_timeout: float,
    ):
        connection.sock.settimeout(max(read_timeout, MIN_TIMEOUT))
        sent = dict(headers)
        if self.auth is not None:
            sent.setdefault("Authorization", self.auth)
        if body is not None:
            sent.setdefault("Content-Type", "application/json")
        connection.request(method, self.prefix + target, body=body, headers=sent)
        return connection.getresponse()

    def request(
        self,
        method: str,
        target: str,
        body: Optional[bytes] = None,
        headers: Optional[Dict[str, str]] = None,
        read_timeout: Optional[float] = None,
        retry_reused: bool = False,
    ) -> Response:
        """One request and its whole answer, on the kept-alive connection (a new one if
        there is none, or the server closed it). `retry_reused`: a kept-alive connection
        the server dropped as this request went out is replaced and the request sent once
        more (for a request that may be sent twice: a GET)."""
        read_timeout = self.connect_timeout if read_timeout is None else read_timeout
        connection = self._connection
        self._connection = None
        if connection is not None and _dropped(connection.sock):
            connection.close()
            connection = None
        reused = connection is not None
        while True:
            if connection is None:
                connection = self._connect()
            try:
                response = self._send(connection, method, target, body, headers or {}, read_timeout)
                answer = Response(response.status, _headers(response), response.read())
            except FAILURES as exc:
                connection.close()
                connection = None
                if reused and retry_reused and isinstance(exc, DROPPED):
                    reused = False
                    continue
                raise _failure(exc) from exc
            if response.will_close:
                connection.close()
            else:
                self._connection = connection
            return answer

    def stream(
        self,
        method: str,
        target: str,
        body: Optional[bytes],
        headers: Dict[str, str],
        read_timeout: float,
    ) -> Stream:
        """A request whose answer is read as it comes (`Stream.chunks`), on a new
        connection of its own; the kept-alive one stays free for the others."""
        connection = self._connect()
        try:
            return Stream(
                connection, self._send(connection, method, target, body, headers, read_timeout)
            )
        except FAILURES as exc:
            connection.close()
            raise _failure(exc) from exc

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
