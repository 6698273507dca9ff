# Everything installs what it needs: uv (via pip), the locked virtualenv in .venv/,
# redis-server (via apt-get) for the task layer's end-to-end tests, and PostgreSQL (via
# apt-get) for the second run of the test suite.
PYTHON ?= python3
UV := $(PYTHON) -m uv
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/.venv

.PHONY: help deps redis-server postgresql lint format test test-sqlite test-postgres demo bench

help:
	@echo "make test   - install what is missing, run ruff, then the test suite on SQLite and PostgreSQL"
	@echo "make test-sqlite, make test-postgres - the test suite on one database only (no ruff)"
	@echo "make demo   - run the main job end to end against the GitHub emulator"
	@echo "make lint   - ruff check + format check only"

deps:
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check uv
	@$(UV) sync --frozen --quiet

redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "installing redis-server with apt-get"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

# Any PostgreSQL of Debian's packages will do (devtools/localpostgres.py takes the newest in
# /usr/lib/postgresql/); without one, 15, the version Debian 12 ships. The package's own
# cluster is not used: the tests start a throwaway one of their own.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		echo "installing postgresql-15 with apt-get"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			postgresql-15 >/dev/null; }

lint: deps
	$(UV) run ruff check .
	$(UV) run ruff format --check .

format: deps
	$(UV) run ruff check --fix .
	$(UV) run ruff format .

test: lint test-sqlite test-postgres

test-sqlite: deps redis-server
	$(UV) run pytest

test-postgres: deps redis-server postgresql
	$(UV) run python -m devtools.localpostgres -- pytest

demo: deps redis-server
	$(UV) run python -m demo

bench: deps redis-server
	$(UV) run python -m bench
