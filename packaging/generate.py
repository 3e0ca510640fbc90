"""What the packages install that is made from the code it describes: the manual pages
yaim(8), yaimctl(8) and yaim.yml(5), and yaimctl's bash completion.

    python3 packaging/generate.py OUTDIR  # yaim.8 yaimctl.8 yaim.yml.5 bash-completion/yaimctl

yaim(8) and yaimctl(8) are the commands' own argparse help (yaim.cli.build_parser,
yaim.ctl.build_parser, every subcommand's too); yaim.yml(5) is conf/yaim.yml, the
commented example every key is documented in, read key by key: its `## ` headings are
the sections, the comment above a key (or above a run of keys) is their text. A key of
yaim.config.Config that the example lacks, or one there without a comment, is an error:
the page cannot drift from the code. The pages are written as reStructuredText and
turned into roff by docutils' manpage writer (the packages build-depend on
python3-docutils). The completion is a table of yaimctl's commands and options, from
the same parser, behind a small bash function (no bash-completion helpers needed).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import fields
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from yaim import __version__, cli, config, ctl  # noqa: E402

COLUMNS = "80"  # argparse wraps its help to $COLUMNS: the same pages wherever built

EXAMPLE = ROOT / "conf" / "yaim.yml"
KEY_LINE = re.compile(r"^(?:# ?)?([a-z][a-z0-9-]*):(?:\s|$)")
MANUAL = "yaim manual"


class Entry(NamedTuple):
    """Keys of the example documented by one comment."""

    keys: Tuple[str, ...]
    text: str


def _known() -> set:
    return {f.name.replace("_", "-") for f in fields(config.Config)} - {"source", "warnings"}


def example_sections(text: str) -> Iterator[Tuple[str, List[Entry]]]:
    """(heading, entries) of the example, in its order; the lead comment is left out. A
    comment paragraph belongs to the key lines right below it (`key:` or `# key:`);
    indented lines below a key are its value."""
    known = _known()
    heading, entries, comment, keys = "", [], [], []  # type: ignore[var-annotated]
    for line in [*text.splitlines(), "## "]:
        match = KEY_LINE.match(line)
        if match and match.group(1) in known:
            keys.append(match.group(1))
            continue
        if keys and line.lstrip("# ").startswith("- "):
            continue  # a list value, or a commented one
        if keys:
            entries.append(Entry(tuple(keys), " ".join(word for word in comment if word)))
            comment, keys = [], []
        if line.startswith("## "):
            if heading:
                yield heading, entries
            heading, entries, comment = line[3:].strip(), [], []
        elif line.startswith("#"):
            comment.append(line[1:].strip())
        elif not line.strip():
            comment = []


def documented(text: str) -> Dict[str, str]:
    """Key -> its text, checked against yaim.config.Config both ways (ValueError)."""
    found = {
        key: e.text for _, entries in example_sections(text) for e in entries for key in e.keys
    }
    missing = sorted(_known() - set(found))
    undocumented = sorted(key for key, words in found.items() if not words)
    if missing or undocumented:
        raise ValueError(f"conf/yaim.yml: keys missing {missing}, without a comment {undocumented}")
    return found


def _literal(text: str) -> str:
    return "::\n\n" + "\n".join("    " + line if line else "" for line in text.splitlines())


def _text(words: str) -> str:
    """Prose as reStructuredText shows it as written (no emphasis, no references)."""
    return re.sub(r"([\\*`|_])", r"\\\1", words)


def _head(name: str, section: int, summary: str) -> List[str]:
    return [
        "=" * len(name),
        name,
        "=" * len(name),
        "",
        "-" * len(summary),
        summary,
        "-" * len(summary),
        "",
        f":Manual section: {section}",
        f":Manual group: {MANUAL}",
        f":Version: {__version__}",
        "",
    ]


def _section(title: str, *body: str) -> List[str]:
    return [title, "=" * len(title), "", *body, ""]


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[Tuple[str, argparse.ArgumentParser]]:
    """Each subcommand's name and parser, nested ones after their parent (ips add)."""
    for action in parser._actions:  # argparse has no public walk of its subcommands
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from ((f"{name} {n}", s) for n, s in _subcommands(sub))


COMMON_SEE_ALSO = "yaim(8), yaimctl(8), yaim.yml(5), the README (/usr/share/doc/yaim/README.rst)"
FILES = "/etc/yaim/yaim.yml\n    the configuration the packaged services read"


def _options(parser: argparse.ArgumentParser) -> str:
    """The help without its usage line and description, which the page shows above."""
    return parser.format_help().strip().split("\n\n", 2 if parser.description else 1)[-1]


def _words(parser: argparse.ArgumentParser) -> List[str]:
    """What may follow the command `parser` parses: its options, then its subcommands."""
    options = [o for action in parser._actions for o in action.option_strings]
    names = [
        name
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name in action.choices
    ]
    return options + names


def completion(parser: argparse.ArgumentParser) -> str:
    """yaimctl's bash completion: the words after each command, from its parser."""
    table = {"yaimctl": _words(parser)}  # bash has no empty key
    table.update({f"yaimctl {name}": _words(sub) for name, sub in _subcommands(parser)})
    entries = "\n".join(f'    ["{key}"]="{" ".join(words)}"' for key, words in table.items())
    return COMPLETION.replace("@TABLE@", entries)


COMPLETION = """# bash completion for yaimctl, made from its command line by packaging/generate.py
declare -gA _yaimctl_words=(
@TABLE@
)

_yaimctl() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} key=yaimctl i word
    if [[ $prev == -c || $prev == --config ]]; then
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
        return
    fi
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        case $word in
        -c | --config) ((i++)) ;;
        -*) ;;
        *) [[ -n ${_yaimctl_words["$key $word"]+set} ]] && key="$key $word" ;;
        esac
    done
    mapfile -t COMPREPLY < <(compgen -W "${_yaimctl_words[$key]}" -- "$cur")
}
complete -F _yaimctl yaimctl
"""


def command_page(name: str, parser: argparse.ArgumentParser, summary: str, extra: str) -> str:
    """The page of one command: its usage, description and every subcommand's help."""
    parser.prog = name
    lines = _head(name, 8, summary)
    lines += _section("SYNOPSIS", _literal(parser.format_usage().strip()))
    lines += _section("DESCRIPTION", _text(parser.description or ""), "", _text(extra))
    lines += _section("OPTIONS", _literal(_options(parser)))
    for sub_name, sub in _subcommands(parser):
        sub.prog = f"{name} {sub_name}"
        lines += [sub_name, "-" * len(sub_name), "", _literal(sub.format_help().strip()), ""]
    lines += _section("FILES", FILES)
    lines += _section(
        "ENVIRONMENT",
        f"{config.CONFIG_VARIABLE}\n    the configuration file, where -c does not name one",
        "",
        "YAIM_<KEY>\n    overrides a key of the file (see yaim.yml(5))",
    )
    lines += _section("SEE ALSO", COMMON_SEE_ALSO)
    return "\n".join(lines)


def config_page(text: str) -> str:
    """yaim.yml(5): every key of the example with its comment, by section."""
    documented(text)
    lines = _head("yaim.yml", 5, "configuration of the yaim daemon and yaimctl")
    lines += _section(
        "DESCRIPTION",
        "A YAML mapping of the keys below. Every key can also be set by an environment"
        " variable YAIM_<KEY> (upper case, dashes as underscores, lists comma-separated),"
        " which wins over the file. Times are in milliseconds. A key left out takes its"
        " default. Check a file with yaim --check-config -c FILE: a bad file exits 2 with"
        " one line per problem, naming the key.",
    )
    for heading, entries in example_sections(text):
        body: List[str] = []
        for entry in entries:
            body += [", ".join(f"**{key}**" for key in entry.keys), "    " + _text(entry.text), ""]
        lines += _section(heading.upper(), *body)
    lines += _section("FILES", FILES, "", "/usr/share/doc/yaim/examples: the commented example")
    lines += _section("SEE ALSO", COMMON_SEE_ALSO)
    return "\n".join(lines)


def pages() -> Dict[str, str]:
    """File name -> reStructuredText of each page."""
    os.environ["COLUMNS"] = COLUMNS
    return {
        "yaim.8": command_page(
            "yaim",
            cli.build_parser(),
            "keep virtual IP addresses on healthy cluster nodes",
            "SIGTERM or SIGINT removes every held address, deletes this node's marks and"
            " node key and exits 0; SIGHUP reloads the configuration (a bad file is"
            " reported and the old one kept). Exit status: 0 after a clean stop, 2 for a"
            " configuration error, 1 for any other fatal error.",
        ),
        "yaimctl.8": command_page(
            "yaimctl",
            ctl.build_parser(),
            "show and change the yaim pool and nodes",
            "yaimctl talks to the etcd the configuration names; it never touches an"
            " interface. It reads -c FILE, else the file YAIM_CONFIG names, else"
            " ./yaim.yml where it exists, else /etc/yaim/yaim.yml.",
        ),
        "yaim.yml.5": config_page(EXAMPLE.read_text()),
    }


def main(argv: List[str]) -> int:
    from docutils.core import publish_string
    from docutils.writers import manpage

    if len(argv) != 1:
        print("usage: python3 packaging/generate.py OUTDIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    (out / "bash-completion").mkdir(exist_ok=True)
    (out / "bash-completion" / "yaimctl").write_text(completion(ctl.build_parser()))
    for name, source in pages().items():
        roff = publish_string(
            source,
            writer=manpage.Writer(),
            settings_overrides={"report_level": 2, "halt_level": 2},
        )
        (out / name).write_bytes(roff)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
