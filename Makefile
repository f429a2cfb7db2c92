# The two commands (see README):
#   make run DROPS=./drops    set up (first time) and run feedworker on a drop folder, on embedded defaults
#   make test                 set up (first time) and run the whole test suite with ruff and mypy
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DROPS ?= ./drops

.PHONY: run test lint setup

$(BIN)/feedworker: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

setup: $(BIN)/feedworker

run: setup
	$(BIN)/feedworker run $(DROPS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Two test processes: the slow tests mostly wait (an outage held for 30 s, a visibility timeout), so two share the
# machine's cores well; each claims its own Redis db, PostgreSQL databases and RabbitMQ vhost (tests/conftest.py).
test: lint
	$(BIN)/pytest -q -n 2
