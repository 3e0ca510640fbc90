"""The configuration: yaim.yml plus YAIM_* environment overrides, validated in one go.

The schema is the `Config` class itself: every key is one field line naming its parser
(yaim.config_values) and default, so adding a key is one line (plus a rule in
yaim.config_rules if it depends on other keys). `load` reports every problem of a file
at once, one line each, because an operator fixing a config should not have to restart
yaim once per typo.

The file may be hostile or broken, so everything is bounded before it costs anything:
its size, its nesting and its alias expansion (yaim.config_yaml), every number (a wait
of 10^13 ms overflows the thread waits), every string (no control characters), every
name that becomes a DCS key component (yaim.names), and every value a problem line
repeats (cut short, secrets masked).

Pure module: it reads one file and the environment, nothing else.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import socket
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

from yaim.config_rules import RULES, risks
from yaim.config_values import (
    COUNT_LIMIT,
    DAY_MS,
    IPAddress,
    IPNetwork,
    Parser,
    address,
    bare_url,
    boolean,
    brief,
    choice,
    command,
    dcs_key,
    facility,
    host_port,
    integer,
    interface_name,
    key_name,
    listen_address,
    listing,
    network,
    no_credentials,
    switch,
    text,
    url,
)
from yaim.config_yaml import read_yaml
from yaim.errors import ConfigError
from yaim.names import BadName, check_name, shown
from yaim.redact import mask_dsn, mask_url
from yaim.view import WEIGHT_LIMIT, Endpoint

__all__ = ["Config", "config_path", "listen_address", "load"]

ENV_PREFIX = "YAIM_"

_REQUIRED = object()


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


_OPTIONAL_TEXT = text(optional=True)


def _hostname(_values: Mapping[str, Any]) -> str:
    """The default node-name: the OS hostname, if it can be a key component."""
    name = socket.gethostname()
    try:
        return check_name(name)
    except BadName as exc:
        raise ValueError(f"not set, and the hostname {brief(name)} {exc}: set node-name") from None


def _cluster_name(values: Mapping[str, Any]) -> str:
    """yaim, or with `ip` (a vip-manager file) a directory of that address's own: two
    vip-manager files on one etcd (two Patroni clusters) are two yaim clusters, not one
    pool served by the healthy nodes of both."""
    ip = values.get("ip")
    return "yaim" if ip is None else "vip-" + str(ip).replace(":", "-")


def _checker_type(values: Mapping[str, Any]) -> str:
    """http, or dcs-key where trigger-key is set (a vip-manager file names no checker)."""
    return "http" if values.get("trigger_key") is None else "dcs-key"


def _log_level(values: Mapping[str, Any]) -> str:
    """INFO, or DEBUG for vip-manager's `verbose: true`."""
    return "DEBUG" if values.get("verbose") else "INFO"


CHECKERS = ("http", "postgres", "shell", "dcs-key", "none")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_NAME = text(key_name)
_COUNT = integer(1, COUNT_LIMIT)
_MILLISECONDS = integer(1, DAY_MS)


@dataclass(frozen=True)
class Config:
    """The validated configuration; attributes are the contract's keys in snake_case."""

    dcs_type: str = _key(choice("etcd", "etcd3"), "etcd")
    dcs_migrate_from: Optional[str] = _key(choice("etcd"), None)
    dcs_endpoints: Tuple[str, ...] = _key(
        listing(text(url, no_credentials, bare_url), nonempty=True), ("http://127.0.0.1:2379",)
    )
    dcs_namespace: str = _key(_NAME, "service")
    ip: Optional[IPAddress] = _key(address, None)  # noqa: RUF009 -- an address is immutable
    dcs_clustername: str = _key(_NAME, _cluster_name)
    etcd_user: Optional[str] = _key(_OPTIONAL_TEXT, None)
    etcd_password: Optional[str] = _key(_OPTIONAL_TEXT, None, secret=True)
    etcd_ca_file: Optional[str] = _key(_OPTIONAL_TEXT, None)
    etcd_cert_file: Optional[str] = _key(_OPTIONAL_TEXT, None)
    etcd_key_file: Optional[str] = _key(_OPTIONAL_TEXT, None)
    interval: int = _key(_MILLISECONDS, 1000)
    ttl: int = _key(_MILLISECONDS, 3000)
    retry_num: int = _key(_COUNT, 3)
    retry_after: int = _key(integer(0, DAY_MS), 250)
    node_name: str = _key(_NAME, _hostname)
    interface: str = _key(text(interface_name))
    netmask: int = _key(integer(0, 32), 32)
    netmask6: int = _key(integer(0, 128), 128)
    label: str = _key(_NAME, "yaim")
    allowed_networks: Tuple[IPNetwork, ...] = _key(listing(network), ())
    announce_count: int = _key(integer(0, 100), 3)
    announce_interval: int = _key(_MILLISECONDS, 500)
    announce_refresh: int = _key(integer(0, DAY_MS), 0)
    announce_mode: str = _key(choice("request", "reply"), "request")
    link_rise: int = _key(integer(0, DAY_MS), 1000)
    weight: int = _key(integer(0, WEIGHT_LIMIT), 1)
    rebalance: str = _key(choice("auto", "manual"), "auto")
    rebalance_delay: int = _key(integer(0, DAY_MS), 0)
    resync: int = _key(integer(1000, DAY_MS), 60000)
    probe_timeout: int = _key(
        integer(0, DAY_MS), lambda values: min(250, values.get("interval", 0) // 2)
    )
    probe_ahead: str = _key(switch, "auto")
    conflict_backoff: int = _key(integer(1000, DAY_MS), 300000)
    trigger_key: Optional[str] = _key(text(dcs_key, optional=True), None)
    trigger_value: str = _key(text(), lambda values: values.get("node_name"))
    checker_type: str = _key(choice(*CHECKERS), _checker_type)
    check_interval: int = _key(_MILLISECONDS, lambda values: values.get("interval"))
    check_timeout: int = _key(_MILLISECONDS, 2000)
    check_rise: int = _key(_COUNT, 1)
    check_fall: int = _key(_COUNT, 1)
    http_url: Optional[str] = _key(text(url, optional=True), None, secret=mask_url)
    http_expected_code: int = _key(integer(100, 599), 200)
    http_expected_response_contains: Optional[str] = _key(text(optional=True, lines=True), None)
    postgres_dsn: Optional[str] = _key(_OPTIONAL_TEXT, None, secret=mask_dsn)
    postgres_query: str = _key(text(lines=True), "SELECT 1")
    shell_command: Optional[Tuple[str, ...]] = _key(command, None)
    notify_take: Optional[Tuple[str, ...]] = _key(command, None)
    notify_release: Optional[Tuple[str, ...]] = _key(command, None)
    notify_fence: Optional[Tuple[str, ...]] = _key(command, None)
    notify_health: Optional[Tuple[str, ...]] = _key(command, None)
    notify_timeout: int = _key(_MILLISECONDS, 5000)
    command_environment: Tuple[str, ...] = _key(listing(text()), ())
    command_capabilities: str = _key(choice("none", "inherit"), "none")
    manager_type: str = _key(choice("basic"), "basic")
    status_listen: Optional[str] = _key(text(host_port, optional=True), "127.0.0.1:9720")
    verbose: bool = _key(boolean, False)
    log_level: str = _key(choice(*LOG_LEVELS), _log_level)
    log_file: Optional[str] = _key(_OPTIONAL_TEXT, None)
    log_syslog: Optional[str] = _key(text(facility, optional=True), None)
    failsafe: str = _key(switch, "auto")
    peer_listen: Optional[str] = _key(text(host_port, optional=True), None)
    peer_secret_file: Optional[str] = _key(_OPTIONAL_TEXT, None)
    source: str = ""
    warnings: Tuple[str, ...] = ()

    interval_s = _seconds("interval")
    ttl_s = _seconds("ttl")
    retry_after_s = _seconds("retry_after")
    check_interval_s = _seconds("check_interval")
    check_timeout_s = _seconds("check_timeout")
    announce_interval_s = _seconds("announce_interval")
    announce_refresh_s = _seconds("announce_refresh")
    link_rise_s = _seconds("link_rise")
    rebalance_delay_s = _seconds("rebalance_delay")
    resync_s = _seconds("resync")
    probe_timeout_s = _seconds("probe_timeout")
    conflict_backoff_s = _seconds("conflict_backoff")
    notify_timeout_s = _seconds("notify_timeout")

    @property
    def peer_endpoint(self) -> Optional[Endpoint]:
        """Where the peer endpoint listens and the others ask (set at start if not given)."""
        return None if self.peer_listen is None else Endpoint.parse(self.peer_listen)

    @property
    def failsafe_on(self) -> bool:
        """The failsafe hold applies: on, or auto with a peer secret given; and the conflict
        probe on (yaim.failsafe)."""
        wanted = self.failsafe == "on" or (self.failsafe == "auto" and self.peer_secret_file)
        return bool(wanted) and self.probe_timeout > 0

    @property
    def probe_ahead_on(self) -> bool:
        """The lookout probes a silent holder's addresses ahead of their marks' expiry: not
        off, and the conflict probe on (yaim.lookout)."""
        return self.probe_ahead != "off" and self.probe_timeout > 0

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
            elif isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
                value = str(value)
            result[_kebab(key.name)] = value
        return result

    def taking(self, other: Config, keys: List[str]) -> Config:
        """This configuration with the values of the contract's `keys` from `other`
        (a SIGHUP applies the keys that can change live)."""
        return replace(
            self, **{_BY_NAME[key].name: getattr(other, _BY_NAME[key].name) for key in keys}
        )


_KEYS = tuple(key for key in fields(Config) if key.metadata)
_BY_NAME = {_kebab(key.name): key for key in _KEYS}


# --- loading ---


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
    for rule in RULES:
        if all(name in values for name in rule.keys):
            problem = rule.check(*(values[name] for name in rule.keys))
            if problem:
                where = f"{_origin(given, rule.keys, path)}: {_kebab(rule.keys[0])}"
                problems.append(f"{where}: {problem}")
    return values, problems


CONFIG_VARIABLE = "YAIM_CONFIG"  # names the file for both commands (not a key's override)
LOCAL_FILE = "yaim.yml"  # in the directory the command runs in
SYSTEM_FILE = "/etc/yaim/yaim.yml"  # where the packages put it


def config_path(
    given: Optional[str],
    environ: Mapping[str, str],
    system_fallback: bool = False,
    exists: Callable[[str], bool] = os.path.exists,
) -> str:
    """The file to read: -c, else YAIM_CONFIG, else ./yaim.yml. With `system_fallback`
    (yaimctl), /etc/yaim/yaim.yml when ./yaim.yml does not exist: an operator's shell is
    rarely in the daemon's directory, and the packaged daemon reads that file."""
    if given:
        return given
    if environ.get(CONFIG_VARIABLE):
        return environ[CONFIG_VARIABLE]
    if system_fallback and not exists(LOCAL_FILE):
        return SYSTEM_FILE
    return LOCAL_FILE


def load(path: str, environ: Optional[Mapping[str, str]] = None) -> Config:
    """Read the file and YAIM_* overrides and validate all; ConfigError lists every problem."""
    environ = os.environ if environ is None else environ
    given, problems, warnings = _collect(path, read_yaml(path), environ)
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
    for risk in risks(values):
        where = f"{_origin(given, (risk.key,), path)}: {_kebab(risk.key)}"
        warnings.append(f"{where}: {risk.warning}")
    return Config(source=path, warnings=tuple(warnings), **values)
