"""The startup part's reading of a probe's stderr (-X importtime lines among its steps)."""

from __future__ import annotations

from bench import startup

STDERR = """import time: self [us] | cumulative | imported package
import time:       100 |        100 |   _io
import time:       500 |       2000 | site
step Python alone\t10.50\t60
import time:       300 |        300 |     yaml.reader
import time:      1000 |       4000 |   yaml
import time:      2000 |       9000 | yaim.cli
step `yaim.cli` imported\t13.25\t106
step configuration loaded\t13.25\t106
import time:       700 |       1500 | yaim.daemon
step Daemon built\t20.00\t300
"""


def test_each_step_gets_the_top_level_imports_made_since_the_one_before():
    steps = startup.parse(STDERR)
    assert [s.name for s in steps] == [
        "Python alone",
        "`yaim.cli` imported",
        "configuration loaded",
        "Daemon built",
    ]
    assert [s.import_ms for s in steps] == [2.0, 9.0, 0.0, 1.5]
    assert steps[1].rss_mb == 13.25 and steps[3].modules == 300


def test_the_best_run_is_the_one_whose_imports_took_least():
    fast = startup.parse(STDERR)
    slow = [step._replace(import_ms=step.import_ms * 2) for step in fast]
    assert startup.best([slow, fast, slow]) is fast


def test_the_tables_set_before_against_after():
    steps = [step._asdict() for step in startup.parse(STDERR)]
    smaller = [dict(step, rss_mb=step["rss_mb"] - 1) for step in steps]
    by_tree = {
        "before": {"steps": steps, "wall_s": 0.2},
        "after": {"steps": smaller, "wall_s": 0.1},
    }
    [row] = startup.totals({"cases": {"daemon, etcd3": by_tree}})
    assert row == ["daemon, etcd3", "12", "200", "20.0", "300", "12", "100", "19.0", "300"]
    rows = startup.step_rows(by_tree)
    assert rows[1] == ["`yaim.cli` imported", "13.2", "12.2", "+2.8", "9", "9"]
