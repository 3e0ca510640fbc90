"""The parsers and checks of single config values, and how a problem shows a value.

A parser takes a raw YAML or environment value and returns the parsed value, or
raises ValueError with the problem; a check takes a string and raises ValueError
with the problem. Every problem line repeats at most a short piece of the value
(`brief`), and never a value that may be a secret (`kind_of`). yaim.config's
schema names one parser (and its checks) per key.

Pure module: it reads nothing.
"""

from __future__ import annotations

import ipaddress
import re
import reprlib
import shlex
from typing import Any, Callable, List, Optional, Tuple, Union
from urllib.parse import urlsplit

from yaim.names import BadName, check_name
from yaim.redact import mask_url

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Parser = Callable[[Any], Any]

IFNAMSIZ = 15  # Linux interface names and address labels, without the trailing NUL
# No time needs more than a day, and a day keeps every wait far below the limits of
# threading, select and etcd's TTLs.
DAY_MS = 86_400_000
COUNT_LIMIT = 100  # tries and consecutive results: more is a typo, not a policy
LISTED = 3  # problems of one list, or items of one warning, spelled out
CIDR_LIMIT = 49  # the longest network in CIDR form: a full IPv6 address with /128
KEY_LIMIT = 1024  # characters of a DCS key path: far above any Patroni key, far below etcd's


# --- showing values in problems ---


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 2, 60, 60, 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4


def brief(raw: Any) -> str:
    """A value as a problem line repeats it: its repr (control characters escaped), cut
    short, so that a 1 MB string or a deep structure costs one short line."""
    return _REPR.repr(raw)


def some(items: List[str], separator: str = "; ") -> str:
    """The first few items joined, and how many more there are."""
    more = f" (and {len(items) - LISTED} more)" if len(items) > LISTED else ""
    return separator.join(items[:LISTED]) + more


_KINDS = {
    bool: "true or false",
    int: "a number",
    float: "a number",
    list: "a list",
    dict: "a mapping",
}


def kind_of(raw: Any) -> str:
    """What a YAML value is, in words: shown instead of a value that is not even a string,
    which may be a secret (`etcd-password: 12345`)."""
    return _KINDS.get(type(raw), f"a {type(raw).__name__}")


# --- parsers: raw YAML or environment value -> parsed value, or ValueError(problem) ---


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # tab and newline pass


def _string(raw: Any, lines: bool = False) -> str:
    """A string without control characters (NUL never reaches a syscall, ESC never a
    terminal); tab and newline only where `lines` (a query, a script)."""
    if not isinstance(raw, str):
        hint = " (quote it in YAML)" if isinstance(raw, (int, float)) else ""
        raise ValueError(f"must be a string, got {kind_of(raw)}{hint}")
    control = (_CONTROL_BUT_LINES if lines else _CONTROL).search(raw)
    if control:
        raise ValueError(
            f"must not hold control characters, found {control.group()!r}"
            f" at character {control.start() + 1}"
        )
    return raw


def text(*checks: Callable[[str], None], optional: bool = False, lines: bool = False) -> Parser:
    """A string; empty means unset for optional keys, so YAIM_X= can clear a file's value."""

    def parse(raw: Any) -> Optional[str]:
        value = _string(raw, lines)
        if not value:
            if optional:
                return None
            raise ValueError("must not be empty")
        for check in checks:
            check(value)
        return value

    return parse


def integer(low: int, high: int) -> Parser:
    """An int within bounds; digit strings count too, as environment values are strings."""

    def parse(raw: Any) -> int:
        # bool is a subclass of int: YAML `true` must not become an interval of 1
        if isinstance(raw, bool) or not isinstance(raw, (int, str)):
            raise ValueError(f"must be an integer, got {brief(raw)}")
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"must be an integer, got {brief(raw)}") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {brief(value)}")
        return value

    return parse


def choice(*supported: str, planned: Tuple[str, ...] = ()) -> Parser:
    """One of a few words, any case; `planned` values get a "not supported yet" problem."""
    canonical = {word.lower(): word for word in supported}

    def parse(raw: Any) -> str:
        value = _string(raw).lower()
        if value in planned:
            raise ValueError(
                f"{brief(raw)} is not supported yet (supported: {', '.join(supported)})"
            )
        if value not in canonical:
            raise ValueError(f"must be one of {', '.join(supported)}, got {brief(raw)}")
        return canonical[value]

    return parse


def switch(raw: Any) -> str:
    """auto, on or off: YAML's true/false (`on`/`off`, `yes`/`no` too) are on and off, and
    the same words from the environment."""
    if isinstance(raw, bool):
        return "on" if raw else "off"
    words = {"true": "on", "on": "on", "yes": "on", "false": "off", "off": "off", "no": "off"}
    value = "auto" if _string(raw).lower() == "auto" else words.get(_string(raw).lower())
    if value is None:
        raise ValueError(f"must be auto, on or off, got {brief(raw)}")
    return value


def listing(item: Parser, nonempty: bool = False) -> Parser:
    """A YAML list, or a comma-separated string as the environment gives it."""

    def parse(raw: Any) -> Tuple[Any, ...]:
        if isinstance(raw, str):
            raw = [part.strip() for part in raw.split(",") if part.strip()]
        if not isinstance(raw, list):
            raise ValueError(f"must be a list (or a comma-separated string), got {brief(raw)}")
        if nonempty and not raw:
            raise ValueError("must list at least one entry")
        values, errors = [], []
        for entry in raw:
            try:
                values.append(item(entry))
            except ValueError as exc:
                errors.append(str(exc))
        if errors:
            raise ValueError(some(errors))
        return tuple(values)

    return parse


def command(raw: Any) -> Optional[Tuple[str, ...]]:
    """An argv: a YAML list of strings, or one string split as a shell would (no shell runs).

    An empty string means unset, as for the other optional keys. A word may hold tab
    and newline (a script for `sh -c`), no other control character.
    """
    if isinstance(raw, str):
        if not raw.strip():
            return None
        try:
            raw = shlex.split(raw)
        except ValueError as exc:
            raise ValueError(f"cannot split {brief(raw)} into words: {exc}") from None
    if not isinstance(raw, list) or not all(isinstance(word, str) for word in raw):
        raise ValueError(f"must be a command line or a list of strings, got {brief(raw)}")
    if not raw or not raw[0]:
        raise ValueError("must name a program to run")
    return tuple(_string(word, lines=True) for word in raw)


def boolean(raw: Any) -> bool:
    """true or false (YAML's yes/no/on/off too), and the same words from the environment."""
    if isinstance(raw, bool):
        return raw
    words = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
    value = words.get(_string(raw).lower())
    if value is None:
        raise ValueError(f"must be true or false, got {brief(raw)}")
    return value


def address(raw: Any) -> IPAddress:
    """One IPv4 or IPv6 address without a zone or a prefix (vip-manager's `ip`)."""
    value = _string(raw)
    if "%" in value or "/" in value or len(value) > CIDR_LIMIT:
        raise ValueError(f"must be one address, without a /prefix or a %zone, got {brief(value)}")
    try:
        return ipaddress.ip_address(value)
    except ValueError as exc:
        raise ValueError(f"not an IP address: {exc}") from None


def network(raw: Any) -> IPNetwork:
    """A network in CIDR form without a zone: yaim's addresses are global, and Python 3.9
    on would parse `fe80::%eth0/64` as a network of its own."""
    value = _string(raw)
    if "%" in value:
        raise ValueError(f"must not carry a scope (%zone), got {brief(value)}")
    if len(value) > CIDR_LIMIT:  # ipaddress would repeat all of it
        raise ValueError(f"not a network in CIDR form, got {brief(value)}")
    try:
        return ipaddress.ip_network(value)
    except ValueError as exc:
        raise ValueError(f"not a network in CIDR form: {exc}") from None


# --- checks on strings: raise ValueError(problem) ---


def url(value: str) -> None:
    """An http:// or https:// URL with a host (and a port, if any, that is a port)."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError for a port out of range or not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"must be an http:// or https:// URL with a host, got {brief(mask_url(value))}"
        )


def no_credentials(value: str) -> None:
    """etcd's credentials have keys of their own, which are masked and sent as the API
    wants; a user:password@ in an endpoint would be printed and logged with the URL."""
    if "@" in urlsplit(value).netloc:
        raise ValueError(
            "credentials go in etcd-user and etcd-password, not in the URL"
            f" {brief(mask_url(value))}"
        )


def bare_url(value: str) -> None:
    """A DCS endpoint is a member's address: the v2 client drops a path, query or
    fragment without a word, the v3 client glues its own paths (/v3/kv/range) after
    them, where a query swallows them. So none is taken, only an empty path or "/"."""
    if urlsplit(value).path not in ("", "/") or "?" in value or "#" in value:
        raise ValueError(
            "must be a member's URL without a path, query or fragment (yaim adds the API's"
            f" paths), got {brief(mask_url(value))}"
        )


def key_name(value: str) -> None:
    """Names that become one DCS key component (or an address label): yaim.names' rule."""
    try:
        check_name(value)
    except BadName as exc:
        raise ValueError(f"{exc}, got {brief(value)}") from None


def dcs_key(value: str) -> None:
    """A key someone else keeps in the DCS (Patroni's /<namespace>/<scope>/leader), read
    as it is: an absolute path of printable characters, whose components are not empty,
    `.` or `..` (python-etcd puts v2 keys into URLs, where those would climb)."""
    parts = value.split("/")
    if len(value) > KEY_LIMIT or not value.startswith("/"):
        raise ValueError(
            f"must be an absolute key path of at most {KEY_LIMIT} characters, such as"
            f" /service/<scope>/leader, got {brief(value)}"
        )
    if any(part in ("", ".", "..") or part != part.strip() for part in parts[1:]):
        raise ValueError(
            f"must not hold empty, '.' or '..' components or spaces around one, got {brief(value)}"
        )
    if any(char in value for char in "?#%"):
        raise ValueError(f"must not hold '?', '#' or '%', got {brief(value)}")


def interface_name(value: str) -> None:
    """The kernel's own rule (dev_valid_name), so a typo fails here and not at the first add."""
    bad_char = any(char in "/:" or char.isspace() for char in value)
    if len(value.encode()) > IFNAMSIZ or value in (".", "..") or bad_char:
        raise ValueError(
            f"must be a Linux interface name (at most {IFNAMSIZ} characters,"
            f" no '/', ':' or whitespace), got {brief(value)}"
        )


def host_port(value: str) -> None:
    try:
        listen_address(value)
    except ValueError:
        raise ValueError(
            f"must be HOST:PORT, e.g. 127.0.0.1:9720 or [::1]:9720, got {brief(value)}"
        ) from None


def facility(value: str) -> None:
    from logging.handlers import SysLogHandler  # (pickle and more) only when log-syslog is set

    if value.lower() not in SysLogHandler.facility_names:
        known = ", ".join(sorted(SysLogHandler.facility_names))
        raise ValueError(f"must be a syslog facility ({known}), got {brief(value)}")


def listen_address(value: str) -> Tuple[str, int]:
    """Split a `status-listen` value into the host and port to bind (an IPv6 host in [])."""
    parts = urlsplit("//" + value)
    host, port = parts.hostname, parts.port  # .port raises ValueError when not a number
    if not host or not port or parts.path or parts.query or parts.fragment:
        raise ValueError(value)
    return host, port
