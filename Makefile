# cxpulse — the two set-up commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test unit integration faults typecheck bench tools schemas clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

# Debian tools the tests need (promtool for rule tests, docker-compose for `config`).
tools:
	@bash deploy/install-tools.sh

demo: install
	$(BIN)/cxpulse demo

# The fault drills of tests/test_faults.py (kill -9, join/leave, broker restart; about
# 2 minutes) run in `make faults` with the hostile-input tests; `make test` runs everything
# else. CI (.ci/run) gates on both (docs/fault-tolerance.md).
test: install tools typecheck
	$(BIN)/python -m pytest --ignore=tests/test_faults.py

# mypy over pipeline/, schemas/ and agents/ ([tool.mypy] in pyproject.toml); part of `make test`.
typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/python -m pytest -m "not integration"

faults: install
	$(BIN)/python -m pytest tests/test_faults.py tests/test_hostile_input.py

bench: install
	$(BIN)/cxpulse bench

schemas: install
	$(BIN)/python -m schemas.export

clean:
	rm -rf data bench/results/tmp
