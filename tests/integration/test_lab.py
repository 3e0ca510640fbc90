"""Self-tests of the test lab (etcd members, namespaces, observer, health server);
none of them runs yaim."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import pytest
import yaml

from lab.daemon import YaimNode
from lab.etcd import POOL_DIR, EtcdCluster, EtcdError, etcd_put, etcd_request
from lab.netns import (
    ETCD_HOSTS,
    HEALTH_SCRIPT,
    HUB_DCS,
    Lab,
    LabError,
    lan_address,
    list_netns,
)
from lab.util import wait_until
from tests.conftest import LabEnv

VIP = ipaddress.ip_address("198.51.100.200")
VIP6 = ipaddress.ip_address("2001:db8::200")


def test_etcd_single_member_v2(etcd_loopback: EtcdCluster) -> None:
    key = POOL_DIR + "/198.51.100.100"
    etcd_loopback.put_dir(key)
    etcd_loopback.put(key + "/marked", "n1", ttl=30)
    pool = etcd_loopback.get(POOL_DIR, recursive=True)
    assert pool is not None
    (entry,) = pool["nodes"]
    assert entry["key"] == key and entry["dir"]
    assert entry["nodes"][0]["value"] == "n1" and 0 < entry["nodes"][0]["ttl"] <= 30
    assert etcd_loopback.delete(key, recursive=True)
    assert etcd_loopback.get(key) is None
    assert not etcd_loopback.delete(key)


def test_etcd_cluster_survives_member_loss(tmp_path: Path) -> None:
    with EtcdCluster(size=3, base_dir=tmp_path) as etcd:
        assert len(set(etcd.endpoints)) == 3
        etcd.put("/before", "1")
        etcd.stop_member(0)
        with pytest.raises(EtcdError):
            etcd.get("/before", member=0)
        wait_until(
            lambda: etcd.put("/during", "2", member=1),
            10.0,
            what="a write through member 1",
            ignore=(EtcdError,),
        )
        assert etcd.get("/before", member=2)["value"] == "1"
        etcd.start_member(0)
        assert etcd.get("/during", member=0)["value"] == "2"


@pytest.mark.netns
def test_connectivity(lab: LabEnv) -> None:
    net = lab.lab
    for i in net.node_indexes:
        ns = net.node_ns(i)
        arp = net.run(ns, ["arping", "-c1", "-w1", "-I", "dcs0", HUB_DCS], check=False)
        assert arp.returncode == 0, arp.stdout + arp.stderr
        assert etcd_request(lab.etcd.endpoints[0], "GET", "/health", netns=ns)["health"] == "true"
        # The client reaches the node's base address over the lan bridge: a refused
        # TCP connection still resolves its MAC into the client's neighbour cache.
        refused = net.run(
            net.cli,
            ["curl", "-s", "--max-time", "2", f"http://{lan_address(i)}:1/"],
            check=False,
        )
        assert refused.returncode == 7, refused
        mac = net.neigh(net.cli)[ipaddress.ip_address(lan_address(i))]
        assert mac == net.mac(ns, "lan0")
    # The lan bridge is layer 2 only: the hub has no address there.
    assert "inet " not in net.ip(net.hub, "addr", "show", "dev", net.prefix + "-lan")


@pytest.mark.netns
def test_observer_sees_holders_and_violations(lab: LabEnv) -> None:
    net, observer = lab.lab, lab.observer
    n1, n2, n3 = (net.node_ns(i) for i in (1, 2, 3))
    net.ip(n1, "addr", "add", f"{VIP}/32", "dev", "lan0", "label", "lan0:yaim")
    net.ip(n3, "addr", "add", f"{VIP6}/128", "dev", "lan0", "nodad")
    seen = observer.wait_for(lambda h: h.get(VIP) == [1] and h.get(VIP6) == [3], 5.0)
    assert observer.first_seen(VIP, 1, after=0.0) <= seen.time
    assert observer.violations == []
    assert net.addresses(1) == {VIP} and net.address_labels(1) == {VIP: "lan0:yaim"}
    assert net.addresses(1, label="lan0") == set() and net.addresses(3) == {VIP6}

    net.ip(n2, "addr", "add", f"{VIP}/32", "dev", "lan0")
    observer.wait_for(lambda h: h.get(VIP) == [1, 2], 5.0)
    assert [(a, nodes) for _, a, nodes in observer.violations][:1] == [(VIP, [1, 2])]

    net.ip(n1, "addr", "del", f"{VIP}/32", "dev", "lan0")
    observer.wait_for(lambda h: h.get(VIP) == [2], 5.0)
    net.link(2, "lan0", False)  # a node off the LAN holds nothing
    observer.wait_for(lambda h: VIP not in h, 5.0)
    net.link(2, "lan0", True)
    observer.wait_for(lambda h: h.get(VIP) == [2], 5.0)

    assert observer.sample_count > 1, observer.stats()
    assert observer.median_period() <= 0.05, observer.stats()


@pytest.mark.netns
def test_health_server(tmp_path: Path) -> None:
    with Lab(nodes=1, base_dir=tmp_path) as net:
        url = net.start_health(1, 8008)

        def get() -> str:
            argv = ["curl", "-s", "--max-time", "2", "-w", " %{http_code}", url]
            return net.run(net.node_ns(1), argv).stdout

        assert get() == '{"status":"ok"} 200'
        net.set_health(1, False)
        assert get() == '{"status":"fail"} 500'
        net.set_health(1, True)
        assert get().endswith(" 200")


@pytest.mark.netns
def test_etcd_cluster_in_hub(tmp_path: Path) -> None:
    with Lab(nodes=1, base_dir=tmp_path / "lab") as net, EtcdCluster(
        3, netns=net.hub, host=ETCD_HOSTS, base_dir=tmp_path / "etcd"
    ) as etcd:
        assert etcd.endpoints == [f"http://{h}:2379" for h in ETCD_HOSTS]
        etcd_put(etcd.endpoints[2], "/from-node", "x", netns=net.node_ns(1))
        etcd.stop_member(2)
        assert etcd.get("/from-node", member=1)["value"] == "x"


@pytest.mark.netns
def test_teardown_leaves_nothing(tmp_path: Path) -> None:
    with Lab(nodes=2, base_dir=tmp_path) as net:
        prefix = net.prefix
        assert {net.hub, net.cli, net.node_ns(1), net.node_ns(2)} <= set(list_netns())
        argv = [sys.executable, str(HEALTH_SCRIPT), "--port", "8008", "--state", "none"]
        health = net.spawn(net.node_ns(2), argv, tmp_path / "health.log")
        # etcd left running by a test is killed too: it is in one of our namespaces.
        etcd = EtcdCluster(netns=net.hub, host=HUB_DCS, base_dir=tmp_path / "etcd").start()
    assert [ns for ns in list_netns() if ns.startswith(prefix + "-")] == []
    assert health.poll() is not None
    assert etcd.members[0].proc.wait(5) is not None

    with pytest.raises(LabError), Lab(nodes=1, base_dir=tmp_path) as net:
        prefix = net.prefix
        net.ip(net.hub, "link", "add", "bogus", "type", "no-such-type")
    assert [ns for ns in list_netns() if ns.startswith(prefix + "-")] == []


def test_node_config(tmp_path: Path) -> None:
    net = Lab(nodes=2, prefix="ytcfg", base_dir=tmp_path)  # not built: config only
    node = YaimNode(
        net,
        2,
        ["http://192.0.2.1:2379"],
        health_url="http://127.0.0.1:8008/health",
        check_fall=2,
        log_level=None,
    )
    config = yaml.safe_load(node.write_config().read_text())
    assert config == {
        "dcs-endpoints": ["http://192.0.2.1:2379"],
        "node-name": "n2",
        "interface": "lan0",
        "interval": 500,
        "ttl": 1500,
        "checker-type": "http",
        "http-url": "http://127.0.0.1:8008/health",
        "allowed-networks": ["198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"],
        "check-fall": 2,
    }
    assert node.ns == "ytcfg-n2"
