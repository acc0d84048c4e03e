# Set-up and everyday commands. Every target installs what it needs on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Azurite, the storage emulator the blob storage tests run against (package-lock.json pins it).
NODE_STAMP := node_modules/.installed

.PHONY: demo test test-fast lint bench setup clean

# The main job on its embedded default.
demo: $(STAMP)
	$(BIN)/python -m worker demo

# Lint, type-check and run the whole test suite.
test: lint $(NODE_STAMP)
	$(BIN)/python -m pytest

# The pure tests alone: no servers, no processes (the others are marked integration).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not integration"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench.bench_records
	$(BIN)/python -m bench.bench_rules
	$(BIN)/python -m bench.bench_replay
	$(BIN)/python -m bench.bench_localhub
	$(BIN)/python -m bench.bench_worker

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip==25.3"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
	touch $(STAMP)

# Everything the commands and the tests need.
setup: $(STAMP) $(NODE_STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --progress=false --loglevel=error >/dev/null
	touch $(NODE_STAMP)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis out node_modules
