"""Installs a wheel into an RPM build root, for rpmbuild without %pyproject_install.

usage: install_wheel.py BUILDROOT SITELIB BINDIR WHEEL

The `installer` command line takes its paths from the running Python's default
scheme, which on Debian is /usr/local; an RPM wants SITELIB and BINDIR exactly.
"""

import sys

from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile


def main(buildroot: str, sitelib: str, bindir: str, wheel: str) -> None:
    scheme = {
        "purelib": sitelib,
        "platlib": sitelib,
        "scripts": bindir,
        "headers": "/usr/include",
        "data": "/usr",
    }
    destination = SchemeDictionaryDestination(
        scheme, interpreter="/usr/bin/python3", script_kind="posix", destdir=buildroot
    )
    with WheelFile.open(wheel) as source:
        install(source, destination, {"INSTALLER": b"rpm\n"})


if __name__ == "__main__":
    main(*sys.argv[1:])
