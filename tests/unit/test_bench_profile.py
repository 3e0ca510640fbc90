"""The profile part's reading of py-spy's collapsed stacks."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bench import profile

ROOT = str(Path(__file__).resolve().parents[2])  # the checkout, wherever it is
SITE = ROOT + "/.venv/lib/python3.11/site-packages"
RAW = f"""
_bootstrap (threading.py:1002);run ({ROOT}/yaim/threads/base.py:70);read ({ROOT}/yaim/dcs/etcd3.py:130);send ({SITE}/requests/adapters.py:12) 30
_bootstrap (threading.py:1002);run ({ROOT}/yaim/threads/base.py:71);read ({ROOT}/yaim/dcs/etcd3.py:131) 10
_bootstrap (threading.py:1002);run ({ROOT}/yaim/threads/base.py:75);parse_snapshot ({ROOT}/yaim/view.py:120);ip_address (/usr/lib/python3.11/ipaddress.py:28) 60
"""  # noqa: E501


def test_frames_are_named_by_function_and_module_without_lines():
    assert profile.frame_name(f"send ({SITE}/requests/adapters.py:12)") == (
        "send (requests/adapters.py)"
    )
    assert profile.frame_name("ip_address (/usr/lib/python3.11/ipaddress.py:28)") == (
        "ip_address (ipaddress.py)"
    )
    assert profile.frame_name("<module> (<string>:8)") == "<module> (<string>)"


def test_tally_counts_own_and_inclusive_samples_once_per_stack():
    own, inclusive, total = profile.tally(profile.parse_collapsed(RAW.splitlines()))
    assert total == 100
    assert own["ip_address (ipaddress.py)"] == 60
    assert own["read (yaim/dcs/etcd3.py)"] == 10
    assert inclusive["read (yaim/dcs/etcd3.py)"] == 40
    assert inclusive["run (yaim/threads/base.py)"] == 100  # lines of one function together
    assert inclusive["_bootstrap (threading.py)"] == 100


def test_yaim_only_leaves_out_libraries_and_the_thread_loop():
    _, inclusive, _ = profile.tally(profile.parse_collapsed(RAW.splitlines()))
    assert profile.yaim_only(inclusive) == Counter(
        {"parse_snapshot (yaim/view.py)": 60, "read (yaim/dcs/etcd3.py)": 40}
    )


def test_top_table_shows_shares_of_all_samples():
    text = profile.top_table(Counter({"a (x.py)": 30, "b (y.py)": 10}), 40, "function", top=1)
    assert text.splitlines()[-1] == "| 1 | `a (x.py)` | 30 | 75.0 |"
