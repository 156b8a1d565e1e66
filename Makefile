# The two commands: `make demo` and `make test`. Both set everything up from scratch.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SYS    := scripts/ensure-system.sh

.PHONY: demo test lint typecheck unit bench clean help

help:
	@echo "make demo   - install and run the whole path: simulated straps -> gateway -> MQTT -> chain, verified"
	@echo "make test   - install everything the tests need and run lint, types, import contracts and all tests"
	@echo "make bench  - run the benchmarks (see docs/performance.md)"

$(BIN)/python:
	@$(SYS) venv=python3-venv
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Stamp files so a second `make` does not reinstall.
$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[sim,evm]'
	@touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

tools/node_modules/.installed: tools/package.json tools/package-lock.json
	@$(SYS) node=nodejs npm=npm
	npm ci --prefix tools --no-audit --no-fund --silent
	@touch $@

demo: $(VENV)/.demo-installed
	$(BIN)/tiyi demo $(ARGS)

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

test: $(VENV)/.dev-installed tools/node_modules/.installed
	@$(SYS) mosquitto=mosquitto openssl=openssl shellcheck=shellcheck systemd-analyze=systemd useradd=passwd
	@$(SYS) chromium=chromium font:WenQuanYi=fonts-wqy-microhei  # the dashboard's browser test (Chinese labels)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.dev-installed
	@$(SYS) mosquitto=mosquitto openssl=openssl
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) tools/node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis
