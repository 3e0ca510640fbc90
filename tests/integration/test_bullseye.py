"""yaim on Debian 11 (bullseye) for real: its Python 3.9 and its own packaged libraries.

A minimal bullseye tree (lab/nspawn.py's debian_tree: debootstrapped once, cached in
build/nspawn) holds what yaim, its tests and one lab test need from bullseye itself:
python3 3.9, python3-etcd, python3-yaml, python3-prometheus-client, python3-psycopg2
(bullseye has no psycopg 3), python3-pyroute2 0.5.14 (which yaim no longer imports: it
is there to show it is not in the way), pytest, hypothesis, docutils, iproute2, the
iputils, curl (the lab's etcd health probe) and etcd-server 3.3. The checkout is bound
read-only at /src of a chroot over it (lab/chroot.py), and in it:

- the unit tests run on bullseye's pytest;
- one lab test, a crash's failover (test_daemon.py), runs with bullseye's etcd 3.3 on
  both APIs, the daemons on bullseye's Python;
- the .deb of the working tree (`make deb`, built on bookworm) installs with dpkg on
  bullseye's packages, and its yaim checks a config with the v2 backend and the
  postgres checker on psycopg2.

Skipped only where the tools are missing, as without root; under CI=true they fail.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from lab.chroot import Chroot
from lab.nspawn import debian_tree
from tests.needs import skip_or_fail

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = [
    "python3",
    "python3-etcd",
    "python3-yaml",
    "python3-prometheus-client",
    "python3-psycopg2",
    "python3-pyroute2",
    "python3-pytest",
    "python3-hypothesis",
    "python3-docutils",
    "iproute2",
    "iputils-ping",
    "iputils-arping",
    "curl",
    "nftables",
    "procps",
    "etcd-server",
    "systemd",  # systemd-sysusers, which the .deb's postinst runs
]
LAB_TEST = "tests/integration/test_daemon.py::test_crash_is_repaired_within_ttl_plus_two_intervals"
INSIDE_ENV = {
    "PYTHONDONTWRITEBYTECODE": "1",  # /src is read-only
    "HYPOTHESIS_STORAGE_DIRECTORY": "/tmp/hypothesis",
    "CI": os.environ.get("CI", ""),
}


@pytest.fixture(scope="module")
def bullseye(tmp_path_factory: pytest.TempPathFactory) -> Chroot:
    missing = [tool for tool in ("debootstrap", "unshare") if shutil.which(tool) is None]
    skip_or_fail(" and ".join(missing) + " missing: `make deps` installs them" if missing else None)
    if os.geteuid() != 0:
        skip_or_fail("needs root (chroot, mounts, network namespaces)")
    tree = debian_tree(PACKAGES, suite="bullseye")
    root = Chroot(tree, tmp_path_factory.mktemp("bullseye"), binds={"/src": ROOT})
    version = root.run(["python3", "--version"]).stdout.strip()
    assert version.startswith("Python 3.9."), version
    return root


def pytest_inside(root: Chroot, *args: str) -> str:
    """Bullseye's pytest on the checkout; its output (ChrootError if it fails)."""
    argv = ["python3", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *args]
    return root.run(argv, cwd="/src", env=INSIDE_ENV, timeout=1200).stdout


def summary(output: str) -> str:
    return output.strip().splitlines()[-1]


# Left out inside: a search of the failsafe protocol's state space (a minute of pure
# Python, the same on any release); the rest of the unit tests cover its code.
MODEL = "tests/unit/test_failsafe_model.py"


def test_the_unit_tests_pass_on_bullseyes_python_and_libraries(bullseye):
    output = pytest_inside(bullseye, "tests/unit", f"--ignore={MODEL}")
    print(f"bullseye unit tests: {summary(output)}")
    assert re.search(r"\d+ passed", summary(output)), output[-3000:]


def test_a_crash_fails_over_on_bullseyes_python_and_etcd_3_3(bullseye):
    output = pytest_inside(bullseye, "-s", LAB_TEST)
    print(f"bullseye lab test: {summary(output)}")
    failovers = re.findall(r"SIGKILL failover of \d+ addresses: [\d.]+ s", output)
    print("\n".join(failovers))
    assert re.search(r"2 passed", summary(output)), output[-3000:]
    etcd = bullseye.run(["etcd", "--version"]).stdout
    assert "etcd Version: 3.3." in etcd, etcd


def test_the_deb_installs_on_bullseyes_packages_and_checks_a_config(bullseye, built_deb):
    deb = f"/src/dist/{built_deb.name}"
    config = "\n".join(
        [
            "interface: lo",
            "dcs-type: etcd",
            "checker-type: postgres",
            "postgres-dsn: host=127.0.0.1 dbname=postgres",
        ]
    )
    script = (
        f"dpkg -i {deb} && id yaim && printf '%s\\n' '{config}' > /tmp/yaim.yml"
        " && yaim --check-config -c /tmp/yaim.yml && yaimctl --version"
    )
    output = bullseye.run(["sh", "-c", script]).stdout
    assert "uid=" in output and "dcs-type: etcd" in output, output
    assert "yaimctl " in output.splitlines()[-1], output
