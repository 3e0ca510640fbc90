"""The status endpoint under hostile clients: stalled, slow, flooding, resetting, odd methods.

A real StatusServer on 127.0.0.1 port 0 with fake sources; the clients are raw
sockets, so that a request can be sent half or not read at all.
"""

from __future__ import annotations

import http.client
import logging
import re
import select
import socket
import struct
import threading
import time

import pytest

from lab.util import wait_until
from yaim import status
from yaim.status import Sources, StatusServer

HALF = b"GET /health HTTP/1.1\r\nHost: x\r\n"  # no blank line: the server waits for more


@pytest.fixture
def serve(monkeypatch):
    """Start a StatusServer with a given TIMEOUT; on teardown stop it and see no thread left."""
    before = threading.active_count()
    running = []

    def start(timeout: float, metrics=lambda: b"yaim_x 1\n") -> StatusServer:
        monkeypatch.setattr(status, "TIMEOUT", timeout)
        sources = Sources(lambda: (True, "healthy: fine"), lambda: {}, metrics, "text/plain")
        running.append(StatusServer(("127.0.0.1", 0), sources).start())
        return running[-1]

    yield start
    for server in running:
        server.stop()
    wait_until(lambda: threading.active_count() == before, 5, what="handler threads to end")


def connect(server: StatusServer, data: bytes = b"") -> socket.socket:
    client = socket.create_connection(server.address, timeout=5)
    client.sendall(data)
    return client


def get(server: StatusServer, path: str, method: str = "GET", timeout: float = 5):
    connection = http.client.HTTPConnection(*server.address, timeout=timeout)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.getheader("Allow"), response.read()
    finally:
        connection.close()


def closed_within(client: socket.socket, seconds: float) -> bool:
    """True when the server closes the connection (EOF or reset) within `seconds`."""
    client.settimeout(seconds)
    try:
        return client.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_a_flood_of_stalled_connections_costs_bounded_threads_and_health_still_answers(serve):
    server = serve(timeout=30)  # far longer than the test: the stalled ones stay open
    before = threading.active_count()
    clients, peak = [], before
    try:
        for _ in range(200):
            clients.append(connect(server, HALF))
            peak = max(peak, threading.active_count())
        started = time.monotonic()
        assert get(server, "/health")[::2] == (200, b"healthy: fine\n")
        answered = time.monotonic() - started
        peak = max(peak, threading.active_count())
    finally:
        for client in clients:
            client.close()
    print(f"200 stalled: peak {peak - before} handler threads, /health in {answered:.3f} s")
    assert peak - before <= status.MAX_CONNECTIONS + 2
    assert answered < 3


def test_a_stalled_connection_is_closed_after_the_timeout(serve):
    server = serve(timeout=0.5)
    started = time.monotonic()
    with connect(server, HALF) as client:
        assert closed_within(client, 5), "the half-sent request was kept open"
    assert 0.4 < time.monotonic() - started < 2


def test_a_request_sent_a_byte_at_a_time_is_closed_after_the_timeout(serve):
    server = serve(timeout=0.5)
    started = time.monotonic()
    with connect(server) as client:
        closed = False
        for byte in HALF * 10:  # 320 bytes, one per 0.05 s at most: 16 s, far past the timeout
            try:
                client.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if select.select([client], [], [], 0.05)[0]:
                closed = closed_within(client, 0)
                break
    assert closed, "a client that never finishes its request was kept"
    assert time.monotonic() - started < 2


def reset(client: socket.socket) -> None:
    """Close with a TCP reset instead of a FIN, as a client that crashed would."""
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


@pytest.mark.parametrize("when", ["reading the request", "writing the answer"])
def test_a_client_reset_is_one_debug_line_without_traceback(serve, caplog, capsys, when):
    caplog.set_level(logging.DEBUG, logger="yaim.status")
    entered, released = threading.Event(), threading.Event()

    def metrics() -> bytes:
        entered.set()
        released.wait(5)
        return b"yaim_x 1\n"

    server = serve(timeout=5, metrics=metrics)
    before = threading.active_count()
    caplog.clear()  # the start line
    if when == "reading the request":
        client = connect(server, HALF)
        wait_until(lambda: threading.active_count() > before, 5, what="a handler thread")
        reset(client)
    else:
        client = connect(server, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert entered.wait(5)
        reset(client)
        released.set()
    wait_until(lambda: threading.active_count() == before, 5, what="the handler thread to end")

    loud = [r for r in caplog.records if r.levelno > logging.DEBUG or r.exc_info]
    assert loud == [], [r.getMessage() for r in loud]
    assert "Traceback" not in capsys.readouterr().err
    said = [r.getMessage() for r in caplog.records]
    assert any(re.search(r"reset|broken pipe", m, re.IGNORECASE) for m in said), said


@pytest.mark.parametrize("method", ["FOO", "TRACE", "CONNECT", "OPTIONS", "POST", "get", "HEAD"])
def test_every_method_but_get_is_405_allowing_get(serve, method):
    server = serve(timeout=5)
    body = b"" if method == "HEAD" else b"read-only: GET only\n"
    assert get(server, "/health", method) == (405, "GET", body)
    assert get(server, "/health")[0] == 200


def test_a_kept_alive_connection_serves_one_request_after_another(serve):
    server = serve(timeout=5)
    connection = http.client.HTTPConnection(*server.address, timeout=5)
    try:
        for path in ("/health", "/metrics", "/health"):
            connection.request("GET", path)
            response = connection.getresponse()
            assert (response.status, response.read() != b"") == (200, True), path
    finally:
        connection.close()


def test_an_idle_server_sleeps_until_a_connection_and_stops_at_once(serve, monkeypatch):
    looks = []
    monkeypatch.setattr(status._Server, "service_actions", lambda server: looks.append(1))
    server = serve(5.0)
    time.sleep(3 * status.WATCHDOG)
    assert looks == [], "no connection, no watchdog round"
    assert get(server, "/health")[0] == 200
    wait_until(lambda: looks, 5, what="the round after the connection")
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < status.WATCHDOG, "woken by the stop, not by a poll"
