# Two commands do all set-up on a fresh machine:
#   make demo   creates .venv, installs fedswarm, runs the hospitals federation
#   make test   creates .venv, installs the dev extras, runs linters, type checks and the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint typecheck unit install dev clean bench proto

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.core: $(BIN)/python pyproject.toml
	$(PIP) install -q -e .
	touch $@

$(VENV)/.dev: $(BIN)/python pyproject.toml
	$(PIP) install -q -e '.[dev]'
	touch $@ $(VENV)/.core

install: $(VENV)/.core
dev: $(VENV)/.dev

demo: $(VENV)/.core
	$(BIN)/fedswarm demo

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports

typecheck: $(VENV)/.dev
	$(BIN)/mypy

ANVIL := tools/evm/node_modules/.bin/anvil

# A local Ethereum node (anvil, from the npm registry) for the tests of anchoring over JSON-RPC.
$(ANVIL): tools/evm/package.json tools/evm/package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed to install tools/evm (Debian package: npm)"; exit 1; }
	npm ci --prefix tools/evm --no-audit --no-fund --loglevel=error
	touch $@

unit: $(VENV)/.dev $(ANVIL)
	$(BIN)/pytest -n 2 --dist loadgroup -q

test: lint typecheck unit

bench: $(VENV)/.core
	$(BIN)/python benchmarks/simulation.py --clients 10 --rounds 20 --fraction 1.0

proto: $(VENV)/.dev
	$(BIN)/python scripts/gen_proto.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache runs tools/evm/node_modules
