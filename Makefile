# The two commands of the README: `make demo` and `make test`.
# Both create/update .venv on their own (pip takes torch 2.14.1 from local disk).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
# the queue tests must not skip in CI: redis-server is installed by `make services`
export MKD_REQUIRE_REDIS ?= 1

.PHONY: demo test install services lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,tensorboard,mlflow,wandb,export]'
	@touch $(STAMP)

install: $(STAMP)

# redis-server for the queue tests: installed with apt-get when missing. The tests
# start their own servers on free loopback ports and stop them (tests/redis_fixtures.py).
services:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }

demo: $(STAMP)
	$(BIN)/mkd run configs/quickstart.yaml

# two pytest workers (pytest-xdist): the suite is mostly waiting on subprocesses, Redis and
# file I/O, so two processes fill CI's 2 cores; PYTEST_WORKERS=0 runs it in one process
PYTEST_WORKERS ?= 2
test: $(STAMP) services
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check mkdcore plugins workers tests

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache *.egg-info
