"""Real etcd members for tests, on loopback or inside a lab namespace, and clients.

The clients go through `curl` so that the same code reaches members inside a
network namespace (`ip netns exec NS curl ...`), where the test process itself
cannot open a connection. Members can serve client TLS (`tls`, with client
certificates required); `ClusterKeys` is the operator's side of a yaim cluster
through either API.

The etcd binary is YAIM_TEST_ETCD (default `etcd` on PATH, bookworm's 3.4), so the
same tests run on the releases lab.etcd_releases fetches; `etcd_version` tells which
release runs, and the v3 paths the lab and the tests write as etcd 3.4 serves them
("/v3/kv/range") go to that release's gateway prefix (`gateway_path`).
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Set, Tuple, Union
from urllib.parse import quote

from lab.util import command_line, netns_argv, spawn, stop_processes, tail, wait_until
from yaim.dcs.gateway import path_for, prefix_for, release_of

if TYPE_CHECKING:  # cryptography only where TLS is tested (not in the bullseye tree)
    from lab.certs import TLSFiles

POOL_DIR = "/service/yaim/ips"
NODES_DIR = "/service/yaim/nodes"
DRAIN_DIR = "/service/yaim/drain"

START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
KEY_NOT_FOUND = 100


class EtcdError(RuntimeError):
    """An etcd request failed, or a member did not come up."""


class EtcdUnreachable(EtcdError):
    """No (JSON) answer from an endpoint."""


ETCD = "etcd"  # bookworm's etcd-server, on PATH


def etcd_binary() -> str:
    """The etcd the lab starts: YAIM_TEST_ETCD (a path, or a name on PATH), else ETCD."""
    binary = os.environ.get("YAIM_TEST_ETCD") or ETCD
    return str(Path(binary).resolve()) if "/" in binary else binary


@functools.lru_cache(maxsize=None)
def _version_of(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        raise EtcdError(f"YAIM_TEST_ETCD={binary}: {exc}") from exc
    found = re.search(r"etcd Version: (\S+)", out.stdout)
    if found is None:
        raise EtcdError(f"{binary} --version printed no version: {out.stdout!r} {out.stderr!r}")
    return found.group(1)


def etcd_version() -> str:
    """The release of `etcd_binary()` ("3.3.25"), from its --version."""
    return _version_of(etcd_binary())


def etcd_release() -> Tuple[int, int]:
    """(major, minor) of `etcd_version()`."""
    release = release_of(etcd_version())
    if release is None:
        raise EtcdError(f"{etcd_binary()}: not a release: {etcd_version()!r}")
    return release


@functools.lru_cache(maxsize=None)
def etcdutl() -> Optional[Path]:
    """The etcdutl beside the etcd under test (the same package's), if it has `check
    v2store`: trixie's 3.5.16 has none, sid's 3.5.30 has it."""
    tool = Path(etcd_binary()).parent / "etcdutl"
    if etcd_release() != (3, 5) or not tool.exists():
        return None
    probe = [str(tool), "check", "v2store", "--help"]
    return tool if subprocess.run(probe, capture_output=True, timeout=60).returncode == 0 else None


def check_v2store(data_dir: Path) -> subprocess.CompletedProcess:
    """`etcdutl check v2store` of a stopped member's data dir: what etcd 3.6 checks before
    it starts (it reads the v2 store of the member's last snapshot)."""
    argv = [str(etcdutl()), "check", "v2store", "--data-dir", str(data_dir)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def gateway_path(path: str) -> str:
    """A v3 path as etcd 3.4 serves it ("/v3/kv/range") on the release under test;
    any other path as it is."""
    if not path.startswith("/v3/"):
        return path
    return path_for(prefix_for(etcd_version()), path[len("/v3") :])


def etcd_request(
    endpoint: str,
    method: str,
    path: str,
    data: Optional[Dict[str, str]] = None,
    netns: Optional[str] = None,
    timeout: float = 5.0,
    body: Optional[Dict[str, Any]] = None,
    curl_args: Sequence[str] = (),
) -> dict:
    """One HTTP request to `endpoint` + `path` (form `data`, or a JSON `body`); the JSON answer.

    Runs curl (with `curl_args`, e.g. TLS files) inside `netns` when given. An answer
    carrying an etcd error is returned as is; no answer raises EtcdUnreachable.
    """
    url = endpoint + gateway_path(path)
    argv = ["curl", "-sS", *curl_args, "--max-time", str(timeout), "-X", method, url]
    for key, value in (data or {}).items():
        argv += ["--data-urlencode", f"{key}={value}"]
    if body is not None:
        argv += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
    full = netns_argv(netns, argv)
    try:
        res = subprocess.run(full, capture_output=True, text=True, timeout=timeout + 5)
    except subprocess.TimeoutExpired as exc:
        raise EtcdUnreachable(f"{command_line(full)}: no answer") from exc
    if res.returncode != 0:
        raise EtcdUnreachable(f"{command_line(full)}: exit {res.returncode}: {res.stderr}")
    try:
        return json.loads(res.stdout)
    except ValueError as exc:
        raise EtcdUnreachable(f"{command_line(full)}: not JSON: {res.stdout!r}") from exc


def _v2(
    endpoint: str,
    method: str,
    key: str,
    netns: Optional[str],
    data: Optional[Dict[str, str]] = None,
    query: str = "",
    curl_args: Sequence[str] = (),
) -> Optional[dict]:
    """A v2 keys request; the answer, None for "key not found", EtcdError for other errors."""
    path = "/v2/keys" + key + query
    answer = etcd_request(endpoint, method, path, data, netns, curl_args=curl_args)
    code = answer.get("errorCode")
    if code == KEY_NOT_FOUND:
        return None
    if code is not None:
        raise EtcdError(f"{method} {key}: {answer}")
    return answer


def etcd_put_dir(endpoint: str, key: str, netns: Optional[str] = None) -> dict:
    """Create the directory `key` (like the seed's `curl -XPUT ... -d dir=true`)."""
    answer = _v2(endpoint, "PUT", key, netns, {"dir": "true"})
    assert answer is not None
    return answer


def etcd_put(
    endpoint: str, key: str, value: str, ttl: Optional[int] = None, netns: Optional[str] = None
) -> dict:
    """Set `key` to `value`, with a TTL in seconds when given."""
    data = {"value": value}
    if ttl is not None:
        data["ttl"] = str(ttl)
    answer = _v2(endpoint, "PUT", key, netns, data)
    assert answer is not None
    return answer


def etcd_get(
    endpoint: str, key: str, recursive: bool = False, netns: Optional[str] = None
) -> Optional[dict]:
    """The v2 node of `key` (dict with value/dir/nodes/ttl), or None if absent."""
    answer = _v2(endpoint, "GET", key, netns, query="?recursive=true" if recursive else "")
    return None if answer is None else answer["node"]


def etcd_delete(
    endpoint: str, key: str, recursive: bool = False, netns: Optional[str] = None
) -> bool:
    """Delete `key` (a whole directory when `recursive`); False if it was absent."""
    query = "?recursive=true" if recursive else ""
    return _v2(endpoint, "DELETE", key, netns, query=query) is not None


def _free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class _Member:
    name: str
    host: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: Optional[subprocess.Popen] = None
    scheme: str = "http"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"


class EtcdCluster:
    """`size` etcd members with the v2 API enabled (off with `v2` False), one data
    directory each.

    With `netns` None the members listen on `host` (loopback) on free ports.
    Inside a namespace they listen on `host`, or member i on `host[i]` when a
    list is given, with client port 2379 and peer port 2380, shifted by 10 for
    each earlier member on the same host. Logs go to files in `base_dir`
    (a temporary directory removed at stop when not given). With `tls` the client
    URLs are https and every client must show a certificate of `tls.ca`. With
    `snapshot_count` a member snapshots its store after that many changes (etcd's
    --snapshot-count), so that what an offline tool reads of the data directory (the
    v2 store is in the snapshot files) is recent.
    """

    def __init__(
        self,
        size: int = 1,
        netns: Optional[str] = None,
        host: Union[str, Sequence[str]] = "127.0.0.1",
        base_dir: Optional[Path] = None,
        tls: Optional[TLSFiles] = None,
        v2: bool = True,
        snapshot_count: Optional[int] = None,
    ) -> None:
        hosts = [host] * size if isinstance(host, str) else list(host)
        if len(hosts) != size:
            raise ValueError(f"need {size} hosts, got {hosts}")
        self.netns = netns
        self.tls = tls
        self.v2 = v2
        self.snapshot_count = snapshot_count
        self.binary = etcd_binary()
        self._own_dir = base_dir is None
        self.base_dir = Path(tempfile.mkdtemp(prefix="yt-etcd-")) if base_dir is None else base_dir
        self.token = "yt-" + secrets.token_hex(4)
        self.members: List[_Member] = []
        for i, member_host in enumerate(hosts):
            if netns is None:
                ports = (_free_port(), _free_port())
            else:
                shift = 10 * hosts[:i].count(member_host)
                ports = (2379 + shift, 2380 + shift)
            self.members.append(
                _Member(
                    name=f"m{i}",
                    host=member_host,
                    client_port=ports[0],
                    peer_port=ports[1],
                    data_dir=self.base_dir / f"m{i}.data",
                    log_path=self.base_dir / f"m{i}.log",
                    scheme="http" if tls is None else "https",
                )
            )

    @property
    def curl_args(self) -> List[str]:
        """What curl needs to talk to the members: the CA and a client certificate, and
        HTTP/1.1 as yaim's clients speak it (over TLS curl offers HTTP/2, and a CI run had
        every v2 auth request of one module fail with "Stream error in the HTTP/2 framing
        layer", which no rerun showed again)."""
        if self.tls is None:
            return []
        tls = self.tls
        return [
            "--http1.1",
            "--cacert",
            str(tls.ca),
            "--cert",
            str(tls.client_cert),
            "--key",
            str(tls.client_key),
        ]

    @property
    def endpoints(self) -> List[str]:
        """Client URLs of all members, member 0 first."""
        return [m.client_url for m in self.members]

    def _argv(self, member: _Member, state: str) -> List[str]:
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        # etcd 3.3 has only its older logger, with --log-output; 3.4 has both.
        logging = (
            ["--log-output=stderr"]
            if etcd_release() < (3, 4)
            else ["--logger=zap", "--log-outputs=stderr"]
        )
        return [
            self.binary,
            "--name=" + member.name,
            "--data-dir=" + str(member.data_dir),
            "--enable-v2=" + ("true" if self.v2 else "false"),
            *logging,
            "--listen-client-urls=" + member.client_url,
            "--advertise-client-urls=" + member.client_url,
            "--listen-peer-urls=" + member.peer_url,
            "--initial-advertise-peer-urls=" + member.peer_url,
            "--initial-cluster=" + initial,
            "--initial-cluster-state=" + state,
            "--initial-cluster-token=" + self.token,
            *self._tls_args(),
            *([] if self.snapshot_count is None else [f"--snapshot-count={self.snapshot_count}"]),
        ]

    def _tls_args(self) -> List[str]:
        if self.tls is None:
            return []
        return [
            "--cert-file=" + str(self.tls.server_cert),
            "--key-file=" + str(self.tls.server_key),
            "--trusted-ca-file=" + str(self.tls.ca),
            "--client-cert-auth=true",
        ]

    def _spawn(self, i: int, state: str) -> None:
        member = self.members[i]
        if member.proc is not None and member.proc.poll() is None:
            raise EtcdError(f"member {i} is already running")
        member.proc = spawn(self._argv(member, state), member.log_path, self.netns)

    def healthy(self, i: int) -> bool:
        """Whether member i answers /health with health "true" (it has a leader)."""
        member = self.members[i]
        if member.proc is None or member.proc.poll() is not None:
            raise EtcdError(f"member {i} is not running\n{tail(member.log_path)}")
        answer = etcd_request(
            member.client_url, "GET", "/health", netns=self.netns, curl_args=self.curl_args
        )
        return answer.get("health") in ("true", True)

    def _wait_healthy(self, indexes: Sequence[int], timeout: float) -> None:
        try:
            wait_until(
                lambda: all(self.healthy(i) for i in indexes),
                timeout,
                interval=0.05,
                what=f"etcd members {list(indexes)} healthy",
                ignore=(EtcdUnreachable,),
            )
        except TimeoutError as exc:
            raise EtcdError(f"{exc}\n{self.logs()}") from exc

    def start(self, timeout: float = START_TIMEOUT) -> EtcdCluster:
        """Start all members and wait until each one is healthy."""
        try:
            for i in range(len(self.members)):
                self._spawn(i, "new")
            self._wait_healthy(range(len(self.members)), timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop_member(self, i: int, timeout: float = STOP_TIMEOUT, sig: int = signal.SIGTERM) -> None:
        """Stop member i: `sig` (SIGKILL: a power loss), SIGKILL after `timeout` seconds."""
        proc = self.members[i].proc
        if proc is not None:
            stop_processes([proc], timeout, sig)

    def start_member(self, i: int, timeout: float = START_TIMEOUT) -> None:
        """Restart a stopped member i on its old data directory; wait until healthy."""
        self.start_members([i], timeout)

    def start_members(self, indexes: Sequence[int], timeout: float = START_TIMEOUT) -> None:
        """Restart stopped members together (one alone has no quorum); wait until healthy."""
        for i in indexes:
            self._spawn(i, "existing")
        self._wait_healthy(indexes, timeout)

    def running(self, i: int) -> bool:
        proc = self.members[i].proc
        return proc is not None and proc.poll() is None

    def leader(self) -> Optional[int]:
        """The index of the member that is the raft leader (v3 maintenance status), or
        None when no running member names itself leader."""
        for i, member in enumerate(self.members):
            if not self.running(i):
                continue
            try:
                answer = etcd_request(
                    member.client_url,
                    "POST",
                    "/v3/maintenance/status",
                    netns=self.netns,
                    timeout=2.0,
                    body={},
                    curl_args=self.curl_args,
                )
            except EtcdUnreachable:
                continue
            me = answer.get("header", {}).get("member_id")
            if me is not None and answer.get("leader") == me:
                return i
        return None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop every member (by pid), one after the other: a leader stopped together
        with its followers waits seconds for a leadership transfer that cannot happen.
        Removes the temporary directory if it is ours."""
        for i in reversed(range(len(self.members))):
            self.stop_member(i, timeout)
        if self._own_dir:
            shutil.rmtree(str(self.base_dir), ignore_errors=True)

    def logs(self, lines: int = 40) -> str:
        """The tails of all member logs."""
        return "".join(tail(m.log_path, lines) for m in self.members)

    def get(self, key: str, recursive: bool = False, member: int = 0) -> Optional[dict]:
        """`etcd_get` through member `member`."""
        return etcd_get(self.endpoints[member], key, recursive, self.netns)

    def put(self, key: str, value: str, ttl: Optional[int] = None, member: int = 0) -> dict:
        """`etcd_put` through member `member`."""
        return etcd_put(self.endpoints[member], key, value, ttl, self.netns)

    def put_dir(self, key: str, member: int = 0) -> dict:
        """`etcd_put_dir` through member `member`."""
        return etcd_put_dir(self.endpoints[member], key, self.netns)

    def delete(self, key: str, recursive: bool = False, member: int = 0) -> bool:
        """`etcd_delete` through member `member`."""
        return etcd_delete(self.endpoints[member], key, recursive, self.netns)

    def snapshot_past(self, member: int = 0) -> None:
        """Make changes enough (v3 keys outside any yaim cluster's directory) that every
        member with `snapshot_count` set snapshots its stores after them."""
        assert self.snapshot_count is not None, "no snapshot_count: snapshots come rarely"
        for n in range(2 * self.snapshot_count + 2):
            body = {"key": _b64(f"/yt-snapshot/{n}"), "value": _b64("x")}
            etcd_request(
                self.endpoints[member],
                "POST",
                "/v3/kv/put",
                netns=self.netns,
                body=body,
                curl_args=self.curl_args,
            )

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _b64(data: Union[str, bytes]) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


class ClusterKeys:
    """The operator's side of one yaim cluster in etcd, through the API of `dcs_type`:
    pool entries put in and taken out the way the contract describes (v2: a directory
    per address, as the seed's curl; v3: a plain key), holders and node keys read back."""

    def __init__(
        self,
        cluster: EtcdCluster,
        dcs_type: str = "etcd",
        root: str = "/service/yaim",
        endpoint: Optional[str] = None,
    ) -> None:
        self.cluster = cluster
        self.v3 = dcs_type == "etcd3"
        self.root = root
        self.endpoint = endpoint or cluster.endpoints[0]

    def _v3(self, path: str, body: Dict[str, Any]) -> dict:
        answer = etcd_request(
            self.endpoint,
            "POST",
            path,
            netns=self.cluster.netns,
            body=body,
            curl_args=self.cluster.curl_args,
        )
        if "error" in answer:
            raise EtcdError(f"{path} {body}: {answer}")
        return answer

    def _v2(self, method: str, key: str, data: Optional[Dict[str, str]] = None, query: str = ""):
        netns, curl_args = self.cluster.netns, self.cluster.curl_args
        return _v2(self.endpoint, method, self.root + key, netns, data, query, curl_args)

    def _range(self, prefix: str) -> Dict[str, str]:
        """Key (below the root) -> value of every v3 key starting with `prefix`."""
        start = self.root + prefix
        end = start[:-1] + chr(ord(start[-1]) + 1)
        answer = self._v3("/v3/kv/range", {"key": _b64(start), "range_end": _b64(end)})
        return {
            base64.b64decode(kv["key"]).decode(errors="replace")[
                len(self.root) :
            ]: base64.b64decode(kv.get("value", "")).decode(errors="replace")
            for kv in answer.get("kvs", [])
        }

    def add(self, address: object) -> None:
        """Put an address into the pool."""
        key = f"/ips/{address}"
        if self.v3:
            self._v3("/v3/kv/put", {"key": _b64(self.root + key), "value": ""})
        else:
            self._v2("PUT", key, {"dir": "true"})

    def put_key(self, key: str, value: Optional[str]) -> None:
        """Set `key` (below the root) to `value`, or delete it for None: another program's
        key, as Patroni writes its leader key."""
        if self.v3:
            path = "/v3/kv/put" if value is not None else "/v3/kv/deleterange"
            body = {"key": _b64(self.root + key)}
            if value is not None:
                body["value"] = _b64(value)
            self._v3(path, body)
        elif value is None:
            self._v2("DELETE", key)
        else:
            self._v2("PUT", key, {"value": value})

    def remove(self, address: object) -> None:
        """Take an address out of the pool (v2: its directory with the mark)."""
        key = f"/ips/{address}"
        if self.v3:
            self._v3("/v3/kv/deleterange", {"key": _b64(self.root + key)})
        else:
            self._v2("DELETE", key, query="?recursive=true")

    def pool(self) -> Set[str]:
        """The names of the pool entries."""
        if self.v3:
            return {k.split("/")[2] for k in self._range("/ips/") if k.count("/") == 2}
        tree = self._v2("GET", "/ips") or {"node": {}}
        return {n["key"].rsplit("/", 1)[1] for n in tree["node"].get("nodes", [])}

    def holders(self) -> Dict[str, str]:
        """Address name -> the node named in its mark."""
        if self.v3:
            marks = self._range("/ips/")
            return {k.split("/")[2]: v for k, v in marks.items() if k.endswith("/marked")}
        tree = self._v2("GET", "/ips", query="?recursive=true") or {"node": {}}
        return {
            entry["key"].rsplit("/", 1)[1]: child["value"]
            for entry in tree["node"].get("nodes", [])
            for child in entry.get("nodes", [])
            if child["key"].endswith("/marked")
        }

    def nodes(self) -> Set[str]:
        """Names of the node keys."""
        if self.v3:
            return {key.rsplit("/", 1)[1] for key in self._range("/nodes/")}
        tree = self._v2("GET", "/nodes") or {"node": {}}
        return {n["key"].rsplit("/", 1)[1] for n in tree["node"].get("nodes", [])}

    def syncing(self) -> Set[str]:
        """Names of the nodes whose sync key is there (v2: it expires a ttl after the
        write; v3: it lives on the node's lease)."""
        if self.v3:
            return {key.rsplit("/", 1)[1] for key in self._range("/sync/")}
        tree = self._v2("GET", "/sync") or {"node": {}}
        return {n["key"].rsplit("/", 1)[1] for n in tree["node"].get("nodes", [])}

    def put_raw(self, key: Union[str, bytes], value: Optional[bytes]) -> None:
        """Write `key` (below the root) exactly as given, bypassing every check yaim makes,
        as a careless operator or an attacker could: value None makes a (v2) directory;
        a bytes key (not UTF-8, say) only through v3. The body goes through a file, as
        1 MB does not fit on a command line."""
        with tempfile.NamedTemporaryFile(prefix="ytraw") as body:
            if self.v3:
                raw = key if isinstance(key, bytes) else key.encode()
                payload = {"key": _b64(self.root.encode() + raw), "value": _b64(value or b"")}
                body.write(json.dumps(payload).encode())
                path, data = gateway_path("/v3/kv/put"), ["--data-binary", f"@{body.name}"]
                method = "POST"
            else:
                path = "/v2/keys" + quote(self.root + str(key))
                data = ["-d", "dir=true"] if value is None else ["--data-binary", f"@{body.name}"]
                body.write(b"value=" + quote(value or b"").encode())
                method = "PUT"
            body.flush()
            argv = ["curl", "-sS", *self.cluster.curl_args, "-X", method, self.endpoint + path]
            done = subprocess.run(
                netns_argv(self.cluster.netns, [*argv, *data]),
                capture_output=True,
                timeout=30,
            )
        if done.returncode != 0 or b'"error' in done.stdout:
            raise EtcdError(f"raw put {key!r}: {done.stdout[:300]!r} {done.stderr[:300]!r}")

    def lose_history(self) -> None:
        """Make etcd drop the events up to now, as a watch that reconnects from before
        would need them: v3 compacts its history, v2 goes past the 1000 events it keeps
        (writes outside the cluster directory, in one process in the etcd's namespace)."""
        outside = "/yaim-chaos-elsewhere"
        if self.v3:
            put = {"key": _b64(outside.encode()), "value": _b64(b"x")}
            revision = self._v3("/v3/kv/put", put)["header"]["revision"]
            self._v3("/v3/kv/compaction", {"revision": str(revision), "physical": True})
            return
        script = (
            "import sys, urllib.request\n"
            "for i in range(1010):\n"
            "    urllib.request.urlopen(urllib.request.Request(\n"
            "        sys.argv[1] + '/v2/keys" + outside + "', data=b'value=x', method='PUT'),\n"
            "        timeout=5).read()\n"
        )
        argv = netns_argv(self.cluster.netns, [sys.executable, "-c", script, self.endpoint])
        subprocess.run(argv, check=True, capture_output=True, timeout=60)

    def delete_raw(self, key: str) -> None:
        """Delete `key` (below the root) and everything under it, as given."""
        if self.v3:
            start = (self.root + key).encode()
            self._v3("/v3/kv/deleterange", {"key": _b64(start)})
            below = {"key": _b64(start + b"/"), "range_end": _b64(start + b"0")}  # "0" is "/" + 1
            self._v3("/v3/kv/deleterange", below)
        else:
            self._v2("DELETE", quote(key), query="?recursive=true")

    def clear_conflicts(self) -> Set[str]:
        """Delete every `conflicts` note, as an operator who has looked; the addresses."""
        if self.v3:
            found = {key.rsplit("/", 1)[1] for key in self._range("/conflicts/")}
            start = self.root + "/conflicts/"
            end = start[:-1] + chr(ord(start[-1]) + 1)
            self._v3("/v3/kv/deleterange", {"key": _b64(start), "range_end": _b64(end)})
            return found
        tree = self._v2("GET", "/conflicts") or {"node": {}}
        found = {n["key"].rsplit("/", 1)[1] for n in tree["node"].get("nodes", [])}
        if found:
            self._v2("DELETE", "/conflicts", query="?recursive=true")
        return found
