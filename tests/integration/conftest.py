"""Fixtures of the DCS tests: one etcd on loopback per module, backends on it, a request counter."""

from __future__ import annotations

import base64
import json

import pytest
import requests
import urllib3
import yaml

from tests.lab.etcd import EtcdCluster
from yaim import config, dcs

TTL_MS = 2000  # etcd's smallest lease TTL with its default timing is 2 s


@pytest.fixture(scope="module")
def etcd():
    with EtcdCluster(size=1) as cluster:
        yield cluster


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def v3(etcd, path, body):
    """One request to the gateway, as an operator's script would make it."""
    answer = requests.post(etcd.endpoints[0] + path, json=body, timeout=5).json()
    assert "error" not in answer, answer
    return answer


def key_of(etcd, key):
    """The raw v3 key-value of `key` (value decoded, lease as int), None if absent."""
    kvs = v3(etcd, "/v3/kv/range", {"key": b64(key)}).get("kvs", [])
    if not kvs:
        return None
    kv = kvs[0]
    return base64.b64decode(kv.get("value", "")).decode(), int(kv.get("lease", 0))


@pytest.fixture
def make(tmp_path, etcd, request):
    """Backends for one fresh cluster directory, one per node name; `dcs_type` etcd3
    unless the test is parametrised with it or its module sets `DCS_TYPE`."""
    cluster = "t" + str(abs(hash(request.node.name)) % 10**8)
    dcs_type = getattr(request, "param", getattr(request.module, "DCS_TYPE", "etcd3"))

    def backend(node="n1", endpoints=None, **settings):
        values = {
            "dcs-type": dcs_type,
            "dcs-endpoints": endpoints or etcd.endpoints,
            "dcs-clustername": cluster,
            "node-name": node,
            "interface": "lo",
            "checker-type": "none",
            "interval": 500,
            "ttl": TTL_MS,
            "retry-after": 50,
        }
        values.update(settings)
        path = tmp_path / f"{node}.yml"
        path.write_text(yaml.safe_dump(values))
        return dcs.connect(config.load(str(path), environ={}))

    backend.root = "/service/" + cluster
    backend.dcs_type = dcs_type

    def add_pool(address):
        if dcs_type == "etcd3":
            v3(etcd, "/v3/kv/put", {"key": b64(f"{backend.root}/ips/{address}")})
        else:
            etcd.put_dir(f"{backend.root}/ips/{address}")

    backend.add_pool = add_pool
    return backend


@pytest.fixture
def requests_made(monkeypatch):
    """Counts every HTTP request any client in this process sends (python-etcd and
    requests both go through urllib3's connection pools)."""
    count = [0]
    urlopen = urllib3.connectionpool.HTTPConnectionPool.urlopen

    def counting(pool, *args, **kwargs):
        count[0] += 1
        return urlopen(pool, *args, **kwargs)

    monkeypatch.setattr(urllib3.connectionpool.HTTPConnectionPool, "urlopen", counting)
    return lambda: count[0]


STATUS = "http://127.0.0.1:9720"  # a lab node's status endpoint, in its namespace


def request(lab, i, path, method="GET"):
    """(status code, body) of one request to node i's endpoint."""
    argv = ["curl", "-s", "--max-time", "2", "-X", method, "-w", "\n%{http_code}", STATUS + path]
    out = lab.lab.run(lab.lab.node_ns(i), argv).stdout
    body, _, code = out.rpartition("\n")
    return int(code), body


def status(lab, i):
    code, body = request(lab, i, "/status")
    assert code == 200, body
    return json.loads(body)
