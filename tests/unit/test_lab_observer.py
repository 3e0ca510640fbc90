"""The lab observer's samples against scripted reads: a handover between the reads of
two nodes is not two holders, an address still on both after a second look is."""

from __future__ import annotations

import ipaddress
from typing import Dict, List, Set

from lab.observer import Observer
from lab.rtnl import LinkState

VIP = ipaddress.ip_address("198.51.100.7")


class ScriptedLab:
    """Each read of node i gives the next of `reads[i]` (the last one from then on)."""

    node_indexes = [1, 2, 3]

    def __init__(self, reads: Dict[int, List[Set]]) -> None:
        self.reads = reads
        self.order: List[int] = []

    def lan_state(self, i: int) -> LinkState:
        self.order.append(i)
        script = self.reads.get(i, [set()])
        addresses = script.pop(0) if len(script) > 1 else script[0]
        return LinkState(True, {a: None for a in addresses})


def test_a_handover_between_two_reads_is_one_holder():
    # n1 is read with VIP, lets it go, n2 takes it before n2 is read
    lab = ScriptedLab({1: [{VIP}, set()], 2: [{VIP}]})
    sample = Observer(lab)._sample()  # type: ignore[arg-type]
    assert sample.holders == {VIP: [2]}
    assert lab.order == [1, 2, 3, 1]  # n1 looked at again, after n2


def test_an_address_still_on_both_after_a_second_look_is_two_holders():
    lab = ScriptedLab({1: [{VIP}], 3: [{VIP}]})
    assert Observer(lab)._sample().holders == {VIP: [1, 3]}  # type: ignore[arg-type]


def test_without_a_doubled_address_each_node_is_read_once():
    lab = ScriptedLab({1: [{VIP}]})
    assert Observer(lab)._sample().holders == {VIP: [1]}  # type: ignore[arg-type]
    assert lab.order == [1, 2, 3]
