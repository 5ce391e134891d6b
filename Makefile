# The two commands a newcomer needs: `make demo` and `make test`. Both install into .venv first;
# the install reruns only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: install demo test lint security dev clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(INSTALLED)

# demo and dev share a Dagster home, so demo runs show up in the UI.
DEMO_HOME := $(CURDIR)/.dagster_home

demo: install
	@mkdir -p $(DEMO_HOME)
	DAGSTER_HOME=$(DEMO_HOME) $(BIN)/python -m klaviyo_dagster demo

# Two pytest workers per core (pytest-xdist): many tests wait on subprocesses, servers and
# Postgres, so one per core leaves the cores idle a third of the time. `TEST_WORKERS=0`: one process.
TEST_WORKERS ?= $(shell echo $$(( 2 * $$(nproc) )))

test: install lint security
	$(BIN)/pytest -n $(TEST_WORKERS)

lint: install
	$(BIN)/ruff check klaviyo_dagster klaviyo_dagster_tests benchmarks
	$(BIN)/ruff format --check klaviyo_dagster klaviyo_dagster_tests benchmarks

security: install
	$(BIN)/bandit -c pyproject.toml -r klaviyo_dagster -q

# The UI's port and the dev instance's folder: `make dev PORT=3311 DEV_HOME=/tmp/dagster-dev`.
PORT ?= 3000
DEV_HOME ?= $(DEMO_HOME)

dev: install
	@DAGSTER_HOME=$(DEV_HOME) $(BIN)/python -m klaviyo_dagster dev --port $(PORT)

clean:
	rm -rf $(VENV) .data .dagster_home .pytest_cache .ruff_cache
