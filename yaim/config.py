"""The configuration: yaim.yml plus YAIM_* environment overrides, validated in one go.

The schema is the `Config` class itself: every key is one field line naming its parser
and default, so adding a key is one line (plus a rule below if it depends on other
keys). `load` reports every problem of a file at once, one line each, because an
operator fixing a config should not have to restart yaim once per typo.

The file may be hostile or broken, so everything is bounded before it costs anything:
its size, its nesting and its alias expansion (counted while PyYAML composes, as the
library offers no such limit), every number (a wait of 10^13 ms overflows the thread
waits), every string (no control characters), every name that becomes a DCS key
component (yaim.names), and every value a problem line repeats (cut short, secrets
masked).

Pure module: it reads one file and the environment, nothing else.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import reprlib
import shlex
import socket
from dataclasses import dataclass, field, fields
from logging.handlers import SysLogHandler
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union
from urllib.parse import urlsplit

import yaml

from yaim.errors import ConfigError
from yaim.names import BadName, check_name, shown
from yaim.redact import mask_dsn, mask_url, url_password

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Parser = Callable[[Any], Any]

IFNAMSIZ = 15  # Linux interface names and address labels, without the trailing NUL
ENV_PREFIX = "YAIM_"
# No time needs more than a day, and a day keeps every wait far below the limits of
# threading, select and etcd's TTLs.
DAY_MS = 86_400_000
COUNT_LIMIT = 100  # tries and consecutive results: more is a typo, not a policy
FILE_LIMIT = 1 << 20  # bytes; the sample with every key and comment is under 10 KiB
NODE_LIMIT = 10_000  # YAML values, each alias counted as all it repeats
DEPTH_LIMIT = 32  # nesting of YAML collections; PyYAML's composer recurses per level
LISTED = 3  # problems of one list, or items of one warning, spelled out
CIDR_LIMIT = 49  # the longest network in CIDR form: a full IPv6 address with /128

_REQUIRED = object()


# --- showing values in problems ---


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 2, 60, 60, 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4


def _shown(raw: Any) -> str:
    """A value as a problem line repeats it: its repr (control characters escaped), cut
    short, so that a 1 MB string or a deep structure costs one short line."""
    return _REPR.repr(raw)


def _some(items: List[str], separator: str = "; ") -> str:
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


def _kind(raw: Any) -> str:
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
        raise ValueError(f"must be a string, got {_kind(raw)}{hint}")
    control = (_CONTROL_BUT_LINES if lines else _CONTROL).search(raw)
    if control:
        raise ValueError(
            f"must not hold control characters, found {control.group()!r}"
            f" at character {control.start() + 1}"
        )
    return raw


def _text(*checks: Callable[[str], None], optional: bool = False, lines: bool = False) -> Parser:
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


def _integer(low: int, high: int) -> Parser:
    """An int within bounds; digit strings count too, as environment values are strings."""

    def parse(raw: Any) -> int:
        # bool is a subclass of int: YAML `true` must not become an interval of 1
        if isinstance(raw, bool) or not isinstance(raw, (int, str)):
            raise ValueError(f"must be an integer, got {_shown(raw)}")
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"must be an integer, got {_shown(raw)}") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {_shown(value)}")
        return value

    return parse


def _choice(*supported: str, planned: Tuple[str, ...] = ()) -> Parser:
    """One of a few words, any case; `planned` values get a "not supported yet" problem."""
    canonical = {word.lower(): word for word in supported}

    def parse(raw: Any) -> str:
        value = _string(raw).lower()
        if value in planned:
            raise ValueError(
                f"{_shown(raw)} is not supported yet (supported: {', '.join(supported)})"
            )
        if value not in canonical:
            raise ValueError(f"must be one of {', '.join(supported)}, got {_shown(raw)}")
        return canonical[value]

    return parse


def _list(item: Parser, nonempty: bool = False) -> Parser:
    """A YAML list, or a comma-separated string as the environment gives it."""

    def parse(raw: Any) -> Tuple[Any, ...]:
        if isinstance(raw, str):
            raw = [part.strip() for part in raw.split(",") if part.strip()]
        if not isinstance(raw, list):
            raise ValueError(f"must be a list (or a comma-separated string), got {_shown(raw)}")
        if nonempty and not raw:
            raise ValueError("must list at least one entry")
        values, errors = [], []
        for entry in raw:
            try:
                values.append(item(entry))
            except ValueError as exc:
                errors.append(str(exc))
        if errors:
            raise ValueError(_some(errors))
        return tuple(values)

    return parse


def _command(raw: Any) -> Optional[Tuple[str, ...]]:
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
            raise ValueError(f"cannot split {_shown(raw)} into words: {exc}") from None
    if not isinstance(raw, list) or not all(isinstance(word, str) for word in raw):
        raise ValueError(f"must be a command line or a list of strings, got {_shown(raw)}")
    if not raw or not raw[0]:
        raise ValueError("must name a program to run")
    return tuple(_string(word, lines=True) for word in raw)


def _network(raw: Any) -> IPNetwork:
    """A network in CIDR form without a zone: yaim's addresses are global, and Python 3.9
    on would parse `fe80::%eth0/64` as a network of its own."""
    value = _string(raw)
    if "%" in value:
        raise ValueError(f"must not carry a scope (%zone), got {_shown(value)}")
    if len(value) > CIDR_LIMIT:  # ipaddress would repeat all of it
        raise ValueError(f"not a network in CIDR form, got {_shown(value)}")
    try:
        return ipaddress.ip_network(value)
    except ValueError as exc:
        raise ValueError(f"not a network in CIDR form: {exc}") from None


# --- checks on strings: raise ValueError(problem) ---


def _url(value: str) -> None:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError for a port out of range or not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"must be an http:// or https:// URL with a host, got {_shown(mask_url(value))}"
        )


def _no_credentials(value: str) -> None:
    """etcd's credentials have keys of their own, which are masked and sent as the API
    wants; a user:password@ in an endpoint would be printed and logged with the URL."""
    if "@" in urlsplit(value).netloc:
        raise ValueError(
            "credentials go in etcd-user and etcd-password, not in the URL"
            f" {_shown(mask_url(value))}"
        )


def _name(value: str) -> None:
    """Names that become one DCS key component (or an address label): yaim.names' rule."""
    try:
        check_name(value)
    except BadName as exc:
        raise ValueError(f"{exc}, got {_shown(value)}") from None


def _interface_name(value: str) -> None:
    """The kernel's own rule (dev_valid_name), so a typo fails here and not at the first add."""
    bad_char = any(char in "/:" or char.isspace() for char in value)
    if len(value.encode()) > IFNAMSIZ or value in (".", "..") or bad_char:
        raise ValueError(
            f"must be a Linux interface name (at most {IFNAMSIZ} characters,"
            f" no '/', ':' or whitespace), got {_shown(value)}"
        )


def _host_port(value: str) -> None:
    try:
        listen_address(value)
    except ValueError:
        raise ValueError(
            f"must be HOST:PORT, e.g. 127.0.0.1:9720 or [::1]:9720, got {_shown(value)}"
        ) from None


def _facility(value: str) -> None:
    if value.lower() not in SysLogHandler.facility_names:
        known = ", ".join(sorted(SysLogHandler.facility_names))
        raise ValueError(f"must be a syslog facility ({known}), got {_shown(value)}")


def listen_address(value: str) -> Tuple[str, int]:
    """Split a `status-listen` value into the host and port to bind (an IPv6 host in [])."""
    parts = urlsplit("//" + value)
    host, port = parts.hostname, parts.port  # .port raises ValueError when not a number
    if not host or not port or parts.path or parts.query or parts.fragment:
        raise ValueError(value)
    return host, port


# --- the schema ---


def _kebab(name: str) -> str:
    return name.replace("_", "-")


def _key(
    parse: Parser, default: Any = _REQUIRED, secret: Union[bool, Callable[[str], str]] = False
) -> Any:
    """Declare one config key. `default` is a value, or a function of the keys parsed so far.

    `secret` hides the value from repr and --check-config: True shows ***, a function
    shows the value with only its secret part masked (a password inside a DSN).
    """
    metadata = {"parse": parse, "default": default, "secret": secret}
    return field(repr=not secret, metadata=metadata)


def _seconds(name: str) -> property:
    """The code works in float seconds; the file keeps the operator's milliseconds."""
    return property(lambda self: getattr(self, name) / 1000.0, doc=f"{name} in seconds")


_OPTIONAL_TEXT = _text(optional=True)


def _hostname(_values: Mapping[str, Any]) -> str:
    """The default node-name: the OS hostname, if it can be a key component."""
    name = socket.gethostname()
    try:
        return check_name(name)
    except BadName as exc:
        raise ValueError(f"not set, and the hostname {_shown(name)} {exc}: set node-name") from None


_NAME = _text(_name)
_COUNT = _integer(1, COUNT_LIMIT)
_MILLISECONDS = _integer(1, DAY_MS)


@dataclass(frozen=True)
class Config:
    """The validated configuration; attributes are the contract's keys in snake_case."""

    dcs_type: str = _key(_choice("etcd", "etcd3"), "etcd")
    dcs_endpoints: Tuple[str, ...] = _key(
        _list(_text(_url, _no_credentials), nonempty=True), ("http://127.0.0.1:2379",)
    )
    dcs_namespace: str = _key(_NAME, "service")
    dcs_clustername: str = _key(_NAME, "yaim")
    etcd_user: Optional[str] = _key(_OPTIONAL_TEXT, None)
    etcd_password: Optional[str] = _key(_OPTIONAL_TEXT, None, secret=True)
    etcd_ca_file: Optional[str] = _key(_OPTIONAL_TEXT, None)
    etcd_cert_file: Optional[str] = _key(_OPTIONAL_TEXT, None)
    etcd_key_file: Optional[str] = _key(_OPTIONAL_TEXT, None)
    interval: int = _key(_MILLISECONDS, 1000)
    ttl: int = _key(_MILLISECONDS, 3000)
    retry_num: int = _key(_COUNT, 3)
    retry_after: int = _key(_integer(0, DAY_MS), 250)
    node_name: str = _key(_NAME, _hostname)
    interface: str = _key(_text(_interface_name))
    netmask: int = _key(_integer(0, 32), 32)
    netmask6: int = _key(_integer(0, 128), 128)
    label: str = _key(_NAME, "yaim")
    allowed_networks: Tuple[IPNetwork, ...] = _key(_list(_network), ())
    announce_count: int = _key(_integer(0, 100), 3)
    announce_interval: int = _key(_MILLISECONDS, 500)
    probe_timeout: int = _key(
        _integer(0, DAY_MS), lambda values: min(250, values.get("interval", 0) // 2)
    )
    conflict_backoff: int = _key(_integer(1000, DAY_MS), 300000)
    checker_type: str = _key(_choice("http", "postgres", "shell", "none"), "http")
    check_interval: int = _key(_MILLISECONDS, lambda values: values.get("interval"))
    check_timeout: int = _key(_MILLISECONDS, 2000)
    check_rise: int = _key(_COUNT, 1)
    check_fall: int = _key(_COUNT, 1)
    http_url: Optional[str] = _key(_text(_url, optional=True), None, secret=mask_url)
    http_expected_code: int = _key(_integer(100, 599), 200)
    http_expected_response_contains: Optional[str] = _key(_text(optional=True, lines=True), None)
    postgres_dsn: Optional[str] = _key(_OPTIONAL_TEXT, None, secret=mask_dsn)
    postgres_query: str = _key(_text(lines=True), "SELECT 1")
    shell_command: Optional[Tuple[str, ...]] = _key(_command, None)
    notify_take: Optional[Tuple[str, ...]] = _key(_command, None)
    notify_release: Optional[Tuple[str, ...]] = _key(_command, None)
    notify_fence: Optional[Tuple[str, ...]] = _key(_command, None)
    notify_health: Optional[Tuple[str, ...]] = _key(_command, None)
    notify_timeout: int = _key(_MILLISECONDS, 5000)
    command_environment: Tuple[str, ...] = _key(_list(_text()), ())
    command_capabilities: str = _key(_choice("none", "inherit"), "none")
    status_listen: Optional[str] = _key(_text(_host_port, optional=True), "127.0.0.1:9720")
    log_level: str = _key(_choice("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), "INFO")
    log_file: Optional[str] = _key(_OPTIONAL_TEXT, None)
    log_syslog: Optional[str] = _key(_text(_facility, optional=True), None)
    source: str = ""
    warnings: Tuple[str, ...] = ()

    interval_s = _seconds("interval")
    ttl_s = _seconds("ttl")
    retry_after_s = _seconds("retry_after")
    check_interval_s = _seconds("check_interval")
    check_timeout_s = _seconds("check_timeout")
    announce_interval_s = _seconds("announce_interval")
    probe_timeout_s = _seconds("probe_timeout")
    conflict_backoff_s = _seconds("conflict_backoff")
    notify_timeout_s = _seconds("notify_timeout")

    def as_dict(self, mask_secrets: bool = True) -> Dict[str, Any]:
        """Effective config with the contract's keys and plain values, for --check-config."""
        result = {}
        for key in _KEYS:
            value = getattr(self, key.name)
            mask = key.metadata["secret"]
            if mask_secrets and mask and value is not None:
                value = mask(value) if callable(mask) else "***"
            elif isinstance(value, tuple):
                value = [item if isinstance(item, str) else str(item) for item in value]
            result[_kebab(key.name)] = value
        return result


_KEYS = tuple(key for key in fields(Config) if key.metadata)
_BY_NAME = {_kebab(key.name): key for key in _KEYS}


# --- rules between keys: called with the named keys' values, return a problem or None ---


def _ttl_covers_interval(ttl: int, interval: int) -> Optional[str]:
    """Three refreshes per TTL, so one late or lost refresh never lets a mark expire."""
    if ttl < 3 * interval:
        return f"must be at least 3 x interval ({3 * interval} ms), got {ttl}"
    return None


def _probe_within_interval(probe: int, interval: int) -> Optional[str]:
    """A take round probes once; it must not outlast the interval it runs in."""
    if probe >= interval:
        return f"must be less than interval ({interval} ms), got {probe}"
    return None


def _cert_with_key(cert: Optional[str], key: Optional[str]) -> Optional[str]:
    if (cert is None) != (key is None):
        return "must be given together with etcd-key-file (only one of them is set)"
    return None


def _password_with_user(password: Optional[str], user: Optional[str]) -> Optional[str]:
    if password is not None and user is None:
        return "is set but etcd-user is not"
    return None


def _label_fits(label: str, interface: str) -> Optional[str]:
    full = f"{interface}:{label}"
    if len(full.encode()) > IFNAMSIZ:
        return f"{_shown(full)} is longer than {IFNAMSIZ} characters; shorten label (or interface)"
    return None


def _required_by(kind: str) -> Callable[[Any, str], Optional[str]]:
    """A rule: the key must be set when `checker-type` is `kind`."""

    def check(value: Any, checker: str) -> Optional[str]:
        if value is None and checker == kind:
            return f"required when checker-type is {kind}"
        return None

    return check


class _Rule(NamedTuple):
    keys: Tuple[str, ...]  # field names; the problem is reported on the first
    check: Callable[..., Optional[str]]


_RULES = (
    _Rule(("ttl", "interval"), _ttl_covers_interval),
    _Rule(("probe_timeout", "interval"), _probe_within_interval),
    _Rule(("etcd_cert_file", "etcd_key_file"), _cert_with_key),
    _Rule(("etcd_password", "etcd_user"), _password_with_user),
    _Rule(("label", "interface"), _label_fits),
    _Rule(("http_url", "checker_type"), _required_by("http")),
    _Rule(("postgres_dsn", "checker_type"), _required_by("postgres")),
    _Rule(("shell_command", "checker_type"), _required_by("shell")),
)


# --- risks: settings that work, but put something at risk; warned about at start ---


# The ranges behind ipaddress's is_unspecified, is_loopback, ... (what yaim.view refuses
# as pool addresses unless allowed-networks names them), as networks: those predicates
# say whether a whole network is special, not whether it holds a special address.
_SPECIAL = tuple(
    (kind, ipaddress.ip_network(cidr))
    for kind, cidrs in (
        ("unspecified", "0.0.0.0/8 ::/128"),
        ("loopback", "127.0.0.0/8 ::1/128"),
        ("IPv4-mapped", "::ffff:0:0/96"),
        ("link-local", "169.254.0.0/16 fe80::/10"),
        ("multicast", "224.0.0.0/4 ff00::/8"),
        (
            "reserved",
            "240.0.0.0/4 ::/8 100::/8 200::/7 400::/6 800::/5 1000::/4 4000::/3 6000::/3"
            " 8000::/3 a000::/3 c000::/3 e000::/4 f000::/5 f800::/6 fe00::/9",
        ),
    )
    for cidr in cidrs.split()
)


def special_kinds(network: IPNetwork) -> List[str]:
    """The kinds of special address (loopback, multicast, ...) a network holds any of."""
    found = (
        kind
        for kind, special in _SPECIAL
        if special.version == network.version and network.overlaps(special)
    )
    return list(dict.fromkeys(found))


def _and(words: List[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return " and ".join(filter(None, (", ".join(words[:-1]), words[-1])))


def _risks(values: Mapping[str, Any]) -> List[Tuple[str, str]]:
    """(field name, warning): special addresses allowed, credentials sent in clear."""
    risks = []
    for network in values["allowed_networks"]:
        kinds = special_kinds(network)
        if kinds:
            risk = f"{network} holds {_and(kinds)} addresses: yaim will put them on the interface"
            risks.append(("allowed_networks", risk))
    plain = [shown(url) for url in values["dcs_endpoints"] if urlsplit(url).scheme == "http"]
    if values["etcd_user"] is not None and plain:
        risk = f"etcd-password is sent in clear to {_some(plain, ', ')}; use https:// endpoints"
        risks.append(("etcd_user", risk))
    url = values["http_url"] if values["checker_type"] == "http" else None
    if url and url_password(url) and urlsplit(url).scheme == "http":
        risk = f"its password is sent in clear to {shown(mask_url(url))}; use https://"
        risks.append(("http_url", risk))
    return risks


# --- loading ---


class _TooLarge(yaml.YAMLError):
    """A document beyond the limits: refused whole, before anything walks it."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML would silently keep the last one),
    deep nesting, and documents whose aliases expand to more than NODE_LIMIT values.

    PyYAML has no limit of its own ("billion laughs": 9 levels of 9 aliases are a few
    hundred bytes that expand to 9^9 values). The count is kept while composing, where every
    node's expanded size is known from its children's as soon as it is complete, and an
    alias is worth the size of the node it names; a node that names itself through an
    alias (`&a [*a]`) expands without end.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._sizes: Dict[int, int] = {}  # id(node) -> its expanded size, once complete
        self._open: List[int] = []  # the expanded size of each open node's children so far

    def compose_node(self, parent: Optional[yaml.Node], index: Any) -> yaml.Node:
        mark = self.peek_event().start_mark
        alias = self.check_event(yaml.AliasEvent)
        if len(self._open) >= DEPTH_LIMIT:
            raise _TooLarge(f"nested deeper than {DEPTH_LIMIT} levels (line {mark.line + 1})")
        self._open.append(0)
        try:
            node = super().compose_node(parent, index)
        finally:
            children = self._open.pop()
        if not alias:
            size = self._sizes[id(node)] = 1 + children
        elif id(node) in self._sizes:
            size = self._sizes[id(node)]
        else:  # the node it names is still open: it holds its own alias
            raise _TooLarge(f"the alias on line {mark.line + 1} repeats a node that holds it")
        if self._open:
            self._open[-1] += size
        if size > NODE_LIMIT:
            raise _TooLarge(
                f"more than {NODE_LIMIT} values (line {mark.line + 1}), counting each YAML"
                " alias as all it repeats; a yaim.yml needs a few hundred"
            )
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Dict[Any, Any]:
        seen = set()
        for key_node, _value in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {_shown(key_node.value)}", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: str) -> Dict[Any, Any]:
    """The file's top-level mapping; a ConfigError with one clear line if there is none.

    At most FILE_LIMIT bytes are read, so a huge file (or /dev/zero) is refused at once.
    """
    try:
        with open(path, "rb") as stream:
            content = stream.read(FILE_LIMIT + 1)
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the file: {exc.strerror}"]) from None
    if len(content) > FILE_LIMIT:
        raise ConfigError(
            [f"{path}: larger than {FILE_LIMIT} bytes (1 MiB); a yaim.yml needs a few KiB"]
        )
    try:
        data = yaml.load(content.decode("utf-8"), Loader=_Loader)
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    except _TooLarge as exc:
        raise ConfigError([f"{path}: YAML refused: {exc}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: YAML syntax error: {_one_line(exc)}"]) from None
    except (ValueError, OverflowError) as exc:  # PyYAML's constructors: 5000 digits, month 13
        raise ConfigError([f"{path}: YAML value error: {shown(str(exc), 200)}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{path}: the top level must be a mapping of key: value, not a {type(data).__name__}"]
        )
    return data


def _one_line(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return shown(" ".join(f"{where}{problem}".split()), 200)


class _Given(NamedTuple):
    raw: Any
    origin: str  # the file's path, or "YAIM_X (environment)"


def _collect(
    path: str, data: Dict[Any, Any], environ: Mapping[str, str]
) -> Tuple[Dict[str, _Given], List[str], List[str]]:
    """Map every given value to its field name: (given, problems, warnings)."""
    given: Dict[str, _Given] = {}
    spelled: Dict[str, str] = {}
    problems: List[str] = []
    warnings: List[str] = []
    for key, raw in data.items():
        key = str(key)
        name = _kebab(key)
        if name not in _BY_NAME:
            hint = difflib.get_close_matches(name, list(_BY_NAME), n=1)
            problems.append(
                f"{path}: {shown(key)}: unknown key"
                + (f" (did you mean {hint[0]}?)" if hint else "")
            )
            continue
        if name != key:
            warnings.append(f"{path}: {key}: underscore spelling is deprecated, write {name}")
        if name in spelled:
            problems.append(f"{path}: {name}: given twice, as {spelled[name]} and as {key}")
        spelled[name] = key
        given[_BY_NAME[name].name] = _Given(raw, path)
    for key in _KEYS:
        variable = ENV_PREFIX + key.name.upper()
        if variable in environ:
            given[key.name] = _Given(environ[variable], f"{variable} (environment)")
    return given, problems, warnings


def _origin(given: Mapping[str, _Given], names: Tuple[str, ...], path: str) -> str:
    """Where the first of these keys was set; the file if none was (defaults are the file's)."""
    return next((given[name].origin for name in names if name in given), path)


def _parse(given: Mapping[str, _Given], path: str) -> Tuple[Dict[str, Any], List[str]]:
    """Parse every key, then check the rules between the keys that parsed: (values, problems)."""
    values: Dict[str, Any] = {}
    problems: List[str] = []
    for key in _KEYS:
        entry = given.get(key.name)
        where = f"{_origin(given, (key.name,), path)}: {_kebab(key.name)}"
        if entry is None or entry.raw is None:  # `key:` with no value in YAML means the default
            default = key.metadata["default"]
            if default is _REQUIRED:
                problems.append(f"{where}: required, but not set")
                continue
            try:  # a default may depend on the host (node-name: the hostname)
                values[key.name] = default(values) if callable(default) else default
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
            continue
        try:
            values[key.name] = key.metadata["parse"](entry.raw)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    for rule in _RULES:
        if all(name in values for name in rule.keys):
            problem = rule.check(*(values[name] for name in rule.keys))
            if problem:
                where = f"{_origin(given, rule.keys, path)}: {_kebab(rule.keys[0])}"
                problems.append(f"{where}: {problem}")
    return values, problems


def load(path: str, environ: Optional[Mapping[str, str]] = None) -> Config:
    """Read the file and YAIM_* overrides and validate all; ConfigError lists every problem."""
    environ = os.environ if environ is None else environ
    given, problems, warnings = _collect(path, _read_yaml(path), environ)
    values, parse_problems = _parse(given, path)
    problems.extend(parse_problems)
    if problems:
        raise ConfigError(problems)
    if not values["allowed_networks"]:
        warnings.append(
            f"{_origin(given, ('allowed_networks',), path)}: allowed-networks: empty, so any"
            " address in the pool is accepted; list the networks your addresses come from"
        )
    if values["ttl"] % 1000:
        warnings.append(
            f"{_origin(given, ('ttl',), path)}: ttl: etcd keeps whole seconds, so marks live"
            f" {-(-values['ttl'] // 1000)} s and a crashed node's addresses move that much later"
        )
    for name, risk in _risks(values):
        warnings.append(f"{_origin(given, (name,), path)}: {_kebab(name)}: {risk}")
    return Config(source=path, warnings=tuple(warnings), **values)
