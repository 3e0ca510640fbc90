"""The documented v2 to v3 move of a running cluster, in the lab under the observer
(issue 20): three nodes on dcs-type etcd, the pool copied into the v3 layout by yaimctl
migrate, each node restarted with dcs-type etcd3 and dcs-migrate-from etcd, then each
restarted without the key, and the v2 keys removed by yaimctl migrate --remove-v2. No
address is ever on two nodes; each is unheld no longer than a clean stop's handover
allows. On an etcd 3.5 whose etcdutl has `check v2store` (sid's), the member's v2 store
passes etcd 3.6's start-up check afterwards."""

from __future__ import annotations

import signal
from typing import Dict, List

import pytest

from lab.etcd import ClusterKeys, check_v2store, etcdutl
from lab.observer import Sample
from lab.util import wait_until
from tests.conftest import LabEnv
from tests.integration.conftest import (
    CLEAN_BOUND,
    CRASH_BOUND,
    POOL,
    ok,
    settled,
    start_cluster,
    yaimctl,
)

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_two_holders")]

STOP_TIMEOUT = 5.0


def longest_unheld(samples: List[Sample]) -> Dict[object, float]:
    """Address -> the longest stretch of samples in which no node held it (seconds, from
    the last sample that showed it held to the first that showed it held again)."""
    longest = {address: 0.0 for address in POOL}
    held_at = {address: samples[0].time for address in POOL}
    for sample in samples:
        for address in POOL:
            if sample.holders.get(address):
                longest[address] = max(longest[address], sample.time - held_at[address])
                held_at[address] = sample.time
    return longest


MIGRATING = {"dcs-type": "etcd3", "dcs-migrate-from": "etcd"}


def restart(lab: LabEnv, i: int, **settings: object) -> None:
    """Stop node i cleanly, change its settings (None removes a key), start it again, and
    wait for the pool to settle over all three."""
    node = lab.nodes[i - 1]
    node.signal(signal.SIGTERM)
    assert node.wait_exit(STOP_TIMEOUT) == 0
    for key, value in settings.items():
        if value is None:
            node.config.pop(key, None)
        else:
            node.config[key] = value
    node.start()
    lab.observer.wait_for(settled([1, 2, 3]), 15, f"the pool to settle after n{i}'s restart")


SNAPSHOT_COUNT = 20  # changes between the member's snapshots: check v2store reads the last


@pytest.mark.etcd(snapshot_count=SNAPSHOT_COUNT)
def test_a_running_cluster_moves_from_v2_to_v3_one_node_at_a_time(lab: LabEnv) -> None:
    start_cluster(lab)
    settled_at = lab.observer.samples[-1].time
    v3 = ClusterKeys(lab.etcd, "etcd3")
    assert f"copied {len(POOL)} keys" in ok(lab, "migrate")  # step 2, from a node on v2
    for i in (1, 2, 3):  # step 3: both layouts
        restart(lab, i, **MIGRATING)
    v2 = ClusterKeys(lab.etcd, "etcd")
    wait_until(  # every node a member of both layouts: each address marked in both alike
        lambda: v2.holders() == v3.holders() and len(v3.holders()) == len(POOL),
        5,
        what="every mark in both layouts",
    )
    for i in (1, 2, 3):  # step 4: the v3 layout alone
        restart(lab, i, **{"dcs-migrate-from": None})
    wait_until(lambda: v2.holders() == {}, 5, what="no v2 mark left")
    wait_until(  # step 5, once the v2 node keys of the last migrating node are gone
        lambda: yaimctl(lab, "migrate", "--remove-v2").returncode == 0,
        10,
        what="yaimctl migrate --remove-v2",
    )
    assert v2.pool() == set() and v3.pool() == {str(a) for a in POOL}
    samples = [s for s in lab.observer.samples if s.time >= settled_at]
    longest = longest_unheld(samples)
    print("longest unheld per address (s):", {str(a): round(t, 2) for a, t in longest.items()})
    assert max(longest.values()) <= CLEAN_BOUND, longest
    if etcdutl() is not None:
        assert_v2store_clean(lab)


def assert_v2store_clean(lab: LabEnv) -> None:
    """`etcdutl check v2store` of the stopped member, as etcd 3.6 would check it; the
    member starts again for the nodes' clean stop at teardown."""
    lab.etcd.snapshot_past()
    lab.etcd.stop_member(0)
    done = check_v2store(lab.etcd.members[0].data_dir)
    lab.etcd.start_member(0)
    print("etcdutl check v2store:", done.returncode, done.stdout.strip(), done.stderr.strip())
    assert done.returncode == 0, (done.stdout, done.stderr)


def test_the_v2_nodes_take_over_from_a_migrating_node_that_crashes(lab: LabEnv) -> None:
    start_cluster(lab)
    v3 = ClusterKeys(lab.etcd, "etcd3")
    for address in POOL:
        v3.add(address)
    restart(lab, 1, **MIGRATING)
    lab.nodes[0].crash()  # its v2 marks expire by their TTL, its v3 marks with its lease
    crashed_at = lab.observer.samples[-1].time
    taken = lab.observer.wait_for(settled([2, 3]), CRASH_BOUND + 2, "n2 and n3 to take over")
    print(f"the v2 nodes held everything {taken.time - crashed_at:.2f} s after the crash")
    assert taken.time - crashed_at <= CRASH_BOUND
    lab.lab.reboot(1)
    lab.nodes[0].start()
    lab.observer.wait_for(settled([1, 2, 3]), 15, "n1's share back")
