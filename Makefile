# Set-up and everyday commands. Every target installs what it needs on a fresh machine.

# The interpreter and its virtual environment, as in `make test PYTHON=python3.13 VENV=.venv-3.13`. By default
# python3 when it is a supported version (3.11 to 3.13), else the newest supported python3.X found.
PYTHON ?=
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The real paths of that interpreter (empty when there is none) and of the one the environment was built with.
INTERPRETER := $(shell bash scripts/pick-python $(PYTHON) 2>/dev/null)
BUILT_WITH  := $(shell sed -n 's/^executable = //p' $(VENV)/pyvenv.cfg 2>/dev/null)
# Azurite, the storage emulator the blob storage tests run against, and KEDA's CRD schemas the manifests
# are checked against (package-lock.json pins them).
NODE_STAMP := node_modules/.installed

.PHONY: demo test test-fast lint bench setup clean FORCE

# The main job on its embedded default.
demo: $(STAMP)
	$(BIN)/python -m worker demo

# Lint, type-check and run the whole test suite: in TEST_WORKERS processes (pytest-xdist), since most of
# it waits on servers and processes rather than the CPU. PYTEST_ARGS adds pytest's own arguments.
TEST_WORKERS ?= 6
PYTEST_ARGS  ?=
test: lint $(NODE_STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# The pure tests alone: no servers, no processes (the others are marked integration). They read KEDA's
# schemas from node_modules.
test-fast: $(STAMP) $(NODE_STAMP)
	$(BIN)/python -m pytest -m "not integration"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP) $(NODE_STAMP)
	$(BIN)/python -m bench.bench_records
	$(BIN)/python -m bench.bench_rules
	$(BIN)/python -m bench.bench_replay
	$(BIN)/python -m bench.bench_localhub
	$(BIN)/python -m bench.bench_worker
	$(BIN)/python -m bench.bench_tracing
	$(BIN)/python -m bench.bench_start

# An environment built with another interpreter is built again, from scratch.
ifneq ($(INTERPRETER),$(BUILT_WITH))
$(STAMP): FORCE
endif
$(STAMP): pyproject.toml constraints.txt
	@test -n "$(INTERPRETER)" || bash scripts/pick-python $(PYTHON)
	@echo "$(VENV): $$($(INTERPRETER) --version) ($(INTERPRETER))"
	$(INTERPRETER) -m venv $(if $(filter-out $(INTERPRETER),$(BUILT_WITH)),--clear )$(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip==25.3"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
	touch $(STAMP)

# Everything the commands and the tests need.
setup: $(STAMP) $(NODE_STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --progress=false --loglevel=error >/dev/null
	touch $(NODE_STAMP)

clean:
	rm -rf $(VENV) .venv-3.* .mypy_cache .pytest_cache .ruff_cache .import_linter_cache .hypothesis out node_modules

FORCE:
