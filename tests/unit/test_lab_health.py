"""The lab's health server keeps a client's connection, as yaim's http checker expects,
while it answers other clients too."""

from __future__ import annotations

import http.client
import threading
from pathlib import Path

import pytest

from lab import health


@pytest.fixture
def server(tmp_path: Path):
    state = tmp_path / "state"
    state.write_text("ok")
    httpd = health.ThreadingHTTPServer(("127.0.0.1", 0), health.make_handler(state))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd.server_address[1], state
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def get(connection: http.client.HTTPConnection) -> http.client.HTTPResponse:
    connection.request("GET", "/health")
    response = connection.getresponse()
    response.read()
    return response


def test_a_connection_is_kept_between_checks_and_answers_the_state_of_each(server):
    port, state = server
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        first = get(connection)
        assert first.status == 200 and not first.will_close
        kept = connection.sock.getsockname()
        state.write_text("fail")
        assert get(connection).status == 500
        assert connection.sock.getsockname() == kept  # the same connection, not a new one
    finally:
        connection.close()


def test_a_kept_idle_connection_does_not_hold_up_another_client(server):
    port, _ = server
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    other = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        assert get(idle).status == 200  # kept open, its handler waits for the next GET
        assert get(other).status == 200
    finally:
        idle.close()
        other.close()
