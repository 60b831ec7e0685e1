# Fresh machine: `make run` starts the whole stack, `make test` runs the suite (`make unit`: the
# unit tier alone).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# The suite runs in parallel: each worker process has its own ports, Redis database, PostgreSQL
# database and directories (tests/conftest.py, testkit/processes.py); most tests wait on
# processes and sockets, so there are more workers than cores.
TEST_WORKERS ?= 6

# Python's bytecode cache is written even where the environment turns it off: otherwise every
# process of the stack and of the suite compiles the project's modules (and pytest rewrites the
# test modules) again; collecting the suite took 6.6 s of CPU per test worker instead of 3.8.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install run migrate test unit lint format clean chaos

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(STAMP)

migrate: install
	$(BIN)/alembic upgrade head

run: install
	scripts/dev-stack

test: install
	scripts/ensure-services
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --maxschedchunk=2 --durations=20

# The unit tier: no service, no process of the product; under a minute, after each change.
unit: install
	$(BIN)/python -m pytest tests/unit

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache

chaos: install
	scripts/ensure-services
	$(BIN)/python -m bench.faults -n $${N:-20}
