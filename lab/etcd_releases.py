"""Older and newer etcd releases for the test matrix, from Debian's own archive.

bookworm's etcd-server (3.4) is what `make deps` installs. bullseye's (3.3),
trixie's and sid's (3.5) are fetched as .deb files with apt under a private configuration
(its own sources list, state, cache and an empty dpkg status under
`.cache/etcd/apt/<suite>`, so that the host's installed 3.4 is no candidate), so
the host's apt setup is never changed, and unpacked with `dpkg-deb -x` into
`.cache/etcd/<suite>/`; the binaries run on bookworm. One suite per apt
directory, because apt would otherwise pick the newest of both. trixie's
etcd-client ships `etcdutl` beside `etcdctl`, but its 3.5.16 has no `etcdutl check
v2store`, which later 3.5 releases added: sid's etcd-server (3.5.30) ships an `etcdutl`
that has it, beside its etcd.

`python -m lab.etcd_releases` fetches what is missing and prints one
`SUITE RELEASE PATH` line per etcd binary; set YAIM_TEST_ETCD to a PATH to run
the tests against that release.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent / ".cache" / "etcd"
MIRROR = "http://deb.debian.org/debian"

# suite -> (release series, packages to unpack, the tools they ship beside etcd)
SUITES: Dict[str, Tuple[str, Tuple[str, ...], Tuple[str, ...]]] = {
    "bullseye": ("3.3", ("etcd-server",), ()),
    "trixie": ("3.5", ("etcd-server", "etcd-client"), ("etcdctl", "etcdutl")),
    "sid": ("3.5", ("etcd-server",), ("etcdutl",)),
}


def binary(suite: str, name: str = "etcd") -> Path:
    """Where `name` of `suite`'s packages lies once fetched."""
    return ROOT / suite / "usr" / "bin" / name


def _apt(suite: str, *args: str) -> None:
    """apt-get with the private configuration of `suite`; the host's is never read."""
    base = ROOT / "apt" / suite
    sources = base / "sources.list"
    for sub in ("lists/partial", "archives/partial", "parts"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    sources.write_text(f"deb {MIRROR} {suite} main\n")
    status = base / "status"
    status.touch()
    argv = [
        "apt-get",
        "-q",
        "-o", f"Dir::Etc::sourcelist={sources}",
        "-o", f"Dir::Etc::sourceparts={base / 'parts'}",
        "-o", f"Dir::State={base}",
        "-o", f"Dir::State::lists={base / 'lists'}",
        "-o", f"Dir::State::status={status}",
        "-o", f"Dir::Cache={base}",
        "-o", f"Dir::Cache::archives={base / 'archives'}",
        "-o", "Debug::NoLocking=1",
        "-o", "APT::Sandbox::User=root",
        *args,
    ]  # fmt: skip
    subprocess.run(argv, check=True, cwd=base / "archives", stdout=subprocess.DEVNULL)


def fetch(suite: str) -> Path:
    """Download and unpack `suite`'s etcd packages unless already there; the etcd binary."""
    _release, packages, tools = SUITES[suite]
    wanted: List[Path] = [binary(suite), *(binary(suite, tool) for tool in tools)]
    if all(path.exists() for path in wanted):
        return wanted[0]
    _apt(suite, "update")
    _apt(suite, "download", *packages)
    archives = ROOT / "apt" / suite / "archives"
    for package in packages:
        [deb] = sorted(archives.glob(f"{package}_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(ROOT / suite)], check=True)
    missing = [str(path) for path in wanted if not path.exists()]
    if missing:
        raise SystemExit(f"{suite}: the packages hold no {', '.join(missing)}")
    return wanted[0]


def main() -> int:
    for suite, (release, *_packages) in SUITES.items():
        print(suite, release, fetch(suite))
    return 0


if __name__ == "__main__":
    sys.exit(main())
