"""What may become one component of a DCS key: node names, cluster names, labels.

Every name that ends up inside a key (`nodes/<node>`, `drain/<node>`, `/<ns>/<cl>/`)
is checked here, where it enters: the config, yaimctl's arguments, and the names
read back from the DCS. The rule is a strict character set, the one hostnames use
plus `_`, so that no name can carry `/`, `..`, `?`, `&`, `#`, `%`, whitespace or a
control character into a key or a URL (python-etcd joins keys into v2 URLs as they
are). The v2 backend also quotes every key it sends, as a second wall.

Pure module: no I/O.
"""

from __future__ import annotations

import re

NAME_LIMIT = 253  # a fully qualified host name's length
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?\Z")
SHOWN_LIMIT = 80  # characters of a refused value shown in a message


class BadName(ValueError):
    """A name that must not become part of a key; the message says why."""


def check_name(name: str) -> str:
    """`name` itself if it is a safe key component, else BadName (message without the name)."""
    if not isinstance(name, str) or not name:
        raise BadName("must not be empty")
    if len(name) > NAME_LIMIT:
        raise BadName(f"must be at most {NAME_LIMIT} characters")
    if not _NAME.match(name):
        raise BadName(
            "may hold only letters, digits, '.', '-' and '_', starting with a letter or digit"
            " and not ending with '.' or '-'"
        )
    return name


def is_name(name: str) -> bool:
    """Whether `name` passes check_name."""
    try:
        check_name(name)
    except BadName:
        return False
    return True


def shown(text: str, limit: int = SHOWN_LIMIT) -> str:
    """`text` safe to print on a terminal or in one log line: control and other
    non-printable characters escaped, cut to `limit` characters."""
    cut = text if len(text) <= limit else text[:limit]
    escaped = "".join(_printable(char) for char in cut)
    return escaped + ("..." if len(text) > limit else "")


def _printable(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if char.isprintable():
        return char
    return repr(char)[1:-1]  # \x1b, \n, \u2028: Python's own escapes
