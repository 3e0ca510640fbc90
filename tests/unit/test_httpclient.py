"""yaim.httpclient against a local server: kept-alive connections, a connection the server
dropped, timeouts, streamed answers; and the http checker on top of it."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import List

import pytest

from yaim.checks import http as http_check
from yaim.dcs import Transient
from yaim.dcs.gateway import Gateway, path_for, prefix_for, release_of
from yaim.httpclient import Client, HTTPFailure, Response, Timeout


class Server:
    """A local HTTP/1.1 server that keeps connections alive and counts them; `drop` makes it
    close the connection of the next request(s) unanswered, `delay` answer that late,
    `close` answer with Connection: close."""

    def __init__(self) -> None:
        self.connections: List[int] = []
        self.paths: List[str] = []
        self.auth: List[str] = []
        self.accept: List[str] = []
        self.drop = 0
        self.delay = 0.0
        self.close = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                outer.connections.append(self.client_address[1])

            def do_GET(self) -> None:
                outer.paths.append(self.path)
                outer.auth.append(self.headers.get("Authorization", ""))
                outer.accept.append(self.headers.get("Accept", ""))
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if outer.drop:
                    outer.drop -= 1
                    self.close_connection = True
                    return
                time.sleep(outer.delay)
                body = b'{"status":"ok"}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                if outer.close:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # a client that timed out
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}
        )

    def drop_idle(self, client: Client) -> None:
        """What a server that times idle connections out does: shut the kept one."""
        client._connection.sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def server():
    served = Server()
    served.thread.start()
    try:
        yield served
    finally:
        served.server.shutdown()
        served.server.server_close()
        served.thread.join(5)


@pytest.fixture
def client(server):
    made = Client(f"http://127.0.0.1:{server.port}", 2.0)
    yield made
    made.close()


def test_requests_go_on_one_kept_alive_connection(server, client):
    for _ in range(3):
        answer = client.request("GET", "/health")
        assert (answer.status, answer.json()) == (200, {"status": "ok"})
    assert len(server.connections) == 1 and server.paths == ["/health"] * 3


def test_a_connection_the_server_closes_after_its_answer_is_not_kept(server, client):
    server.close = True
    client.request("GET", "/a")
    client.request("GET", "/b")
    assert len(server.connections) == 2


def test_a_kept_connection_closed_while_idle_is_replaced_before_it_is_used(server, client):
    client.request("POST", "/v3/kv/range", b"{}")
    server.drop_idle(client)
    assert client.request("POST", "/v3/kv/range", b"{}").status == 200
    assert len(server.connections) == 2 and server.paths == ["/v3/kv/range"] * 2


def test_a_request_dropped_unanswered_on_a_kept_connection_is_sent_again_only_if_allowed(
    server, client
):
    client.request("GET", "/health")
    server.drop = 1
    with pytest.raises(HTTPFailure):  # a POST is never sent twice here
        client.request("POST", "/v3/kv/txn", b"{}")
    client.request("GET", "/health")
    server.drop = 1
    assert client.request("GET", "/health", retry_reused=True).status == 200
    assert server.paths == ["/health", "/v3/kv/txn", "/health", "/health", "/health"]


def test_a_request_dropped_twice_fails_also_when_it_may_be_sent_again(server, client):
    client.request("GET", "/health")
    server.drop = 2
    with pytest.raises(HTTPFailure):
        client.request("GET", "/health", retry_reused=True)
    assert server.paths == ["/health"] * 3  # once more, on a new connection, not more


def test_a_new_connection_dropped_unanswered_is_not_sent_again(server, client):
    server.drop = 1
    with pytest.raises(HTTPFailure):
        client.request("GET", "/health", retry_reused=True)
    assert server.paths == ["/health"]


def test_an_answer_later_than_the_read_timeout_is_a_timeout(server, client):
    server.delay = 0.5
    with pytest.raises(Timeout):
        client.request("GET", "/health", read_timeout=0.1)


def test_a_refused_connection_fails_with_its_cause():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(HTTPFailure) as failed:
        Client(f"http://127.0.0.1:{port}", 1.0).request("GET", "/")
    assert isinstance(failed.value.__cause__, ConnectionRefusedError)


def test_credentials_in_the_url_go_as_basic_authorization(server):
    client = Client(f"http://ad%40min:p%3Ass@127.0.0.1:{server.port}/base/", 2.0)
    client.request("GET", "/health")
    client.close()
    assert server.paths == ["/base/health"]
    assert server.auth == ["Basic YWRAbWluOnA6c3M="]  # base64 of "ad@min:p:ss"


def test_a_body_decodes_by_its_charset_else_as_utf8():
    latin = Response(200, {"content-type": "text/plain; charset=latin-1"}, "é".encode("latin-1"))
    assert latin.text == "é"
    assert Response(200, {}, "é".encode()).text == "é"
    assert Response(200, {"content-type": "text/plain; charset=nonsense"}, b"ok").text == "ok"


class StreamServer:
    """A raw socket server that answers one request with a chunked stream, chunk by chunk
    as the test sends them (`send`)."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.conn = None

    def accept(self) -> None:
        self.listener.settimeout(5)
        self.conn, _ = self.listener.accept()
        self.conn.recv(65536)
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        self.conn.sendall(head)

    def send(self, data: bytes) -> None:
        self.conn.sendall(b"%x\r\n%s\r\n" % (len(data), data))

    def end(self) -> None:
        self.conn.sendall(b"0\r\n\r\n")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


@pytest.fixture
def watch():
    """A stream opened on a StreamServer (read timeout 0.3 s): (the server, the stream)."""
    served = StreamServer()
    client = Client(f"http://127.0.0.1:{served.port}", 2.0)
    try:
        opened = threading.Thread(target=served.accept)
        opened.start()
        stream = client.stream("POST", "/v3/watch", b"{}", {}, 0.3)
        opened.join(5)
        yield served, stream
        stream.close()
    finally:
        client.close()
        served.close()


def test_a_stream_brings_its_chunks_as_they_come_and_times_out_on_silence(watch):
    served, stream = watch
    assert stream.status == 200
    chunks = stream.chunks()
    served.send(b'{"a":1}\n')
    assert next(chunks) == b'{"a":1}\n'
    with pytest.raises(Timeout):
        next(chunks)
    stream.close()
    assert stream.sock is None


def test_a_stream_ends_when_the_server_ends_the_answer(watch):
    served, stream = watch
    served.send(b"one\n")
    served.end()
    assert list(stream.chunks()) == [b"one\n"]


def test_the_gateway_sends_an_accept_header_with_and_without_a_token(server):
    settings = {"etcd_user": None, "etcd_password": None, "etcd_ca_file": None}
    config = SimpleNamespace(etcd_cert_file=None, etcd_key_file=None, **settings)
    gateway = Gateway(f"http://127.0.0.1:{server.port}", config, 2.0)
    gateway.call("/kv/range", {})
    gateway.token = "t0ken"
    gateway.call("/kv/range", {})
    gateway.client.close()
    assert server.paths == ["/version", "/v3/kv/range", "/v3/kv/range"]
    assert server.accept == ["application/json"] * 3 and server.auth == ["", "", "t0ken"]


def checker_of(url: str) -> http_check.Checker:
    settings = {"http_expected_code": 200, "http_expected_response_contains": '"ok"'}
    return http_check.Checker(SimpleNamespace(http_url=url, check_timeout_s=2.0, **settings))


def test_the_http_check_keeps_its_connection_and_retries_a_dropped_one_once(server):
    checker = checker_of(f"http://127.0.0.1:{server.port}/health?full=1")
    try:
        assert checker.check().healthy and checker.check().healthy
        assert len(server.connections) == 1 and server.paths == ["/health?full=1"] * 2
        server.drop = 1  # the service dropped the kept connection as the GET went out
        assert checker.check().healthy
        server.drop = 2  # and once more on the new connection: unhealthy, never healthy
        result = checker.check()
        assert result == (
            False,
            f"GET http://127.0.0.1:{server.port}/health?full=1 failed: ConnectionError",
        )
    finally:
        checker.close()


def test_the_http_check_times_out_unhealthy(server):
    checker = checker_of(f"http://127.0.0.1:{server.port}/")
    checker.config.check_timeout_s = 0.1
    server.delay = 0.5
    try:
        assert checker.check() == (False, f"GET http://127.0.0.1:{server.port}/ failed: Timeout")
    finally:
        checker.close()


def test_the_gateway_asks_its_member_s_release_once_and_again_after_a_request_got_no_answer(
    server,
):
    settings = {"etcd_user": None, "etcd_password": None, "etcd_ca_file": None}
    config = SimpleNamespace(etcd_cert_file=None, etcd_key_file=None, **settings)
    gateway = Gateway(f"http://127.0.0.1:{server.port}", config, 2.0)
    gateway.call("/kv/range", {})
    gateway.call("/kv/range", {})
    server.drop = 1
    with pytest.raises(Transient):
        gateway.call("/kv/range", {})
    gateway.call("/kv/range", {})
    gateway.client.close()
    assert server.paths == ["/version"] + ["/v3/kv/range"] * 3 + ["/version", "/v3/kv/range"]


@pytest.mark.parametrize(
    "version, prefix",
    [("3.2.32", "/v3alpha"), ("3.3.25", "/v3beta"), ("3.4.23", "/v3"), ("3.5.16", "/v3"),
     ("3.6.0", "/v3"), ("", "/v3"), ("not.a.release", "/v3")],
)  # fmt: skip
def test_the_gateway_prefix_follows_the_release(version, prefix):
    assert prefix_for(version) == prefix


def test_before_3_4_three_lease_calls_live_under_kv():
    assert path_for("/v3beta", "/lease/timetolive") == "/v3beta/kv/lease/timetolive"
    assert path_for("/v3beta", "/lease/revoke") == "/v3beta/kv/lease/revoke"
    assert path_for("/v3beta", "/lease/keepalive") == "/v3beta/lease/keepalive"
    assert path_for("/v3", "/lease/timetolive") == "/v3/lease/timetolive"
    assert release_of("3.3.25") == (3, 3) and release_of("3") is None
