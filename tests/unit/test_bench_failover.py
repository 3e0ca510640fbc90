"""The failover benchmark's figures, computed from synthetic probe lines."""

from __future__ import annotations

import base64
import json
from typing import List

import pytest

from bench import failover
from bench.failover import Answer
from bench.probe import parse_reply
from bench.rivals import preference
from yaim.actuator.announce import ARP_REPLY, arp_frame

A, B = "198.51.100.100", "198.51.100.101"
OLD, NEW, OTHER = "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"
P = failover.PERIOD


def rounds(address: str, mac: str, start: float, end: float) -> List[Answer]:
    """An answer every probe period from `start` up to (not including) `end`."""
    n = round((end - start) / P)
    return [Answer(round(start + k * P, 6), address, mac) for k in range(n)]


def test_parse_answers_skips_broken_lines() -> None:
    lines = [f"12.5 {A} {OLD}", "", "13.0 garbage", f"14.25 {B} {NEW}\n"]
    assert failover.parse_answers(lines) == [Answer(12.5, A, OLD), Answer(14.25, B, NEW)]


def test_gap_and_from_fault() -> None:
    # old answers until 10.0 (its last at 9.99), fault at 10.0, new from 12.5 on
    answers = rounds(A, OLD, 9.0, 10.0) + rounds(A, NEW, 12.5, 13.0)
    figures = failover.moved(answers, A, OLD, fault=10.0)
    assert figures["new"] == NEW
    assert figures["gap"] == pytest.approx(12.5 - 9.99)
    assert figures["from_fault"] == pytest.approx(2.5)


def test_unhealthy_old_holder_answers_after_the_fault() -> None:
    # the service is down at 10.0, ARP answers from the old holder until 10.8
    answers = rounds(A, OLD, 9.0, 10.8) + rounds(A, NEW, 10.85, 11.0)
    figures = failover.moved(answers, A, OLD, fault=10.0)
    assert figures["gap"] == pytest.approx(10.85 - 10.79)
    assert figures["from_fault"] == pytest.approx(0.85)


def test_no_new_holder_gives_none() -> None:
    figures = failover.moved(rounds(A, OLD, 9.0, 10.0), A, OLD, fault=10.0)
    assert figures["new"] is None
    assert figures["gap"] is None and figures["from_fault"] is None


def test_silence_counts_stretches_over_three_periods() -> None:
    answers = rounds(A, OLD, 9.0, 10.0) + rounds(A, NEW, 12.0, 13.0) + rounds(B, OTHER, 9.0, 13.0)
    # A: one silent stretch from its last answer (9.99) to 12.0; B never silent
    assert failover.silence(answers, [A, B], 9.0, 12.99) == pytest.approx(12.0 - 9.99)


def test_silence_ignores_short_holes_and_counts_window_edges() -> None:
    answers = rounds(A, OLD, 9.0, 10.0) + rounds(A, OLD, 10.02, 11.0)  # a 0.03 s hole: fine
    assert failover.silence(answers, [A], 9.0, 10.99) == 0.0
    # nothing at all for B: the whole window is silent
    assert failover.silence(answers, [A, B], 9.0, 10.99) == pytest.approx(1.99)


def test_overlap_counts_rounds_answered_twice() -> None:
    both = rounds(A, OLD, 10.0, 10.05) + [
        Answer(a.t + 0.0005, A, NEW) for a in rounds(A, OLD, 10.0, 10.05)
    ]
    answers = sorted(rounds(A, OLD, 9.9, 10.0) + both + rounds(A, NEW, 10.05, 10.2))
    assert failover.overlap(answers, [A]) == pytest.approx(5 * P)


def test_clean_handover_is_no_overlap() -> None:
    answers = rounds(A, OLD, 9.0, 10.0) + rounds(A, NEW, 10.0, 11.0)
    assert failover.overlap(answers, [A]) == 0.0


def test_trial_figures_and_mark_reaction() -> None:
    answers = sorted(
        rounds(A, OLD, 9.5, 10.02) + rounds(A, NEW, 10.05, 10.5) + rounds(B, OTHER, 9.5, 10.5)
    )
    deletions = [(9.0, A), (10.03, A), (10.04, B)]  # one before the fault: ignored
    trial = failover.trial_figures(answers, {A: OLD, B: OTHER}, OLD, 10.0, 10.5, deletions)
    (one,) = trial["moved"]
    assert one["address"] == A
    assert one["gap"] == pytest.approx(0.04)
    assert one["mark"] == pytest.approx(0.02)
    assert trial["overlap"] == 0.0
    assert trial["silent"] == pytest.approx(0.04)  # A from 10.01 to 10.05


def test_summarize_leaves_failed_trials_out() -> None:
    ok = {
        "moved": [{"gap": 1.0, "from_fault": 2.0, "mark": None}],
        "silent": 1.0,
        "overlap": 0.0,
    }
    bad = dict(ok, failed="timed out")
    s = failover.summarize([ok, ok, bad])
    assert (s["trials"], s["failed"], s["gap"]["n"], s["mark"]["n"]) == (3, 1, 2, 0)
    assert s["from_fault"]["p50"] == 2.0
    assert s["silent"] == 2.0


def test_layout_predicates() -> None:
    pool = [A, B, "198.51.100.102"]
    answers = [Answer(1.0, A, OLD), Answer(1.0, B, NEW), Answer(1.0, pool[2], OTHER)]
    held = failover.holders(answers, 0.5)
    assert failover.balanced(held, pool, [OLD, NEW, OTHER])
    assert not failover.balanced(held, pool, [OLD, NEW])  # OTHER is no node
    two = failover.holders([*answers, Answer(1.01, A, NEW)], 0.5)
    assert failover.single(two, pool) is None
    assert failover.holders(answers, 1.5) == {}


def test_deleted_marks_from_etcdctl_watch() -> None:
    assert failover.deleted_marks(f"[expire] /service/x/ips/{A}/marked\n", v3=False) == [A]
    assert failover.deleted_marks(f"[compareAndDelete] /service/x/ips/{A}/marked", v3=False) == [A]
    assert failover.deleted_marks(f"[set] /service/x/ips/{A}/marked", v3=False) == []
    assert failover.deleted_marks("n1", v3=False) == []

    def event(key: str, kind: int) -> dict:
        event = {"kv": {"key": base64.b64encode(key.encode()).decode()}}
        return dict(event, type=kind) if kind else event

    response = {"Events": [event(f"/s/x/ips/{A}/marked", 1), event(f"/s/x/ips/{B}/marked", 0)]}
    assert failover.deleted_marks(json.dumps(response), v3=True) == [A]
    assert failover.deleted_marks("not json", v3=True) == []


def test_probe_parses_only_replies_to_us() -> None:
    us, mac = bytes([198, 51, 100, 2]), b"\x02\x00\x00\x00\x00\x09"
    pool = {bytes([198, 51, 100, 100]): A}
    reply = arp_frame(mac, bytes([198, 51, 100, 100]), us, ARP_REPLY)
    assert parse_reply(reply, us, pool) == (A, "02:00:00:00:00:09")
    request = arp_frame(mac, bytes([198, 51, 100, 100]), us)
    gratuitous = arp_frame(mac, bytes([198, 51, 100, 100]), bytes([198, 51, 100, 100]), ARP_REPLY)
    assert parse_reply(request, us, pool) is None
    assert parse_reply(gratuitous, us, pool) is None
    assert parse_reply(reply[:20], us, pool) is None


def test_preference_spreads_a_failed_nodes_addresses() -> None:
    orders = [preference(k, 3) for k in range(6)]
    assert all(sorted(o) == [1, 2, 3] for o in orders)
    for node in (1, 2, 3):
        mine = [o for o in orders if o[0] == node]
        assert len(mine) == 2
        assert sorted(o[1] for o in mine) == sorted({1, 2, 3} - {node})


def test_tables_ratios_and_cannot_rows() -> None:
    def scenario(gap: float, from_fault: float, mark: object = None) -> dict:
        moved = {"gap": gap, "from_fault": from_fault, "mark": mark}
        return failover.summarize([{"moved": [moved], "silent": 0.0, "overlap": 0.0}])

    summaries = {
        "yaim-v3": {"crash": scenario(2.0, 2.1, 0.02), "unhealthy": scenario(0.1, 1.0, 0.01)},
        "keepalived": {"crash": scenario(2.5, 2.5), "unhealthy": scenario(0.5, 2.0)},
        "vip-manager": {"key-change": scenario(0.0, 0.5)},
    }
    failures, ratios, marks = failover.tables(summaries)
    assert "| vip-manager | crash | cannot (see notes) |" in failures
    assert "| crash | gap | yaim-v3/keepalived | 0.80 | 0.80 |" in ratios
    assert "| unhealthy | from fault | yaim-v3/keepalived | 0.50 | 0.50 |" in ratios
    assert (
        "| yaim-v3: mark gone -> new holder (crash) | 1 | 0.020 | 0.020 | 0.020 | 0.04 | 0.04 |"
        in marks
    )
    assert "| vip-manager: key changed -> new holder | 1 | 0.500 | 0.500 | 0.500 | - | - |" in marks


def test_goals_name_values_and_verdicts() -> None:
    def scenario(gap: float, from_fault: float, mark: object = None) -> dict:
        moved = {"gap": gap, "from_fault": from_fault, "mark": mark}
        return failover.summarize([{"moved": [moved], "silent": 0.0, "overlap": 0.0}])

    summaries = {
        "yaim-v2": {
            "crash": scenario(2.4, 2.7),
            "clean": scenario(0.05, 0.05, 0.06),
            "unhealthy": scenario(0.02, 1.1),
        },
        "keepalived": {"crash": scenario(2.5, 2.5)},
    }
    lines = failover.goals(summaries, failover.YAIM_CONFIG)
    assert "goal yaim-v2: clean stop gap p95 < 0.1 s: 0.050 s, met." in lines
    assert "goal yaim-v2: mark gone -> new holder p95 < 0.05 s: 0.060 s, NOT met." in lines
    assert "goal yaim-v2: unhealthy p95 < check-interval + 0.2 s = 1.2 s: 1.100 s, met." in lines
    assert "goal yaim-v2: crash p95 < ttl + 0.6 s = 2.6 s: 2.700 s, NOT met." in lines
    assert (
        "goal yaim-v2: crash gap median below keepalived's: 2.400 s against 2.500 s, met." in lines
    )
