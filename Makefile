# yaim: `make demo` shows it working, `make test` runs every test.
# Both install what they need (Debian packages as root, a virtualenv in .venv).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: test demo lint unit integration chaos deps pkg-deps deb rpm venv clean

test: deps venv lint
	$(PY) -m pytest -q tests

unit: venv
	$(PY) -m pytest -q tests/unit

integration: deps venv
	$(PY) -m pytest -q tests/integration

lint: venv
	$(VENV)/bin/ruff check yaim tests
	$(VENV)/bin/ruff format --check yaim tests
	$(VENV)/bin/vermin --no-tips --violations --eval-annotations -t=3.7- yaim

demo: deps venv
	$(PY) -m tests.lab.demo

# Fault injection with invariant checks (tests/chaos), run long: SEED= replays a run,
# DURATION= seconds of faults, DCS=etcd|etcd3|both. Exit status 1 on any violation.
SEED     ?=
DURATION ?= 600
DCS      ?= etcd
chaos: deps venv
	$(PY) -m tests.chaos --duration $(DURATION) --dcs $(DCS) $(if $(SEED),--seed $(SEED))

# Debian packages the lab needs, installed only when a command is missing.
deps: pkg-deps
	@missing=""; \
	command -v etcd >/dev/null || missing="$$missing etcd-server"; \
	command -v etcdctl >/dev/null || missing="$$missing etcd-client"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v tc >/dev/null || missing="$$missing iproute2"; \
	command -v nft >/dev/null || missing="$$missing nftables"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	command -v ping >/dev/null || missing="$$missing iputils-ping"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	test -x /usr/sbin/pgbouncer || missing="$$missing pgbouncer"; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
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

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
