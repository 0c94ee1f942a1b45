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

# tests/ mirrors the layers: tests/unit (the core, adapters' pure parts, the import rules;
# no broker), tests/integration (the real broker and chDB), tests/drills (the fault drills:
# kill -9, join/leave, broker restart, and the hostile-input drills; about 3 minutes).
# `make test` runs the type checker, tests/unit and tests/integration; `make faults` runs the
# drills. CI (.ci/run) gates on both (docs/fault-tolerance.md). `make unit` runs every test
# that needs no broker, wherever it lives (-m "not integration").
test: install tools typecheck
	$(BIN)/python -m pytest tests/unit tests/integration

# mypy over pipeline/, schemas/ and agents/ ([tool.mypy] in pyproject.toml); part of `make test`.
typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/python -m pytest -m "not integration"

integration: install
	$(BIN)/python -m pytest tests/integration

faults: install
	$(BIN)/python -m pytest tests/drills

bench: install
	$(BIN)/cxpulse bench

schemas: install
	$(BIN)/python -m schemas.export

clean:
	rm -rf data bench/results/tmp
