# Scanflow developer tasks. Everything runs from the virtual environment $(VENV), which this Makefile creates
# and fills from the lock (constraints.txt); nothing installed by hand on the machine is used.
#
#   make test                 install (once), then lint, typecheck, imports and pytest
#   make test PROFILE=core    the same on the core profile: core + torch + scikit-learn + dev tools, no orchestrators
#   make demo | bench | lint | typecheck | imports | clean | distclean
#
# Profiles (see README / pyproject.toml):
#   full  core, every extra (airflow, prefect, flyte, tracking, checking, docker, torch, examples), dev tools
#         and the three integrations as editable installs. The default, so that CI runs every test.
#   core  -e '.[examples,dev]'.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

VENV ?= .venv
PROFILE ?= full
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
CONSTRAINTS := constraints.txt
INTEGRATIONS := integrations/airflow integrations/prefect integrations/flyte
PYPROJECTS := pyproject.toml $(addsuffix /pyproject.toml,$(INTEGRATIONS))

ifeq ($(PROFILE),full)
INSTALL_ARGS := -e '.[all,dev]' $(addprefix -e ,$(INTEGRATIONS))
else ifeq ($(PROFILE),core)
INSTALL_ARGS := -e '.[examples,dev]'
else
$(error PROFILE must be 'full' or 'core', not '$(PROFILE)')
endif

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck imports demo bench clean distclean FORCE

install: $(STAMP)

# Rewritten only when the profile changes, so that switching PROFILE reinstalls and nothing else does.
$(VENV)/.profile: FORCE
	@mkdir -p $(VENV)
	@if [[ "$$(cat $@ 2>/dev/null)" != "$(PROFILE)" ]]; then echo "$(PROFILE)" >$@; fi

$(STAMP): $(PYPROJECTS) $(CONSTRAINTS) $(VENV)/.profile
	@test -n "$(PYTHON)" || { echo "no python3.11 or python3 on PATH" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --progress-bar off -c $(CONSTRAINTS) $(INSTALL_ARGS)
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy scanflow_core

imports: $(STAMP)
	$(BIN)/lint-imports

# Exit code 5 (no test collected) fails the target on purpose.
test: $(STAMP) lint typecheck imports
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/scanflow run examples/digits/scanflow.yaml

bench: $(STAMP)
	@shopt -s nullglob; files=(benchmarks/*.py); \
	if (( $${#files[@]} == 0 )); then echo "no benchmarks/*.py" >&2; exit 1; fi; \
	for f in "$${files[@]}"; do echo "== $$f"; $(BIN)/python "$$f"; done

# Build outputs, caches and run directories; the venv stays (see distclean).
clean:
	rm -rf build dist .scanflow .mypy_cache .ruff_cache .pytest_cache .hypothesis .import_linter_cache
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)

FORCE:
