# yaim: `make demo` shows it working, `make test` runs every test.
# Both install what they need (Debian packages as root, a virtualenv in .venv).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: test demo lint unit integration chaos bench etcd-releases deps bench-deps pkg-deps deb rpm venv clean

# The test command: every test on bookworm's etcd 3.4, then the DCS backends' tests and
# one lab test (a crash's failover) on trixie's 3.5 (both APIs) and bullseye's 3.3 (v3),
# and yaimctl migrate and the v2 to v3 move in the lab on sid's 3.5, whose etcdutl has
# `check v2store`.
RELEASE_TESTS := tests/integration/test_dcs_etcd3.py tests/integration/test_dcs_etcd2.py \
	tests/integration/test_dcs_v2_off.py tests/integration/test_cache.py \
	tests/integration/test_tls_auth.py tests/integration/test_dcs_key.py \
	tests/integration/test_daemon.py::test_crash_is_repaired_within_ttl_plus_two_intervals
ETCD_CACHE := .cache/etcd
test: deps venv lint etcd-releases
	$(PY) -m pytest -q --durations=15 tests
	YAIM_TEST_ETCD=$(ETCD_CACHE)/trixie/usr/bin/etcd $(PY) -m pytest -q $(RELEASE_TESTS)
	YAIM_TEST_ETCD=$(ETCD_CACHE)/bullseye/usr/bin/etcd $(PY) -m pytest -q -k etcd3 $(RELEASE_TESTS)
	YAIM_TEST_ETCD=$(ETCD_CACHE)/sid/usr/bin/etcd $(PY) -m pytest -q tests/integration/test_migrate.py \
		tests/integration/test_migration_lab.py

unit: venv
	$(PY) -m pytest -q tests/unit

integration: deps venv
	$(PY) -m pytest -q tests/integration

lint: venv
	$(VENV)/bin/ruff check yaim tests bench lab packaging
	$(VENV)/bin/ruff format --check yaim tests bench lab packaging
	$(VENV)/bin/vermin --no-tips --violations --eval-annotations -t=3.9- yaim

demo: deps venv
	$(PY) -m lab.demo

# Fault injection with invariant checks (tests/chaos), run long: SEED= replays a run,
# DURATION= seconds of faults, DCS=etcd|etcd3|both. Exit status 1 on any violation.
SEED     ?=
DURATION ?= 600
DCS      ?= etcd
chaos: deps venv
	$(PY) -m tests.chaos --duration $(DURATION) --dcs $(DCS) $(if $(SEED),--seed $(SEED))

# Benchmarks (bench/): failover against keepalived and vip-manager, scale, profile;
# PARTS= picks some (failover scale profile), BENCH_ARGS= passes options
# (`.venv/bin/python -m bench --help`). Writes bench/results/*.json and bench/RESULTS.md.
PARTS      ?=
BENCH_ARGS ?=
bench: bench-deps venv
	$(PY) -m bench $(PARTS) $(BENCH_ARGS)

# THE ONE PLACE that lists the outside commands run by the tests, the lab (lab/), the
# demo, the chaos suite and the daemon's `ip` fallback, as COMMAND=DEBIAN-PACKAGE (a
# command in no bin directory as an absolute path or a glob). A command new in the code
# is added here. Not listed: what Essential packages give (sh, env, find, sleep, dpkg-*);
# the benchmark's rivals (bench-deps) and the package build tools (pkg-deps) below.
COMMANDS := \
	ip=iproute2 \
	tc=iproute2 \
	nft=nftables \
	curl=curl \
	ping=iputils-ping \
	arping=iputils-arping \
	etcd=etcd-server \
	etcdctl=etcd-client \
	/usr/lib/postgresql/*/bin/initdb=postgresql \
	pgbouncer=pgbouncer \
	setpriv=util-linux \
	nsenter=util-linux \
	unshare=util-linux \
	make=make \
	systemd-analyze=systemd \
	systemd-nspawn=systemd-container \
	debootstrap=debootstrap

# The packages of COMMANDS (and python3-venv), installed only when one is missing.
deps: pkg-deps
	@missing=""; PATH="$$PATH:/usr/local/sbin:/usr/sbin:/sbin"; \
	for entry in $(COMMANDS); do \
	  cmd=$${entry%%=*}; \
	  case "$$cmd" in \
	    /*) ls -d $$cmd >/dev/null 2>&1 ;; \
	    *) command -v "$$cmd" >/dev/null ;; \
	  esac || missing="$$missing $${entry#*=}"; \
	done; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# What the failover benchmark compares yaim with, installed only when missing. Without
# systemd neither starts anything: keepalived's init script needs
# /etc/keepalived/keepalived.conf, which the package does not ship, and vip-manager has no
# init script. Under systemd keepalived's unit has the same condition, while vip-manager's
# starts and fails on its empty /etc/default/vip-manager (touching no interface): the
# units of what was just installed are stopped.
bench-deps: deps
	@missing=""; \
	command -v keepalived >/dev/null || missing="$$missing keepalived"; \
	command -v vip-manager >/dev/null || missing="$$missing vip-manager"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  if [ -d /run/systemd/system ]; then \
	    for pkg in $$missing; do systemctl stop "$$pkg.service" 2>/dev/null || true; done; \
	  fi; \
	fi

# What `make deb` and `make rpm` need: the Build-Depends of packaging/debian/control,
# rpmbuild and rpmlint; installed only when missing.
pkg-deps:
	@if ! dpkg-checkbuilddeps packaging/debian/control 2>/dev/null; then \
	  echo "installing the Build-Depends of packaging/debian/control"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get build-dep -y -qq --no-install-recommends ./packaging; \
	fi
	@missing=""; \
	command -v rpmbuild >/dev/null || missing="$$missing rpm"; \
	command -v rpmlint >/dev/null || missing="$$missing rpmlint"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The Debian and RPM packages of the working tree, built under build/, left in dist/.
deb: pkg-deps
	bash packaging/build.sh deb

rpm: pkg-deps
	bash packaging/build.sh rpm

# etcd 3.3 (bullseye) and 3.5 (trixie, with etcdctl and etcdutl; sid, whose etcdutl has
# `check v2store`) beside bookworm's 3.4:
# downloaded with apt under a private configuration and unpacked into .cache/etcd/SUITE/
# (lab/etcd_releases.py); YAIM_TEST_ETCD=.cache/etcd/SUITE/usr/bin/etcd runs the tests on one.
etcd-releases:
	$(PYTHON) -m lab.etcd_releases

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
