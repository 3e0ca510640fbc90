"""yaim.config: defaults, every kind of problem, environment overrides, aliases, the sample file."""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yaim import config, config_rules, config_yaml
from yaim.errors import ConfigError

SAMPLE = Path(__file__).resolve().parents[2] / "conf" / "yaim.yml"
MINIMAL = {"interface": "eth0", "http-url": "http://127.0.0.1:8008/health"}
# tmp_path is only rewritten, never read stale (a check Hypothesis 5.44 added; bullseye's
# 5.43 has none to suppress)
# A 5000-digit number: past Python's limit on int() of text (3.11, and the point releases
# that took it), PyYAML cannot build it; below it, it is a number out of range.
TOO_LONG = (
    "Exceeds the limit (4300 digits)"
    if hasattr(sys, "set_int_max_str_digits")
    else "retry-num: must be between 1 and 100"
)
FIXTURE_OK = [
    getattr(HealthCheck, name)
    for name in ("function_scoped_fixture",)
    if hasattr(HealthCheck, name)
]
KEYS = [field.name for field in dataclasses.fields(config.Config) if field.metadata]


def write(tmp_path: Path, data: Any) -> str:
    """Write `data` as YAML (or verbatim if a str) to yaim.yml; return its path."""
    path = tmp_path / "yaim.yml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return str(path)


def load(
    tmp_path: Path, overrides: Optional[Dict[str, Any]] = None, env: Mapping[str, str] = ()
) -> config.Config:
    return config.load(write(tmp_path, dict(MINIMAL, **(overrides or {}))), dict(env))


def problems_of(tmp_path: Path, data: Any, env: Mapping[str, str] = ()) -> List[str]:
    with pytest.raises(ConfigError) as caught:
        config.load(write(tmp_path, data), dict(env))
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def one_problem(tmp_path: Path, overrides: Dict[str, Any], env: Mapping[str, str] = ()) -> str:
    problems = problems_of(tmp_path, dict(MINIMAL, **overrides), env)
    assert len(problems) == 1, problems
    return problems[0]


# --- defaults ---


DEFAULTS = {
    "dcs_type": "etcd",
    "dcs_migrate_from": None,
    "dcs_endpoints": ("http://127.0.0.1:2379",),
    "dcs_namespace": "service",
    "dcs_clustername": "yaim",
    "etcd_user": None,
    "etcd_password": None,
    "etcd_ca_file": None,
    "etcd_cert_file": None,
    "etcd_key_file": None,
    "interval": 1000,
    "ttl": 3000,
    "retry_num": 3,
    "retry_after": 250,
    "node_name": socket.gethostname(),
    "netmask": 32,
    "netmask6": 128,
    "label": "yaim",
    "allowed_networks": (),
    "announce_count": 3,
    "announce_interval": 500,
    "announce_refresh": 0,
    "announce_mode": "request",
    "link_rise": 1000,
    "weight": 1,
    "rebalance": "auto",
    "rebalance_delay": 0,
    "resync": 60000,
    "probe_timeout": 250,
    "probe_ahead": "auto",
    "conflict_backoff": 300000,
    "ip": None,
    "trigger_key": None,
    "trigger_value": socket.gethostname(),  # the node-name
    "checker_type": "http",
    "check_interval": 1000,
    "check_timeout": 2000,
    "check_rise": 1,
    "check_fall": 1,
    "http_expected_code": 200,
    "http_expected_response_contains": None,
    "postgres_dsn": None,
    "postgres_query": "SELECT 1",
    "shell_command": None,
    "notify_take": None,
    "notify_release": None,
    "notify_fence": None,
    "notify_health": None,
    "notify_timeout": 5000,
    "command_environment": (),
    "command_capabilities": "none",
    "status_listen": "127.0.0.1:9720",
    "manager_type": "basic",
    "verbose": False,
    "log_level": "INFO",
    "log_file": None,
    "log_syslog": None,
    "failsafe": "auto",
    "peer_listen": None,
    "peer_secret_file": None,
}


@pytest.mark.parametrize("attribute, expected", sorted(DEFAULTS.items()))
def test_default(tmp_path, attribute, expected):
    assert getattr(load(tmp_path), attribute) == expected


def test_every_key_has_a_default_or_is_required():
    """Guards DEFAULTS: a new key needs its default listed there (or is required)."""
    assert set(KEYS) - set(DEFAULTS) == {"interface", "http_url"}


def test_source_and_given_values(tmp_path):
    cfg = load(tmp_path, {"interval": 500, "ttl": 1500, "node-name": "node1"})
    assert (cfg.interval, cfg.ttl, cfg.node_name, cfg.interface) == (500, 1500, "node1", "eth0")
    assert cfg.source == str(tmp_path / "yaim.yml")


def test_check_interval_follows_interval_unless_set(tmp_path):
    assert load(tmp_path, {"interval": 400}).check_interval == 400
    assert load(tmp_path, {"interval": 400, "check-interval": 700}).check_interval == 700


def test_times_in_seconds(tmp_path):
    cfg = load(
        tmp_path,
        {
            "interval": 500,
            "ttl": 2500,
            "retry-after": 0,
            "check-interval": 1500,
            "check-timeout": 750,
        },
    )
    assert (cfg.interval_s, cfg.ttl_s, cfg.retry_after_s) == (0.5, 2.5, 0.0)
    assert (cfg.check_interval_s, cfg.check_timeout_s) == (1.5, 0.75)


def test_empty_value_in_yaml_means_default(tmp_path):
    path = write(tmp_path, "interface: eth0\nhttp-url: http://127.0.0.1/\ninterval:\n")
    assert config.load(path, {}).interval == 1000


def test_choices_ignore_case(tmp_path):
    cfg = load(tmp_path, {"log-level": "debug", "checker-type": "NONE", "dcs-type": "Etcd"})
    assert (cfg.log_level, cfg.checker_type, cfg.dcs_type) == ("DEBUG", "none", "etcd")


def test_etcd3_is_a_dcs_type(tmp_path):
    assert load(tmp_path, {"dcs-type": "ETCD3"}).dcs_type == "etcd3"


def test_a_migrating_node_honours_the_v2_layout_on_etcd3(tmp_path):
    cfg = load(tmp_path, {"dcs-type": "etcd3", "dcs-migrate-from": "ETCD"})
    assert (cfg.dcs_type, cfg.dcs_migrate_from) == ("etcd3", "etcd")


def test_checker_none_needs_no_http_url(tmp_path):
    cfg = config.load(write(tmp_path, {"interface": "eth0", "checker-type": "none"}), {})
    assert cfg.http_url is None


def test_allowed_networks_parsed_and_no_warning(tmp_path):
    cfg = load(tmp_path, {"allowed-networks": ["198.51.100.0/24", "2001:db8::/64"]})
    assert cfg.allowed_networks == (
        ipaddress.ip_network("198.51.100.0/24"),
        ipaddress.ip_network("2001:db8::/64"),
    )
    assert not any("allowed-networks" in warning for warning in cfg.warnings)


def test_empty_allowed_networks_warns(tmp_path):
    assert any("allowed-networks" in warning for warning in load(tmp_path).warnings)


def test_config_is_immutable(tmp_path):
    cfg = load(tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.interval = 5  # type: ignore[misc]


# --- problems ---


@pytest.mark.parametrize(
    "overrides, key, fragment",
    [
        ({"dcs-type": "consul"}, "dcs-type", "must be one of etcd"),
        ({"dcs-migrate-from": "etcd"}, "dcs-migrate-from", "needs dcs-type: etcd3"),
        ({"dcs-type": "etcd3", "dcs-migrate-from": "etcd3"}, "dcs-migrate-from", "one of etcd"),
        ({"dcs-type": "etcd3", "dcs-migrate-from": "consul"}, "dcs-migrate-from", "one of etcd"),
        ({"dcs-endpoints": []}, "dcs-endpoints", "at least one"),
        ({"dcs-endpoints": ["ftp://192.0.2.1:2379"]}, "dcs-endpoints", "http:// or https://"),
        ({"dcs-endpoints": ["http://"]}, "dcs-endpoints", "with a host"),
        ({"dcs-endpoints": ["http://192.0.2.1:99999"]}, "dcs-endpoints", "URL"),
        ({"dcs-endpoints": {"a": 1}}, "dcs-endpoints", "must be a list"),
        ({"dcs-endpoints": [2379]}, "dcs-endpoints", "must be a string"),
        ({"dcs-namespace": ""}, "dcs-namespace", "must not be empty"),
        ({"dcs-namespace": "a/b"}, "dcs-namespace", "may hold only letters"),
        ({"dcs-namespace": "a b"}, "dcs-namespace", "may hold only letters"),
        ({"dcs-clustername": "a/b"}, "dcs-clustername", "may hold only letters"),
        ({"dcs-clustername": ".."}, "dcs-clustername", "may hold only letters"),
        ({"dcs-clustername": 2024}, "dcs-clustername", "quote it"),
        ({"etcd-user": 5}, "etcd-user", "must be a string"),
        ({"etcd-password": "secret"}, "etcd-password", "etcd-user is not"),
        ({"etcd-cert-file": "/c.pem"}, "etcd-cert-file", "together with etcd-key-file"),
        ({"etcd-key-file": "/k.pem"}, "etcd-cert-file", "together with etcd-key-file"),
        ({"etcd-ca-file": ["/a"]}, "etcd-ca-file", "must be a string"),
        ({"interval": 0}, "interval", "between 1 and 86400000, got 0"),
        ({"interval": True}, "interval", "must be an integer"),
        ({"interval": 1.5}, "interval", "must be an integer"),
        ({"interval": "1s"}, "interval", "must be an integer"),
        ({"ttl": 2000}, "ttl", "must be at least 3 x interval (3000 ms), got 2000"),
        ({"ttl": False}, "ttl", "must be an integer"),
        ({"retry-num": 0}, "retry-num", "between 1 and 100"),
        ({"retry-after": -1}, "retry-after", "between 0 and 86400000"),
        ({"node-name": "a/b"}, "node-name", "may hold only letters"),
        ({"node-name": "a b"}, "node-name", "may hold only letters"),
        ({"node-name": ""}, "node-name", "must not be empty"),
        ({"interface": None}, "interface", "required"),
        ({"interface": ""}, "interface", "must not be empty"),
        ({"interface": "averyveryverylongif"}, "interface", "Linux interface name"),
        ({"interface": "eth0:1"}, "interface", "Linux interface name"),
        ({"interface": ".."}, "interface", "Linux interface name"),
        ({"netmask": 33}, "netmask", "between 0 and 32"),
        ({"netmask": -1}, "netmask", "between 0 and 32"),
        ({"netmask6": 129}, "netmask6", "between 0 and 128"),
        ({"label": "a b"}, "label", "may hold only letters"),
        ({"label": "a/b"}, "label", "may hold only letters"),
        ({"label": "averylongone"}, "label", "'eth0:averylongone' is longer than 15"),
        ({"allowed-networks": ["198.51.100.1/24"]}, "allowed-networks", "host bits set"),
        ({"allowed-networks": ["nonsense"]}, "allowed-networks", "CIDR"),
        ({"allowed-networks": 5}, "allowed-networks", "must be a list"),
        ({"announce-count": 101}, "announce-count", "between 0 and 100"),
        ({"announce-interval": 0}, "announce-interval", "between 1 and 86400000"),
        ({"announce-refresh": 999}, "announce-refresh", "0 (off) or at least interval (1000"),
        ({"announce-mode": "garp"}, "announce-mode", "must be one of request, reply"),
        ({"link-rise": -1}, "link-rise", "between 0 and 86400000"),
        ({"probe-timeout": 1000}, "probe-timeout", "less than interval (1000 ms), got 1000"),
        ({"conflict-backoff": 999}, "conflict-backoff", "between 1000 and 86400000"),
        ({"checker-type": "tcp"}, "checker-type", "one of http, postgres, shell, dcs-key, none"),
        ({"check-interval": 0}, "check-interval", "between 1 and 86400000"),
        ({"check-timeout": 0}, "check-timeout", "between 1 and 86400000"),
        ({"check-rise": 0}, "check-rise", "between 1 and 100"),
        ({"check-fall": 0}, "check-fall", "between 1 and 100"),
        ({"http-url": None}, "http-url", "required when checker-type is http"),
        ({"http-url": "127.0.0.1:8008/health"}, "http-url", "http:// or https://"),
        ({"http-expected-code": 99}, "http-expected-code", "between 100 and 599"),
        ({"http-expected-code": 600}, "http-expected-code", "between 100 and 599"),
        ({"http-expected-response-contains": 1}, "http-expected-response-contains", "string"),
        ({"log-level": "verbose"}, "log-level", "must be one of DEBUG"),
        ({"checker-type": "postgres"}, "postgres-dsn", "required when checker-type is postgres"),
        ({"postgres-dsn": 5}, "postgres-dsn", "must be a string"),
        ({"postgres-query": ""}, "postgres-query", "must not be empty"),
        ({"checker-type": "shell"}, "shell-command", "required when checker-type is shell"),
        ({"checker-type": "shell", "shell-command": ""}, "shell-command", "required when"),
        ({"shell-command": []}, "shell-command", "must name a program"),
        ({"shell-command": ["check", 5]}, "shell-command", "list of strings"),
        ({"shell-command": {"a": 1}}, "shell-command", "list of strings"),
        ({"shell-command": "check 'unclosed"}, "shell-command", "cannot split"),
        ({"notify-take": []}, "notify-take", "must name a program"),
        ({"notify-release": ["hook", 5]}, "notify-release", "list of strings"),
        ({"notify-fence": "hook 'unclosed"}, "notify-fence", "cannot split"),
        ({"notify-health": 5}, "notify-health", "command line or a list"),
        ({"notify-timeout": 0}, "notify-timeout", "between 1 and 86400000"),
        ({"status-listen": "9720"}, "status-listen", "must be HOST:PORT"),
        ({"status-listen": "127.0.0.1:0"}, "status-listen", "must be HOST:PORT"),
        ({"status-listen": "[::1:9720"}, "status-listen", "must be HOST:PORT"),
        ({"log-syslog": "local9"}, "log-syslog", "must be a syslog facility"),
    ],
)
def test_problem(tmp_path, overrides, key, fragment):
    problem = one_problem(tmp_path, overrides)
    assert problem.startswith(f"{tmp_path / 'yaim.yml'}: {key}: "), problem
    assert fragment in problem
    assert "\n" not in problem


def test_ttl_problem_is_worded_as_in_the_contract(tmp_path):
    assert one_problem(tmp_path, {"ttl": 2000}) == (
        f"{tmp_path / 'yaim.yml'}: ttl: must be at least 3 x interval (3000 ms), got 2000"
    )


def test_every_problem_is_reported_at_once(tmp_path):
    data = {
        "interface": "x" * 20,
        "interval": True,
        "retry-num": 0,
        "netmask": 40,
        "log-level": "loud",
        "etcd-password": "secret",
        "colour": "blue",
    }
    problems = problems_of(tmp_path, data, {"YAIM_CHECK_FALL": "-1"})
    keys = [
        "interface",
        "interval",
        "retry-num",
        "netmask",
        "log-level",
        "etcd-password",
        "colour",
        "http-url",
        "YAIM_CHECK_FALL",
    ]
    assert len(problems) == len(keys), problems
    for key in keys:
        assert any(key in problem for problem in problems), key


# --- the file itself ---


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.yml")
    with pytest.raises(ConfigError) as caught:
        config.load(path, {})
    assert caught.value.problems == [f"{path}: file not found"]


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as caught:
        config.load(str(tmp_path), {})
    assert caught.value.problems == [f"{tmp_path}: cannot read the file: Is a directory"]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("interface: [eth0\n", "YAML syntax error: line 2, column 1"),
        ("interface: eth0\ninterface: eth1\n", "YAML syntax error: line 2, column 1: duplicate"),
        ("- interface\n- eth0\n", "top level must be a mapping of key: value, not a list"),
        ("eth0\n", "top level must be a mapping of key: value, not a str"),
    ],
)
def test_broken_file_is_one_line(tmp_path, text, fragment):
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1 and "\n" not in problems[0], problems
    assert problems[0].startswith(f"{tmp_path / 'yaim.yml'}: ")
    assert fragment in problems[0]


def test_file_not_utf8(tmp_path):
    path = tmp_path / "yaim.yml"
    path.write_bytes(b"interface: \xff\n")
    with pytest.raises(ConfigError) as caught:
        config.load(str(path), {})
    assert caught.value.problems == [f"{path}: not UTF-8 text"]


def test_empty_file_reports_required_keys(tmp_path):
    problems = problems_of(tmp_path, "")
    assert [re.sub(r".*: (\S+): .*", r"\1", p) for p in problems] == ["interface", "http-url"]


# --- environment ---


def test_env_overrides_file_and_parses_like_yaml(tmp_path):
    env = {
        "YAIM_RETRY_NUM": "7",
        "YAIM_INTERVAL": "200",
        "YAIM_DCS_ENDPOINTS": "http://192.0.2.11:2379, https://192.0.2.12:2379",
        "YAIM_ALLOWED_NETWORKS": "198.51.100.0/24,2001:db8::/32",
        "YAIM_LOG_LEVEL": "warning",
    }
    cfg = load(tmp_path, {"retry-num": 2, "dcs-endpoints": ["http://192.0.2.1:2379"]}, env)
    assert (cfg.retry_num, cfg.interval, cfg.check_interval, cfg.log_level) == (
        7,
        200,
        200,
        "WARNING",
    )
    assert cfg.dcs_endpoints == ("http://192.0.2.11:2379", "https://192.0.2.12:2379")
    assert [str(network) for network in cfg.allowed_networks] == [
        "198.51.100.0/24",
        "2001:db8::/32",
    ]


def test_env_supplies_a_required_key(tmp_path):
    cfg = config.load(write(tmp_path, {"checker-type": "none"}), {"YAIM_INTERFACE": "bond0"})
    assert cfg.interface == "bond0"


def test_empty_env_clears_optional_value(tmp_path):
    cfg = load(tmp_path, {"etcd-user": "yaim"}, {"YAIM_ETCD_USER": ""})
    assert cfg.etcd_user is None


def test_env_problem_names_the_variable(tmp_path):
    problem = one_problem(tmp_path, {}, {"YAIM_INTERVAL": "true"})
    assert problem == "YAIM_INTERVAL (environment): interval: must be an integer, got 'true'"


def test_rule_problem_names_where_the_value_came_from(tmp_path):
    problem = one_problem(tmp_path, {}, {"YAIM_TTL": "1000"})
    assert problem.startswith("YAIM_TTL (environment): ttl: must be at least 3 x interval")


def test_unrelated_environment_is_ignored(tmp_path):
    assert load(tmp_path, env={"YAIM_EVENT": "take", "PATH": "/bin"}).interface == "eth0"


def test_os_environ_is_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("YAIM_NETMASK", "24")
    assert config.load(write(tmp_path, MINIMAL)).netmask == 24


@settings(max_examples=50, deadline=None, suppress_health_check=FIXTURE_OK)
@given(st.one_of(st.integers(-(10**6), 10**6), st.booleans()))
def test_env_and_file_agree(tmp_path, value):
    """A value means the same in the file as in the environment, written as YAML would."""

    def outcome(data, env):
        try:
            return config.load(write(tmp_path, dict(MINIMAL, **data)), env).retry_after
        except ConfigError as exc:
            return [problem.split(": ", 1)[1] for problem in exc.problems]

    from_file = outcome({"retry-after": value}, {})
    from_env = outcome({}, {"YAIM_RETRY_AFTER": str(value).lower()})
    if isinstance(value, bool):
        assert isinstance(from_file, list) and isinstance(from_env, list)
    else:
        assert from_file == from_env
        negative = [f"retry-after: must be between 0 and 86400000, got {value}"]
        assert from_file == (value if value >= 0 else negative)


# --- spelling ---


def test_underscore_alias_is_accepted_with_a_warning(tmp_path):
    cfg = load(tmp_path, {"retry_num": 5, "etcd_user": "yaim"})
    assert (cfg.retry_num, cfg.etcd_user) == (5, "yaim")
    assert any("retry_num" in w and "retry-num" in w for w in cfg.warnings)
    assert any("etcd_user" in w and "etcd-user" in w for w in cfg.warnings)


def test_both_spellings_is_a_problem(tmp_path):
    problem = one_problem(tmp_path, {"retry_num": 5, "retry-num": 5})
    assert ": retry-num: given twice" in problem


def test_unknown_key_suggests_the_closest(tmp_path):
    assert one_problem(tmp_path, {"intervall": 5}).endswith(
        ": intervall: unknown key (did you mean interval?)"
    )
    assert one_problem(tmp_path, {"retry_numb": 5}).endswith("(did you mean retry-num?)")


def test_unknown_key_without_a_close_match(tmp_path):
    assert one_problem(tmp_path, {"zzz": 1}).endswith(": zzz: unknown key")


# --- output ---


def test_as_dict_masks_secrets_and_is_plain(tmp_path):
    cfg = load(
        tmp_path,
        {"etcd-user": "yaim", "etcd-password": "hunter2", "allowed-networks": ["192.0.2.0/24"]},
    )
    shown = cfg.as_dict()
    assert shown["etcd-password"] == "***"
    assert shown["etcd-user"] == "yaim"
    assert shown["allowed-networks"] == ["192.0.2.0/24"]
    assert shown["dcs-endpoints"] == ["http://127.0.0.1:2379"]
    assert "hunter2" not in yaml.safe_dump(shown)
    assert "hunter2" not in repr(cfg)
    assert cfg.as_dict(mask_secrets=False)["etcd-password"] == "hunter2"


def test_as_dict_has_every_key_and_leaves_unset_secret_none(tmp_path):
    shown = load(tmp_path).as_dict()
    assert shown["etcd-password"] is None
    assert "interface" in shown and "log-level" in shown
    assert "source" not in shown and "warnings" not in shown
    assert all("_" not in key for key in shown)
    assert list(shown) == [key.replace("_", "-") for key in KEYS]


# --- the sample file ---


def test_sample_loads_and_shows_the_defaults(tmp_path):
    sample = config.load(str(SAMPLE), {})
    assert not any(problem for problem in sample.warnings if "allowed-networks" not in problem)
    assert sample.as_dict() == load(tmp_path).as_dict()


def test_sample_names_every_key_and_its_commented_examples_load(tmp_path):
    text = SAMPLE.read_text(encoding="utf-8")
    for key in KEYS:
        assert re.search(rf"^(# )?{key.replace('_', '-')}:", text, re.M), key
    uncommented = re.sub(r"^# ([a-z0-9-]+:)", r"\1", text, flags=re.M)
    cfg = config.load(write(tmp_path, uncommented), {})
    assert (cfg.etcd_password, cfg.node_name, cfg.etcd_key_file) == (
        "secret",
        "node1",
        "/etc/yaim/etcd-client-key.pem",
    )


def test_a_ttl_of_partial_seconds_warns_that_etcd_rounds_it_up(tmp_path):
    warnings = [w for w in load(tmp_path, {"ttl": 3500}).warnings if ": ttl: " in w]
    assert len(warnings) == 1 and "marks live 4 s" in warnings[0]
    assert not [w for w in load(tmp_path, {"ttl": 3000}).warnings if ": ttl: " in w]


def test_status_listen_splits_and_an_empty_value_disables_it(tmp_path):
    assert config.listen_address(load(tmp_path).status_listen) == ("127.0.0.1", 9720)
    assert config.listen_address("[::1]:9721") == ("::1", 9721)
    assert load(tmp_path, {"status-listen": ""}).status_listen is None
    assert load(tmp_path, env={"YAIM_STATUS_LISTEN": ""}).status_listen is None


def test_postgres_and_shell_checkers(tmp_path):
    cfg = load(tmp_path, {"checker-type": "postgres", "postgres-dsn": "host=db", "http-url": None})
    assert (cfg.checker_type, cfg.postgres_dsn, cfg.postgres_query) == (
        "postgres",
        "host=db",
        "SELECT 1",
    )
    shell = {"checker-type": "shell", "http-url": None}
    given = "check_pg --role 'primary node' -q"
    cfg = load(tmp_path, dict(shell, **{"shell-command": given}))
    assert cfg.shell_command == ("check_pg", "--role", "primary node", "-q")
    assert load(tmp_path, dict(shell, **{"shell-command": ["a b", "c,d"]})).shell_command == (
        "a b",
        "c,d",
    )
    from_env = load(tmp_path, shell, {"YAIM_SHELL_COMMAND": "sh -c 'exit 0'"})
    assert from_env.shell_command == ("sh", "-c", "exit 0")
    assert from_env.as_dict()["shell-command"] == ["sh", "-c", "exit 0"]


def test_notify_commands(tmp_path):
    cfg = load(tmp_path, {"notify-take": "systemctl reload haproxy", "notify-timeout": 800})
    assert cfg.notify_take == ("systemctl", "reload", "haproxy")
    assert (cfg.notify_timeout, cfg.notify_timeout_s) == (800, 0.8)
    hook = ["sh", "-c", 'echo "$YAIM_EVENT" >> /tmp/x']
    from_env = load(tmp_path, {"notify-fence": hook}, {"YAIM_NOTIFY_FENCE": ""})
    assert from_env.notify_fence is None
    assert load(tmp_path, {"notify-fence": hook}).as_dict()["notify-fence"] == hook


@pytest.mark.parametrize(
    "dsn, shown",
    [
        ("host=db user=yaim password=hunter2 dbname=x", "host=db user=yaim password=*** dbname=x"),
        ("host=db password = 'hunter 2\\'s' port=6432", "host=db password = *** port=6432"),
        (
            "postgresql://yaim:hunter2@db:6432/x?sslmode=require",
            "postgresql://yaim:***@db:6432/x?sslmode=require",
        ),
        (
            "postgres://db/x?user=yaim&password=hunter2&sslmode=require",
            "postgres://db/x?user=yaim&password=***&sslmode=require",
        ),
        ("postgresql://yaim@db/x", "postgresql://yaim@db/x"),
        ("host=db user=yaim", "host=db user=yaim"),
    ],
)
def test_as_dict_masks_only_the_password_in_the_dsn(tmp_path, dsn, shown):
    cfg = load(tmp_path, {"postgres-dsn": dsn})
    assert cfg.as_dict()["postgres-dsn"] == shown
    assert "hunter" not in repr(cfg)
    assert cfg.as_dict(mask_secrets=False)["postgres-dsn"] == dsn


# --- hostile input (issue 14) ---


DAY = 86_400_000
BOUNDS = {
    "interval": (1, DAY),
    "ttl": (1, DAY),
    "retry-num": (1, 100),
    "retry-after": (0, DAY),
    "netmask": (0, 32),
    "netmask6": (0, 128),
    "announce-count": (0, 100),
    "announce-interval": (1, DAY),
    "announce-refresh": (0, DAY),
    "link-rise": (0, DAY),
    "weight": (0, 1000),
    "rebalance-delay": (0, DAY),
    "resync": (1000, DAY),
    "probe-timeout": (0, DAY),
    "conflict-backoff": (1000, DAY),
    "check-interval": (1, DAY),
    "check-timeout": (1, DAY),
    "check-rise": (1, 100),
    "check-fall": (1, 100),
    "http-expected-code": (100, 599),
    "notify-timeout": (1, DAY),
}
SECRET = "S3cretPw"


def problems_for(tmp_path: Path, key: str, value: Any) -> List[str]:
    """The problems of MINIMAL with one key set, those naming the key."""
    try:
        load(tmp_path, {key: value})
    except ConfigError as exc:
        return [problem for problem in exc.problems if f": {key}: " in problem]
    return []


def test_every_number_key_has_bounds():
    """Guards BOUNDS: a new number key needs an upper bound too (10^13 ms overflowed waits)."""
    numbers = {
        name.replace("_", "-")
        for name, value in DEFAULTS.items()
        if isinstance(value, int) and not isinstance(value, bool)
    }
    assert numbers == set(BOUNDS)


@pytest.mark.parametrize("key, bounds", sorted(BOUNDS.items()))
def test_number_bounds(tmp_path, key, bounds):
    low, high = bounds
    between = f"must be between {low} and {high}, got"
    for value in (low - 1, high + 1, 10**13):
        problems = problems_for(tmp_path, key, value)
        assert len(problems) == 1 and f"{between} {value}" in problems[0], (value, problems)
    for value in (low, high):  # a rule between keys may still refuse it, the bounds not
        assert not any(between in problem for problem in problems_for(tmp_path, key, value))


def test_largest_times_load_together(tmp_path):
    cfg = load(tmp_path, {"interval": DAY // 3, "ttl": DAY, "conflict-backoff": DAY})
    assert (cfg.ttl_s, cfg.conflict_backoff_s) == (86400.0, 86400.0)


def test_sample_states_every_bound(tmp_path):
    blocks = SAMPLE.read_text(encoding="utf-8").split("\n\n")
    for key, (low, high) in BOUNDS.items():
        block = next(b for b in blocks if re.search(rf"^(# )?{key}:", b, re.M))
        text = " ".join(block.replace("#", "").split()).lower()
        assert f"between {low} and {high}" in text, key


def test_huge_interval_is_exit_2_naming_the_key(tmp_path, capsys):
    from yaim import cli

    path = write(tmp_path, dict(MINIMAL, interval=10000000000000))
    assert cli.main(["--check-config", "-c", path]) == 2
    assert capsys.readouterr().err == (
        f"{path}: interval: must be between 1 and 86400000, got 10000000000000\n"
    )


@pytest.mark.parametrize(
    "key, value",
    [
        ("interface", "eth\0"),
        ("interface", "eth\x1b[2J"),
        ("node-name", "node\x00"),
        ("etcd-ca-file", "/etc/ca\0.pem"),
        ("etcd-user", "yaim\n"),
        ("log-file", "/var/log/yaim\x7f"),
        ("http-url", "http://127.0.0.1:8008/\nhealth"),
        ("dcs-endpoints", ["http://127.0.0.1\t:2379"]),
        ("allowed-networks", ["198.51.100.0/24\0"]),
        ("log-level", "INFO\x85"),
        ("postgres-query", "SELECT 1\0"),
        ("http-expected-response-contains", "ok\x1b[0m"),
        ("shell-command", ["check", "a\0b"]),
        ("notify-take", "hook \x07"),
    ],
)
def test_control_characters_are_refused(tmp_path, key, value):
    problem = one_problem(tmp_path, {key: value})
    assert problem.startswith(f"{tmp_path / 'yaim.yml'}: {key}: "), problem
    assert "must not hold control characters, found '\\" in problem
    assert problem.isprintable()


def test_control_characters_in_the_environment_are_refused(tmp_path):
    problem = one_problem(tmp_path, {}, {"YAIM_INTERFACE": "eth\x1b0"})
    assert problem == (
        "YAIM_INTERFACE (environment): interface: must not hold control characters,"
        " found '\\x1b' at character 4"
    )


def test_tab_and_newline_pass_in_queries_and_scripts(tmp_path):
    query = "SELECT NOT\n\tpg_is_in_recovery()\n"
    script = ["sh", "-c", "logger one\nlogger two\n"]
    cfg = load(tmp_path, {"postgres-query": query, "notify-health": script})
    assert (cfg.postgres_query, cfg.notify_health) == (query, tuple(script))


@pytest.mark.parametrize("key", ["node-name", "dcs-namespace", "dcs-clustername", "label"])
@pytest.mark.parametrize(
    "name", ["?recursive=true&x=", "..", "a%2eb", "a#b", "-x", "x.", "n\u00f6de", "a" * 254]
)
def test_key_components_follow_the_strict_name_rule(tmp_path, key, name):
    problem = one_problem(tmp_path, {key: name})
    assert problem.startswith(f"{tmp_path / 'yaim.yml'}: {key}: "), problem
    assert "may hold only letters" in problem or "at most 253 characters" in problem


def test_names_of_the_strict_set_are_accepted(tmp_path):
    cfg = load(tmp_path, {"node-name": "db-1.example_x", "dcs-clustername": "pg_1"})
    assert (cfg.node_name, cfg.dcs_clustername) == ("db-1.example_x", "pg_1")


def test_a_hostname_that_cannot_be_a_node_name_asks_for_node_name(tmp_path, monkeypatch):
    monkeypatch.setattr(config.socket, "gethostname", lambda: "bad host?x=")
    problem = one_problem(tmp_path, {})
    assert problem.startswith(f"{tmp_path / 'yaim.yml'}: node-name: not set, and the hostname")
    assert "'bad host?x='" in problem and problem.endswith(": set node-name")
    assert load(tmp_path, {"node-name": "node1"}).node_name == "node1"


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path):
    path = tmp_path / "yaim.yml"
    path.write_text("interface: eth0\nchecker-type: none\n#" + "x" * config_yaml.FILE_LIMIT)
    with pytest.raises(ConfigError) as caught:
        config.load(str(path), {})
    assert caught.value.problems == [
        f"{path}: larger than 1048576 bytes (1 MiB); a yaim.yml needs a few KiB"
    ]


def test_a_50_mb_file_is_refused_at_once(tmp_path):
    path = tmp_path / "yaim.yml"
    with open(path, "wb") as sparse:
        sparse.truncate(50 << 20)
    assert len(problems_of_path(str(path), seconds=2)) == 1


def test_a_file_of_exactly_the_limit_loads(tmp_path):
    head = "interface: eth0\nchecker-type: none\n#"
    path = write(tmp_path, head + "x" * (config_yaml.FILE_LIMIT - len(head)))
    assert config.load(path, {}).interface == "eth0"


def problems_of_path(path: str, seconds: float) -> List[str]:
    """The problems of a file that must be refused, within `seconds`."""
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        config.load(path, {})
    assert time.monotonic() - started < seconds
    assert all(len(problem) < 600 and problem.isprintable() for problem in caught.value.problems)
    return caught.value.problems


def laughs(levels: int) -> str:
    """A "billion laughs" file: each level 9 aliases of the one before."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ",".join([f"*l{level - 1}"] * 9) + "]")
    return "\n".join([*lines, f"interface: *l{levels - 1}", ""])


@pytest.mark.parametrize("levels", [5, 9])
def test_alias_expansion_is_bounded(tmp_path, levels):
    text = laughs(levels)
    assert len(text) < 800
    problems = problems_of_path(write(tmp_path, text), seconds=2)
    assert problems == [
        f"{tmp_path / 'yaim.yml'}: YAML refused: more than 10000 values (line 5),"
        " counting each YAML alias as all it repeats; a yaim.yml needs a few hundred"
    ]


def test_aliases_within_the_budget_work(tmp_path):
    text = "x: &cmd [/bin/hook, --quiet]\n"
    problems = problems_of(tmp_path, text + "interface: eth0\nnotify-take: *cmd\n")
    assert len(problems) == 2 and ": x: unknown key" in problems[0]  # and http-url required
    cfg = config.load(write(tmp_path, "interface: &i eth0\nchecker-type: none\n"), {})
    assert cfg.interface == "eth0"


def test_an_alias_inside_its_own_node_is_refused(tmp_path):
    problems = problems_of_path(write(tmp_path, "interface: &a [*a]\n"), seconds=2)
    assert problems == [
        f"{tmp_path / 'yaim.yml'}: YAML refused: the alias on line 1 repeats a node that holds it"
    ]


def test_deep_nesting_is_refused(tmp_path):
    problems = problems_of_path(write(tmp_path, "interface: " + "[" * 100_000), seconds=2)
    assert problems == [
        f"{tmp_path / 'yaim.yml'}: YAML refused: nested deeper than 32 levels (line 1)"
    ]


@pytest.mark.parametrize(
    "text, fragment",
    [
        (f"interface: eth0\nchecker-type: none\nretry-num: {'9' * 5000}\n", TOO_LONG),
        ("interface: eth0\nlog-file: 2001-13-45\n", "month must be in 1..12"),
        ("interface: eth0\nlog-file: *undefined" + "x" * 5000 + "\n", "found undefined alias"),
    ],
)
def test_values_pyyaml_cannot_build_are_one_line(tmp_path, text, fragment):
    problems = problems_of_path(write(tmp_path, text), seconds=2)
    assert len(problems) == 1 and fragment in problems[0], problems


@pytest.mark.parametrize(
    "key, value",
    [
        ("interface", "x" * 900_000),
        ("interface", [["y" * 200] * 3 for _ in range(2000)]),
        ("interface", functools.reduce(lambda inner, _: [inner], range(28), ["z" * 10_000])),
        ("dcs-endpoints", ["ftp://" + "h" * 100 for _ in range(3000)]),
        ("allowed-networks", ["n" * 100_000]),
        ("log-level", {"k" * 100_000: "v" * 100_000}),
        ("x" * 100_000, 1),
    ],
)
def test_a_huge_value_gives_a_short_problem_quickly(tmp_path, key, value):
    problems = problems_of_path(write(tmp_path, dict(MINIMAL, **{key: value})), seconds=5)
    assert len(problems) == 1, problems


def test_a_long_list_of_bad_entries_names_a_few_and_counts_the_rest(tmp_path):
    problem = one_problem(tmp_path, {"dcs-endpoints": [f"ftp://h{n}" for n in range(10)]})
    assert "'ftp://h2'" in problem and "'ftp://h3'" not in problem
    assert problem.endswith(" (and 7 more)")


@pytest.mark.parametrize(
    "network, kinds",
    [
        ("127.0.0.0/8", "loopback"),
        ("0.0.0.0/8", "unspecified"),
        ("169.254.0.0/16", "link-local"),
        ("224.0.0.0/24", "multicast"),
        ("255.255.255.255/32", "reserved"),
        ("::1/128", "loopback and reserved"),  # ::/8 is reserved, as ipaddress says
        ("::ffff:0:0/96", "IPv4-mapped and reserved"),
        ("fe80::/64", "link-local"),
        ("ff02::/16", "multicast"),
        ("0.0.0.0/0", "unspecified, loopback, link-local, multicast and reserved"),
        ("::/0", "unspecified, loopback, IPv4-mapped, link-local, multicast and reserved"),
    ],
)
def test_allowed_networks_with_special_addresses_warn(tmp_path, network, kinds):
    warnings = load(tmp_path, {"allowed-networks": ["198.51.100.0/24", network]}).warnings
    assert [w for w in warnings if "allowed-networks" in w] == [
        f"{tmp_path / 'yaim.yml'}: allowed-networks: {network} holds {kinds} addresses:"
        " yaim will put them on the interface"
    ]


def test_special_ranges_agree_with_the_pool_check():
    from yaim.view import special_kind

    for _kind, network in config_rules.SPECIAL:
        for address in (network.network_address, network.broadcast_address):
            assert special_kind(address) is not None, address
    for address in ("198.51.100.7", "2001:db8::7", "10.1.2.3", "fd00::1"):
        assert not config_rules.special_kinds(ipaddress.ip_network(address))
        assert special_kind(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("network", ["2001:db8::%eth0/64", "fe80::%eth0/64", "fe80::1%1/128"])
def test_scoped_allowed_networks_are_refused(tmp_path, network):
    problem = one_problem(tmp_path, {"allowed-networks": [network]})
    where = f"{tmp_path / 'yaim.yml'}: allowed-networks"
    assert problem == f"{where}: must not carry a scope (%zone), got '{network}'"


@pytest.mark.parametrize(
    "endpoint, shown",
    [
        (f"http://root:{SECRET}@192.0.2.1:2379", "http://root:***@192.0.2.1:2379"),
        (f"https://root:{SECRET}@[2001:db8::1]:2379/", "https://root:***@[2001:db8::1]:2379/"),
        ("http://root@192.0.2.1:2379", "http://root@192.0.2.1:2379"),
    ],
)
def test_credentials_in_endpoints_are_refused_and_masked(tmp_path, endpoint, shown):
    problem = one_problem(tmp_path, {"dcs-endpoints": ["http://192.0.2.2:2379", endpoint]})
    assert problem == (
        f"{tmp_path / 'yaim.yml'}: dcs-endpoints: credentials go in etcd-user and"
        f" etcd-password, not in the URL '{shown}'"
    )


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://192.0.2.1:2379/?x=",
        "http://192.0.2.1:2379?",
        "http://192.0.2.1:2379/v2/keys",
        "http://192.0.2.1:2379//",
        "https://[2001:db8::1]:2379/#top",
    ],
)
def test_an_endpoint_with_a_path_query_or_fragment_is_one_clear_line(tmp_path, endpoint):
    problem = one_problem(tmp_path, {"dcs-endpoints": ["http://192.0.2.2:2379", endpoint]})
    assert problem == (
        f"{tmp_path / 'yaim.yml'}: dcs-endpoints: must be a member's URL without a path,"
        f" query or fragment (yaim adds the API's paths), got '{endpoint}'"
    )


def test_an_endpoint_may_end_in_a_slash(tmp_path):
    endpoints = ("http://192.0.2.1:2379/", "https://[2001:db8::1]:2379")
    assert load(tmp_path, {"dcs-endpoints": list(endpoints)}).dcs_endpoints == endpoints


def test_http_url_with_credentials_works_and_is_masked(tmp_path):
    url = f"https://admin:{SECRET}@127.0.0.1:8008/health"
    cfg = load(tmp_path, {"http-url": url})
    assert cfg.http_url == url
    assert cfg.as_dict()["http-url"] == "https://admin:***@127.0.0.1:8008/health"
    assert SECRET not in repr(cfg) and SECRET not in "".join(cfg.warnings)
    assert cfg.as_dict(mask_secrets=False)["http-url"] == url


@pytest.mark.parametrize(
    "key, value",
    [
        ("etcd-password", 12345678),
        ("etcd-password", [SECRET]),
        ("etcd-password", f"{SECRET}\0"),
        ("http-url", f"http://admin:{SECRET}@127.0.0.1:99999/"),
        ("http-url", f"ftp://admin:{SECRET}@127.0.0.1/"),
        ("http-url", f"http://admin:{SECRET}@[::1/"),
        ("http-url", f"http://admin:{SECRET}@127.0.0.1/\x1b"),
        ("postgres-dsn", f"host=db password={SECRET}\x01"),
        ("postgres-dsn", 12345678),
    ],
)
def test_problems_never_repeat_a_secret(tmp_path, key, value):
    problems = problems_of(tmp_path, dict(MINIMAL, **{"etcd-user": "yaim", key: value}))
    text = "\n".join(problems)
    assert f": {key}: " in text
    assert SECRET not in text and "12345678" not in text


@pytest.mark.parametrize(
    "dsn, shown",
    [
        (f"host=db sslpassword={SECRET} user=yaim", "host=db sslpassword=*** user=yaim"),
        (f"host=db password=a\\ b\\ {SECRET}", "host=db password=***"),
    ],
)
def test_as_dict_masks_every_libpq_password(tmp_path, dsn, shown):
    assert load(tmp_path, {"postgres-dsn": dsn}).as_dict()["postgres-dsn"] == shown


def test_credentials_over_plain_http_warn(tmp_path):
    endpoints = ["https://192.0.2.1:2379", "http://192.0.2.2:2379", "http://192.0.2.3:2379"]
    given = {"etcd-user": "yaim", "etcd-password": SECRET, "dcs-endpoints": endpoints}
    warnings = load(tmp_path, given).warnings
    assert f"{tmp_path / 'yaim.yml'}: etcd-user: etcd-password is sent in clear to" in warnings[-1]
    assert warnings[-1].endswith(
        " to http://192.0.2.2:2379, http://192.0.2.3:2379; use https:// endpoints"
    )
    assert not any(
        "in clear" in w
        for w in load(tmp_path, dict(given, **{"etcd-user": None, "etcd-password": None})).warnings
    )
    safe = dict(given, **{"dcs-endpoints": endpoints[:1]})
    assert not any("in clear" in w for w in load(tmp_path, safe).warnings)


def test_http_url_password_over_plain_http_warns(tmp_path):
    url = f"http://admin:{SECRET}@127.0.0.1:8008/health"
    warnings = [w for w in load(tmp_path, {"http-url": url}).warnings if "in clear" in w]
    assert warnings == [
        f"{tmp_path / 'yaim.yml'}: http-url: its password is sent in clear to"
        " http://admin:***@127.0.0.1:8008/health; use https://"
    ]
    for quiet in ({"http-url": url.replace("http:", "https:")}, {"http-url": MINIMAL["http-url"]}):
        assert not any("in clear" in w for w in load(tmp_path, quiet).warnings)
    unused = {"http-url": url, "checker-type": "none"}
    assert not any("in clear" in w for w in load(tmp_path, unused).warnings)


# --- probe-ahead (yaim.lookout) ---


@pytest.mark.parametrize(
    "raw, value, on",
    [(True, "on", True), ("yes", "on", True), ("auto", "auto", True), (False, "off", False)],
)
def test_probe_ahead_is_a_switch(tmp_path, raw, value, on):
    loaded = load(tmp_path, {"probe-ahead": raw})
    assert loaded.probe_ahead == value and loaded.probe_ahead_on is on


def test_probe_ahead_needs_the_probe(tmp_path):
    assert not load(tmp_path, {"probe-timeout": 0}).probe_ahead_on  # auto: off without it
    problem = one_problem(tmp_path, {"probe-ahead": "on", "probe-timeout": 0})
    assert "probe-ahead: on needs probe-timeout > 0" in problem
    assert "must be auto, on or off" in one_problem(tmp_path, {"probe-ahead": "later"})


# --- the failsafe hold's keys ---


@pytest.mark.parametrize(
    "raw, value, on",
    [(True, "on", True), ("on", "on", True), ("auto", "auto", True), ("off", "off", False)],
)
def test_failsafe_is_a_switch_and_needs_the_probe(tmp_path, raw, value, on):
    loaded = load(tmp_path, {"failsafe": raw, "peer-secret-file": "/etc/yaim/peer.key"})
    assert loaded.failsafe == value and loaded.failsafe_on is on
    off = load(tmp_path, {"failsafe": raw, "peer-secret-file": "/x", "probe-timeout": 0})
    assert not off.failsafe_on
    assert any("failsafe: off: it needs probe-timeout > 0" in w for w in off.warnings) is on


def test_failsafe_needs_a_peer_secret(tmp_path):
    assert "failsafe: needs peer-secret-file" in one_problem(tmp_path, {"failsafe": "yes"})
    assert "must be auto, on or off" in one_problem(tmp_path, {"failsafe": "sometimes"})


def test_auto_is_on_wherever_a_peer_secret_is_given(tmp_path):
    assert not load(tmp_path, {}).failsafe_on  # no secret, no failsafe, no warning
    assert load(tmp_path, {"peer-secret-file": "/etc/yaim/peer.key"}).failsafe_on


def test_peer_listen_is_host_port(tmp_path):
    assert load(tmp_path, {"peer-listen": "[2001:db8::1]:9721"}).peer_listen == "[2001:db8::1]:9721"
    assert "must be HOST:PORT" in one_problem(tmp_path, {"peer-listen": "9721"})


@pytest.mark.parametrize(
    "given, environ, fallback, local, chosen",
    [
        ("my.yml", {"YAIM_CONFIG": "env.yml"}, True, False, "my.yml"),  # -c wins
        (None, {"YAIM_CONFIG": "env.yml"}, True, False, "env.yml"),  # then the variable
        (None, {}, False, False, "yaim.yml"),  # the daemon: ./yaim.yml, as the seed says
        (None, {}, True, True, "yaim.yml"),  # yaimctl where ./yaim.yml exists
        (None, {}, True, False, "/etc/yaim/yaim.yml"),  # yaimctl anywhere else
    ],
)
def test_the_config_file_is_the_option_the_variable_or_the_local_then_system_file(
    given, environ, fallback, local, chosen
):
    assert config.config_path(given, environ, fallback, exists=lambda path: local) == chosen
