"""etcd v3's JSON gateway (POST /v3/...): one member's client, the wire format, the errors.

The gateway's prefix depends on the release: etcd 3.2 serves /v3alpha, 3.3 /v3beta,
3.4 and later /v3 (3.3 answers /v3 with a plain 404). Each client asks its member's
`GET /version` once, at its first request and again after a request that got no
answer (the member may have been upgraded meanwhile), and puts the prefix before
the path tails its callers give ("/kv/range"), as Patroni does. Before 3.4 three
lease calls lived under /kv (`TAILS_BEFORE_3_4`, checked against etcd 3.3.25).

The client is a thin one of our own, on yaim.httpclient (the standard library's
http.client): the gateway is plain JSON (keys and values base64, int64 as strings),
and etcd3gw has no authentication and needs a newer Python than yaim supports. An
error answer carries etcd's gRPC status code and message: errors are told apart by the
code, and by the message only among the errors etcd gives one code. The backend's
operations are in yaim.dcs.etcd3.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
from typing import Any, Dict, Iterator, NamedTuple, Optional, Tuple

from yaim.dcs import Refused, Transient, describe, system_ca_file
from yaim.httpclient import Client, HTTPFailure, Response, Stream, Timeout

log = logging.getLogger(__name__)

# gRPC status codes etcd answers with.
INVALID_ARGUMENT = 3
NOT_FOUND = 5
PERMISSION_DENIED = 7
FAILED_PRECONDITION = 9
UNAUTHENTICATED = 16


class EtcdError(NamedTuple):
    """One of etcd's errors (its v3rpc/rpctypes) that shares its gRPC code with others:
    the code, and words of its message that tell it from them."""

    code: int
    words: str


# ErrGRPCAuthNotEnabled: an authenticate request while authentication is off.
AUTH_NOT_ENABLED = EtcdError(FAILED_PRECONDITION, "authentication is not enabled")
# ErrGRPCAuthFailed: an unknown user or a wrong password.
AUTH_FAILED = EtcdError(INVALID_ARGUMENT, "authentication failed")
# ErrGRPCUserEmpty: a request without a token while authentication is on.
USER_EMPTY = EtcdError(INVALID_ARGUMENT, "user name is empty")
# ErrGRPCLeaseNotFound: a write on a lease that expired or was revoked.
LEASE_NOT_FOUND = EtcdError(NOT_FOUND, "requested lease not found")

# etcd's require-leader metadata (rpctypes.MetadataRequireLeaderKey), as the gateway
# forwards it: a stream asking for it ends ("no leader") when its member loses its leader.
REQUIRE_LEADER = {"Grpc-Metadata-Hasleader": "true"}
# Sent with every request. The gateway passes an Accept header on as the metadata
# "grpcgateway-accept", by which etcd (auth.AuthInfoFromTLS) tells its own gateway's
# calls from a client's: without it, a request that carries no token is taken for one
# of the user named in the common name of the certificate the gateway calls with,
# and refused ("permission denied") instead of asking for credentials.
ACCEPT = {"Accept": "application/json"}


# Path tails that etcd 3.2 and 3.3 served elsewhere; 3.4 moved them and kept these too.
TAILS_BEFORE_3_4 = {
    "/lease/timetolive": "/kv/lease/timetolive",
    "/lease/revoke": "/kv/lease/revoke",
    "/lease/leases": "/kv/lease/leases",
}


def release_of(version: str) -> Optional[Tuple[int, int]]:
    """(major, minor) of a release string such as "3.3.25"; None if it is none."""
    parts = version.split(".")
    if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()):
        return None
    return int(parts[0]), int(parts[1])


def prefix_for(version: str) -> str:
    """The gateway prefix of the release `version` (the `etcdserver` of /version); /v3
    for anything newer than 3.3 or not a release at all."""
    release = release_of(version)
    if release == (3, 2):
        return "/v3alpha"
    if release == (3, 3):
        return "/v3beta"
    return "/v3"


def path_for(prefix: str, tail: str) -> str:
    """The full path of the call `tail` ("/kv/range") under `prefix`."""
    if prefix != "/v3":
        tail = TAILS_BEFORE_3_4.get(tail, tail)
    return prefix + tail


class GatewayError(Exception):
    """etcd answered a request with an error: its gRPC code and message. The backend
    sorts it into Transient or Refused (`classify`)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code

    def means(self, error: EtcdError) -> bool:
        """Whether this is `error`: its code, and its words within that code only."""
        return self.code == error.code and error.words in str(self)


def classify(error: GatewayError, user: Optional[str], prefix: str) -> Exception:
    """What a failed request is to the retry policy: missing rights, or no credentials
    where etcd wants them, are Refused (with what to change); the rest is Transient."""
    if error.code == PERMISSION_DENIED:
        return Refused(
            f"{error}: user {user!r} needs read and write permission on the keys with"
            f" prefix {prefix}"
        )
    if user is None and error.means(USER_EMPTY):
        return Refused(f"etcd requires authentication, set etcd-user: {error}")
    return Transient(str(error))


class Quiet(Exception):
    """A watch stream brought nothing within its read timeout."""


def b64(text: str) -> str:
    """A key or value as the gateway takes it."""
    return base64.b64encode(text.encode()).decode("ascii")


def unb64(data: str) -> str:
    """A key or value as the gateway gives it; what is not UTF-8 shows as U+FFFD."""
    return base64.b64decode(data).decode("utf-8", "replace")


def range_end(prefix: str) -> str:
    """The end of the key range holding every key that starts with `prefix`."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def revision_of(answer: Dict[str, Any]) -> int:
    """The store's revision an answer reflects."""
    return int(answer.get("header", {}).get("revision", 0))


def error_of(answer: Dict[str, Any], status: int) -> GatewayError:
    """The error of a unary answer ({"error", "code", "message"}) or a stream message."""
    error = answer.get("error")
    if isinstance(error, dict):
        return GatewayError(int(error.get("grpc_code", 0)), error.get("message", str(error)))
    message = answer.get("message") or error or f"HTTP {status} without a message"
    return GatewayError(int(answer.get("code", 0)), message)


class KV(NamedTuple):
    """One key as the gateway lists it, decoded."""

    key: str
    value: str
    lease: int
    mod_revision: int
    create_revision: int

    @classmethod
    def parse(cls, kv: Dict[str, Any]) -> KV:
        return cls(
            unb64(kv["key"]),
            unb64(kv.get("value", "")),
            int(kv.get("lease", 0)),
            int(kv.get("mod_revision", 0)),
            int(kv.get("create_revision", 0)),
        )


class Gateway:
    """One member's JSON gateway: an HTTP client with the TLS settings, a token, and the
    member's release and prefix (None until asked)."""

    def __init__(self, url: str, config, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.user: Optional[str] = config.etcd_user
        self.password: str = config.etcd_password or ""
        self.token: Optional[str] = None
        self.version: Optional[str] = None
        self.prefix: Optional[str] = None
        context = None
        if self.url.startswith("https:"):  # no CA bundle from the environment
            context = ssl.create_default_context(cafile=config.etcd_ca_file or system_ca_file())
            if config.etcd_cert_file:
                context.load_cert_chain(config.etcd_cert_file, config.etcd_key_file)
        self.client = Client(self.url, timeout, context)

    def path(self, tail: str) -> str:
        """The full path of `tail` on this member, asking its release first if not known."""
        if self.prefix is None:
            answer = self._whole(self._version_request)
            try:
                self.version = str(answer.json().get("etcdserver", ""))
            except (ValueError, AttributeError):
                self.version = ""
            self.prefix = prefix_for(self.version)
            log.debug("%s: etcd %s, gateway %s", self.url, self.version or "?", self.prefix)
        return path_for(self.prefix, tail)

    def _version_request(self) -> Response:
        return self.client.request("GET", "/version", None, ACCEPT, retry_reused=True)

    def call(self, tail: str, body: Dict[str, Any]) -> Dict[str, Any]:
        """One request to `tail` ("/kv/range"); a token etcd no longer accepts is renewed
        once, and so is the empty one of an etcd that had authentication off at the last
        login."""
        self._login()
        try:
            return self._answer(self._post(tail, body))
        except GatewayError as exc:
            if self.user is None or not (exc.code == UNAUTHENTICATED or exc.means(USER_EMPTY)):
                raise
        self.token = None
        self._login()
        return self._answer(self._post(tail, body))

    def stream(self, tail: str, body: Dict[str, Any], read_timeout: float) -> Stream:
        """A streaming request (watch), on a connection of its own; its messages are read
        with `messages_of`. It asks to be ended when its member loses its leader: a watch
        on a member cut off from the others would stay open and silent, as if nothing
        happened."""
        self._login()
        headers = dict(self._headers(), **REQUIRE_LEADER)
        path = self.path(tail)
        try:
            stream = self.client.stream("POST", path, _json(body), headers, read_timeout)
        except HTTPFailure as exc:
            self.prefix = None
            raise Transient(describe(exc)) from exc
        if stream.status != 200:
            self._answer(self._whole(stream.read_all))
        return stream

    def _login(self) -> None:
        """Get a token when a user is configured and there is none yet."""
        if self.user is None or self.token is not None:
            return
        body = {"name": self.user, "password": self.password}
        try:
            answer = self._answer(self._post("/auth/authenticate", body))
        except GatewayError as exc:
            if exc.means(AUTH_NOT_ENABLED):
                log.warning("%s: etcd-user is set but etcd has authentication off", self.url)
                self.token = ""
                return
            failed = f"authentication as {self.user!r} failed: {exc}"
            if exc.means(AUTH_FAILED):
                raise Refused(failed) from None
            raise GatewayError(exc.code, failed) from None
        self.token = answer.get("token", "")

    def _headers(self) -> Dict[str, str]:
        return dict(ACCEPT, Authorization=self.token) if self.token else dict(ACCEPT)

    def _post(self, tail: str, body: Dict[str, Any]) -> Response:
        headers, path = self._headers(), self.path(tail)
        return self._whole(lambda: self.client.request("POST", path, _json(body), headers))

    def _whole(self, answer) -> Response:
        """The answer `answer()` gets; a request that got none is Transient, and the
        release is asked again before the next one."""
        try:
            return answer()
        except HTTPFailure as exc:
            self.prefix = None
            raise Transient(describe(exc)) from exc

    def _answer(self, response: Response) -> Dict[str, Any]:
        try:
            answer = response.json()
        except ValueError:
            text = " ".join(response.text.split())[:200] or "no answer"
            raise Transient(f"HTTP {response.status}: {text}") from None
        if response.status != 200 or "error" in answer:
            raise error_of(answer, response.status)
        return answer


def _json(body: Dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def messages_of(stream: Stream) -> Iterator[Dict[str, Any]]:
    """The newline-separated JSON messages of a stream as they arrive; Quiet on silence."""
    buffer = b""
    try:
        for chunk in stream.chunks():
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    yield json.loads(line)
    except Timeout as exc:
        raise Quiet() from exc
    except (HTTPFailure, ValueError) as exc:
        raise Transient(describe(exc)) from exc


def comparison(key: str, target: str, field: str, value: str, result: str = "EQUAL") -> dict:
    """One compare of a transaction: `key`'s `target` (`field` in JSON) against `value`."""
    return {"key": b64(key), "target": target, "result": result, field: value}


def created(key: str, result: str) -> dict:
    """create_revision EQUAL 0: the key does not exist; GREATER 0: it does."""
    return comparison(key, "CREATE", "create_revision", "0", result)
