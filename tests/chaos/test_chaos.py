"""The short, seeded form of the chaos run: one round of every fault kind, once per DCS
API, the failsafe hold on. `make chaos SEED=... DURATION=...` runs it long
(tests/chaos/__main__.py).

What the lab cannot do (this kernel has no sch_netem: packet loss without delay) is
printed in the summary and raised as a warning, so it shows in every test report.
"""

from __future__ import annotations

import warnings

import pytest

from tests.chaos.faults import KINDS
from tests.chaos.runner import run, summary

pytestmark = pytest.mark.netns

SEED = 20240609


@pytest.mark.parametrize("dcs_type", ["etcd", "etcd3"])
def test_one_seeded_round_of_every_fault_keeps_the_invariants(tmp_path, dcs_type):
    result = run(SEED, dcs_type, tmp_path / "chaos", rounds=1)
    report = summary(result)
    print(report)
    for note in result.notes:
        warnings.warn(f"chaos ({dcs_type}): {note}", stacklevel=1)
    expected = {k for k, kind in KINDS.items() if kind.needs != "v2" or dcs_type == "etcd"}
    assert expected - set(result.faults) <= {"loss"}, report  # loss needs sch_netem
    assert result.ok, report
