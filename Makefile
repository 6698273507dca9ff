# Everything installs what it needs: uv (via pip), the locked virtualenv in .venv/, and
# redis-server (via apt-get) for the task layer's end-to-end tests.
PYTHON ?= python3
UV := $(PYTHON) -m uv
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/.venv

.PHONY: help deps redis-server lint format test demo bench

help:
	@echo "make test   - install what is missing, run ruff and the whole test suite"
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

lint: deps
	$(UV) run ruff check .
	$(UV) run ruff format --check .

format: deps
	$(UV) run ruff check --fix .
	$(UV) run ruff format .

test: deps redis-server lint
	$(UV) run pytest

demo: deps redis-server
	$(UV) run python -m demo

bench: deps redis-server
	$(UV) run python -m bench
