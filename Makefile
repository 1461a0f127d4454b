# Scanflow developer tasks. Everything runs from the virtual environment $(VENV), which this Makefile creates
# and fills from the lock (constraints.txt); nothing installed by hand on the machine is used.
#
#   make test      install (once), then lint, typecheck, imports and every test (slow ones included)
#   make docker    start a Docker engine if none answers and build the test base image if missing
#   make browser   install Debian's chromium and chromium-driver if missing (the browser tests)
#   make demo      install (once), then run the digits workflow
#   make pod-image build the step-pod image scanflow/scanflow:<version> (FROM $$SCANFLOW_BASE_IMAGE or python:3.11-slim)
#   make bench | lint | typecheck | imports | clean | distclean
#
# The install: the core with every extra (airflow, prefect, flyte, tracking, checking, docker, torch, examples),
# the dev tools, the three integrations and the example checker plugin, all editable.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

VENV ?= .venv
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
CONSTRAINTS := constraints.txt
LOCAL := integrations/airflow integrations/prefect integrations/flyte examples/checker_plugin
PYPROJECTS := pyproject.toml $(addsuffix /pyproject.toml,$(LOCAL))
INSTALL_ARGS := -e '.[all,dev]' $(addprefix -e ,$(LOCAL))

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck imports docker docker-engine base-image demo bench clean distclean compose-tool browser pod-image

install: $(STAMP)

$(STAMP): $(PYPROJECTS) $(CONSTRAINTS)
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

# The image Kubernetes step pods run when a step names none (push it to your registry); needs an engine.
pod-image: $(STAMP)
	$(BIN)/scanflow image build --extra tracking

# Exit code 5 (no test collected) fails the target on purpose. The Docker tests need an engine and the test
# base image (`make docker`); in CI (CI=true) not having them fails the run, elsewhere those tests are skipped.
test: $(STAMP) lint typecheck imports
	@$(MAKE) --no-print-directory docker || { [[ "$${CI:-}" != true ]] && echo "make docker failed: the Docker tests will be skipped" >&2; }
	@$(MAKE) --no-print-directory browser || { [[ "$${CI:-}" != true ]] && echo "make browser failed: the browser tests will be skipped" >&2; }
	SCANFLOW_TEST_IMAGE=$(TEST_IMAGE) $(BIN)/python -m pytest -q

# A Docker engine (started when none answers; Debian's docker.io installed when missing, as root) and the
# test base image $(TEST_IMAGE) (Debian bookworm + python3 by debootstrap, no registry; ~2 min the first time,
# seconds from the cached root filesystem in ~/.cache/scanflow). Both are idempotent.
TEST_IMAGE ?= scanflow-test/python:3.11-bookworm

docker: docker-engine base-image compose-tool

# Debian's chromium and chromium-driver for the browser tests (labelling page, run report); installed as root
# when missing. Selenium is pointed at them, so nothing is downloaded from elsewhere.
browser:
	scripts/chromium.sh >/dev/null

compose-tool:
	scripts/compose-tool.sh

docker-engine:
	scripts/docker-engine.sh

base-image: docker-engine
	SCANFLOW_TEST_IMAGE=$(TEST_IMAGE) scripts/base-image.sh >/dev/null

# The digits workflow end to end (train ... serve, drift, label, retrain, promote), then its HTML report.
demo: $(STAMP)
	@status=0; $(BIN)/scanflow run examples/digits/scanflow.yaml || status=$$?; \
	$(BIN)/scanflow report latest -o .scanflow/digits-report.html; exit $$status

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

