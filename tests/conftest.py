"""Fixtures for tests that need real etcd members and network namespaces.

Tests marked `netns` (and any test using the `lab` fixture) are skipped when not
root or when `ip netns add` fails, except under CI=true, where they fail instead.
"""

from __future__ import annotations

import functools
import os
import secrets
import subprocess
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

from lab.daemon import YaimNode, dump_logs
from lab.etcd import ClusterKeys, EtcdCluster
from lab.netns import HUB_DCS, Lab
from lab.observer import Observer
from tests.needs import skip_or_fail


@functools.lru_cache(maxsize=None)
def _netns_problem() -> Optional[str]:
    """Why namespaces cannot be used here, or None if they can."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    probe = "ytprobe" + secrets.token_hex(3)
    try:
        res = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    except OSError as exc:
        return f"cannot run ip: {exc}"
    if res.returncode != 0:
        return f"ip netns add failed: {res.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], check=True)
    return None


def require_netns() -> None:
    """Skip the current test if namespaces are unavailable; fail instead under CI=true."""
    skip_or_fail(_netns_problem())


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("netns") is not None:
        require_netns()


@dataclass
class LabEnv:
    """What the `lab` fixture yields: the network, its etcd, a running observer and
    the yaim nodes made with `node()`, which speak `dcs_type` unless told otherwise."""

    lab: Lab
    etcd: EtcdCluster
    observer: Observer
    nodes: List[YaimNode] = field(default_factory=list)
    dcs_type: str = "etcd"

    def node(self, i: int, **kw: object) -> YaimNode:
        """A (not yet started) YaimNode for node i on this lab's etcd."""
        kw.setdefault("dcs_type", self.dcs_type)
        node = YaimNode(self.lab, i, self.etcd.endpoints, **kw)
        self.nodes.append(node)
        return node

    def keys(self, endpoint: Optional[str] = None) -> ClusterKeys:
        """The operator's side of the cluster in etcd, through the API of `dcs_type`."""
        return ClusterKeys(self.etcd, self.dcs_type, endpoint=endpoint)

    def logs(self) -> str:
        """Tails of all yaim node logs and the etcd log, for assertion messages."""
        return dump_logs(self.nodes) + self.etcd.logs()


@pytest.fixture
def lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LabEnv]:
    """A 3-node Lab (other sizes: `@pytest.mark.parametrize("lab", [N], indirect=True)`),
    one etcd member in the hub on 192.0.2.1:2379 (more EtcdCluster options:
    `@pytest.mark.etcd(snapshot_count=5)`) and an Observer. At teardown, processes
    started in the lab stop first (while etcd still answers), then the observer,
    etcd and the namespaces."""
    require_netns()
    marker = request.node.get_closest_marker("etcd")
    options = marker.kwargs if marker is not None else {}
    with ExitStack() as stack:
        net = stack.enter_context(Lab(getattr(request, "param", 3), base_dir=tmp_path / "lab"))
        etcd = stack.enter_context(
            EtcdCluster(netns=net.hub, host=HUB_DCS, base_dir=tmp_path / "etcd", **options)
        )
        observer = stack.enter_context(Observer(net))
        stack.callback(net.stop_processes)
        yield LabEnv(net, etcd, observer)


@pytest.fixture
def no_two_holders(lab: LabEnv) -> Iterator[None]:
    """For lab tests: at the end, the observer never saw an address on two nodes, and it
    sampled fast enough to tell. The logs are printed (pytest shows them on failure)."""
    yield
    print(lab.logs())
    observer = lab.observer
    assert observer.violations == [], f"two holders at once: {observer.violations[:5]}"
    assert observer.median_period() <= 0.05, observer.stats()


@pytest.fixture
def etcd_loopback(tmp_path: Path) -> Iterator[EtcdCluster]:
    """One etcd member on loopback, free ports."""
    with EtcdCluster(base_dir=tmp_path / "etcd") as etcd:
        yield etcd
