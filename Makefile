# The two commands of the README: `make demo` and `make test`.
# Both create $(VENV) on first use and install every package of the repo into it,
# editable, with its test extras and the root pyproject's `dev` group. Re-run
# automatically when a pyproject.toml changes or PYTHON / DJANGO differ from the
# install's. Another Python and Django in a venv of their own (CI's second leg):
#   make test PYTHON=python3.13 VENV=.venv-py313 DJANGO="Django>=6,<7"

PYTHON ?= python3
VENV ?= .venv
# The Django the venv gets (a pip requirement): the LTS unless told.
DJANGO ?= Django>=5.2,<6
# pytest-xdist workers for `make test` (0: none). The tests mostly wait on the processes
# they start, so more workers than cores pays: on 2 cores the suite took 663 s in one
# process, 265 s with 3 workers, 207 s with 4, 202 s with 6. With --dist loadgroup, tests
# marked @pytest.mark.xdist_group("name") all run on one worker (none needs it today).
TEST_JOBS ?= 4
BIN := $(VENV)/bin
# The interpreter PYTHON names: as given when it runs, else pyenv's build of that version
# (`python3.13` on PATH may be a pyenv shim that refuses to run while 3.13 is not selected).
PYTHON_EXE := $(shell $(PYTHON) -c "" >/dev/null 2>&1 && echo "$(PYTHON)" || ls -d \
  "$$(pyenv root 2>/dev/null || echo "$$HOME/.pyenv")"/versions/$(patsubst python%,%,$(notdir $(PYTHON)))*/bin/$(notdir $(PYTHON)) \
  2>/dev/null | tail -n 1)
PACKAGES := core testkit django_integration $(patsubst %/pyproject.toml,%,$(wildcard plugins/*/*/pyproject.toml))
STAMP := $(VENV)/.qhive-installed
# The stamp holds what the venv was installed for (the Python version, DJANGO): another
# Python or DJANGO installs again; `python3` and `python3.11` naming one Python do not.
INSTALLED_FOR := Python $(if $(PYTHON_EXE),$(shell $(PYTHON_EXE) -c "import sys; print(sys.version.split()[0])")) $(DJANGO)
ifneq ($(shell cat $(STAMP) 2>/dev/null),$(INSTALLED_FOR))
.PHONY: $(STAMP)
endif

.PHONY: demo test env lint

$(STAMP): Makefile pyproject.toml $(foreach p,$(PACKAGES),$(p)/pyproject.toml)
	@test -n "$(PYTHON_EXE)" || { echo "make: PYTHON=$(PYTHON) does not run, and pyenv has no" \
	  "such version under $$(pyenv root 2>/dev/null || echo ~/.pyenv)/versions: install it," \
	  "or give its path: make test PYTHON=/path/to/python3.13" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON_EXE) -m venv $(VENV)
	@test "$$($(BIN)/python -c 'import sys; print(sys.version_info[:2])')" = \
	  "$$($(PYTHON_EXE) -c 'import sys; print(sys.version_info[:2])')" || { echo "make: $(VENV)" \
	  "was made by another Python than $(PYTHON_EXE): remove it, or choose another VENV=" >&2; \
	  exit 1; }
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check $(foreach p,$(PACKAGES),-e "./$(p)[test]") --group dev "$(DJANGO)"
	echo '$(INSTALLED_FOR)' > $@

env: $(STAMP)

demo: env
	$(BIN)/python demo/run.py

test: env
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadgroup $(PYTEST_ARGS)

lint: env
	$(BIN)/ruff check .

# `make dist`: a wheel and an sdist of every package in dist/, each built as a user's pip
# would (an isolated environment, the wheel from the sdist), then `twine check`. The version
# is the one in VERSION: scripts/set_version.py writes it into every pyproject.toml first.
# Its own stamp, so that building never re-installs the development environment.
DIST_TOOLS := $(VENV)/.qhive-dist-tools

.PHONY: dist

$(DIST_TOOLS):
	test -x $(BIN)/python || $(or $(PYTHON_EXE),$(PYTHON)) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "build>=1.2" "twine>=6"
	touch $@

dist: $(DIST_TOOLS)
	$(BIN)/python scripts/set_version.py
	rm -rf dist
	for p in $(PACKAGES); do $(BIN)/python -m build -q --outdir dist "./$$p" || exit 1; done
	$(BIN)/python -m twine check --strict dist/*
