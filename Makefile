# Two commands: `make up` (set up and start the platform) and `make test` (set up and run the tests).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: setup up lint test test-unit bench tabby-agent

setup: $(VENV)/.installed

# torch is installed first and pinned: 2.13.0 is the CPU build on local disk, an unpinned torch pulls CUDA.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

up: setup
	$(VENV)/bin/code4me up

# Lint, format and type checks first: they take seconds, the suite minutes.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy app serve db deployments
	$(VENV)/bin/lint-imports

# The real tabby-agent (npm, pinned by its package-lock.json) for tests/integration/test_tabby_agent.py; needs
# node >= 18 and npm. Reinstalled only when the lockfile changes.
TABBY_DIR := tests/clients/tabby
tabby-agent: $(TABBY_DIR)/node_modules/.installed

$(TABBY_DIR)/node_modules/.installed: $(TABBY_DIR)/package.json $(TABBY_DIR)/package-lock.json
	cd $(TABBY_DIR) && npm ci --no-audit --no-fund --ignore-scripts
	touch $@

test: lint tabby-agent
	$(PY) -m pytest -q -p no:cacheprovider

test-unit: setup
	$(PY) -m pytest -q tests/unit

bench: setup
	$(PY) -m bench
