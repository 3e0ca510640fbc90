"""yaim.peers: sealed asks and answers, what is refused, and the endpoint on 127.0.0.1."""

from __future__ import annotations

import ipaddress
import json
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from yaim import peers
from yaim.failsafe import Answer, Ask
from yaim.peers import PeerServer, Refused, Seal

SECRET = b"0123456789abcdef-shared"
TTL = 3.0
NOW = 1_800_000_000.0
X = ipaddress.ip_address("198.51.100.10")
ASK = Ask("a", frozenset({"a", "b"}), frozenset({X, ipaddress.ip_address("2001:db8::1")}))


def seals(secret: bytes = SECRET):
    return Seal("a", secret, TTL), Seal("b", secret, TTL)


def test_an_ask_and_its_answer_go_through():
    asker, peer = seals()
    data, nonce = asker.ask(ASK, NOW)
    got, got_nonce = peer.open_ask(data, NOW + 0.5)
    assert got == ASK and got_nonce == nonce
    reply = peer.answer(Answer("b", True, "promised"), "a", nonce, NOW + 0.5)
    assert asker.open_answer(reply, "b", nonce, NOW + 1) == Answer("b", True, "promised")


def test_a_wrong_secret_or_a_changed_byte_is_refused():
    asker, _ = seals()
    _, stranger = seals(b"another secret, as long")
    data, _ = asker.ask(ASK, NOW)
    with pytest.raises(Refused, match="signature"):
        stranger.open_ask(data, NOW)
    envelope = json.loads(data)
    changed = envelope["body"].replace('"node":"a"', '"node":"c"')
    assert changed != envelope["body"]
    envelope["body"] = changed
    with pytest.raises(Refused, match="signature"):
        seals()[1].open_ask(json.dumps(envelope).encode(), NOW)


@pytest.mark.parametrize("skew", [-TTL - 0.1, TTL + 0.1])
def test_a_stale_or_future_ask_is_refused(skew):
    asker, peer = seals()
    data, _ = asker.ask(ASK, NOW)
    with pytest.raises(Refused, match="stale"):
        peer.open_ask(data, NOW + skew)


def test_a_replayed_ask_is_refused():
    asker, peer = seals()
    data, _ = asker.ask(ASK, NOW)
    peer.open_ask(data, NOW)
    with pytest.raises(Refused, match="replayed"):
        peer.open_ask(data, NOW + 1)


def test_too_many_nonces_to_tell_refuses_rather_than_forgets():
    nonces = peers.Nonces(keep=2 * TTL)
    nonces.seen = {str(n): NOW + 10 for n in range(peers.NONCE_LIMIT)}
    assert not nonces.first_use("fresh", NOW)
    assert nonces.first_use("fresh", NOW + 11)  # the old ones expired: room again


def test_an_answer_is_not_an_ask_and_answers_only_its_own_ask():
    asker, peer = seals()
    _, nonce = asker.ask(ASK, NOW)
    reply = peer.answer(Answer("b", True, "promised"), "a", nonce, NOW)
    with pytest.raises(Refused, match="not an ask"):
        peer.open_ask(reply, NOW)
    _, newer = asker.ask(ASK, NOW + 1)
    with pytest.raises(Refused, match="this ask"):
        asker.open_answer(reply, "b", newer, NOW + 1)  # an old yes replayed for a new ask
    with pytest.raises(Refused, match="this ask"):
        asker.open_answer(reply, "c", nonce, NOW)  # signed by b, expected from c


def test_a_signed_ask_with_bad_contents_is_refused():
    asker, peer = seals()
    bad = {"kind": "ask", "node": "a", "time": NOW, "nonce": "n" * 32, "view": ["a"]}
    for held in (["not an address"], "198.51.100.1", [None]):
        with pytest.raises(Refused):
            peer.open_ask(asker.seal(dict(bad, held=held)), NOW)
    with pytest.raises(Refused, match="node name"):
        peer.open_ask(asker.seal(dict(bad, held=[], view=["a/../b"])), NOW)
    with pytest.raises(Refused, match="no time"):
        peer.open_ask(asker.seal(dict(bad, held=[], time=True)), NOW)


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_are_refused_cleanly(data):
    with pytest.raises(Refused):
        seals()[1].open_ask(data, NOW)


def test_nesting_too_deep_and_lone_surrogates_are_refused_cleanly():
    with pytest.raises(Refused):
        seals()[1].open_ask(b"[" * 100_000, NOW)
    with pytest.raises(Refused):
        seals()[1].open_ask(b'{"body": "\\ud800", "mac": "00"}', NOW)


def test_a_short_secret_is_refused(tmp_path):
    path = tmp_path / "peer.key"
    path.write_bytes(b"short\n")
    with pytest.raises(ValueError, match="16 bytes"):
        peers.read_secret(str(path))
    path.write_bytes(SECRET + b"\n")
    assert peers.read_secret(str(path)) == SECRET


def test_the_endpoint_answers_sealed_asks_and_refuses_the_rest():
    asker, peer = seals()

    def answer(data: bytes):
        try:
            ask, nonce = peer.open_ask(data, NOW)
        except Refused:
            return None
        return peer.answer(Answer("b", True, "promised"), ask.node, nonce, NOW)

    server = PeerServer(("127.0.0.1", 0), answer, timeout=2.0)
    server.start()
    try:
        port = server.server_address[1]
        data, nonce = asker.ask(ASK, NOW)
        reply = peers.post("127.0.0.1", port, data, timeout=2.0)
        assert asker.open_answer(reply, "b", nonce, NOW).yes
        with pytest.raises(peers.Unanswered, match=r"refused the ask \(HTTP 403\)"):
            peers.post("127.0.0.1", port, data, timeout=2.0)  # replayed
        _, stranger = seals(b"another secret, as long")
        with pytest.raises(peers.Unanswered, match="HTTP 403"):
            peers.post("127.0.0.1", port, stranger.ask(ASK, NOW)[0], timeout=2.0)
    finally:
        server.stop()
    with pytest.raises(peers.Unanswered, match="refused"):  # nobody listens
        peers.post("127.0.0.1", port, data, timeout=0.5)


def test_a_peer_that_does_not_answer_in_time_is_unanswered_with_the_timeout():
    with socket.socket() as listener:  # accepts (the backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        data, _ = seals()[0].ask(ASK, NOW)
        with pytest.raises(peers.Unanswered, match=r"no answer within 0.2 s"):
            peers.post("127.0.0.1", listener.getsockname()[1], data, timeout=0.2)


def test_an_asker_that_hangs_up_midway_is_not_answered_and_leaves_no_traceback(capfd):
    asked = []
    server = PeerServer(("127.0.0.1", 0), lambda data: asked.append(data) or b"{}", timeout=2.0)
    server.start()
    try:
        port = server.server_address[1]
        with socket.create_connection(("127.0.0.1", port)) as cut:
            cut.sendall(b"POST /failsafe HTTP/1.1\r\nContent-Length: 100\r\n\r\n" + b"{" * 10)
        reply = peers.post("127.0.0.1", port, b"{}", timeout=2.0)  # served after the first
    finally:
        server.stop()
    assert reply == b"{}" and asked == [b"{}"], "the cut ask reached nobody"
    assert "Traceback" not in capfd.readouterr().err
