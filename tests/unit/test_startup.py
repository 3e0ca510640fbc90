"""What `yaim` imports, and when: a daemon only its own backend and checker, --version no
configuration; a library the chosen ones lack is a configuration error (exit 2, naming
the key) at --check-config and at start, found before anything is touched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from yaim import cli

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {"interface": "yaimtest0", "allowed-networks": ["198.51.100.0/24"]}
POSTGRES = {"checker-type": "postgres", "postgres-dsn": "host=127.0.0.1"}
HTTP = {"checker-type": "http", "http-url": "http://127.0.0.1:8008/health"}


def write(tmp_path: Path, **values) -> str:
    path = tmp_path / "yaim.yml"
    path.write_text(yaml.safe_dump(dict(SETTINGS, **values)))
    return str(path)


def modules_after(code: str) -> set:
    """The modules a fresh interpreter has loaded after running `code` in this tree."""
    code += "\nimport sys\nprint(' '.join(sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(done.stdout.split())


@pytest.mark.parametrize("argv", [["--check-config"], []], ids=["check-config", "start"])
def test_a_checker_whose_library_is_missing_is_exit_2_naming_the_key(
    tmp_path, capsys, monkeypatch, argv
):
    for driver in ("psycopg", "psycopg2"):  # import raises ImportError
        monkeypatch.setitem(sys.modules, driver, None)
    path = write(tmp_path, **POSTGRES)
    assert cli.main([*argv, "-c", path]) == 2
    captured = capsys.readouterr()
    line = f"{path}: checker-type: postgres needs psycopg 3 or psycopg2, and neither can be"
    assert line in captured.err and "install python3-psycopg" in captured.err
    assert "interface" not in captured.err, "found before the interface is looked at"
    assert captured.out == ""


def test_a_backend_whose_library_is_missing_is_exit_2_naming_the_key(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "etcd", None)
    monkeypatch.delitem(sys.modules, "yaim.dcs.etcd2", raising=False)
    path = write(tmp_path, **{"dcs-type": "etcd", "checker-type": "none"})
    assert cli.main(["--check-config", "-c", path]) == 2
    err = capsys.readouterr().err
    assert f"{path}: dcs-type: etcd cannot be loaded: " in err and "python3-etcd" in err


def test_with_every_library_there_the_check_passes(tmp_path, capsys):
    assert cli.main(["--check-config", "-c", write(tmp_path, **POSTGRES)]) == 0
    assert "checker-type: postgres" in capsys.readouterr().out


def test_the_command_imports_no_configuration_before_it_needs_one():
    loaded = modules_after("import yaim.cli")
    assert not {"yaml", "yaim.config", "logging.handlers", "yaim.daemon"} & loaded


@pytest.mark.parametrize(
    "settings, not_loaded",
    [
        (
            dict(HTTP, **{"dcs-type": "etcd3"}),
            {"etcd", "dns", "psycopg", "yaim.dcs.etcd2", "yaim.checks.postgres"}
            | {"requests", "urllib3"},  # the gateway and the checker are on http.client
        ),
        (dict(HTTP, **{"dcs-type": "etcd"}), {"requests", "yaim.dcs.etcd3"}),
        (
            {"dcs-type": "etcd", "checker-type": "none"},
            {"requests", "yaim.dcs.etcd3", "yaim.dcs.gateway", "yaim.checks.http"},
        ),
    ],
    ids=["etcd3-http", "etcd-http", "etcd-none"],
)
def test_a_daemon_imports_only_the_backend_and_the_checker_it_runs(tmp_path, settings, not_loaded):
    path = write(tmp_path, **dict(settings, interface="lo"))
    code = (
        "from yaim import config, daemon\n"
        f"daemon.Daemon(config.load({path!r}, {{}}))"  # built, never started
    )
    loaded = modules_after(code)
    assert "yaim.daemon" in loaded and not not_loaded & loaded
    assert "yaim.checks.shell" not in loaded
