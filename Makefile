# The two commands of the README: `make demo` and `make test`.
# Both create .venv on first use and install every package of the repo into it,
# editable, with its test extras. Re-run automatically when a pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PACKAGES := core testkit django_integration $(patsubst %/pyproject.toml,%,$(wildcard plugins/*/*/pyproject.toml))
STAMP := $(VENV)/.qhive-installed

.PHONY: demo test env lint

$(STAMP): Makefile $(foreach p,$(PACKAGES),$(p)/pyproject.toml)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check $(foreach p,$(PACKAGES),-e "./$(p)[test]") ruff "setuptools>=70.1"
	touch $@

env: $(STAMP)

demo: env
	$(BIN)/python demo/run.py

test: env
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: env
	$(BIN)/ruff check .
