"""Every outside command the code runs is in the Makefile's one list (COMMANDS), which
`make deps` installs: a fresh machine once failed on an `arping` only the developers'
machines had.

The code is read, not run: the first word of every command line written out in the
code (a list or tuple handed to subprocess or to the lab's runners, assigned to an
`argv`-like name, or returned by an `*argv*` function) and every absolute path to a
program in a module constant. A command line built some other way escapes this test;
the sanity check below makes sure the known ones are still found.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, Iterator, Optional, Set

ROOT = Path(__file__).resolve().parents[2]
TREES = ("yaim", "lab", "tests")
RUNNERS = {"run", "Popen", "check_output", "check_call", "call", "spawn", "which", "netns_argv"}
ARGV_NAMES = {"argv", "cmd", "command", "full"}
DEFAULT_NAMES = {"ETCD"}  # a command's default name, which an environment variable may change
WORD = re.compile(r"^[a-z][a-z0-9.+_-]*$")
PROGRAM = re.compile(r"^/(usr/)?s?bin/[A-Za-z0-9.+_-]+$")

# Not installed by `make deps`, and why.
ESSENTIAL = {"sh", "bash", "cat", "id", "touch", "mkdir", "rm", "find", "umount", "apt-get", "dpkg"}
ESSENTIAL |= {"dpkg-query", "dpkg-statoverride", "dpkg-deb"}  # Essential and required
PACKAGE_TOOLS = {"rpm", "rpmbuild", "rpmlint"}  # `make pkg-deps`
IN_THE_TREE = {"systemctl", "journalctl", "python3"}  # inside a Debian tree (lab/nspawn, chroot)
UNDER_TEST = {"yaim", "yaimctl"}  # what the package under test installs
SUBCOMMANDS = {"addr", "link", "route", "neigh"}  # of `ip`, whose argv the actuator builds


def listed() -> Set[str]:
    """The commands of the Makefile's COMMANDS list, by their file names."""
    text = (ROOT / "Makefile").read_text()
    block = text.split("COMMANDS := \\\n", 1)[1].split("\n\n", 1)[0]
    entries = (line.strip().rstrip("\\").strip() for line in block.splitlines())
    return {Path(entry.split("=", 1)[0]).name for entry in entries if entry}


def _first_word(node: ast.AST) -> Optional[str]:
    if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
        head = node.elts[0]
        if isinstance(head, ast.Constant) and isinstance(head.value, str):
            return head.value
    return None


def _command_lines(tree: ast.AST) -> Iterator[Optional[str]]:
    """The first words of the command lines in a module (None where a node has none)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and "argv" in node.name:
            returns = (n for n in ast.walk(node) if isinstance(n, ast.Return) and n.value)
            yield from (_first_word(n.value) for n in returns)
        elif isinstance(node, ast.Call):
            if getattr(node.func, "attr", getattr(node.func, "id", None)) in RUNNERS:
                yield from map(_first_word, node.args[:2])
        elif isinstance(node, ast.Assign):
            names = {getattr(target, "id", None) for target in node.targets}
            if names & ARGV_NAMES:
                yield _first_word(node.value)
            value = node.value
            if names & DEFAULT_NAMES and isinstance(value, ast.Constant):
                yield value.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                yield value.value if PROGRAM.match(value.value) else None


def called() -> Dict[str, str]:
    """Command file name -> one place that runs it."""
    found: Dict[str, str] = {}
    for tree in TREES:
        for path in sorted((ROOT / tree).rglob("*.py")):
            for word in _command_lines(ast.parse(path.read_text(), str(path))):
                if word and (WORD.match(word) or PROGRAM.match(word)):
                    found.setdefault(Path(word).name, str(path.relative_to(ROOT)))
    return found


def test_every_command_the_code_runs_is_in_the_one_list():
    allowed = listed() | ESSENTIAL | PACKAGE_TOOLS | IN_THE_TREE | UNDER_TEST | SUBCOMMANDS
    missing = {name: where for name, where in called().items() if name not in allowed}
    assert missing == {}, f"add to COMMANDS in the Makefile (COMMAND=DEBIAN-PACKAGE): {missing}"


def test_the_reading_still_finds_the_known_commands():
    found = called()
    assert {"ip", "arping", "curl", "nft", "etcd", "pgbouncer", "systemd-nspawn"} <= set(found)
    assert {"ip", "arping", "etcd", "initdb"} <= listed()
