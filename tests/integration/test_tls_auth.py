"""Both backends against an etcd that wants client TLS and has authentication on.

The etcd serves https with a certificate of a test CA and requires client
certificates of that CA. Authentication is on for both APIs (they keep separate
users): root, `yaim` with read and write on the cluster's prefix only, and
`outsider` with rights on another prefix. Right credentials work; every wrong
one fails with a DCSError naming the endpoint and the cause: after the retries
where another try could succeed (TLS, a dropped connection), at once where etcd
refused the credentials or the rights.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from typing import List

import pytest
import yaml

from lab.certs import TLSFiles, make_tls
from lab.etcd import ClusterKeys, EtcdCluster
from lab.util import netns_argv, wait_until
from yaim import config, ctl, dcs
from yaim.errors import DCSError

CLUSTER = "tls"
ROOT = f"/service/{CLUSTER}"
OTHER = "/service/other"
PASSWORDS = {"root": "root-secret", "yaim": "yaim-secret", "outsider": "outsider-secret"}
ROLES = {"yaim": ROOT, "outsider": OTHER}  # role (and user) -> the prefix it may use
A = ipaddress.ip_address("198.51.100.100")
BACKENDS = ["etcd", "etcd3"]


def etcdctl(cluster: EtcdCluster, *args: str) -> None:
    """etcdctl (v3 API) against member 0, with the cluster's client certificate."""
    tls = cluster.tls
    argv = [
        "etcdctl",
        "--endpoints=" + cluster.endpoints[0],
        f"--cacert={tls.ca}",
        f"--cert={tls.client_cert}",
        f"--key={tls.client_key}",
        *args,
    ]
    subprocess.run(netns_argv(cluster.netns, argv), check=True, capture_output=True, timeout=30)


def v2_auth(cluster: EtcdCluster, path: str, body: dict, as_root: bool = False) -> None:
    """One PUT to the v2 auth API with a JSON body; some answers are empty, so no JSON."""
    extra: List[str] = ["-u", "root:" + PASSWORDS["root"]] if as_root else []
    argv = ["curl", "-sS", "--fail-with-body", *cluster.curl_args, *extra, "-X", "PUT"]
    argv += [cluster.endpoints[0] + "/v2/auth" + path, "--data-binary", json.dumps(body)]
    done = subprocess.run(netns_argv(cluster.netns, argv), capture_output=True, timeout=30)
    assert done.returncode == 0, (path, done.stdout, done.stderr)


def enable_auth(cluster: EtcdCluster) -> None:
    """Users, roles limited to one prefix each, and authentication on, for both APIs."""
    for user, password in PASSWORDS.items():
        etcdctl(cluster, "user", "add", f"{user}:{password}")
        v2_auth(cluster, f"/users/{user}", {"user": user, "password": password})
    for role, prefix in ROLES.items():
        etcdctl(cluster, "role", "add", role)
        etcdctl(
            cluster, "role", "grant-permission", role, "--prefix=true", "readwrite", prefix + "/"
        )
        etcdctl(cluster, "user", "grant-role", role, role)
        # v2 grants recursive reads (and watches) of a directory only through a
        # pattern that is a prefix of its name: "/service/tls*", not "/service/tls/*".
        permissions = {"kv": {"read": [prefix + "*"], "write": [prefix + "*"]}}
        v2_auth(cluster, f"/roles/{role}", {"role": role, "permissions": permissions})
        v2_auth(cluster, f"/users/{role}", {"user": role, "grant": [role]})
    etcdctl(cluster, "auth", "enable")
    v2_auth(cluster, "/enable", {})
    everything = {"kv": {"read": ["/*"], "write": ["/*"]}}  # v2 lets guests do all by default
    v2_auth(cluster, "/roles/guest", {"role": "guest", "revoke": everything}, as_root=True)


def secured_settings(tls: TLSFiles, endpoints: List[str], user: str = "yaim") -> dict:
    """The config keys that reach the secured etcd as `user`."""
    return {
        "dcs-endpoints": endpoints,
        "etcd-ca-file": str(tls.ca),
        "etcd-cert-file": str(tls.client_cert),
        "etcd-key-file": str(tls.client_key),
        "etcd-user": user,
        "etcd-password": PASSWORDS[user],
    }


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> TLSFiles:
    return make_tls(tmp_path_factory.mktemp("tls"), ["127.0.0.1"])


@pytest.fixture(scope="module")
def secured(tls, tmp_path_factory):
    with EtcdCluster(tls=tls, base_dir=tmp_path_factory.mktemp("etcd")) as cluster:
        for dcs_type in BACKENDS:
            ClusterKeys(cluster, dcs_type, root=ROOT).add(A)  # before auth is on
        enable_auth(cluster)
        yield cluster


@pytest.fixture(params=BACKENDS)
def make(request, secured, tls, tmp_path):
    """A backend of `dcs_type` for node n1 on the secured etcd, settings overridable."""

    def backend(**overrides):
        values = {
            "dcs-type": request.param,
            "dcs-clustername": CLUSTER,
            "node-name": "n1",
            "interface": "lo",
            "checker-type": "none",
            "interval": 500,
            "ttl": 2000,
            "retry-num": 2,
            "retry-after": 10,
            **secured_settings(tls, secured.endpoints),
        }
        values.update({key: value for key, value in overrides.items()})
        values = {key: value for key, value in values.items() if value is not None}
        path = tmp_path / "n1.yml"
        path.write_text(yaml.safe_dump(values))
        return dcs.connect(config.load(str(path), environ={}))

    backend.dcs_type = request.param
    return backend


def test_the_right_certificates_and_credentials_work(make):
    n1 = make()
    assert n1.wait_for_change(1.0)  # the watch's first full read
    assert str(A) in n1.read().pool
    assert n1.create_mark(A)
    n1.keep_alive()
    n1.touch_node()
    assert n1.refresh_mark(A)
    assert n1.read().marks[str(A)].holder == "n1" and n1.read().nodes == {"n1"}
    assert n1.delete_mark(A)
    assert n1.wait_for_change(2.0)  # the watch sees its own delete
    n1.delete_node()


# "expired.1": what etcd says of a token past --auth-token-ttl is "invalid auth token";
# "": the token of a login made while etcd had authentication off, which sends none.
@pytest.mark.parametrize("token", ["expired.1", ""], ids=["expired", "made-with-auth-off"])
def test_a_v3_token_etcd_no_longer_takes_is_renewed(tls, secured, tmp_path, token):
    path = tmp_path / "n1.yml"
    settings = {"dcs-type": "etcd3", "dcs-clustername": CLUSTER, "node-name": "n1"}
    settings.update({"interface": "lo", "checker-type": "none", "retry-num": 1})
    path.write_text(yaml.safe_dump({**settings, **secured_settings(tls, secured.endpoints)}))
    n1 = dcs.connect(config.load(str(path), environ={}))
    n1.read()
    gateway = next(iter(n1._clients.values()))
    gateway.token = token
    assert str(A) in n1.read().pool  # one try: the renewal happens inside it
    assert gateway.token not in (token, None)


def test_yaimctl_migrate_reads_v2_and_writes_v3_with_the_configs_tls_and_credentials(
    tls, secured, tmp_path, capsys
):
    """Both APIs as the one user, over TLS; its rights end at the cluster directory, so
    --remove-v2 leaves the namespace directory, which it may not read, alone."""
    path = tmp_path / "yaim.yml"
    settings = {"dcs-type": "etcd3", "dcs-clustername": CLUSTER, "interface": "lo"}
    settings.update({"checker-type": "none", "retry-num": 2, "retry-after": 10})
    path.write_text(yaml.safe_dump({**settings, **secured_settings(tls, secured.endpoints)}))
    cfg = config.load(str(path), environ={})
    old, new = dcs.connect(cfg, api="etcd"), dcs.connect(cfg)
    old.drain("ymg-n9")
    try:
        assert ctl.main(["-c", str(path), "migrate", "--json"]) == 0
        done = json.loads(capsys.readouterr().out)
        assert done["copied"] == [f"{ROOT}/drain/ymg-n9"] and done["present"] == 1
        assert new.read().drained == {"ymg-n9"}
        dry_run = ["-c", str(path), "migrate", "--remove-v2", "--dry-run"]
        wait_until(lambda: ctl.main(dry_run) == 0, 10, what="the other tests' marks to expire")
        said = capsys.readouterr().out.splitlines()
        assert f"would delete {ROOT}/drain/ymg-n9 (drain key)" in said
        assert said[-2:] == [
            f"would delete {ROOT}/ (cluster directory)",
            f"would delete {len(said) - 1} v2 keys of {ROOT}; a dry run, nothing deleted",
        ]
    finally:
        old.undrain("ymg-n9")
        new.undrain("ymg-n9")


RETRIED, AT_ONCE = "after 2 tries", "(not retried)"
FAILURES = [
    # etcd v2 answers a wrong password as it answers missing rights: "Insufficient credentials".
    pytest.param(
        {"etcd-password": "wrong"},
        (("wrong etcd-password", AT_ONCE), ("invalid user ID", AT_ONCE)),
        id="password",
    ),
    # etcd 3.4's v2 API drops the connection when a client certificate without a
    # common name comes without credentials; v3 says what is missing.
    pytest.param(
        {"etcd-user": None, "etcd-password": None},
        (("Remote end closed connection", RETRIED), ("etcd requires authentication", AT_ONCE)),
        id="no-user",
    ),
    pytest.param(
        {"etcd-user": "outsider", "etcd-password": PASSWORDS["outsider"]},
        (("lacks read and write permission", AT_ONCE), ("needs read and write", AT_ONCE)),
        id="no-rights-on-the-prefix",
    ),
    pytest.param(
        {"etcd-ca-file": "tls.other_ca"}, (("verify failed", RETRIED),) * 2, id="unknown-ca"
    ),
    pytest.param({"etcd-ca-file": None}, (("verify failed", RETRIED),) * 2, id="system-ca-store"),
    pytest.param(
        {"etcd-cert-file": "tls.other_client_cert", "etcd-key-file": "tls.other_client_key"},
        (("TLS", RETRIED),) * 2,
        id="client-certificate-of-an-unknown-ca",
    ),
]


@pytest.mark.parametrize("overrides, expected", FAILURES)
def test_wrong_settings_fail_clearly_naming_endpoint_and_cause(
    make, tls, secured, overrides, expected
):
    """expected: for (v2, v3), what the error must contain and whether it was retried
    (a refusal fails on its first try); "tls.X" values are tls.X."""
    for key, value in overrides.items():
        if isinstance(value, str) and value.startswith("tls."):
            overrides[key] = str(getattr(tls, value[4:]))
    n1 = make(**overrides)
    fragment, retried = expected[make.dcs_type == "etcd3"]
    with pytest.raises(DCSError) as caught:
        n1.read()
    message = str(caught.value)
    print(f"{make.dcs_type}: {message}")
    assert secured.endpoints[0] in message and fragment in message
    assert retried in message and (RETRIED in message) != (AT_ONCE in message)
    assert "\n" not in message and "Traceback" not in message


# --- daemons in the lab ---

LAB_HOST = "192.0.2.2"  # a hub address of its own, beside the lab's plain etcd


@pytest.mark.netns
@pytest.mark.parametrize("dcs_type", BACKENDS)
def test_daemons_work_through_tls_and_auth_and_a_wrong_password_is_one_clear_line(
    lab, tmp_path, dcs_type
):
    tls = make_tls(tmp_path / "tls", [LAB_HOST])
    pool = [ipaddress.ip_address(f"198.51.100.{100 + i}") for i in range(3)]
    with EtcdCluster(
        netns=lab.lab.hub, host=LAB_HOST, base_dir=tmp_path / "etcd-tls", tls=tls
    ) as etcd:
        keys = ClusterKeys(etcd, dcs_type, root=ROOT)
        for address in pool:
            keys.add(address)
        enable_auth(etcd)
        settings = {
            key.replace("-", "_"): value
            for key, value in secured_settings(tls, etcd.endpoints).items()
        }
        common = {"dcs_type": dcs_type, "dcs_clustername": CLUSTER, **settings}
        good = lab.node(1, **common).start()
        bad = lab.node(2, **{**common, "etcd_password": "wrong"}).start()
        lab.observer.wait_for(
            lambda holders: all(holders.get(a) == [1] for a in pool), 15, "n1 to hold the pool"
        )
        wait_until(lambda: "cannot reach the DCS" in bad.log(), 10, what="n2's complaint")
        complaints = [line for line in bad.log().splitlines() if "cannot reach the DCS" in line]
        print(complaints[0])
        assert len(complaints) == 1 and etcd.endpoints[0] in complaints[0]
        assert ("authentication" in complaints[0]) or ("credentials" in complaints[0])
        assert "Traceback" not in bad.log() + good.log()
        assert bad.running and lab.lab.addresses(2, label="lan0:yaim") == set()
        lab.lab.stop_processes()  # while the secured etcd still answers
        lab.nodes.clear()
