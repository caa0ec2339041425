# custody: `make run` sets up and opens custody on the embedded default home;
# `make test` sets up and runs the whole suite. Both work on a fresh Debian machine as root.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOME_DIR ?= $(CURDIR)/.custody-home
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system venv run test lint bench demo clean

setup: system venv

# The second and third PKCS#11 tokens of the portability tests: NSS softokn (certutil from
# libnss3-tools, reached through the p11-kit proxy) and opencryptoki's soft token; and the
# PostgreSQL server binaries (initdb, pg_ctl) for the throwaway server of the PostgreSQL
# store tests (tests/pg_fixtures.py; CUSTODY_REQUIRE_PG makes them fail, not skip, without).
system:
	@command -v softhsm2-util >/dev/null 2>&1 && command -v tmux >/dev/null 2>&1 && command -v pdftoppm >/dev/null 2>&1 \
	  && command -v certutil >/dev/null 2>&1 && test -e /usr/lib/x86_64-linux-gnu/p11-kit-proxy.so \
	  && command -v pkcsslotd >/dev/null 2>&1 && compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
	  || { \
	  echo "installing softhsm2, tmux, poppler-utils, libnss3-tools, p11-kit, opencryptoki and postgresql with apt-get"; \
	  $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 tmux poppler-utils \
	    libnss3-tools p11-kit p11-kit-modules opencryptoki postgresql >/dev/null; }

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

run: setup
	@$(PY) -m custody_cli.devhome "$(HOME_DIR)"

test: setup
	CUSTODY_REQUIRE_PG=1 $(PY) -m pytest -q -n 2 --dist loadgroup

lint: venv
	$(VENV)/bin/ruff format --check custody ceremonies tui custody_cli tests bench
	$(VENV)/bin/ruff check custody ceremonies tui custody_cli tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: venv
	$(PY) -m bench

demo: setup
	$(VENV)/bin/custody demo --home "$(HOME_DIR)-demo"

clean:
	rm -rf $(VENV) .pytest_cache
