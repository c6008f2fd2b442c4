# Smart Balancers — the two commands: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

# make test talks to real servers; override these to point elsewhere.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
GATEWAY_WORKERS ?= 2
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run serve test lint install migrate bench bench-smoke bench-tools soak soak-smoke

# pip's own output goes straight to the terminal: its download and install progress bars draw
# only on one (python -u: unbuffered when make's output is piped, say to a CI log). Only its
# stderr is filtered, of this machine's pip-config warning. A step line first, so a first run
# never looks hung.
PIP := $(BIN)/python -u -m pip
NO_LOCATION_WARNINGS := 2> >(grep --line-buffered -v '^WARNING: Location' >&2)

$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || { echo "==> Creating the virtualenv in $(VENV) ($$($(PYTHON) --version))"; $(PYTHON) -m venv $(VENV); }
	@echo "==> Upgrading pip"
	@$(PIP) install -q --upgrade pip $(NO_LOCATION_WARNINGS)
	@echo "==> Installing dependencies from pyproject.toml (a few minutes the first time)"
	@$(BIN)/python scripts/deps.py dev | xargs $(PIP) install --progress-bar on $(NO_LOCATION_WARNINGS)
	@echo "==> Installing the router model's files (wordllama, --no-deps)"
	@$(BIN)/python scripts/deps.py --files-only | xargs $(PIP) install --no-deps $(NO_LOCATION_WARNINGS)
	@$(BIN)/python -c "import django, rest_framework, adrf, httptools, aiohttp, importlib.util as u; assert u.find_spec('wordllama')" || (echo "dependency install failed" >&2; exit 1)
	@touch $@
	@echo "==> Dependencies installed"

install: $(INSTALLED)

migrate: $(INSTALLED)
	@echo "==> Migrating the database"
	@$(BIN)/python manage.py migrate --no-input -v 0
	@echo "==> Collecting static files"
	@$(BIN)/python manage.py collectstatic --no-input -v 0

## make run: embedded mode (SQLite, no Redis), demo data, one server on http://127.0.0.1:8000
run: migrate
	@echo "==> Seeding the demo data"
	@$(BIN)/python manage.py seed_demo
	@$(BIN)/python manage.py bootstrap_local
	@echo "Serving on http://$(HOST):$(PORT)/  (gateway: http://$(HOST):$(PORT)/v1)"
	@$(BIN)/python -m uvicorn config.asgi:application --host $(HOST) --port $(PORT) --no-access-log --log-level warning

## make serve: production server, GATEWAY_WORKERS ASGI workers; set DATABASE_URL, REDIS_URL, SECRET_KEY, ALLOWED_HOSTS
# (MALLOC_ARENA_MAX=2: two malloc arenas per worker instead of one per thread, ~6 MiB less resident; docs/benchmarks.md)
serve: migrate
	@MALLOC_ARENA_MAX=$${MALLOC_ARENA_MAX:-2} $(BIN)/python -m uvicorn config.asgi:application --host $(HOST) --port $(PORT) --workers $(GATEWAY_WORKERS) \
		--loop uvloop --http httptools --no-access-log --log-level warning --timeout-graceful-shutdown 30

lint: $(INSTALLED)
	@$(BIN)/ruff format --check .
	@$(BIN)/ruff check .
	@$(BIN)/mypy

## make test: ruff (format and lint), mypy (strict on gateway/engine and gateway/router_models) and the whole suite against PostgreSQL and Redis
test: $(INSTALLED)
	@DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(BIN)/python scripts/check_services.py
	@$(BIN)/ruff format --check .
	@$(BIN)/ruff check .
	@$(BIN)/mypy
	@bash scripts/install_browser.sh
	@DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(BIN)/python -m pytest

## make bench: gateway vs LiteLLM vs direct, then the costs of metrics and logs, live boards, the response cache and the decision cache (~8 min for the first part as measured on 11-22; the costs add 36 points of 8 s; LiteLLM is installed into bench/.venv-litellm the first time); writes bench/out/latest.md
bench: $(INSTALLED) bench-tools
	@$(BIN)/python bench/run.py $(BENCH_ARGS)

## make bench-smoke: the same pipeline with 1-2 s points (< 1 min); fails if the harness breaks or the gateway errors
bench-smoke: $(INSTALLED) bench-tools
	@$(BIN)/python bench/run.py --smoke $(BENCH_ARGS)

bench-tools:
	@command -v wrk >/dev/null || { echo "installing wrk (Debian package)"; apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }

## make soak: the fault suite: own PostgreSQL and Redis, 2 workers, Celery beat, a flapping upstream; one fault after another (~5 min)
soak: $(INSTALLED)
	@$(BIN)/python scripts/soak.py $(SOAK_ARGS)

## make soak-smoke: the same faults, a few seconds each (< 2 min; CI); fails when a request is lost
soak-smoke: $(INSTALLED)
	@$(BIN)/python scripts/soak.py --smoke $(SOAK_ARGS)
