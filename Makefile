# yaim: `make demo` shows it working, `make test` runs every test.
# Both install what they need (Debian packages as root, a virtualenv in .venv).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: test demo lint unit integration deps venv clean

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

# Debian packages the lab needs, installed only when a command is missing.
deps:
	@missing=""; \
	command -v etcd >/dev/null || missing="$$missing etcd-server"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	command -v ping >/dev/null || missing="$$missing iputils-ping"; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
