"""The peers' messages for the failsafe hold: wire format, authentication, replay defence.

An ask (yaim.failsafe.Ask) goes to every other node of the asker's view as one HTTP
POST to /failsafe on its `peer-listen` address; the answer comes back in the
response. No unauthenticated host may make a node keep or drop anything, so both
are sealed with HMAC-SHA256 under the secret every node shares (`peer-secret-file`):

    {"body": "<the message as canonical JSON text>", "mac": "<hex HMAC of it>"}

The MAC covers the body's exact bytes (no re-serialisation to agree on) behind a
label naming the protocol's version, so a message of another version or kind
cannot pass for this one. A body carries its kind, the sender's node name, its wall
time (time.time: monotonic clocks mean nothing across hosts) and a random nonce:

- an ask is refused when its time is more than ttl away from the receiver's wall
  clock (stale, or from a clock too far off to reason with), or when its nonce
  was seen already (replayed); nonces are kept for 2 x ttl, longer than a
  message stays fresh, and at most NONCE_LIMIT of them (past that, asks are
  refused: a no is always safe);
- an answer must name the asker and echo the nonce of the very ask it answers,
  which the asker made fresh: an old answer cannot be replayed for a new ask.

Clocks more than ttl apart refuse every ask: the failsafe then never holds, which
is safe. Everything a message carries is checked (names by yaim.names, addresses by
ipaddress, sizes bounded) before it is used: the endpoint is open to the network.

Written on the standard library (hmac, json, http.server, http.client): a few
hundred bytes a second between a handful of nodes needs no framework, and the
daemon must not depend on a package for its last line of defence.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import secrets
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Callable, Dict, List, Optional, Tuple

from yaim.failsafe import Answer, Ask
from yaim.names import is_name
from yaim.view import IPAddress

log = logging.getLogger(__name__)

LABEL = b"yaim-peer-v1\n"
PATH = "/failsafe"
DEFAULT_PORT = 9721
MESSAGE_LIMIT = 256 * 1024  # bytes of one message: a pool of thousands of addresses fits
ITEM_LIMIT = 4096  # names in a view, addresses held
NONCE_LIMIT = 65536
CONNECTION_LIMIT = 32  # connections served at once (a few per peer is plenty)
SECRET_MINIMUM = 16  # bytes


class Refused(ValueError):
    """A message that is not authentic, not fresh, replayed or malformed."""


def read_secret(path: str) -> bytes:
    """The shared secret from `peer-secret-file` (surrounding whitespace stripped)."""
    with open(path, "rb") as handle:
        secret = handle.read(4096).strip()
    if len(secret) < SECRET_MINIMUM:
        raise ValueError(f"{path}: the peer secret must be {SECRET_MINIMUM} bytes at least")
    return secret


class Nonces:
    """The nonces of the asks accepted recently: a second use of one is a replay."""

    def __init__(self, keep: float) -> None:
        self.keep = keep
        self.seen: Dict[str, float] = {}  # nonce -> when it may be forgotten (wall time)

    def first_use(self, nonce: str, now: float) -> bool:
        """Record `nonce`; False if it was seen already, or if too many are kept to tell."""
        if len(self.seen) >= NONCE_LIMIT:
            self.seen = {n: until for n, until in self.seen.items() if until > now}
        if nonce in self.seen or len(self.seen) >= NONCE_LIMIT:
            return False
        self.seen[nonce] = now + self.keep
        return True


class Seal:
    """Seals and opens the messages of one node under the shared secret."""

    def __init__(self, node: str, secret: bytes, ttl: float) -> None:
        self.node = node
        self.secret = secret
        self.ttl = ttl
        self.nonces = Nonces(2 * ttl)

    def _mac(self, body: bytes) -> str:
        return hmac.new(self.secret, LABEL + body, hashlib.sha256).hexdigest()

    def seal(self, body: Dict[str, Any]) -> bytes:
        text = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        return json.dumps({"body": text.decode(), "mac": self._mac(text)}).encode()

    def open(self, data: bytes, kind: str, now: float) -> Dict[str, Any]:
        """The body of an authentic message of `kind` sent within ttl of `now` (wall time)."""
        if len(data) > MESSAGE_LIMIT:
            raise Refused("too long")
        try:  # anyone may send anything: nesting too deep, text that does not encode
            envelope = json.loads(data)
            text, mac = envelope["body"], envelope["mac"]
            expected = self._mac(text.encode()).encode()
            authentic = hmac.compare_digest(mac.encode("ascii"), expected)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            raise Refused("not a sealed message") from None
        if not authentic:
            raise Refused("wrong signature")
        body = json.loads(text)  # signed with the secret: JSON as this module writes it
        if not isinstance(body, dict) or body.get("kind") != kind:
            raise Refused(f"not an {kind}")
        sent = body.get("time")
        if isinstance(sent, bool) or not isinstance(sent, (int, float)):
            raise Refused("no time")
        if abs(now - sent) > self.ttl:
            raise Refused("stale, or the clocks are more than ttl apart")
        node = body.get("node")
        if not isinstance(node, str) or not is_name(node):
            raise Refused("no valid node name")
        return body

    # --- the two messages ---

    def ask(self, ask: Ask, now: float) -> Tuple[bytes, str]:
        """An ask, sealed; and its nonce, which the answer must echo."""
        nonce = secrets.token_hex(16)
        body = {
            "kind": "ask",
            "node": ask.node,
            "time": now,
            "nonce": nonce,
            "view": sorted(ask.view),
            "held": sorted(str(a) for a in ask.held),
        }
        return self.seal(body), nonce

    def open_ask(self, data: bytes, now: float) -> Tuple[Ask, str]:
        """An ask received: (the ask, its nonce); Refused if anything is wrong with it."""
        body = self.open(data, "ask", now)
        nonce, view, held = body.get("nonce"), body.get("view"), body.get("held")
        if not isinstance(nonce, str) or not 16 <= len(nonce) <= 64:
            raise Refused("no nonce")
        names, addresses = _names(view), _addresses(held)
        if not self.nonces.first_use(nonce, now):
            raise Refused("replayed")
        return Ask(body["node"], names, addresses), nonce

    def answer(self, answer: Answer, asker: str, nonce: str, now: float) -> bytes:
        body = {
            "kind": "answer",
            "node": answer.node,
            "to": asker,
            "ask": nonce,
            "time": now,
            "yes": answer.yes,
            "reason": answer.reason[:200],
        }
        return self.seal(body)

    def open_answer(self, data: bytes, peer: str, nonce: str, now: float) -> Answer:
        """The answer of `peer` to this node's ask `nonce`; Refused if it is not exactly that."""
        body = self.open(data, "answer", now)
        if body["node"] != peer or body.get("to") != self.node or body.get("ask") != nonce:
            raise Refused("not the answer to this ask")
        yes, reason = body.get("yes"), body.get("reason")
        if not isinstance(yes, bool) or not isinstance(reason, str):
            raise Refused("no yes or no")
        return Answer(peer, yes, reason)


def _names(raw: Any) -> frozenset:
    if not isinstance(raw, list) or len(raw) > ITEM_LIMIT:
        raise Refused("no view")
    if not all(isinstance(name, str) and is_name(name) for name in raw):
        raise Refused("a node name in the view is not valid")
    return frozenset(raw)


def _addresses(raw: Any) -> frozenset:
    if not isinstance(raw, list) or len(raw) > ITEM_LIMIT:
        raise Refused("no addresses")
    found: List[IPAddress] = []
    for text in raw:
        try:
            found.append(ipaddress.ip_address(text))
        except ValueError:
            raise Refused("an address held is not valid") from None
    return frozenset(found)


# --- the endpoint and the client ---

# What the server does with a request's body: the response's body, or None to refuse.
Handle = Callable[[bytes], Optional[bytes]]


class _Handler(BaseHTTPRequestHandler):
    server: PeerServer

    def setup(self) -> None:
        self.timeout = self.server.request_timeout  # a slow or silent client is dropped
        super().setup()

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length", "")
        if self.path != PATH or not length.isdigit() or int(length) > MESSAGE_LIMIT:
            self._reply(400, b"")
            return
        data = self.rfile.read(int(length))
        if len(data) < int(length):
            return  # the asker gave up (its timeout) in the middle: nobody to answer
        reply = self.server.answer(data)
        if reply is None:
            self._reply(403, b"")
        else:
            self._reply(200, reply)

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a refused message is the handler's to log, once, with its reason."""


class PeerServer(socketserver.ThreadingMixIn, HTTPServer):
    """The peer endpoint: POST /failsafe, answered by `answer` (a sealed answer, or 403)."""

    daemon_threads = True

    def __init__(self, address: Tuple[str, int], answer: Handle, timeout: float) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)
        self.answer = answer
        self.request_timeout = timeout
        self.slots = threading.BoundedSemaphore(CONNECTION_LIMIT)

    def process_request(self, request: Any, client_address: Any) -> None:
        """A connection past CONNECTION_LIMIT is closed at once: anyone may connect."""
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A peer that hung up or timed out before its answer is the network's doing, not a
        bug: one debug line, not socketserver's traceback on stderr."""
        log.debug("peer %s: %s", client_address[0], sys.exc_info()[1])

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="peers", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class Unanswered(OSError):
    """An ask that got no answer: no connection, a timeout, or a refusal (its status)."""


def post(host: str, port: int, data: bytes, timeout: float) -> bytes:
    """Send one sealed ask; the response's body. Unanswered, saying why, if there is none."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("POST", PATH, data, {"Content-Type": "application/json"})
        response = connection.getresponse()
        body = response.read(MESSAGE_LIMIT + 1)
    except socket.timeout:
        raise Unanswered(f"no answer within {timeout:g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise Unanswered(str(exc) or type(exc).__name__) from None
    finally:
        connection.close()
    if response.status != 200:
        raise Unanswered(f"refused the ask (HTTP {response.status})")
    return body
