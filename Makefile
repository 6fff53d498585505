# The two commands of the README: `make run` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: run test test-fast lint bench install docker tools images clean

run: install docker  ## install, then run the server with default settings
	$(BIN)/rivetr-git serve

test: install docker tools images  ## the whole test suite, against a real Docker engine (and Podman)
	$(BIN)/pytest

test-fast: install  ## the fast tier: every test that needs no Docker engine, 4 at a time
	$(BIN)/pytest -m "not docker" -n 4

lint: install  ## ruff (lint and format), mypy strict over the package and the tests
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy rivetr_git tests

bench: install docker tools images
	$(BIN)/python bench/push_to_live.py
	$(BIN)/python bench/build_types.py
	$(BIN)/python bench/idle_memory.py
	$(BIN)/python bench/client_mode.py
	$(BIN)/python bench/webhook_api.py

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

docker:
	@scripts/ensure-docker

tools:  ## podman, docker-compose, nginx for the build-type and Podman tests
	@scripts/ensure-tools

images:  ## local Debian base images for the tests: languages, and stand-ins for postgres, redis, mariadb (built once, then cached)
	@scripts/build-test-images --podman >/dev/null
	@scripts/build-service-images

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
