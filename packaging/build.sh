#!/usr/bin/env bash
# Builds the Debian or the RPM package of the working tree: packaging/build.sh deb|rpm
#
# The tree's files (tracked, and new ones git does not ignore) are copied to
# build/<kind>/ and built there with the distribution's own tools and Python;
# the package is copied to dist/. Nothing else in the checkout changes.
set -euo pipefail
cd "$(dirname "$0")/.."

# The distribution's python3 and tools, never a virtualenv's or pyenv's.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV

die() {
	echo "build.sh: $*" >&2
	exit 1
}

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' yaim/__init__.py)
[ -n "$version" ] || die "no __version__ in yaim/__init__.py"

# Copies the tree into the directory $1 (made afresh).
copy_tree() {
	rm -rf "$1"
	mkdir -p "$1"
	if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
		git ls-files -z --cached --others --exclude-standard |
			while IFS= read -r -d '' file; do
				if [ -e "$file" ]; then printf '%s\0' "$file"; fi
			done |
			tar --null -T - -cf - | tar -xf - -C "$1"
	else
		tar --exclude=./build --exclude=./dist --exclude=./.venv --exclude=./.git \
			--exclude='*.egg-info' --exclude=__pycache__ -cf - . | tar -xf - -C "$1"
	fi
}

# Dies unless the packaging's version ($2, from file $1) is the code's.
same_version() {
	[ "$2" = "$version" ] || die "$1 has version '$2' but yaim/__init__.py has $version"
}

build_deb() {
	local src=build/deb/yaim-$version
	copy_tree "$src"
	cp -r "$src/packaging/debian" "$src/debian"
	chmod +x "$src/debian/rules"
	same_version packaging/debian/changelog "$(cd "$src" && dpkg-parsechangelog -S Version)"
	(cd "$src" && dpkg-buildpackage -b -us -uc)
	mkdir -p dist
	cp "build/deb/yaim_${version}_all.deb" dist/
	echo "built dist/yaim_${version}_all.deb"
}

build_rpm() {
	local top=$PWD/build/rpm spec=packaging/rpm/yaim.spec
	same_version "$spec" "$(sed -n 's/^Version:[[:space:]]*//p' "$spec")"
	copy_tree "$top/yaim-$version"
	mkdir -p "$top/SOURCES"
	tar -C "$top" -czf "$top/SOURCES/yaim-$version.tar.gz" "yaim-$version"
	local nodeps=()
	# Where rpm is not the system's package manager (Debian), its database knows
	# none of the BuildRequires.
	rpm -q rpm >/dev/null 2>&1 || nodeps=(--nodeps)
	local python=()
	# Another python3 than the distribution's default (RHEL 8: PYTHON3=/usr/bin/python3.9).
	[ -z "${PYTHON3:-}" ] || python=(--define "__python3 $PYTHON3")
	rpmbuild -bb "${nodeps[@]}" "${python[@]}" --define "_topdir $top" "$spec"
	if command -v rpmlint >/dev/null; then rpmlint -r packaging/rpm/yaim.rpmlintrc "$spec"; fi
	mkdir -p dist
	cp "$top"/RPMS/noarch/yaim-"$version"-*.noarch.rpm dist/
	echo "built $(ls dist/yaim-"$version"-*.noarch.rpm)"
}

case "${1:-}" in
deb) build_deb ;;
rpm) build_rpm ;;
*) die "usage: packaging/build.sh deb|rpm" ;;
esac
