"""Secrets stay out of every output: planted passwords, searched for in all that yaim shows.

The passwords all contain NEEDLE. They are planted as etcd-password (the lab's etcd
runs with authentication off: v3 logs a warning and goes on, v2's basic auth is
ignored), in http-url's user information (the lab's health server ignores it) and in
postgres-dsn, in libpq's escaped and URI forms. Then yaim runs for real in a lab
node: --check-config (also of a bad file), the daemon healthy and unhealthy, a SIGHUP
with a new password and one with a bad file, its DCS cut off for a while, yaimctl with
the DCS there and not, a stop and --cleanup. What each command printed, the daemon's
log, /health, /status and /metrics are all searched. Both DCS APIs.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import List, Tuple

import pytest
import yaml

from lab.util import wait_until
from tests.integration.conftest import INTERVAL, POOL, TTL, request, settled, yaimctl

pytestmark = pytest.mark.netns

NEEDLE = "S3cret"
SECRET = "Planted" + NEEDLE
NEW_SECRET = "NewPlanted" + NEEDLE  # http-url's password after the SIGHUP
PORT = 8008  # the lab health server's, in node 1's namespace
DSNS = [
    rf"host=127.0.0.1 user=yaim password=Planted\ {NEEDLE} sslpassword='Planted\' {NEEDLE}'",
    f"postgresql://yaim:{SECRET}@127.0.0.1:5432/app?sslpassword=Planted%20{NEEDLE}&sslmode=require",
]
ADDRESSES = POOL[:2]


def secret_url(password: str) -> str:
    return f"http://admin:{password}@127.0.0.1:{PORT}/health"


@pytest.fixture(params=["etcd", "etcd3"])
def checked(request, lab):
    """The lab with its node speaking each DCS API in turn; no address on two nodes."""
    lab.dcs_type = request.param
    yield lab
    print(lab.logs())  # pytest shows it when the test fails
    assert lab.observer.violations == [], f"two holders: {lab.observer.violations[:5]}"


class Outputs:
    """Every text yaim showed in the test, by where it came from."""

    def __init__(self) -> None:
        self.seen: List[Tuple[str, str]] = []

    def keep(self, what: str, text: str) -> str:
        self.seen.append((what, text))
        return text

    def ran(self, what: str, done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
        self.keep(f"{what}: stdout", done.stdout)
        self.keep(f"{what}: stderr", done.stderr)
        return done

    def endpoints(self, lab, when: str) -> str:
        """/health, /status and /metrics of node 1 kept; the /health body returned."""
        for path in ("/status", "/metrics", "/health"):
            code, body = request(lab, 1, path)
            self.keep(f"{path} {when} ({code})", body)
        return body

    def leaks(self) -> List[str]:
        """Where NEEDLE was seen, with the line it was in."""
        return [
            f"{what}: {line}"
            for what, text in self.seen
            for line in text.splitlines()
            if NEEDLE in line
        ]


def yaim(lab, *args: str) -> subprocess.CompletedProcess:
    """`yaim ARGS` in node 1's namespace."""
    argv = [sys.executable, "-m", "yaim", *args]
    return lab.lab.run(lab.lab.node_ns(1), argv, check=False)


def health_is(lab, code: int, timeout: float = 10.0) -> None:
    wait_until(lambda: request(lab, 1, "/health")[0] == code, timeout, what=f"/health {code}")


@pytest.mark.parametrize("lab", [1], indirect=True)
def test_a_planted_secret_is_in_no_output(checked):
    lab, seen = checked, Outputs()
    lab.lab.start_health(1, PORT)
    node = lab.node(
        1,
        interval=INTERVAL,
        ttl=TTL,
        health_url=secret_url(SECRET),
        etcd_user="yaim",
        etcd_password=SECRET,
        postgres_dsn=DSNS[0],
    )
    path = str(node.write_config())

    # --check-config of this file, of the DSN's other form, and of a file it refuses
    for i, changes in enumerate(
        [{}, {"postgres-dsn": DSNS[1]}, {"http-url": f"ftp://admin:{SECRET}@127.0.0.1/"}]
    ):
        other = lab.lab.base_dir / f"check-{i}.yml"
        other.write_text(yaml.safe_dump({**node.config, **changes}))
        done = seen.ran(
            f"yaim --check-config ({changes})", yaim(lab, "--check-config", "-c", str(other))
        )
        if i < 2:
            assert done.returncode == 0, done.stderr
            shown = yaml.safe_load(done.stdout)
            assert shown["etcd-password"] == "***"
            assert shown["http-url"] == secret_url("***")
            assert "password=***" in shown["postgres-dsn"] or ":***@" in shown["postgres-dsn"]
        else:
            assert done.returncode == 2 and "http-url" in done.stderr, done.stderr

    # the daemon, healthy, with the pool added through yaimctl
    node.start()
    added = seen.ran("yaimctl ips add", yaimctl(lab, "ips", "add", *map(str, ADDRESSES)))
    assert added.returncode == 0, added.stderr
    lab.observer.wait_for(settled([1], ADDRESSES), 15, "n1 to hold the pool")
    health_is(lab, 200)
    assert seen.endpoints(lab, "healthy") == f"healthy: GET {secret_url('***')} answered 200\n"

    # unhealthy: the check's reason, with the URL, is in the log and both endpoints
    lab.lab.set_health(1, False)
    health_is(lab, 503)
    body = seen.endpoints(lab, "unhealthy")
    assert body == f"unhealthy: GET {secret_url('***')} answered 500, expected 200\n"
    lab.lab.set_health(1, True)
    health_is(lab, 200)

    # SIGHUP: a new password in http-url is applied; a bad file is refused
    node.config["http-url"] = secret_url(NEW_SECRET)
    node.write_config()
    node.signal(signal.SIGHUP)
    wait_until(lambda: "http-url applied" in node.log(), 5, what="the reload in the log")
    health_is(lab, 200)
    good = node.config_path.read_text()
    node.config_path.write_text(
        yaml.safe_dump({**node.config, "http-url": f"ftp://admin:{SECRET}@127.0.0.1/"})
    )
    node.signal(signal.SIGHUP)
    wait_until(lambda: "reload refused" in node.log(), 5, what="the refusal in the log")
    node.config_path.write_text(good)

    # the DCS cut off: the daemon's error lines, a stale /health, yaimctl unreachable
    lab.lab.link(1, "dcs0", up=False)
    health_is(lab, 503, TTL / 1000 + 5)
    assert seen.endpoints(lab, "DCS cut off").startswith("DCS session stale")
    for args in (["ips"], ["nodes"], ["status"], ["status", "--json"]):
        done = seen.ran(f"yaimctl {args} (DCS cut off)", yaimctl(lab, *args))
        assert done.returncode == 1 and "DCS unreachable" in done.stderr, done.stderr
    lab.lab.link(1, "dcs0", up=True)
    wait_until(lambda: "works again via" in node.log(), 10, what="the DCS again in the log")
    lab.observer.wait_for(settled([1], ADDRESSES), 15, "n1 to hold the pool again")
    health_is(lab, 200)
    seen.endpoints(lab, "DCS back")

    for args in (["ips"], ["nodes"], ["status"], ["ips", "--json"], ["status", "--json"]):
        done = seen.ran(f"yaimctl {args}", yaimctl(lab, *args))
        assert done.returncode == 0, done.stderr

    # a stop, then the cleanup the service manager runs after it
    node.signal(signal.SIGTERM)
    assert node.wait_exit(5) == 0
    assert seen.ran("yaim --cleanup", yaim(lab, "--cleanup", "-c", path)).returncode == 0

    log = seen.keep("daemon log", node.log())
    assert f"GET {secret_url('***')} answered 500" in log  # the paths ran and were masked
    assert "reload refused" in log and "works again via" in log
    assert seen.leaks() == []
