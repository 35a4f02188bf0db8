# The two commands of the README: `make run` and `make test`.
# Both create what they need: a virtualenv in .venv and the state directory ./var.

PYTHON ?= python3
VENV   ?= .venv
STATE  ?= var
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.postern-installed
TESTSTAMP = $(VENV)/.postern-test-installed
PYTEST_ARGS ?=
RUN_ARGS ?=

.PHONY: run test install clean-state lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TESTSTAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(STAMP)

install: $(STAMP)

## make run: initialise ./var and run the whole appliance in the foreground.
## RUN_ARGS passes listeners, e.g. RUN_ARGS='--smtp 127.0.0.1:2525 --web off'.
run: $(STAMP)
	$(BIN)/postern init --state $(STATE)
	$(BIN)/postern run --state $(STATE) $(RUN_ARGS)

## make test: the whole suite (parallel with pytest-xdist).
test: $(TESTSTAMP)
	$(BIN)/python -m pytest -n auto $(PYTEST_ARGS)

lint: $(TESTSTAMP)
	$(BIN)/lint-imports
	$(BIN)/mypy --strict mta

clean-state:
	rm -rf $(STATE)
