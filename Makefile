# One entry point for every task. `make test` does all set-up on a fresh machine (virtualenv,
# installs, cached builds) and runs every test; `make run` serves a real small model locally.
# Each area adds its own set-up and test paths in mk/<area>.mk.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CACHE_DIR ?= $(HOME)/.cache/kaito
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# Editable installs that make up the development environment; areas append to these.
VENV_PACKAGES := -e '.[dev]'
# Targets that must be done before tests run (cached builds); areas append.
TEST_DEPS :=
# Directories pytest collects; areas append.
PYTEST_PATHS := tests
PYTEST_ARGS ?=
# Two pytest-xdist workers, tests in groups that each run on one worker in collection order (the
# real-node tests, the tests on the shared kwok cluster, each other module; see
# localcluster/kaito_localcluster/pytest_plugin.py), the real-node group first: it is the longest.
# `make test PYTEST_XDIST=` runs everything in one process.
PYTEST_XDIST ?= -n 2 --dist loadgroup --no-loadscope-reorder

include $(sort $(wildcard mk/*.mk))

VENV_STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(wildcard */pyproject.toml plugins/*/pyproject.toml) mk/*.mk Makefile 2>/dev/null | sha256sum | cut -c1-16)

.PHONY: help venv test lint typecheck crd clean

help: ## Show the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV_STAMP):
	@echo "==> creating virtualenv $(VENV) and installing the project (pip cache: ~/.cache/pip)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install $(PIP_EXTRA_ARGS) $(VENV_PACKAGES)
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(VENV_STAMP) ## Create the virtualenv and install every package (editable)

test: venv $(TEST_DEPS) ## Set up everything and run the whole test suite
	$(PY) -m pytest $(PYTEST_XDIST) --durations=25 $(PYTEST_PATHS) $(PYTEST_ARGS)

typecheck: venv ## mypy --strict on kaito_core, plugins/ and servers/
	$(PY) -m mypy

crd: venv ## Regenerate the Workspace CRD from the API models
	$(VENV)/bin/kaito crd --output charts/kaito/crds/kaito.sh_workspaces.yaml

clean: ## Remove the virtualenv (caches under ~/.cache are kept)
	rm -rf $(VENV)
