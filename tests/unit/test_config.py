"""yaim.config: defaults, every kind of problem, environment overrides, aliases, the sample file."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import socket
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yaim import config
from yaim.errors import ConfigError

SAMPLE = Path(__file__).resolve().parents[2] / "conf" / "yaim.yml"
MINIMAL = {"interface": "eth0", "http-url": "http://127.0.0.1:8008/health"}
FIXTURE_OK = [HealthCheck.function_scoped_fixture]  # tmp_path is only rewritten, never read stale
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
    "probe_timeout": 250,
    "conflict_backoff": 300000,
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
    "status_listen": "127.0.0.1:9720",
    "log_level": "INFO",
    "log_file": None,
    "log_syslog": None,
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
        ({"dcs-endpoints": []}, "dcs-endpoints", "at least one"),
        ({"dcs-endpoints": ["ftp://192.0.2.1:2379"]}, "dcs-endpoints", "http:// or https://"),
        ({"dcs-endpoints": ["http://"]}, "dcs-endpoints", "with a host"),
        ({"dcs-endpoints": ["http://192.0.2.1:99999"]}, "dcs-endpoints", "URL"),
        ({"dcs-endpoints": {"a": 1}}, "dcs-endpoints", "must be a list"),
        ({"dcs-endpoints": [2379]}, "dcs-endpoints", "must be a string"),
        ({"dcs-namespace": ""}, "dcs-namespace", "must not be empty"),
        ({"dcs-namespace": "a/b"}, "dcs-namespace", "'/'"),
        ({"dcs-clustername": "a/b"}, "dcs-clustername", "'/'"),
        ({"dcs-clustername": 2024}, "dcs-clustername", "quote it"),
        ({"etcd-user": 5}, "etcd-user", "must be a string"),
        ({"etcd-password": "secret"}, "etcd-password", "etcd-user is not"),
        ({"etcd-cert-file": "/c.pem"}, "etcd-cert-file", "together with etcd-key-file"),
        ({"etcd-key-file": "/k.pem"}, "etcd-cert-file", "together with etcd-key-file"),
        ({"etcd-ca-file": ["/a"]}, "etcd-ca-file", "must be a string"),
        ({"interval": 0}, "interval", "at least 1"),
        ({"interval": True}, "interval", "must be an integer"),
        ({"interval": 1.5}, "interval", "must be an integer"),
        ({"interval": "1s"}, "interval", "must be an integer"),
        ({"ttl": 2000}, "ttl", "must be at least 3 x interval (3000 ms), got 2000"),
        ({"ttl": False}, "ttl", "must be an integer"),
        ({"retry-num": 0}, "retry-num", "at least 1"),
        ({"retry-after": -1}, "retry-after", "at least 0"),
        ({"node-name": "a/b"}, "node-name", "'/'"),
        ({"node-name": ""}, "node-name", "must not be empty"),
        ({"interface": None}, "interface", "required"),
        ({"interface": ""}, "interface", "must not be empty"),
        ({"interface": "averyveryverylongif"}, "interface", "Linux interface name"),
        ({"interface": "eth0:1"}, "interface", "Linux interface name"),
        ({"interface": ".."}, "interface", "Linux interface name"),
        ({"netmask": 33}, "netmask", "between 0 and 32"),
        ({"netmask": -1}, "netmask", "between 0 and 32"),
        ({"netmask6": 129}, "netmask6", "between 0 and 128"),
        ({"label": "a b"}, "label", "whitespace"),
        ({"label": "averylongone"}, "label", "'eth0:averylongone' is longer than 15"),
        ({"allowed-networks": ["198.51.100.1/24"]}, "allowed-networks", "host bits set"),
        ({"allowed-networks": ["nonsense"]}, "allowed-networks", "CIDR"),
        ({"allowed-networks": 5}, "allowed-networks", "must be a list"),
        ({"announce-count": 101}, "announce-count", "between 0 and 100"),
        ({"announce-interval": 0}, "announce-interval", "at least 1"),
        ({"probe-timeout": 1000}, "probe-timeout", "less than interval (1000 ms), got 1000"),
        ({"conflict-backoff": 999}, "conflict-backoff", "at least 1000"),
        ({"checker-type": "tcp"}, "checker-type", "must be one of http, postgres, shell, none"),
        ({"check-interval": 0}, "check-interval", "at least 1"),
        ({"check-timeout": 0}, "check-timeout", "at least 1"),
        ({"check-rise": 0}, "check-rise", "at least 1"),
        ({"check-fall": 0}, "check-fall", "at least 1"),
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
        ({"notify-timeout": 0}, "notify-timeout", "at least 1"),
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
        negative = [f"retry-after: must be at least 0, got {value}"]
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
