# Every target installs what it is missing, so a fresh machine needs only Python 3 and root
# for apt-get (README "Quick start"):
#   uv            the one on PATH, else a private copy in .tools/: a small virtualenv made with
#                 $(PYTHON), because Debian and Ubuntu refuse `pip install` into the system
#                 Python (PEP 668, "externally-managed-environment")
#   .venv/        the project's environment, exactly as uv.lock pins it (never re-resolved)
#   apt-get       redis-server, PostgreSQL (the suite's second run, on a throwaway cluster),
#                 and pythonX.Y-venv if `$(PYTHON) -m venv` cannot make .tools/
PYTHON ?= python3
TOOLS := $(CURDIR)/.tools
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/.venv
# These machines set PYTHONDONTWRITEBYTECODE=1, so a .pyc is written only if uv writes it at
# install time; without them every command compiles its imports again (about 2 s each).
export UV_COMPILE_BYTECODE := 1
# Trust the machine's certificate store, as pip and curl do, not only uv's bundled roots:
# behind a TLS-inspecting proxy only the machine's store knows the proxy's root.
export UV_SYSTEM_CERTS ?= 1

# Not `$(PYTHON) -m uv`: whether some Python has uv as a module is an accident of the machine.
UV := $(shell uv --version >/dev/null 2>&1 && echo uv || echo $(TOOLS)/bin/uv)
# `deps` has synced .venv/ already; running a tool must not re-resolve or re-sync it.
RUN := $(UV) run --no-sync
# Debian and Ubuntu ship the venv module's ensurepip in a package of its own.
VENV_PACKAGE = $(shell $(PYTHON) -c 'import sys; print("python%d.%d-venv" % sys.version_info[:2])')

# `apt-get install $(1)`; without root it fails and says what to run instead.
apt_install = { echo "installing $(1) with apt-get"; \
	{ DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null; } || \
	{ echo "error: could not install $(1); as root run: apt-get install $(1)" >&2; exit 1; }; }

.PHONY: help deps redis-server postgresql lint format test test-sqlite test-postgres demo bench load serve

help:  ## this list
	@awk -F ':.*## ' '/^[a-z-]+:.*## / {printf "make %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps:  ## uv (from PATH, or installed into .tools/) and .venv/ exactly as uv.lock pins it
	@$(UV) sync --frozen --quiet

ifeq ($(UV),$(TOOLS)/bin/uv)
deps: $(TOOLS)/bin/uv
endif

$(TOOLS)/bin/uv:
	@echo "installing uv into .tools/ (a private virtualenv)"
	@$(PYTHON) -m venv --clear $(TOOLS) >/dev/null 2>&1 || { \
		$(call apt_install,$(VENV_PACKAGE)) && $(PYTHON) -m venv --clear $(TOOLS); }
	@$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv

redis-server:  ## redis-server via apt-get unless on PATH (the task layer's end-to-end tests)
	@command -v redis-server >/dev/null 2>&1 || $(call apt_install,redis-server)

# Any PostgreSQL of Debian's packages will do (devtools/localpostgres.py takes the newest in
# /usr/lib/postgresql/); without one, 15, the version Debian 12 ships. The package's own
# cluster is not used: the tests start a throwaway one of their own.
postgresql:  ## PostgreSQL server binaries via apt-get unless installed (the suite's second run)
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		$(call apt_install,--no-install-recommends postgresql-15)

lint: deps  ## ruff check and ruff format --check
	$(RUN) ruff check .
	$(RUN) ruff format --check .

format: deps  ## ruff check --fix and ruff format: rewrites files
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

test: lint test-sqlite test-postgres  ## lint, then the whole test suite on SQLite and on PostgreSQL

test-sqlite: deps redis-server  ## the test suite on SQLite only (about 4 minutes)
	$(RUN) pytest

test-postgres: deps redis-server postgresql  ## the test suite on a throwaway PostgreSQL only
	$(RUN) python -m devtools.localpostgres -- pytest

demo: deps redis-server  ## the main job end to end against the GitHub emulator, with a summary
	$(RUN) python -m demo

bench: deps redis-server  ## our sync against the original design (6 min; BENCH_QUICK=1: 35 s)
	$(RUN) python -m bench

serve: deps  ## the admin and the webhook receiver under gunicorn on 127.0.0.1:PORT (8000)
	$(RUN) gunicorn --config gunicorn.conf.py

load: deps redis-server postgresql  ## fleet load: 2,000 repositories, 3 rounds (LOAD_QUICK=1: a few hundred)
	$(RUN) python -m bench.load
