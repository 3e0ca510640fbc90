"""Every library the code and the tests import is one that setup.cfg has installed: the
venv `make` builds from it is all a fresh machine has (a test once imported requests,
which only the developers' venvs still had after yaim stopped needing it).

The imports are read, not run (ast), in every tree; the standard library's modules, the
project's own packages and the modules of the listed distributions pass.
"""

from __future__ import annotations

import ast
import configparser
import re
import sys
from pathlib import Path
from typing import Dict, Set

import pytest

ROOT = Path(__file__).resolve().parents[2]
TREES = ("yaim", "lab", "tests", "bench")
# Module -> the distribution setup.cfg must name for it (install_requires or an extra).
DISTRIBUTIONS = {
    "etcd": "python-etcd",
    "urllib3": "python-etcd",  # python-etcd's own dependency, imported by the v2 backend
    "yaml": "PyYAML",
    "prometheus_client": "prometheus-client",
    "psycopg": "psycopg",
    "pytest": "pytest",
    "hypothesis": "hypothesis",
    "cryptography": "cryptography",
}


def imported() -> Dict[str, Set[str]]:
    """Top-level module -> the files importing it (absolute imports only)."""
    found: Dict[str, Set[str]] = {}
    for tree in TREES:
        for path in sorted((ROOT / tree).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def declared() -> Set[str]:
    """The distributions setup.cfg installs, by name without version."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser["options"]["install_requires"].splitlines()
    for extra in parser["options.extras_require"].values():
        lines += extra.splitlines()
    return {re.split(r"[<>=!~ ;\[]", line.strip(), maxsplit=1)[0] for line in lines if line.strip()}


@pytest.mark.skipif(
    sys.version_info < (3, 10),
    reason="needs the standard library's own module list (3.10's sys.stdlib_module_names);"
    " the test command runs it on bookworm's 3.11",
)
def test_every_imported_library_is_installed_by_setup_cfg():
    own = set(TREES) | {"__future__"}
    foreign = {
        name: files
        for name, files in imported().items()
        if name not in sys.stdlib_module_names and name not in own
    }
    unknown = {name: sorted(files) for name, files in foreign.items() if name not in DISTRIBUTIONS}
    assert unknown == {}, "imported, but installed by nothing in setup.cfg"
    missing = {DISTRIBUTIONS[name] for name in foreign} - declared()
    assert missing == set(), "named here, but not in setup.cfg"


def test_the_check_finds_what_it_looks_for():
    found = imported()
    assert "tests/integration/conftest.py" in found["yaml"]
    assert "yaim/dcs/etcd2.py" in found["etcd"] and "python-etcd" in declared()
